"""A small, learnable stand-in for Fashion-MNIST, for tests and quick runs: in memory, or as the four IDX files."""

from __future__ import annotations

import hashlib
import os

import numpy

from ..files import PathLike
from .fashion_mnist import CLASSES, FILES
from .idx import decompress_if_gzip, write_idx
from .loader import ArrayDataset


def synthetic_images(count: int, seed: int = 0) -> tuple[numpy.ndarray, numpy.ndarray]:
    """``count`` 28x28 uint8 images in 10 balanced classes: each class brightens its own band of rows.

    Returns (images, labels); the pixel mean is about 66 (Fashion-MNIST's is 73, MNIST's 33).
    """
    rng = numpy.random.default_rng(seed)
    labels = numpy.tile(numpy.arange(10, dtype=numpy.uint8), count // 10 + 1)[:count]
    rng.shuffle(labels)
    images = rng.integers(0, 100, size=(count, 28, 28)).astype(numpy.uint8)
    for k in range(10):
        images[labels == k, 2 * k + 4 : 2 * k + 7, :] += 150
    return images, labels


def synthetic_fashion(count: int, seed: int = 0) -> ArrayDataset:
    """The same as an ArrayDataset with Fashion-MNIST's class names."""
    dataset = ArrayDataset(*synthetic_images(count, seed))
    dataset.classes = CLASSES
    return dataset


def write_synthetic_fashion(
    folder: PathLike, train: int = 200, test: int = 100, seed: int = 0, gzipped: bool = True
) -> dict[str, str]:
    """Write the stand-in as Fashion-MNIST's four IDX files into ``folder`` (made if missing), under the official
    names, so that any command reads it with ``--data-dir folder --skip-checksum`` (the checksums are the real
    files'). Returns {file name: SHA-256 of its decompressed content}."""
    os.makedirs(folder, exist_ok=True)
    digests = {}
    suffix = ".gz" if gzipped else ""
    for split, count, split_seed in (("train", train, seed), ("test", test, seed + 1)):
        images, labels = synthetic_images(count, split_seed)
        for part, array in (("images", images), ("labels", labels)):
            path = os.path.join(folder, FILES[split, part] + suffix)
            write_idx(path, array, compress=gzipped)
            with open(path, "rb") as file:
                digests[FILES[split, part]] = hashlib.sha256(decompress_if_gzip(file.read())).hexdigest()
    return digests
