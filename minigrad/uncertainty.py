"""Uncertainty from dropout: Monte-Carlo dropout (Gal and Ghahramani, 2016), predictive entropy, calibration.

The chapter notes that agreement across dropout masks can serve as a confidence estimate. Here the
model is put in eval mode except for its stochastic layers (those with ``stochastic = True``:
Dropout and its cousins), T forward passes are averaged in probability space, and the predictive
entropy measures the uncertainty. ``calibration`` says whether the confidence can be trusted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import backend
from .autograd import no_grad
from .nn import functional as F

if TYPE_CHECKING:
    from ._tensor import Tensor
    from .backend import Array
    from .nn.module import Module


def mc_dropout_probabilities(model: Module, x: Tensor, passes: int = 30) -> Array:
    """Mean of softmax(model(x)) over ``passes`` forward passes with only the stochastic layers in training mode.

    Returns a raw array (N, C). Every module's own training flag is restored afterwards.
    """
    if passes < 1:
        raise ValueError(f"passes must be at least 1, got {passes}")
    modes = {module: module.training for module in model.modules()}
    model.eval()
    for module in model.modules():
        if module.stochastic:
            module.train()
    try:
        with no_grad():
            total = 0
            for _ in range(passes):
                total = total + F.softmax(model(x), axis=1).data
    finally:
        for module, mode in modes.items():
            module.training = mode
    return total / passes


def predictive_entropy(probabilities: Array) -> Array:
    """H = -sum_k p_k log p_k per row (in nats): 0 for a certain prediction, log C for a uniform one."""
    xp = backend.get_array_module(probabilities)
    return -(probabilities * xp.log(xp.clip(probabilities, 1e-12, 1.0))).sum(axis=1)


def calibration(probabilities: Array, labels: Array, bins: int = 10) -> dict[str, Any]:
    """How far confidence is from accuracy: the reliability diagram's points and the expected calibration error.

    Each row's confidence is its largest probability; rows are grouped into ``bins`` equal-width bins of
    confidence in [0, 1]. ECE = sum over bins of (rows in bin / N) * |accuracy in bin - mean confidence in bin|
    (Guo et al., 2017): 0 when, in every bin, the confidence is the accuracy.

    Returns ``{"ece": float, "reliability": [(mean confidence, accuracy, rows), ...]}`` over the non-empty bins.
    """
    probabilities, labels = backend.to_numpy(probabilities), backend.to_numpy(labels)
    if probabilities.ndim != 2 or labels.shape != probabilities.shape[:1] or not len(labels):
        raise ValueError(
            f"calibration needs probabilities (N, C) and labels (N,) with N > 0, got shapes "
            f"{probabilities.shape} and {labels.shape}"
        )
    confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == labels
    which = (confidence * bins).astype(int).clip(0, bins - 1)  # confidence 1.0 goes in the last bin
    reliability = [
        (float(confidence[which == b].mean()), float(correct[which == b].mean()), int((which == b).sum()))
        for b in range(bins)
        if (which == b).any()
    ]
    ece = sum(rows * abs(accuracy - conf) for conf, accuracy, rows in reliability) / len(labels)
    return {"ece": float(ece), "reliability": reliability}
