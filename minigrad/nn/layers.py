"""The layers of the chapter's MLP: Linear, ReLU, Dropout, Flatten, and Sequential to chain them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from numpy.typing import DTypeLike

from .. import backend
from .._tensor import Tensor
from . import functional as F
from . import init as initializers
from .module import Module, Parameter


class Linear(Module):
    """y = x W^T + b with W of shape (out_features, in_features) and b of shape (out_features,).

    ``init(weight)`` fills W; the default is the chapter's N(0, 0.01^2). Biases start at 0.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init: Callable[[Tensor], Any] | None = None,
        device: str | None = None,
        dtype: DTypeLike = "float32",
    ) -> None:
        xp = backend.module_for(device)
        with backend.on_device(device):
            self.weight = Parameter(xp.empty((out_features, in_features), dtype=dtype))
            self.bias = Parameter(xp.zeros(out_features, dtype=dtype)) if bias else None
        self.in_features, self.out_features = in_features, out_features
        if init is None:
            initializers.normal_(self.weight, std=0.01)  # the chapter's N(0, 0.01^2), not PyTorch's uniform
        else:
            init(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        """y = x W^T + b, for x of shape (..., in_features)."""
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class ReLU(Module):
    """y = max(x, 0)."""

    def forward(self, x: Tensor) -> Tensor:
        """max(x, 0), elementwise."""
        return F.relu(x)


class Dropout(Module):
    """Dropout with probability p while ``training`` (eq. 4.6.1); the identity after ``eval()``.

    Training: each element is zeroed with probability p and the survivors are scaled by
    1/(1-p), so the expectation is unchanged. Evaluation: the input is returned as it is.
    """

    stochastic = True

    def __init__(self, p: float = 0.5) -> None:
        self.p = F.check_probability(p)

    def forward(self, x: Tensor) -> Tensor:
        """Eq. (4.6.1) while training: each element 0 with probability p, else x / (1 - p); x itself in eval mode."""
        return F.dropout(x, self.p, training=self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...): images to vectors."""

    def forward(self, x: Tensor) -> Tensor:
        """x reshaped to (batch, everything else)."""
        return x.reshape(x.shape[0], -1)


class Sequential(Module):
    """Modules applied one after the other; they are named "0", "1", ... as in PyTorch."""

    def __init__(self, *modules: Module) -> None:
        for index, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(f"Sequential takes Modules, got {type(module).__name__} at position {index}")
            setattr(self, str(index), module)

    def __len__(self) -> int:
        return sum(1 for _ in self.children())

    def __iter__(self) -> Iterator[Module]:
        return self.children()

    def __getitem__(self, index: int | slice) -> Any:
        """One module (``net[0]``), or with a slice a Sequential of those modules under their names (``net[:2]``)."""
        if isinstance(index, slice):
            part = Sequential()
            for name, module in list(self.named_children())[index]:
                setattr(part, name, module)
            return part
        return list(self.children())[index]

    def forward(self, x: Any) -> Any:
        """The output of each child module fed to the next, in order."""
        for module in self.children():
            x = module(x)
        return x
