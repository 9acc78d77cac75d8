"""Training and evaluation as the chapter writes them: ``Trainer`` and ``evaluate``.

``Trainer.train_epoch`` is the chapter's loop (forward, loss, backward, update); the timings,
progress bar and each epoch's record come from a ``monitor.Monitor``, one call per step.
"""
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
    """

    def __init__(self, model, optimizer, loss_fn=F.cross_entropy, progress=True, scheduler=None):
        self.model, self.optimizer, self.loss_fn, self.scheduler = model, optimizer, loss_fn, scheduler
        parameter = next(iter(model.parameters()), None)
        self.monitor = Monitor(parameter.device if parameter is not None else "cpu", progress)

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
        """One pass over ``loader``: the chapter's step for every batch (``monitor.end_epoch`` closes the epoch)."""
        self.model.train()
        for x, y in self.monitor.epoch(loader, epoch):
            logits = self.model(x)
            loss = self.loss_fn(logits, y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.monitor.step(loss, logits, y)

    def fit(self, train_loader, test_loader, epochs, on_epoch_end=None):
        for epoch in range(len(self.history) + 1, len(self.history) + epochs + 1):
            self.train_epoch(train_loader, epoch)
            record = self.monitor.end_epoch(lambda: evaluate(self.model, test_loader, self.loss_fn))
            if self.scheduler is not None:
                record["lr"] = self.optimizer.param_groups[0]["lr"]
                self.scheduler.step()
            if on_epoch_end is not None:
                on_epoch_end(record)
        return self.history
