"""Making tensors: ``tensor``, ``zeros``, ``ones``, ``arange``, ``randn``, on a device, with a dtype.

As in PyTorch, Python floats become float32 and Python integers int64, while an array keeps its dtype
(``tensor(numpy_float64_array)`` is float64: pass ``dtype="float32"`` to convert).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy
from numpy.typing import DTypeLike

from . import backend
from ._tensor import Tensor
from .random import generator


def _resolve_dtype(values, dtype):
    """As in PyTorch: an array keeps its dtype; Python floats become float32, Python integers int64."""
    if dtype is not None:
        return numpy.dtype(dtype)
    if hasattr(values, "dtype"):  # a NumPy or CuPy array, or a NumPy scalar
        kind = values.dtype.kind
        if kind in "fiub":
            return None
    else:
        kind = numpy.asarray(values).dtype.kind
        if kind == "f":
            return numpy.dtype(numpy.float32)
        if kind in "iub":
            return numpy.dtype(numpy.int64) if kind in "iu" else None
    raise TypeError(f"cannot make a tensor from data of dtype kind {kind!r}: give numbers or an array of numbers")


def tensor(data: Any, requires_grad: bool = False, device: str | None = None, dtype: DTypeLike | None = None) -> Tensor:
    """A new leaf tensor holding a copy of ``data`` (numbers, nested lists, a NumPy/CuPy array, a Tensor)."""
    if isinstance(data, Tensor):
        data = data.data
    xp = backend.module_for(device)
    if backend.get_array_module(data) is not xp:
        data = backend.to_numpy(data) if xp is numpy else data
    with backend.on_device(device):
        array = xp.array(data, dtype=_resolve_dtype(data, dtype), copy=True)
    return Tensor(array, requires_grad=requires_grad)


def _shape(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def zeros(
    *shape: int | Sequence[int], device: str | None = None, dtype: DTypeLike = "float32", requires_grad: bool = False
) -> Tensor:
    """A tensor of zeros: ``zeros(2, 3)`` or ``zeros((2, 3))``."""
    xp = backend.module_for(device)
    with backend.on_device(device):
        return Tensor(xp.zeros(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def ones(
    *shape: int | Sequence[int], device: str | None = None, dtype: DTypeLike = "float32", requires_grad: bool = False
) -> Tensor:
    """A tensor of ones: ``ones(2, 3)`` or ``ones((2, 3))``."""
    xp = backend.module_for(device)
    with backend.on_device(device):
        return Tensor(xp.ones(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def arange(
    start: float,
    stop: float | None = None,
    step: float = 1,
    device: str | None = None,
    dtype: DTypeLike | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """Evenly spaced values in [start, stop): int64 from integers, float32 from floats."""
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        is_float = any(isinstance(v, float) for v in (start, stop, step))
        dtype = "float32" if is_float else "int64"
    xp = backend.module_for(device)
    with backend.on_device(device):
        return Tensor(xp.arange(start, stop, step, dtype=dtype), requires_grad=requires_grad)


def randn(
    *shape: int | Sequence[int], device: str | None = None, dtype: DTypeLike = "float32", requires_grad: bool = False
) -> Tensor:
    """Values drawn from N(0, 1) with the device's generator (seeded by ``manual_seed``)."""
    draw = generator(backend.parse_device(device)).standard_normal(_shape(shape), dtype=dtype)
    return Tensor(draw, requires_grad=requires_grad)


def rand(
    *shape: int | Sequence[int], device: str | None = None, dtype: DTypeLike = "float32", requires_grad: bool = False
) -> Tensor:
    """Values drawn from Uniform[0, 1) with the device's generator."""
    draw = generator(backend.parse_device(device)).random(_shape(shape), dtype=dtype)
    return Tensor(draw, requires_grad=requires_grad)
