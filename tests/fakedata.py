"""A small synthetic Fashion-MNIST look-alike, written as the four IDX files, for fast tests."""

from minigrad.data import fashion_mnist
from minigrad.data.synthetic import synthetic_images, write_synthetic_fashion


def make_split(count, seed):
    """Learnable 28x28 uint8 images (minigrad.data.synthetic): each class brightens its own band of rows."""
    return synthetic_images(count, seed)


def write_fake_fashion(folder, train=200, test=100, seed=0, gzipped=True):
    """Write the four files into ``folder``; return {file name: SHA-256 of its decompressed content}."""
    return write_synthetic_fashion(folder, train, test, seed, gzipped)


REAL_FOLDER = fashion_mnist.DEBIAN_FOLDER
HAVE_REAL = all(fashion_mnist.find_file(REAL_FOLDER, name) for name in fashion_mnist.FILES.values())
REAL_MISSING = f"the real Fashion-MNIST is not in {REAL_FOLDER} (apt-get install dataset-fashion-mnist)"
