"""Other ways to inject noise while training (the chapter's exercises 6 and 7); all are the identity in eval().

Each keeps the expectation: E[y] = x (and for DropConnect E[W'] = W), as dropout does.
They are built from existing ops (Mul, Add, Linear, Dropout), so their gradients come for free.
"""

from __future__ import annotations

import math
from typing import Any

import numpy

from .._tensor import Tensor
from ..backend import Array
from ..random import generator
from . import functional as F
from .layers import Linear
from .module import Module


def _noise(x, draw):
    """A constant tensor (no gradient) of x's shape, dtype and device from ``draw(generator, shape, dtype)``."""
    return Tensor(draw(generator(x.device), x.shape, x.dtype))


class MultiplicativeNoise(Module):
    """y = x * e, with e drawn per element so that E[e] = 1 and Var[e] = p / (1 - p), dropout's moments.

    dy/dx = e. Subclasses choose the distribution of e in ``draw(generator, shape, dtype)``.
    """

    stochastic = True

    def __init__(self, p: float = 0.5) -> None:
        self.p = F.check_probability(p)
        if self.p == 1.0:
            raise ValueError(f"{type(self).__name__} needs p < 1 (its variance p / (1 - p) is infinite at p = 1)")

    def draw(self, generator: Any, shape: tuple[int, ...], dtype: numpy.dtype[Any]) -> Array:
        """The noise e, of mean 1 and variance p / (1 - p), drawn from ``generator`` (a subclass's distribution)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """x times noise of mean 1 while training; x itself in eval mode or for p = 0."""
        if not self.training or self.p == 0.0:
            return x
        return x * _noise(x, self.draw)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class GaussianDropout(MultiplicativeNoise):
    """e ~ N(1, p / (1 - p)): dropout's mean and variance, without zeros (Srivastava et al., 2014, section 10)."""

    def draw(self, generator: Any, shape: tuple[int, ...], dtype: numpy.dtype[Any]) -> Array:
        """Noise ~ N(1, p / (1 - p)): dropout's mean and variance, without zeros."""
        std = math.sqrt(self.p / (1.0 - self.p))
        return generator.standard_normal(shape, dtype=dtype) * dtype.type(std) + 1


class UniformNoise(MultiplicativeNoise):
    """e ~ U[1 - a, 1 + a] with a = sqrt(3 p / (1 - p)), so Var[e] = a^2 / 3 = p / (1 - p): bounded noise.

    This project's own idea for exercise 7: dropout's first two moments, but no unit is ever fully silenced.
    """

    def draw(self, generator: Any, shape: tuple[int, ...], dtype: numpy.dtype[Any]) -> Array:
        """Noise ~ U[1 - a, 1 + a] with a = sqrt(3p / (1 - p)): dropout's mean and variance, bounded."""
        half_width = math.sqrt(3 * self.p / (1.0 - self.p))
        return (generator.random(shape, dtype=dtype) * 2 - 1) * dtype.type(half_width) + 1


class GaussianNoise(Module):
    """y = x + e with e ~ N(0, sigma^2): additive noise (Bishop, 1995: on the inputs, Tikhonov regularisation)."""

    stochastic = True

    def __init__(self, sigma: float = 0.1) -> None:
        if not sigma >= 0:
            raise ValueError(f"noise standard deviation must be >= 0, got {sigma}")
        self.sigma = float(sigma)

    def forward(self, x: Tensor) -> Tensor:
        """x + N(0, sigma^2) noise while training; x itself in eval mode or for sigma = 0."""
        if not self.training or self.sigma == 0.0:
            return x
        return x + _noise(x, lambda g, shape, dtype: g.standard_normal(shape, dtype=dtype) * dtype.type(self.sigma))

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class DropConnect(Linear):
    """A Linear layer whose weights are dropped instead of its inputs (Wan et al., 2013).

    Training: y = x (W * M)^T + b with a fresh mask M per batch, M = [U > p] / (1 - p) (eq. 4.6.1 on the
    weights), so E[W * M] = W. Evaluation: the plain layer. dy/dW = mask times the usual Linear gradient.
    """

    stochastic = True

    def __init__(self, in_features: int, out_features: int, p: float = 0.5, **kwargs: Any) -> None:
        super().__init__(in_features, out_features, **kwargs)
        self.p = F.check_probability(p)

    def forward(self, x: Tensor) -> Tensor:
        """x W'^T + b while training, W' the weight under dropout (each weight 0 with probability p, else W / (1-p))."""
        return F.linear(x, F.dropout(self.weight, self.p, training=self.training), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", p={self.p}"
