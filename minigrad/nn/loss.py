"""Loss modules."""
from . import functional as F
from .module import Module


class SoftmaxCrossEntropyLoss(Module):
    """L = mean over the batch of -log softmax(logits)_label, fused and numerically stable."""

    def forward(self, logits, labels):
        return F.cross_entropy(logits, labels)


CrossEntropyLoss = SoftmaxCrossEntropyLoss
