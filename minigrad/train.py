"""Training and evaluation as the chapter writes them: ``Trainer`` and ``evaluate``.

``Trainer.train_epoch`` is the chapter's loop (forward, loss, backward, update); the timings,
progress bar and each epoch's record come from a ``monitor.Monitor``, one call per step. On a GPU the
same step can instead be captured once as a CUDA graph and replayed (``capture.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .autograd import no_grad
from .capture import CapturedTraining, CaptureProblem
from .monitor import Monitor, correct_count
from .nn import functional as F

if TYPE_CHECKING:
    from ._tensor import Tensor
    from .data.loader import DataLoader
    from .monitor import Stopwatch
    from .nn.module import Module
    from .optim import LRScheduler, Optimizer


LossFunction = Callable[["Tensor", "Tensor"], "Tensor"]
"""``loss_fn(logits, labels)``: the mean loss of a batch, a 0-d Tensor (``F.cross_entropy``)."""


def evaluate(model: Module, loader: DataLoader, loss_fn: LossFunction = F.cross_entropy) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` over ``loader``, in eval mode (dropout off), with no graph.

    The model's previous mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        return evaluate_predictions(model, loader, loss_fn)
    finally:
        model.train(was_training)


def evaluate_predictions(
    predict: Callable[[Tensor], Tensor], loader: DataLoader, loss_fn: LossFunction = F.cross_entropy
) -> dict[str, float]:
    """Mean loss and accuracy of ``predict(x) -> logits`` over ``loader``, with no graph.

    The sums stay on the device; the host reads them once, at the end.
    """
    loss_sum = correct = 0
    count = 0
    with no_grad():
        for x, y in loader:
            logits = predict(x)
            loss_sum = loss_sum + loss_fn(logits, y).data * len(y)
            correct = correct + correct_count(logits, y)
            count += len(y)
    return {"loss": float(loss_sum) / count, "acc": float(correct) / count}


class Trainer:
    """Minibatch training with evaluation after every epoch, as in the chapter's concise version.

    Each epoch: ``model.train()``, for every batch forward, loss, backward, optimizer step; then
    ``evaluate`` (which switches to ``eval()``: dropout is never on while evaluating). The device is
    the model's. ``history`` gets one dict per epoch; ``stopwatch`` the step, epoch and evaluation
    times. ``on_epoch_end(record)`` is called after each epoch (to print, save metrics, ...).

    ``capture``: the training step and the evaluation of a model on a GPU are captured as CUDA graphs and
    replayed (``capture.CapturedTraining``: the batches are gathered inside the graph, a smaller last batch
    runs eagerly); when that cannot be done the Trainer says why in one line and runs eagerly. None (the
    default) captures a model on a GPU and runs a model on the CPU eagerly, where there is nothing to capture;
    True asks for capture (and says why not, on the CPU too); False runs eagerly, for comparison.

    ``loss_limit``: an epoch whose mean training loss is above it raises ``monitor.TrainingDiverged``, as a NaN
    or infinite loss always does.
    """

    def __init__(
        self,
        model: Module,
        optimizer: Optimizer,
        loss_fn: LossFunction = F.cross_entropy,
        progress: bool = True,
        scheduler: LRScheduler | None = None,
        capture: bool | None = None,
        loss_limit: float | None = None,
    ) -> None:
        self.model, self.optimizer, self.loss_fn, self.scheduler = model, optimizer, loss_fn, scheduler
        parameter = next(iter(model.parameters()), None)
        device = parameter.device if parameter is not None else "cpu"
        self.monitor = Monitor(device, progress, loss_limit)
        # the capture.CapturedTraining while capture is on; capture_off says why it is not
        self.captured: CapturedTraining | None = None
        self.capture_off: str | None = "not asked for"
        if capture is None and device == "cpu":
            self.capture_off = "the model is on the CPU"
        elif capture is None or capture:
            self.captured, self.capture_off = CapturedTraining(model, optimizer, loss_fn), None

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per epoch trained so far (loss, accuracies, times), the Monitor's."""
        return self.monitor.history

    @history.setter
    def history(self, records: list[dict[str, Any]]) -> None:  # a resumed run starts from the epochs it had done
        self.monitor.history = list(records)

    @property
    def stopwatch(self) -> Stopwatch:
        """The timings of steps, epochs and evaluations, the Monitor's."""
        return self.monitor.stopwatch

    def train_epoch(self, loader: DataLoader, epoch: int) -> tuple[float, int, int] | None:
        """One pass over ``loader``: the chapter's step for every batch (``monitor.end_epoch`` closes the epoch).

        Returns the (loss sum, correct, examples) of replayed steps for ``end_epoch(sums=...)``, or None.
        """
        if self.captured is not None:
            try:  # a loader's step is captured on its first pass; a failed capture changed nothing
                return self.captured.train_epoch(loader, self.monitor, epoch)
            except CaptureProblem as problem:
                self._capture_failed(problem)
        self.model.train()
        for x, y in self.monitor.epoch(loader, epoch):
            logits = self.model(x)
            loss = self.loss_fn(logits, y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.monitor.step(loss, logits, y)
        return None

    def evaluate(self, loader: DataLoader) -> dict[str, float]:
        """``evaluate(model, loader)``, by replaying a captured step when the training step is captured."""
        if self.captured is not None:
            try:
                return self.captured.evaluate(loader)
            except CaptureProblem as problem:
                self._capture_failed(problem)
        return evaluate(self.model, loader, self.loss_fn)

    def _capture_failed(self, problem):
        self.captured, self.capture_off = None, problem
        print(f"capture off: {problem}; the step runs eagerly", file=sys.stderr)

    def fit(
        self,
        train_loader: DataLoader,
        test_loader: DataLoader,
        epochs: int,
        on_epoch_end: Callable[[dict[str, Any]], Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Train ``epochs`` more epochs, evaluating on ``test_loader`` after each; return the history."""
        for epoch in range(len(self.history) + 1, len(self.history) + epochs + 1):
            sums = self.train_epoch(train_loader, epoch)
            record = self.monitor.end_epoch(lambda: self.evaluate(test_loader), sums)
            if self.scheduler is not None:
                record["lr"] = self.optimizer.param_groups[0]["lr"]
                self.scheduler.step()
            if on_epoch_end is not None:
                on_epoch_end(record)
        return self.history
