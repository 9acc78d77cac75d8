"""What ``Trainer`` runs by default: the planned step over each loader's batches; on a GPU, recorded once as a
CUDA graph and replayed.

``PlannedTraining`` keeps, per loader and kind (training or evaluation), a ``data.BatchCursor`` and the planned
steps for its batch sizes (the full batches' and a smaller last one's), made on the loader's first pass. On a
GPU the full batches' step is recorded (``graphs.RecordedStep``) and checked, before its first use, against
two steps of the eager ops; the smaller last batch runs the planned step without a graph.

A plan holds fixed what it was made with besides the values in its arrays: on a GPU the arrays themselves
(``load_state_dict`` and ``nn.init`` fill them in place, but ``.data = ...`` or ``.to()`` give a parameter a
new one), the layers' settings, the optimizer's settings but the learning rate, the dropout stream
(``manual_seed`` makes a new one) and the loader's data. Each pass checks them and plans again when one has
changed. What cannot be planned raises ``PlanProblem`` before any step runs, so ``Trainer`` can say why in one
line and run the eager ops instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import backend
from ..nn import functional as F
from ..random import dropout_stream
from .graphs import CHECKS, GraphMismatch, RecordedStep
from .plan import DEFAULT_PRODUCTS, PlannedEval, PlannedStep, leaf_modules, loader_problem, plan_problem

if TYPE_CHECKING:
    from ..data.loader import DataLoader
    from ..monitor import Monitor
    from ..nn.module import Module
    from ..optim import Optimizer

AGREEMENT = {"rtol": 1e-4, "atol": 1e-6}  # a GPU's planned step against its eager ops (other matrix-product kernels)


class PlanProblem(RuntimeError):
    """The step cannot be planned or recorded here (the message says why); nothing has changed."""


@dataclass
class Pass:
    """One loader's planned steps of one kind: the cursor, the step for full batches (with its graph on a GPU)
    and the step for a smaller last batch, and what they were made with. ``PlannedTraining.start`` begins a
    pass over the loader; then ``run(index)`` for each batch number in turn, best inside ``on_stream()``, and
    ``end()``."""

    cursor: Any
    full: Any
    tail: Any
    recorded: RecordedStep | None
    made_with: tuple[list[Any], list[Any]]

    def steps(self) -> list[Any]:
        """The planned steps: the full batches' and the smaller last batch's, where there are such batches."""
        return [step for step in (self.full, self.tail) if step is not None]

    @contextlib.contextmanager
    def on_stream(self) -> Iterator[None]:
        """On a GPU, the graph's stream and pool as the current ones (after the current stream's queued work),
        so that the caller's work (the smaller last batch, a monitor's marks) queues behind the replays."""
        if self.recorded is None:
            yield
            return
        self.recorded.after_current()
        with self.recorded.on_stream():
            yield

    def begin(self, order: Any, training: bool) -> None:
        """Put the cursor at the start of the epoch whose order is ``order``; training steps log from slot 0
        and read the optimizer's current learning rates."""
        with self.on_stream():
            self.cursor.start_epoch(order)
            if training:
                for step in self.steps():
                    step.start_epoch()
                    step.set_lr()

    def run(self, index: int) -> tuple[Any, int]:
        """Batch ``index`` of the pass; (the step that ran it, the slot it logged into when training)."""
        if index < self.cursor.full_batches:
            if self.recorded is not None:
                self.recorded.replay()
            else:
                self.full.step()
            return self.full, index
        self.tail.step()
        return self.tail, 0

    def end(self) -> None:
        """On a GPU, make the current stream wait for the replays (what reads the logs and sums comes next)."""
        if self.recorded is not None:
            self.recorded.before_current()


class PlannedTraining:
    """Training epochs and evaluations of ``model`` by the planned step (see the module's docstring).

    ``record``: record the full batches' step as a CUDA graph (default: on a GPU; never on the CPU). A loader
    with fewer than two full batches (the check replays two) runs the planned step without a graph.
    ``products``: on a GPU, whose matrix products the step makes, "tile" (this project's kernel) or "cublas"
    (``fast.cublas``); see ``Plan.matmul``.
    """

    def __init__(
        self,
        model: Module,
        optimizer: Optimizer,
        loss_fn: Callable[..., Any] = F.cross_entropy,
        record: bool | None = None,
        products: str = DEFAULT_PRODUCTS,
    ) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.products = products
        parameter = next(iter(model.parameters()), None)
        self.device = parameter.device if parameter is not None else "cpu"
        self.record = self.device != "cpu" if record is None else record
        self.passes: dict[tuple[Any, bool], Pass] = {}

    def describe(self) -> str:
        """What runs: "planned", with ", recorded as a CUDA graph" on a GPU."""
        return "planned, recorded as a CUDA graph" if self.record else "planned"

    def train_epoch(self, loader: DataLoader, monitor: Monitor, epoch: int) -> None:
        """One epoch, timed and shown by ``monitor`` (one ``record_step`` per batch)."""
        planned = self.start(loader, training=True)
        with planned.on_stream():  # on a GPU the monitor's marks then time the replays
            for index in monitor.epoch(range(len(loader)), epoch):
                step, slot = planned.run(index)
                monitor.record_step(step.losses[slot], step.corrects[slot], step.batch_size)
        planned.end()

    def evaluate(self, loader: DataLoader) -> dict[str, float]:
        """Mean loss and accuracy over ``loader``, dropout off, as ``train.evaluate`` gives them."""
        planned = self.start(loader, training=False)
        with planned.on_stream():
            for index in range(len(loader)):
                planned.run(index)
        planned.end()
        loss_sum, correct = planned.steps()[0].take_sums()  # the steps share their sums
        return {"loss": loss_sum / loader.num_examples, "acc": correct / loader.num_examples}

    def start(self, loader: DataLoader, training: bool = True) -> Pass:
        """A pass over ``loader`` in the order drawn for it now (``loader.epoch_order()``, as ``iter(loader)``
        draws), planning (and on a GPU recording) its steps first where there are none yet or they are stale.
        ``PlanProblem`` when the step cannot be planned (nothing has changed then)."""
        planned = self._pass(loader, training)
        planned.begin(loader.epoch_order(), training)
        return planned

    def _pass(self, loader: DataLoader, training: bool) -> Pass:
        problem = plan_problem(self.model, self.optimizer, self.loss_fn) or loader_problem(self.model, loader)
        if problem is not None:  # checked at every pass: a setting may have changed since the last
            raise PlanProblem(problem)
        made_with = self._made_with(loader)
        known = self.passes.get((loader, training))
        if known is None or not _same(known.made_with, made_with):
            self.passes.pop((loader, training), None)
            self.passes[loader, training] = self._plan(loader, training, made_with)
        return self.passes[loader, training]

    def _made_with(self, loader: DataLoader) -> tuple[list[Any], list[Any]]:
        """(the objects a plan holds, compared by identity; the settings it holds, compared by value)."""
        groups = self.optimizer.param_groups
        objects: list[Any] = [p.data for p in self.model.parameters()] + list(leaf_modules(self.model))
        objects += [p for group in groups for p in group["params"]]
        objects += [dropout_stream(self.device), loader.images, loader.labels]
        settings: list[Any] = [(type(m).__name__, getattr(m, "p", None)) for m in leaf_modules(self.model)]
        settings += [{k: v for k, v in group.items() if k not in ("params", "lr", "initial_lr")} for group in groups]
        return objects, settings

    def _plan(self, loader: DataLoader, training: bool, made_with: Any) -> Pass:
        from ..data.loader import BatchCursor

        cursor = BatchCursor(loader)
        size, full_batches = loader.batch_size, cursor.full_batches
        tail = 0 if loader.drop_last else len(loader.labels) % size

        def planned(batch_size, steps):
            if training:
                return PlannedStep(self.model, self.optimizer, cursor, batch_size, steps, self.products)
            return PlannedEval(self.model, cursor, batch_size, self.products)

        full = planned(size, full_batches) if full_batches else None
        last = planned(tail, 1) if tail else None
        if not training and full is not None and last is not None:  # one pair of sums, in train.evaluate's order
            last.loss_sum, last.correct = full.loss_sum, full.correct
        recorded = None
        if self.record and full is not None and full_batches >= CHECKS:
            try:
                recorded = RecordedStep(full.step, full.state)
                if training:
                    self._check_against_eager(loader, full, recorded)
            except PlanProblem:
                raise
            except GraphMismatch as mismatch:
                raise PlanProblem(str(mismatch)) from mismatch
            except Exception as error:  # CuPy's refusals and CUDA's errors: this step cannot be recorded here
                raise PlanProblem(f"recording the planned step failed ({type(error).__name__}: {error})") from error
        return Pass(cursor, full, last, recorded, made_with)

    def _check_against_eager(self, loader: DataLoader, full: PlannedStep, recorded: RecordedStep) -> None:
        """Two replays against two steps of the eager ops from the same state, on the loader's first batches;
        ``PlanProblem`` when they disagree by more than the matrix-product kernels can (``AGREEMENT``).
        The state is restored either way."""
        xp = backend.module_for(self.device)
        parameters = list(self.model.parameters())
        stream = dropout_stream(self.device)
        saved = [p.data.copy() for p in parameters], stream.counter

        def restore():
            for p, data in zip(parameters, saved[0]):
                p.data[...] = data
            stream.set_counter(saved[1])

        try:
            self.model.train()
            for index in range(CHECKS):
                x, y = loader.batch(None, index)
                loss = self.loss_fn(self.model(x), y)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
            self.optimizer.zero_grad()
            eager = [p.data.copy() for p in parameters]
            restore()
            recorded.after_current()
            with recorded.on_stream():
                full.cursor.start_epoch(None)
                full.start_epoch()
                full.set_lr()
                for _ in range(CHECKS):
                    recorded.replay()
            recorded.stream.synchronize()
            for p, expected in zip(parameters, eager):
                if not bool(xp.allclose(p.data, expected, **AGREEMENT)):
                    worst = float(xp.abs(p.data - expected).max())
                    raise PlanProblem(
                        f"the planned step disagrees with the eager ops on this GPU (a parameter of shape "
                        f"{tuple(p.shape)} differs by up to {worst:.3g} after {CHECKS} steps)"
                    )
        finally:
            restore()


def _same(made_with: tuple[list[Any], list[Any]], now: tuple[list[Any], list[Any]]) -> bool:
    (objects, settings), (objects_now, settings_now) = made_with, now
    same_objects = len(objects) == len(objects_now) and all(a is b for a, b in zip(objects, objects_now))
    return same_objects and settings == settings_now
