"""A small synthetic Fashion-MNIST look-alike, written as the four IDX files, for fast tests."""
import hashlib

import numpy as np

from minigrad.data import fashion_mnist, write_idx
from minigrad.data.idx import decompress_if_gzip


def make_split(count, seed):
    """Learnable 28x28 uint8 images: each class brightens its own band of rows, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(10, dtype=np.uint8), count // 10 + 1)[:count]
    rng.shuffle(labels)
    images = rng.integers(0, 100, size=(count, 28, 28)).astype(np.uint8)  # mean ~66, like clothes
    for k in range(10):
        images[labels == k, 2 * k + 4:2 * k + 7, :] += 150
    return images, labels


def write_fake_fashion(folder, train=200, test=100, seed=0, gzipped=True):
    """Write the four files into ``folder``; return {file name: SHA-256 of its decompressed content}."""
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    suffix = ".gz" if gzipped else ""
    for split, count, split_seed in (("train", train, seed), ("test", test, seed + 1)):
        images, labels = make_split(count, split_seed)
        for part, array in (("images", images), ("labels", labels)):
            name = fashion_mnist.FILES[split, part]
            write_idx(folder / (name + suffix), array, compress=gzipped)
            digests[name] = hashlib.sha256(decompress_if_gzip((folder / (name + suffix)).read_bytes())).hexdigest()
    return digests
