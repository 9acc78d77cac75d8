"""Check analytic gradients against central finite differences, in float64."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy

from . import backend
from ._tensor import Tensor
from .autograd import no_grad


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with the numerical one."""


def gradcheck(
    fn: Callable[..., Tensor], inputs: Sequence[Any], eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3
) -> bool:
    """Compare backward() with (f(x + eps) - f(x - eps)) / (2 eps) for every input element.

    ``fn(*tensors)`` must be deterministic (reseed inside it if it draws random numbers).
    Floating-point inputs are copied to float64; those with ``requires_grad`` are checked.
    A non-scalar output is reduced with fixed random weights v, checking v . f(x).
    Returns True, or raises GradcheckError naming the input, the element and both values.
    """
    inputs = [_as_float64_leaf(t) for t in inputs]
    output = fn(*inputs)
    xp = backend.get_array_module(output.data)
    if output.dtype != numpy.float64:
        raise GradcheckError(f"gradcheck needs fn to compute in float64 but it returned {output.dtype}")
    weights = xp.asarray(numpy.random.default_rng(0).standard_normal(output.shape))
    output.backward(weights)

    def projected():
        with no_grad():
            return float((fn(*inputs).data * weights).sum())

    for position, tensor in enumerate(inputs):
        if not tensor.requires_grad:
            continue
        analytic = backend.to_numpy(tensor.grad) if tensor.grad is not None else numpy.zeros(tensor.shape)
        flat = tensor.data.reshape(-1)  # a view: writing to it perturbs the input itself
        for i in range(flat.size):
            original = flat[i].item()
            flat[i] = original + eps
            plus = projected()
            flat[i] = original - eps
            minus = projected()
            flat[i] = original
            numeric = (plus - minus) / (2 * eps)
            got = analytic.reshape(-1)[i]
            if not abs(got - numeric) <= atol + rtol * abs(numeric):
                where = numpy.unravel_index(i, tensor.shape)
                raise GradcheckError(
                    f"gradient of input {position} (shape {tensor.shape}) at {where}: "
                    f"backward gives {got:.8g}, finite differences give {numeric:.8g}"
                )
    return True


def _as_float64_leaf(value):
    if not isinstance(value, Tensor):
        return value
    if value.dtype.kind != "f":
        return value  # e.g. integer labels: passed through, not checked
    return Tensor(value.data.astype(numpy.float64, copy=True), requires_grad=value.requires_grad)
