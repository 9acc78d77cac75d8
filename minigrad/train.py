"""Training and evaluation as the chapter writes them: ``Trainer`` and ``evaluate``.

``Trainer.train_epoch`` is the chapter's loop (forward, loss, backward, update); the timings,
progress bar and each epoch's record come from a ``monitor.Monitor``, one call per step. On a GPU the
same step can instead be captured once as a CUDA graph and replayed (``capture.py``).
"""
import sys

from . import backend
from .autograd import no_grad
from .monitor import Monitor, correct_count
from .nn import functional as F


def evaluate(model, loader, loss_fn=F.cross_entropy):
    """Mean loss and accuracy of ``model`` over ``loader``, in eval mode (dropout off), with no graph.

    The model's previous mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        return evaluate_predictions(model, loader, loss_fn)
    finally:
        model.train(was_training)


def evaluate_predictions(predict, loader, loss_fn=F.cross_entropy):
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

    ``capture``: with True, the step of a model on a GPU is captured as a CUDA graph and replayed
    (``capture.CapturedStep``; the last, smaller batch of an epoch runs eagerly); when that cannot be done
    the Trainer says why in one line and runs eagerly. False (the default for now, until a GPU run has
    checked the captured path) runs eagerly.
    """

    def __init__(self, model, optimizer, loss_fn=F.cross_entropy, progress=True, scheduler=None, capture=False):
        self.model, self.optimizer, self.loss_fn, self.scheduler = model, optimizer, loss_fn, scheduler
        parameter = next(iter(model.parameters()), None)
        self.monitor = Monitor(parameter.device if parameter is not None else "cpu", progress)
        self.capture = capture
        self.captured = None  # the CapturedStep once built; capture_off says why there is none
        self.last_batch_step = None  # the StaticStep of an epoch's smaller last batch, run eagerly
        self.capture_off = None if capture else "not asked for"

    @property
    def history(self):
        return self.monitor.history

    @history.setter
    def history(self, records):  # a resumed run starts from the epochs it had done
        self.monitor.history = list(records)

    @property
    def stopwatch(self):
        return self.monitor.stopwatch

    def train_epoch(self, loader, epoch):
        """One pass over ``loader``: the chapter's step for every batch (``monitor.end_epoch`` closes the epoch).

        Returns the (loss sum, correct, examples) of replayed steps for ``end_epoch(sums=...)``, or None.
        """
        if self.capture_off is None and self.captured is None:
            self._capture(loader)
        if self.captured is not None:
            return self._replay_epoch(loader, epoch)
        self.model.train()
        for x, y in self.monitor.epoch(loader, epoch):
            logits = self.model(x)
            loss = self.loss_fn(logits, y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.monitor.step(loss, logits, y)
        return None

    def _capture(self, loader):
        """Build the CapturedStep for the loader's full batches, or say in one line why the step runs eagerly."""
        from . import capture
        problem = capture.capture_problem(self.model, self.optimizer, self.loss_fn)
        if problem is None:
            problem = capture.labels_problem(self.model, loader)
        if problem is None:
            try:
                static = capture.StaticStep(self.model, self.optimizer, (loader.batch_size, *loader.images.shape[1:]),
                                            self.loss_fn)
                self.captured = capture.CapturedStep(static)
            except Exception as error:  # noqa: BLE001 - any failure to capture means: run eagerly, and say why
                problem = f"capturing failed ({type(error).__name__}: {error})"
        if problem is not None:
            self.capture_off = problem
            print(f"capture off: {problem}; the step runs eagerly", file=sys.stderr)

    def _replay_epoch(self, loader, epoch):
        """An epoch of replays (and an eager step for a smaller last batch); the sums for end_epoch."""
        from . import capture
        captured = self.captured
        captured.set_lr()
        loss_sum = correct = count = 0
        for x, y in self.monitor.epoch(loader, epoch):
            if len(y) == captured.static.batch_size:
                captured.load(x, y)
                captured.step()
            else:  # the last, smaller batch: the same static step, run eagerly on its own buffers
                captured.wait_for_replays(backend.current_stream())
                last = self.last_batch_step
                if last is None or tuple(last.x.shape) != tuple(x.shape):
                    last = self.last_batch_step = capture.StaticStep(self.model, self.optimizer, tuple(x.shape),
                                                                     self.loss_fn)
                last.set_lr()
                last.load(x, y)
                last.step()
                partial = last.take_sums()
                loss_sum, correct = loss_sum + partial[0], correct + partial[1]
            count += len(y)
            self.monitor.replayed_step()
        replayed = captured.take_sums()
        return loss_sum + replayed[0], correct + replayed[1], count

    def fit(self, train_loader, test_loader, epochs, on_epoch_end=None):
        for epoch in range(len(self.history) + 1, len(self.history) + epochs + 1):
            sums = self.train_epoch(train_loader, epoch)
            record = self.monitor.end_epoch(lambda: evaluate(self.model, test_loader, self.loss_fn), sums)
            if self.scheduler is not None:
                record["lr"] = self.optimizer.param_groups[0]["lr"]
                self.scheduler.step()
            if on_epoch_end is not None:
                on_epoch_end(record)
        return self.history
