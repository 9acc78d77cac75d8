"""A small, learnable stand-in for Fashion-MNIST, for tests and quick runs: no files, no download."""

from __future__ import annotations

import numpy

from .fashion_mnist import CLASSES
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
