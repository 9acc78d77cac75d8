"""Weight initialisers, with PyTorch's names, signatures and defaults (``torch.nn.init``).

Each fills the tensor's array in place, in its dtype on its device, and returns the tensor: a
``state_dict()`` taken before sees the new values, as in PyTorch, and a graph that used the old
values refuses to run backward. The values are drawn on the CPU's generator (or the NumPy
``generator`` given) and copied to the tensor's device, so a seeded model starts from the same
weights on the CPU and on a GPU.

``nn.Linear`` keeps the chapter's N(0, 0.01^2) as its own default (PyTorch's Linear draws from
U(-1/sqrt(fan_in), 1/sqrt(fan_in))): the README lists that difference.
"""

from __future__ import annotations

import math

import numpy

from .._tensor import Tensor
from ..autograd import mark_changed_in_place
from ..backend import to_device
from ..random import generator as default_generator


def _fill(tensor, values):
    """Write ``values`` (a NumPy array or a number) into the tensor's array, in place."""
    if not isinstance(values, (int, float)):
        values = to_device(values, tensor.device)
    tensor.data[...] = values
    mark_changed_in_place(tensor)
    return tensor


def _draw(tensor, generator, draw):
    """``draw(rng)`` on the CPU generator (or ``generator``), in the tensor's shape and dtype."""
    rng = default_generator("cpu") if generator is None else generator
    return draw(rng).astype(tensor.dtype, copy=False)


def _float_tensor(tensor, function):
    if tensor.dtype.kind != "f":
        raise TypeError(f"nn.init.{function} fills floating-point tensors, got dtype {tensor.dtype}")


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, generator: numpy.random.Generator | None = None) -> Tensor:
    """w ~ U(a, b)."""
    _float_tensor(tensor, "uniform_")
    if not a <= b:
        raise ValueError(f"uniform_ expects a <= b, got a={a} and b={b}")
    dtype = tensor.dtype.type
    draw = _draw(tensor, generator, lambda rng: rng.random(tensor.shape, dtype=tensor.dtype))
    return _fill(tensor, draw * dtype(b - a) + dtype(a))


def normal_(
    tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator: numpy.random.Generator | None = None
) -> Tensor:
    """w ~ N(mean, std^2) (PyTorch's default std is 1; the chapter's layers use 0.01)."""
    _float_tensor(tensor, "normal_")
    if std < 0:
        raise ValueError(f"normal_ expects std >= 0, got {std}")
    dtype = tensor.dtype.type
    draw = _draw(tensor, generator, lambda rng: rng.standard_normal(tensor.shape, dtype=tensor.dtype))
    return _fill(tensor, draw * dtype(std) + dtype(mean))


def constant_(tensor: Tensor, val: float) -> Tensor:
    """w = val."""
    return _fill(tensor, float(val))


def zeros_(tensor: Tensor) -> Tensor:
    """w = 0."""
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    """w = 1."""
    return constant_(tensor, 1.0)


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The gain that keeps activations' variance through ``nonlinearity``, as PyTorch's table gives it."""
    linear = (
        "linear",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "sigmoid",
    )
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f"negative_slope {slope!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(
        f"unsupported nonlinearity {nonlinearity!r}: use one of {', '.join(linear)}, tanh, relu, leaky_relu, selu"
    )


def _fans(tensor):
    """(fan_in, fan_out) of a weight of shape (out, in, *receptive field), as PyTorch computes them."""
    if tensor.ndim < 2:
        raise ValueError(
            f"fan in and fan out can not be computed for a tensor with fewer than 2 dimensions "
            f"(shape {tensor.shape}): give the weight, not the bias"
        )
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fan(tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode {mode!r} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _fans(tensor)
    return fan_in if mode == "fan_in" else fan_out


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator: numpy.random.Generator | None = None) -> Tensor:
    """w ~ U(-a, a), a = gain sqrt(6 / (fan_in + fan_out)) (Glorot and Bengio, 2010)."""
    fan_in, fan_out = _fans(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator: numpy.random.Generator | None = None) -> Tensor:
    """w ~ N(0, std^2), std = gain sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: numpy.random.Generator | None = None,
) -> Tensor:
    """w ~ U(-bound, bound), bound = gain sqrt(3 / fan) (He et al., 2015)."""
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(tensor, mode))
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: numpy.random.Generator | None = None,
) -> Tensor:
    """w ~ N(0, gain^2 / fan) (He et al., 2015): with the defaults, N(0, 2 / fan_in), suited to ReLU layers."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return normal_(tensor, 0.0, std, generator)
