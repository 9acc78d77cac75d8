"""Loss modules."""

from __future__ import annotations

from .._tensor import Tensor
from . import functional as F
from .module import Module


class CrossEntropyLoss(Module):
    """L = mean over the batch of -log softmax(logits)_label, fused and numerically stable (``F.cross_entropy``)."""

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The mean cross-entropy of ``logits`` (N, C) against integer ``labels`` (N,) in [0, C)."""
        return F.cross_entropy(logits, labels)
