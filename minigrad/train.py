"""Training and evaluation as the chapter writes them: ``Trainer`` and ``evaluate``.

``Trainer.train_epoch`` is the chapter's loop (forward, loss, backward, update); the timings,
progress bar and each epoch's record come from a ``monitor.Monitor``, one call per step. Where the model
fits it, the Trainer runs the same step planned ahead instead (``minigrad.fast``: the fast path, apart from
the lesson); ``Trainer(eager=True)`` always runs the loop below.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .autograd import no_grad
from .fast import PlannedTraining, PlanProblem, plan_problem
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

    ``eager``: False (the default) runs the planned step where the model fits it (``fast.PlannedTraining``:
    the same math on buffers made once, recorded as a CUDA graph on a GPU), and the eager ops otherwise,
    saying why in one line when the model looked like it fits; True always runs the eager ops. ``step_kind``
    says which ran ("planned", "planned, recorded as a CUDA graph", or "eager: why").

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
        eager: bool = False,
        loss_limit: float | None = None,
    ) -> None:
        self.model, self.optimizer, self.loss_fn, self.scheduler = model, optimizer, loss_fn, scheduler
        parameter = next(iter(model.parameters()), None)
        device = parameter.device if parameter is not None else "cpu"
        self.monitor = Monitor(device, progress, loss_limit)
        self.planned: PlannedTraining | None = None  # the fast path, while it runs
        self.step_kind = "eager: asked for"
        if not eager:
            problem = plan_problem(model, optimizer, loss_fn)
            if problem is None:
                self.planned = PlannedTraining(model, optimizer, loss_fn)
                self.step_kind = self.planned.describe()
            else:
                self.step_kind = f"eager: {problem}"

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

    def train_epoch(self, loader: DataLoader, epoch: int) -> None:
        """One pass over ``loader``: the chapter's step for every batch (``monitor.end_epoch`` closes the epoch)."""
        if self.planned is not None:
            try:  # a loader's plan is made on its first pass; a plan that cannot be made changed nothing
                return self.planned.train_epoch(loader, self.monitor, epoch)
            except PlanProblem as problem:
                self._plan_failed(problem)
        self.model.train()
        for x, y in self.monitor.epoch(loader, epoch):
            logits = self.model(x)
            loss = self.loss_fn(logits, y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.monitor.step(loss, logits, y)

    def evaluate(self, loader: DataLoader) -> dict[str, float]:
        """``evaluate(model, loader)``, by the planned evaluation while the planned step runs."""
        if self.planned is not None:
            try:
                return self.planned.evaluate(loader)
            except PlanProblem as problem:
                self._plan_failed(problem)
        return evaluate(self.model, loader, self.loss_fn)

    def _plan_failed(self, problem):
        self.planned, self.step_kind = None, f"eager: {problem}"
        print(f"planned step off: {problem}; the eager ops run", file=sys.stderr)

    def fit(
        self,
        train_loader: DataLoader,
        test_loader: DataLoader,
        epochs: int,
        on_epoch_end: Callable[[dict[str, Any]], Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Train ``epochs`` more epochs, evaluating on ``test_loader`` after each; return the history."""
        for epoch in range(len(self.history) + 1, len(self.history) + epochs + 1):
            self.train_epoch(train_loader, epoch)
            record = self.monitor.end_epoch(lambda: self.evaluate(test_loader))
            if self.scheduler is not None:
                record["lr"] = self.optimizer.param_groups[0]["lr"]
                self.scheduler.step()
            if on_epoch_end is not None:
                on_epoch_end(record)
        return self.history
