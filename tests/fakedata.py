"""A small synthetic Fashion-MNIST look-alike, written as the four IDX files, for fast tests."""

import hashlib

from minigrad.data import fashion_mnist, write_idx
from minigrad.data.idx import decompress_if_gzip
from minigrad.data.synthetic import synthetic_images


def make_split(count, seed):
    """Learnable 28x28 uint8 images (minigrad.data.synthetic): each class brightens its own band of rows."""
    return synthetic_images(count, seed)


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


REAL_FOLDER = fashion_mnist.DEBIAN_FOLDER
HAVE_REAL = all(fashion_mnist.find_file(REAL_FOLDER, name) for name in fashion_mnist.FILES.values())
REAL_MISSING = f"the real Fashion-MNIST is not in {REAL_FOLDER} (apt-get install dataset-fashion-mnist)"
