"""The layers as plain functions (``import minigrad.nn.functional as F``), as in PyTorch."""
from .. import functions
from ..autograd import Tensor
from ..backend import get_array_module


def relu(x):
    """y = max(x, 0), elementwise."""
    return functions.ReLU.apply(x)


def check_probability(p, what="dropout probability"):
    """Return ``p`` as a float if it lies in [0, 1]; otherwise raise a ValueError saying so."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in [0, 1], got {p!r}") from None
    if not 0.0 <= p <= 1.0:  # also rejects nan
        raise ValueError(f"{what} must be in [0, 1], got {p}")
    return p


def dropout(x, p=0.5, training=True):
    """Dropout, eq. (4.6.1): each element is zeroed with probability p, survivors scaled by 1/(1-p).

    E[y] = x, so nothing needs rescaling at evaluation: with ``training=False`` the input is
    returned unchanged. p = 0 returns the input; p = 1 returns zeros (with zero gradient).
    """
    p = check_probability(p)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return functions.Dropout.apply(x, p=p)


def linear(x, weight, bias=None):
    """y = x W^T + b, with W of shape (out_features, in_features) as in PyTorch."""
    if bias is None:
        return functions.Linear.apply(x, weight)
    return functions.Linear.apply(x, weight, bias)


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy of logits (N, C) against integer labels (N,), fused and stable."""
    if not isinstance(labels, Tensor):
        labels = Tensor(get_array_module(logits.data).asarray(labels))
    return functions.SoftmaxCrossEntropy.apply(logits, labels)


def softmax(logits, dim=-1, *, axis=None):
    """softmax(o)_k = exp(o_k - m) / sum_j exp(o_j - m), m = max(o): probabilities from logits (stable).

    ``dim`` (or NumPy's ``axis``) is the axis of the classes, the last by default.
    """
    dim = dim if axis is None else axis
    shifted = logits - logits.amax(dim, keepdim=True).detach()
    exp = shifted.exp()
    return exp / exp.sum(dim, keepdim=True)
