"""Neural-network building blocks (``minigrad.nn``), named as in PyTorch."""

from . import functional, init
from .layers import Dropout, Flatten, Linear, ReLU, Sequential
from .loss import CrossEntropyLoss
from .module import Module, Parameter
from .noise import DropConnect, GaussianDropout, GaussianNoise, UniformNoise

__all__ = [
    "functional",
    "init",
    "Module",
    "Parameter",
    "Linear",
    "ReLU",
    "Dropout",
    "Flatten",
    "Sequential",
    "CrossEntropyLoss",
    "DropConnect",
    "GaussianDropout",
    "GaussianNoise",
    "UniformNoise",
]
