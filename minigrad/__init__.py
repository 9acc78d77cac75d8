"""minigrad: a from-scratch deep-learning framework on NumPy (and CuPy), for section 4.6 "Dropout".

The file map (each name says what the file holds):

- the engine: ``autograd`` (grad mode, backward through the graph), ``_tensor`` (Tensor, and Function,
  the base of every op; underscored as PyTorch's ``torch/_tensor.py`` is, since ``minigrad.tensor`` is
  the factory function), ``ops`` (one Function per op, forward beside backward, the chapter's three
  with their CUDA kernels), ``creation`` (tensor factories), ``gradcheck``;
- devices: ``backend`` (NumPy or CuPy, device names, CUDA kernels compiled on first use), ``random``
  (one seeded generator per device), ``allocator`` (why the CPU's freed memory is kept for the next batch);
- models: ``nn`` (Module, Parameter, layers, losses, ``functional``, ``init``, the noise layers),
  ``optim`` (SGD and learning-rate schedules);
- training: ``data`` (the IDX format, Fashion-MNIST, DataLoader), ``train`` (Trainer, evaluate),
  ``monitor`` (the instruments: timings, progress bar, each epoch's record), ``uncertainty`` (Monte-Carlo
  dropout, calibration);
- the fast path, apart from the lesson: ``fast`` (the step planned ahead, which ``Trainer`` runs by default
  where the model fits; the recorder of CUDA graphs; the matrix product a graph can record);
- files and pictures: ``files`` (atomic writes, strict JSON), ``checkpoint`` (weights, training checkpoints),
  ``viz`` (the graph and the training curves), ``cli`` (what every command line shares);
- the lesson as programs: ``chapter`` (the chapter's model, its training command, the engine tour, the
  exercises).
"""

import numpy as _numpy

from . import _tensor, allocator, autograd, backend, nn, ops, optim, random  # noqa: F401 (the engine before the ops: see _tensor.py)
from ._tensor import Function, Tensor
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled, set_value_checks, value_checks_enabled
from .backend import DeviceError, cuda_available
from .creation import arange, ones, rand, randn, tensor, zeros
from .gradcheck import GradcheckError, gradcheck
from .random import get_rng_state, manual_seed, set_rng_state

float16, float32, float64 = _numpy.float16, _numpy.float32, _numpy.float64
int32, int64, uint8, bool_ = _numpy.int32, _numpy.int64, _numpy.uint8, _numpy.bool_

__all__ = [
    "allocator",
    "autograd",
    "backend",
    "nn",
    "ops",
    "optim",
    "random",
    "Function",
    "Tensor",
    "enable_grad",
    "is_grad_enabled",
    "no_grad",
    "set_grad_enabled",
    "set_value_checks",
    "value_checks_enabled",
    "DeviceError",
    "cuda_available",
    "manual_seed",
    "get_rng_state",
    "set_rng_state",
    "arange",
    "ones",
    "rand",
    "randn",
    "tensor",
    "zeros",
    "GradcheckError",
    "gradcheck",
    "float16",
    "float32",
    "float64",
    "int32",
    "int64",
    "uint8",
    "bool_",
]
__version__ = "0.1.0"

# The rest of the package is imported on first use, so `import minigrad as mg; mg.data.FashionMNIST` works
# as torch.utils.data does after `import torch`, without paying for matplotlib or tqdm at import time.
_LAZY_SUBMODULES = (
    "chapter",
    "checkpoint",
    "cli",
    "data",
    "fast",
    "files",
    "monitor",
    "train",
    "uncertainty",
    "viz",
)


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'minigrad' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
