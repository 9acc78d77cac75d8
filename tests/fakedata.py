"""A small synthetic Fashion-MNIST look-alike, written as the four IDX files, for fast tests."""

from minigrad.data import fashion_mnist

# The tests' names for the library's stand-in: one split's (images, labels), and the four files written to a folder.
from minigrad.data.synthetic import synthetic_images as make_split  # noqa: F401
from minigrad.data.synthetic import write_synthetic_fashion as write_fake_fashion  # noqa: F401

REAL_FOLDER = fashion_mnist.DEBIAN_FOLDER
HAVE_REAL = all(fashion_mnist.find_file(REAL_FOLDER, name) for name in fashion_mnist.FILES.values())
REAL_MISSING = f"the real Fashion-MNIST is not in {REAL_FOLDER} (apt-get install dataset-fashion-mnist)"
