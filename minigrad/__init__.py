"""minigrad: a from-scratch deep-learning framework on NumPy (and CuPy), for section 4.6 "Dropout".

The file map: ``backend`` (NumPy or CuPy, devices, random generators), ``autograd`` (Tensor,
Function, backward), ``functions`` (one Function per op), ``creation`` (tensor factories),
``nn`` (modules, layers, losses, functional), ``optim`` (SGD), ``gradcheck``, ``allocator`` (why the
CPU's freed memory is kept for the next batch).
"""
import numpy as _numpy

from . import allocator, backend, functions, nn, optim
from .autograd import Function, Tensor, is_grad_enabled, no_grad
from .backend import DeviceError, cuda_available, manual_seed
from .creation import arange, ones, rand, randn, tensor, zeros
from .gradcheck import GradcheckError, gradcheck

float16, float32, float64 = _numpy.float16, _numpy.float32, _numpy.float64
int32, int64, uint8, bool_ = _numpy.int32, _numpy.int64, _numpy.uint8, _numpy.bool_

__all__ = ["allocator", "backend", "functions", "nn", "optim", "Function", "Tensor", "is_grad_enabled", "no_grad",
           "DeviceError", "cuda_available", "manual_seed", "arange", "ones", "rand", "randn", "tensor", "zeros",
           "GradcheckError", "gradcheck", "float16", "float32", "float64", "int32", "int64", "uint8", "bool_"]
__version__ = "0.1.0"

# The rest of the package is imported on first use, so `import minigrad as mg; mg.data.FashionMNIST` works
# as torch.utils.data does after `import torch`, without paying for matplotlib or tqdm at import time.
_LAZY_SUBMODULES = ("cli", "data", "io", "kernels", "plot", "train", "uncertainty", "viz")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'minigrad' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
