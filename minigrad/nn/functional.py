"""The layers as plain functions (``import minigrad.nn.functional as F``), as in PyTorch."""

from __future__ import annotations

from typing import Any

from .. import autograd, ops
from .._tensor import Tensor
from ..backend import get_array_module


def check_tensor(value: Any, function: str, argument: str = "input") -> Tensor:
    """``value`` itself; a clear TypeError when it is not a Tensor (a NumPy array, say): what was given, what to do."""
    if not isinstance(value, Tensor):
        raise TypeError(
            f"{function}: {argument} must be a minigrad Tensor, got {type(value).__module__}."
            f"{type(value).__name__}; wrap it first: minigrad.tensor(value)"
        )
    return value


def relu(x: Tensor) -> Tensor:
    """y = max(x, 0), elementwise."""
    return ops.ReLU.apply(check_tensor(x, "relu"))


def check_probability(p: Any, what: str = "dropout probability") -> float:
    """Return ``p`` as a float if it lies in [0, 1]; otherwise raise a ValueError saying so."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in [0, 1], got {p!r}") from None
    if not 0.0 <= p <= 1.0:  # also rejects nan
        raise ValueError(f"{what} must be in [0, 1], got {p}")
    return p


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Dropout, eq. (4.6.1): each element is zeroed with probability p, survivors scaled by 1/(1-p).

    E[y] = x, so nothing needs rescaling at evaluation: with ``training=False`` the input is
    returned unchanged. p = 0 returns the input; p = 1 returns zeros (with zero gradient).
    """
    check_tensor(x, "dropout")
    p = check_probability(p)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return ops.Dropout.apply(x, p=p)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b, with W of shape (out_features, in_features) as in PyTorch."""
    check_tensor(x, "linear"), check_tensor(weight, "linear", "weight")
    if bias is not None:
        check_tensor(bias, "linear", "bias")
    if x.ndim < 1 or weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: input of shape {x.shape} does not fit a weight of shape {weight.shape} "
            f"(out_features, in_features): the input's last axis must be {weight.shape[1]}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias of shape {bias.shape} does not fit a weight of shape {weight.shape}")
    if bias is None:
        return ops.Linear.apply(x, weight)
    return ops.Linear.apply(x, weight, bias)


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean softmax cross-entropy of logits (N, C) against integer labels (N,), fused and stable.

    The shapes, the labels' dtype and device are always checked; that every label lies in [0, C)
    is checked on both devices while value checks are on (``minigrad.set_value_checks``), as they
    are by default.
    """
    xp = get_array_module(check_tensor(logits, "cross_entropy", "logits").data)
    if not isinstance(labels, Tensor):
        labels = Tensor(xp.asarray(labels))
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"cross_entropy: logits of shape {logits.shape} and labels of shape {labels.shape} "
            f"do not fit: expected logits (N, C) and labels (N,)"
        )
    if labels.dtype.kind not in "iu":
        raise ValueError(f"cross_entropy: labels must be integer class indices, got dtype {labels.dtype}")
    if logits.device != labels.device:
        raise ValueError(
            f"cross_entropy: logits are on {logits.device} but labels on {labels.device}; move them with .to(device)"
        )
    if autograd.value_checks_enabled() and labels.numel():
        low, high = int(labels.data.min()), int(labels.data.max())  # on a GPU: one wait per call
        if low < 0 or high >= logits.shape[1]:
            raise ValueError(
                f"cross_entropy: labels must lie in [0, {logits.shape[1] - 1}], got values from {low} to {high}"
            )
    return ops.SoftmaxCrossEntropy.apply(logits, labels)


def softmax(logits: Tensor, dim: int = -1, *, axis: int | None = None) -> Tensor:
    """softmax(o)_k = exp(o_k - m) / sum_j exp(o_j - m), m = max(o): probabilities from logits (stable).

    ``dim`` (or NumPy's ``axis``) is the axis of the classes, the last by default.
    """
    check_tensor(logits, "softmax")
    dim = dim if axis is None else axis
    shifted = logits - logits.amax(dim, keepdim=True).detach()
    exp = shifted.exp()
    return exp / exp.sum(dim, keepdim=True)
