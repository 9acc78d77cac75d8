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
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy

from .. import backend
from ..nn import functional as F
from ..optim import SGD
from ..random import dropout_stream, lent_dropout_stream
from .graphs import CHECKS, GraphMismatch, RecordedStep
from .plan import DEFAULT_PRODUCTS, PlannedEval, PlannedStep, leaf_modules, loader_problem, plan_problem

if TYPE_CHECKING:
    from ..data.loader import DataLoader
    from ..monitor import Monitor
    from ..nn.module import Module
    from ..optim import Optimizer

# a GPU's planned step against the eager ops (other matrix-product kernels; on the CPU, other sums too)
AGREEMENT: dict[str, Any] = {"rtol": 1e-4, "atol": 1e-6}


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
    ``products``: on a GPU, whose matrix products the step makes, "tile" (this project's kernel, or another of
    its shapes by name, or a shape for each kind and size of product: ``plan.tile_shapes``) or "cublas"
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
        self.checked_against: str | None = None  # what the recorded step was last checked against (on a GPU)

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
        ``PlanProblem`` when they disagree by more than two matrix-product kernels can (``AGREEMENT``).

        The eager steps are first those of a copy of the model on the CPU (``cpu_twin``), its dropout drawing
        the GPU's masks (a replica of the GPU's stream): no GPU kernel to compile, which on a first run is most
        of what the GPU's eager ops cost. Only where the CPU's steps disagree with the replays, or cannot run,
        do the GPU's own eager ops decide. ``checked_against`` says which did. The state is restored either way.
        """
        parameters = list(self.model.parameters())
        stream = dropout_stream(self.device)
        saved = [p.data.copy() for p in parameters], stream.counter

        def restore():
            for p, data in zip(parameters, saved[0]):
                p.data[...] = data
            stream.set_counter(saved[1])

        try:
            try:
                on_cpu: list[Any] | str = self._steps_on_cpu(loader)
            except Exception as error:  # noqa: BLE001 - the GPU's eager ops decide instead, as they always could
                on_cpu = f"the CPU's steps failed ({type(error).__name__}: {error})"
            recorded.after_current()
            with recorded.on_stream():
                full.cursor.start_epoch(None)
                full.start_epoch()
                full.set_lr()
                for _ in range(CHECKS):
                    recorded.replay()
            recorded.stream.synchronize()
            replayed = [backend.to_numpy(p.data).copy() for p in parameters]  # copies, from the CPU too
            restore()
            why = on_cpu if isinstance(on_cpu, str) else disagreement(parameters, replayed, on_cpu)
            if why is None:
                self.checked_against = "the CPU's eager ops"
                return
            self.checked_against = f"the GPU's eager ops ({why})"
            on_gpu = self._eager_steps(self.model, self.optimizer, loader, None)
            why = disagreement(parameters, replayed, [backend.to_numpy(data) for data in on_gpu])
            if why is not None:
                raise PlanProblem(f"the planned step disagrees with the eager ops on this GPU ({why})")
        finally:
            restore()

    def _steps_on_cpu(self, loader: DataLoader) -> list[Any]:
        """The eager steps of ``cpu_twin``'s copy of the model on the CPU, its dropout drawing what the model's
        device's stream would draw next."""
        twin, twin_optimizer = cpu_twin(self.model, self.optimizer)
        with lent_dropout_stream("cpu", dropout_stream(self.device).replica("cpu")):
            return self._eager_steps(twin, twin_optimizer, loader, "cpu")

    def _eager_steps(self, model: Module, optimizer: Optimizer, loader: DataLoader, device: str | None) -> list[Any]:
        """CHECKS training steps of the eager ops of ``model`` and ``optimizer`` on the loader's first batches,
        taken to ``device`` (None: where they are); the parameters' values after them."""
        model.train()
        for index in range(CHECKS):
            x, y = loader.batch(None, index, device)
            loss = self.loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        optimizer.zero_grad()
        return [p.data.copy() for p in model.parameters()]


def cpu_twin(model: Module, optimizer: Optimizer) -> tuple[Module, SGD]:
    """A copy of a planned ``model`` (whose layers plan_problem has checked) and of its SGD on the CPU: the same
    layers, values and settings, and no gradients."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p.data)] = backend.to_numpy(p.data).copy()  # a copy of its own, from the CPU too
        if p.grad is not None:
            memo[id(p.grad)] = None
    twin = copy.deepcopy(model, memo)
    twin_of = {id(p): q for p, q in zip(model.parameters(), twin.parameters())}
    groups = [
        {
            **{k: v for k, v in group.items() if k in optimizer.defaults},
            "params": [twin_of[id(p)] for p in group["params"]],
        }
        for group in optimizer.param_groups
    ]
    return twin, SGD(groups, **optimizer.defaults)


def disagreement(parameters: list[Any], values: list[Any], expected: list[Any]) -> str | None:
    """None when each parameter's ``values`` (NumPy arrays) agree with ``expected`` within ``AGREEMENT``; else
    which parameter differs, and by how much."""
    for p, value, wanted in zip(parameters, values, expected):
        if not numpy.allclose(value, wanted, **AGREEMENT):
            worst = float(numpy.abs(value - wanted).max())
            return f"a parameter of shape {tuple(p.shape)} differs by up to {worst:.3g} after {CHECKS} steps"
    return None


def _same(made_with: tuple[list[Any], list[Any]], now: tuple[list[Any], list[Any]]) -> bool:
    (objects, settings), (objects_now, settings_now) = made_with, now
    same_objects = len(objects) == len(objects_now) and all(a is b for a, b in zip(objects, objects_now))
    return same_objects and settings == settings_now
