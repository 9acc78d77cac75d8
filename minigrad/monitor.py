"""The instruments of a training loop: timings, a progress bar, and each epoch's record, behind two calls.

A training loop written out as the chapter writes it gets everything else from a :class:`Monitor`::

    for X, y in monitor.epoch(train_loader, epoch):  # starts the epoch's clock and bar
        y_hat = net(X)
        loss = loss_fn(y_hat, y)
        loss.backward()
        update()
        monitor.step(loss, y_hat, y)                 # the step's time, loss and accuracy
    record = monitor.end_epoch(lambda: evaluate(net, test_loader))

``Trainer`` uses the same object, so the scratch and the concise loops are measured alike.
Metrics stay on the device during an epoch (each step's loss and number of correct predictions,
summed when read); the host reads them once per epoch, and for the progress bar at most a few
times a second, since reading a GPU number waits for the GPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy
from tqdm import tqdm  # text bars everywhere: tqdm.auto warns in a notebook without ipywidgets

from . import backend
from .backend import Array

if TYPE_CHECKING:
    from ._tensor import Tensor


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite, or an epoch's training loss passed the run's limit. ``record`` is the
    epoch's record when the epoch had finished."""

    def __init__(self, message: str, record: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.record = record


def check_losses(record: dict[str, Any], loss_limit: float | None = None) -> None:
    """Raise TrainingDiverged when an epoch's training or test loss is NaN or infinite, or when its mean training
    loss is above ``loss_limit`` (a loss that exploded but stayed finite: 1e5 for a 10-class cross-entropy).

    The training loss alone is not enough: with a learning rate far too large it can stay finite
    (1e33) while the weights overflow and the test loss is NaN.
    """
    for key in ("train_loss", "test_loss"):
        if key in record and not math.isfinite(record[key]):
            raise TrainingDiverged(
                f"the {key.replace('_', ' ')} became {record[key]} in epoch {record['epoch']}; "
                f"try a smaller learning rate",
                record,
            )
    if loss_limit is not None and record["train_loss"] > loss_limit:
        raise TrainingDiverged(
            f"the training loss reached {record['train_loss']:.4g} in epoch {record['epoch']}, "
            f"above {loss_limit:.4g}, the limit past which a run counts as diverged; try a smaller "
            f"learning rate",
            record,
        )


class Monitor:
    """One training run's instruments: ``epoch(loader, n)`` wraps the batches, ``step`` is called once per
    step, ``end_epoch`` once per epoch.

    Args:
        device: where the model lives ("cpu", "cuda:0"): on a GPU the step times come from CUDA events,
            so timing never makes the host wait for the GPU.
        progress: show a progress bar per epoch.
        loss_limit: an epoch whose mean training loss is above this has diverged (``check_losses``).

    ``history`` holds one record per finished epoch; ``stopwatch`` the step, epoch and evaluation times.
    """

    def __init__(self, device: str | None = "cpu", progress: bool = True, loss_limit: float | None = None) -> None:
        self.device, self.progress, self.loss_limit = device, progress, loss_limit
        self.stopwatch = Stopwatch(device)
        self.history: list[dict[str, Any]] = []
        self._bar: EpochProgress | None = None

    def epoch(self, loader: Any, epoch: int) -> Iterator[Any]:
        """The batches of ``loader``, marking the start of each step; starts the epoch's clock and bar."""
        self._epoch = epoch
        self._bar = bar = EpochProgress(len(loader), epoch, self.device, self.progress)
        self._epoch_start = self.stopwatch.now()
        try:
            for batch in loader:
                self._step_start = self.stopwatch.mark()
                yield batch
        finally:
            bar.bar.close()  # also when the loop is left early: no bar is left on the screen

    def _current_bar(self) -> EpochProgress:
        if self._bar is None:
            raise RuntimeError(
                "Monitor: step() and end_epoch() come after an epoch started: loop over "
                "monitor.epoch(loader, epoch) first"
            )
        return self._bar

    def step(self, loss: Tensor, logits: Tensor, labels: Tensor) -> None:
        """After a step's update: its duration, and its loss and correct count kept on the device for the epoch."""
        self.record_step(loss.data, correct_count(logits, labels), len(labels))

    def record_step(self, loss: Array, correct: Array, batch_size: int) -> None:
        """``step`` for a loop that counts its correct predictions itself: the step's duration, and its mean loss
        and correct count (device scalars, which must stay as they are until the epoch ends) kept for the epoch."""
        bar = self._current_bar()
        self.stopwatch.interval("step", self._step_start, self.stopwatch.mark())
        bar.update(loss, correct, batch_size)

    def end_epoch(self, evaluate: Callable[[], Mapping[str, float]] | None = None) -> dict[str, Any]:
        """The epoch's record: train loss, accuracy and seconds, and ``evaluate()``'s loss and accuracy as test_.

        ``evaluate`` returns ``{"loss", "acc"}`` (``train.evaluate`` does). The record is checked (a NaN or
        infinite loss raises TrainingDiverged) and appended to ``history``.
        """
        bar = self._current_bar()
        seconds = self.stopwatch.end_epoch(self._epoch_start)
        loss_sum, correct, count = bar.finish()
        record = {
            "epoch": self._epoch,
            "train_loss": loss_sum / count,
            "train_acc": correct / count,
            "seconds": seconds,
        }
        if evaluate is not None:
            eval_start = self.stopwatch.now()
            test = evaluate()
            eval_seconds = self.stopwatch.now() - eval_start
            self.stopwatch.add("eval", eval_seconds)
            record.update(test_loss=test["loss"], test_acc=test["acc"], eval_seconds=eval_seconds)
        check_losses(record, self.loss_limit)
        self.history.append(record)
        return record


class Stopwatch:
    """Durations of named phases ("step", "epoch", "eval"), for P50/P90 summaries.

    ``mark()`` is a point in time: a clock read on the CPU; on a GPU a CUDA event recorded in the
    stream, so marking needs no synchronisation. ``interval(name, start, end)`` records a phase;
    GPU intervals are read in ``flush()``, which waits for the GPU once (call it once per epoch).
    ``now()`` synchronises and reads the host clock, for wall times such as a whole epoch.
    """

    def __init__(self, device: str | None = "cpu") -> None:
        self.device = device
        self.on_gpu = backend.parse_device(device) != "cpu"
        self.durations: dict[str, list[float]] = {}
        self.pending: list[tuple[str, Any, Any]] = []  # GPU intervals not read yet

    def mark(self) -> Any:
        """A point in time: the host clock on the CPU, a recorded CUDA event on a GPU (no wait)."""
        if self.on_gpu:
            event = backend.cupy.cuda.Event()
            event.record()
            return event
        return time.perf_counter()

    def interval(self, name: str, start: Any, end: Any) -> None:
        """Record phase ``name`` from mark ``start`` to mark ``end`` (read in ``flush()`` on a GPU)."""
        if self.on_gpu:
            self.pending.append((name, start, end))
        else:
            self.add(name, end - start)

    def end_epoch(self, epoch_start: float) -> float:
        """Record and return the epoch's wall time since ``epoch_start`` (a ``now()``), and read the GPU's marks."""
        seconds = self.now() - epoch_start
        self.add("epoch", seconds)
        self.flush()
        return seconds

    def flush(self) -> None:
        """Read the pending GPU intervals (one wait for the last event)."""
        if self.pending:
            self.pending[-1][2].synchronize()
            for name, start, end in self.pending:
                self.add(name, backend.cupy.cuda.get_elapsed_time(start, end) / 1000.0)
            self.pending.clear()

    def now(self) -> float:
        """Wait for the device, then read the host clock: for wall times such as a whole epoch."""
        backend.synchronize(self.device)
        return time.perf_counter()

    def add(self, name: str, seconds: float) -> None:
        """Record ``seconds`` for phase ``name``."""
        self.durations.setdefault(name, []).append(seconds)

    def summary(self) -> dict[str, dict[str, float]]:
        """{phase: {"p50", "p90", "count"}} in seconds."""
        self.flush()
        return {
            name: {
                "p50": float(numpy.percentile(values, 50)),
                "p90": float(numpy.percentile(values, 90)),
                "count": len(values),
            }
            for name, values in self.durations.items()
        }


def correct_count(logits: Tensor, labels: Tensor) -> Array:
    """Number of rows whose arg-max equals the label, as a device scalar (no host sync)."""
    return (logits.data.argmax(axis=1) == labels.data).sum()


class EpochProgress:
    """A tqdm bar over one epoch's batches, showing running loss, accuracy and examples/s.

    ``update`` is called every batch with the batch's mean loss and correct count as device scalars.
    It only keeps them (no GPU work, no sync); every ``FOLD_EVERY`` steps the kept values are summed
    into one partial sum each, on the device. The bar reads the sums at most every
    ``refresh_seconds`` and at the end. The folding happens at fixed steps, never when the bar
    reads, so the epoch's numbers come out bit for bit the same however often (and whenever) the
    bar read them. On the CPU, where reading costs nothing, every step's loss is checked for NaN/inf.
    """

    FOLD_EVERY = 64

    def __init__(
        self, total: int, epoch: int, device: str | None = "cpu", enabled: bool = True, refresh_seconds: float = 0.5
    ) -> None:
        self.bar = tqdm(total=total, desc=f"epoch {epoch}", unit="batch", disable=not enabled, leave=False)
        self.epoch, self.refresh_seconds = epoch, refresh_seconds
        self.check_every_step = backend.parse_device(device) == "cpu"
        # the steps since the last fold
        self.losses: list[Array] = []
        self.weights: list[int] = []
        self.corrects: list[Array] = []
        self.partials: list[tuple[Any, Any]] = []  # (loss sum, correct count) of each fold, in order
        self.count = self.step = 0
        self.started = self.last_read = time.perf_counter()

    def update(self, loss: Array, correct: Array, batch_size: int) -> None:
        """Keep one step's loss and correct count (device values; no host read here) and move the bar."""
        self.losses.append(loss)
        self.weights.append(batch_size)
        self.corrects.append(correct)
        self.count += batch_size
        self.step += 1
        self.bar.update(1)
        if self.check_every_step:
            self.check_finite(float(loss))
        if len(self.losses) == self.FOLD_EVERY:
            self.partials.append(self._kept_sums())
            self.losses, self.weights, self.corrects = [], [], []
        now = time.perf_counter()
        if now - self.last_read >= self.refresh_seconds:
            self.last_read = now
            loss_sum, correct = self.read()
            self.bar.set_postfix(
                loss=f"{loss_sum / self.count:.3f}",
                acc=f"{correct / self.count:.3f}",
                ex_per_s=f"{self.count / (now - self.started):.0f}",
                refresh=False,
            )

    def _kept_sums(self):
        """(sum of loss x batch size, sum of correct) of the steps kept since the last fold: device scalars."""
        xp = backend.get_array_module(self.losses[0])
        losses = xp.stack(self.losses)
        return (losses * xp.asarray(self.weights, dtype=losses.dtype)).sum(), xp.stack(self.corrects).sum()

    def read(self) -> tuple[float, int]:
        """(loss sum, correct count) so far, read on the host; changes nothing, so reading never alters a result."""
        sums = self.partials + ([self._kept_sums()] if self.losses else [])
        if not sums:
            return 0.0, 0
        loss_sum, correct = sums[0]
        for partial_loss, partial_correct in sums[1:]:
            loss_sum, correct = loss_sum + partial_loss, correct + partial_correct
        loss_sum = float(loss_sum)
        self.check_finite(loss_sum)
        return loss_sum, int(correct)

    def check_finite(self, value: float) -> None:
        """Raise TrainingDiverged if the loss read is NaN or infinite."""
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"the loss became {value} in epoch {self.epoch} by step {self.step}; try a smaller learning rate"
            )

    def finish(self) -> tuple[float, int, int]:
        """Finish the bar; return (loss sum, correct count, examples) of the updates it got (one host read)."""
        self.bar.close()
        loss_sum, correct = self.read()
        return loss_sum, correct, self.count
