"""Data: the IDX format, Fashion-MNIST, and a device-resident DataLoader."""

from .fashion_mnist import CLASSES, DatasetError, FashionMNIST
from .idx import IDXFormatError, parse_idx, read_idx, write_idx
from .loader import ArrayDataset, DataLoader

__all__ = [
    "CLASSES",
    "DatasetError",
    "FashionMNIST",
    "IDXFormatError",
    "parse_idx",
    "read_idx",
    "write_idx",
    "ArrayDataset",
    "DataLoader",
]
