"""Training and evaluation steps a GPU records once as CUDA graphs and replays: static buffers, in-place
updates, no host reads.

``StaticStep`` is the chapter's step written so that it can be captured. It begins by gathering its batch
from the dataset that the loader keeps on the device (``BatchGather``: the epoch's order and the position in
it live on the device too), then forward, loss, backward and SGD. The learning rates are 1-element arrays
read when the update runs (``set_lr`` writes them between steps, so a schedule needs no new capture), the loss
and the correct count are summed into device accumulators, and dropout's counter lives on the device
(``random.PhiloxStream``). ``StaticEval`` is evaluation's step: gather, forward with dropout off, sums.
Nothing in their ``step()`` reads a value on the host, so on a GPU ``CapturedStep`` records one once with
CuPy's stream capture and then replays it with one launch per batch. On the CPU ``step()`` simply runs: the
same code, tested there against ``Trainer``'s eager step and ``evaluate``, bit for bit.

``CapturedTraining`` is what ``Trainer(capture=True)`` runs: for each loader a captured step for its full
batches and an eager one for a smaller last batch.

Capture has rules (those of CuPy's ``cupy.cuda.Graph`` and of CUDA stream capture): a private memory pool kept
as long as the graph, warm-up on the capture stream, no cuBLAS (CuPy refuses it during capture, so ``ops.Linear``
multiplies with ``backend.matmul``, which uses ``backend.capturable_gemm`` while ``backend.capturing()`` is
on), no host reads (value checks are off inside the step: ``loader_problem`` checks the labels of the whole
dataset once instead). A model or optimizer outside what this handles is named by ``capture_problem``, and
``Trainer`` then runs eagerly and says why. ``CapturedStep`` checks two replays against two eager steps from
the same state and refuses a graph that disagrees (``CaptureMismatch``).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy

from . import autograd, backend
from ._tensor import Tensor
from .backend import Array, CudaKernel
from .data.loader import PIXEL_SCALE, scaled_pixels
from .monitor import correct_count
from .nn import Dropout, Flatten, Linear, ReLU, Sequential
from .nn import functional as F
from .optim import SGD
from .random import dropout_stream

if TYPE_CHECKING:
    from .optim import Optimizer

if TYPE_CHECKING:
    from .data.loader import DataLoader
    from .monitor import Monitor
    from .nn.module import Module

CAPTURABLE_LAYERS = (Linear, ReLU, Dropout, Flatten, Sequential)
CHECKED_STEPS = 2  # steps run eagerly and replayed, then compared, before a graph is used


def capture_problem(model: Module, optimizer: Any, loss_fn: Callable[..., Any] = F.cross_entropy) -> str | None:
    """Why the training step of ``model`` with ``optimizer`` cannot be captured, or None when it can."""
    parameters = list(model.parameters())
    if not parameters:
        return "the model has no parameters"
    if loss_fn is not F.cross_entropy:
        return f"the loss is {getattr(loss_fn, '__name__', loss_fn)!r}; capture handles F.cross_entropy"
    if type(optimizer) is not SGD:
        return f"the optimizer is {type(optimizer).__name__}; capture handles SGD"
    if any(group["momentum"] for group in optimizer.param_groups):
        return "SGD with momentum keeps buffers that capture does not handle yet"
    for module in model.modules():
        if type(module) not in CAPTURABLE_LAYERS:  # exactly these: a subclass may do anything in its forward
            return (
                f"the model holds a {type(module).__name__}, which capture does not handle (it handles "
                f"{', '.join(cls.__name__ for cls in CAPTURABLE_LAYERS)})"
            )
        if module._forward_hooks:
            return "the model has forward hooks: they run Python at every step, which a replayed graph would skip"
    if any(p.dtype != numpy.float32 for p in parameters):
        return "capture handles float32 parameters (its matrix-product kernel is float32)"
    if parameters[0].device == "cpu":
        return "capture needs a model on a GPU"
    if not hasattr(backend.cupy.cuda, "Graph"):
        return "capture needs CuPy 11 or newer (cupy.cuda.Graph)"
    return None


def loader_problem(model: Module, loader: DataLoader) -> str | None:
    """Why the loader's batches cannot go through a captured step, or None. A captured step reads no values,
    so the labels are checked here once, for the whole dataset, against the model's number of outputs."""
    if loader.images.dtype != numpy.uint8:
        return f"the loader's images are {loader.images.dtype}; the captured gather scales uint8 pixels"
    classes = [module for module in model.modules() if isinstance(module, Linear)][-1].out_features
    low, high = int(loader.labels.min()), int(loader.labels.max())
    if low < 0 or high >= classes:
        return f"the labels run from {low} to {high}, outside [0, {classes - 1}]"
    if len(loader.labels) // loader.batch_size < CHECKED_STEPS:
        return (
            f"the loader has fewer than {CHECKED_STEPS} full batches of {loader.batch_size} (capturing runs "
            f"{CHECKED_STEPS} to check the graph)"
        )
    return None


class BatchGather:
    """The step's first act: gather its batch from the loader's dataset, which lives on the device, by an order
    and a position that live there too, so a replayed graph takes the next batch by itself.

    ``start_epoch(order)`` (between steps) writes the epoch's order (``DataLoader.epoch_order()``; None for
    0, 1, ..., N - 1) and sets the position to 0. ``gather(x, y)`` (inside the step) writes the examples
    ``order[position : position + B]`` into the buffers, pixels as ``DataLoader.batch`` makes them, and moves
    the position on by B. An epoch has ``full_batches`` such gathers; a smaller last batch is the loader's.
    """

    def __init__(self, loader: DataLoader) -> None:
        xp = backend.get_array_module(loader.images)
        self.images = loader.images.reshape(len(loader.images), -1)  # uint8 (N, features), resident
        self.pixels = self.images.reshape(-1)  # the same, flat: the kernel indexes it by one number
        self.labels = loader.labels
        self.full_batches = len(self.labels) // loader.batch_size
        with backend.on_device(loader.device):
            self.in_turn = xp.arange(len(self.labels), dtype=xp.int64)
            self.order = self.in_turn.copy()
            self.position = xp.zeros(1, dtype=xp.int64)  # 1-D: a kernel reads position[0]

    def start_epoch(self, order: Array | None = None) -> None:
        """Write the epoch's batch order (None: the examples in turn) and put the position back at 0."""
        self.order[...] = self.in_turn if order is None else order
        self.position.fill(0)

    def gather(self, x: Array, y: Array) -> None:
        """Fill ``x`` (pixels scaled to [0, 1]) and ``y`` with the next batch in the order, and advance the position."""
        if backend.get_array_module(x) is backend.cupy:
            self.pixels_gpu(self.pixels, self.order, self.position, numpy.int64(self.images.shape[1]), PIXEL_SCALE, x)
            self.labels_gpu(self.labels, self.order, self.position, y)
            self.advance_gpu(numpy.int64(len(y)), self.position, size=1)
            return
        start = int(self.position[0])
        rows = self.order[start : start + len(y)]
        scaled_pixels(self.images[rows], out=x.reshape(len(y), -1))
        y[...] = self.labels[rows]
        self.position += len(y)

    # The same three acts on a GPU. x is (B, features) in C order: element i is row i / features, column
    # i % features.
    pixels_gpu = CudaKernel(
        "raw uint8 pixels, raw int64 order, raw int64 position, int64 features, float32 scale",
        "float32 x",
        "x = (float)pixels[order[position[0] + i / features] * features + i % features] * scale",
        "minigrad_gather_pixels",
    )
    labels_gpu = CudaKernel(
        "raw int64 labels, raw int64 order, raw int64 position",
        "int64 y",
        "y = labels[order[position[0] + i]]",
        "minigrad_gather_labels",
    )
    advance_gpu = CudaKernel("int64 count", "raw int64 position", "position[0] += count", "minigrad_advance_position")

    def state(self) -> dict[str, Array]:
        """The device arrays a step changes, by name, for the replay-against-eager check."""
        return {"the batch position": self.position}


class StaticBuffers:
    """What both static steps share: the batch buffers ``x`` and ``y`` (filled by ``source.gather`` at the start of
    each step when there is a source, by ``load`` before it otherwise) and the device sums of the loss (each step's
    mean loss times its batch size) and of the correct count, which ``take_sums()`` reads and resets."""

    def __init__(
        self,
        model: Module,
        batch_shape: tuple[int, ...],
        loss_fn: Callable[..., Any] = F.cross_entropy,
        source: BatchGather | None = None,
    ) -> None:
        self.model, self.loss_fn, self.source = model, loss_fn, source
        parameter = next(iter(model.parameters()))
        self.device, self.dtype, self.batch_size = parameter.device, parameter.dtype, batch_shape[0]
        xp = backend.module_for(self.device)
        with backend.on_device(self.device):
            self.x = Tensor(xp.zeros(batch_shape, dtype=self.dtype))
            self.y = Tensor(xp.zeros(self.batch_size, dtype=xp.int64))
            self.loss_sum = xp.zeros((), dtype=self.dtype)
            self.correct = xp.zeros((), dtype=xp.int64)

    def load(self, x: Tensor, y: Tensor) -> None:
        """Copy a batch (Tensors of the buffers' shapes, on their device) into the static buffers."""
        self.x.data[...] = x.data
        self.y.data[...] = y.data

    def gather(self) -> None:
        """Fill the batch buffers from the source, when there is one (else ``load`` filled them)."""
        if self.source is not None:
            self.source.gather(self.x.data, self.y.data)

    def add_to_sums(self, loss: Tensor, logits: Tensor) -> None:
        """Add a step's loss (times its batch size) and correct count to the device sums."""
        self.loss_sum += loss.data * self.dtype.type(self.batch_size)
        self.correct += correct_count(logits, self.y)

    def take_sums(self) -> tuple[float, int]:
        """(loss sum, correct count) since the last call, read on the host (one wait for a GPU); then reset."""
        sums = float(self.loss_sum), int(self.correct)
        self.loss_sum.fill(0)
        self.correct.fill(0)
        return sums

    def state(self) -> dict[str, Array]:
        """The arrays a step changes, by name (``CapturedStep`` snapshots, restores and compares them)."""
        return {
            "the loss sum": self.loss_sum,
            "the correct count": self.correct,
            **(self.source.state() if self.source is not None else {}),
        }


class StaticStep(StaticBuffers):
    """The chapter's training step on static buffers: ``step()`` trains on the batch; ``set_lr()`` between steps
    writes the learning rates into the 1-element arrays the update reads."""

    def __init__(
        self,
        model: Module,
        optimizer: SGD,
        batch_shape: tuple[int, ...],
        loss_fn: Callable[..., Any] = F.cross_entropy,
        source: BatchGather | None = None,
    ) -> None:
        super().__init__(model, batch_shape, loss_fn, source)
        self.optimizer = optimizer
        xp = backend.module_for(self.device)
        with backend.on_device(self.device):
            self.lrs = [xp.zeros(1, dtype=self.dtype) for _ in optimizer.param_groups]  # a kernel reads lr[0]
        self.set_lr()

    def set_lr(self) -> None:
        """Write each parameter group's current learning rate into its device scalar."""
        for group, lr in zip(self.optimizer.param_groups, self.lrs):
            lr.fill(group["lr"])

    def step(self) -> None:
        """Gather (with a source), forward, loss, backward and SGD; the loss and correct count added to the sums."""
        self.gather()
        self.model.train()
        logits = self.model(self.x)
        loss = self.loss_fn(logits, self.y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step(lr_arrays=self.lrs)
        self.add_to_sums(loss, logits)

    def state(self) -> dict[str, Array]:
        """The arrays a training step changes, by name: weights, momentum, sums, the dropout counter."""
        parameters = {f"parameter {name} {tuple(p.shape)}": p.data for name, p in self.model.named_parameters()}
        counter = {} if self.device == "cpu" else {"the dropout counter": dropout_stream(self.device).counter_on_device}
        return {**parameters, **counter, **super().state()}


class StaticEval(StaticBuffers):
    """Evaluation's step on static buffers: the model's output on the batch (no graph, dropout off), its loss
    and correct count added to the sums."""

    def step(self) -> None:
        """One evaluation step: gather, forward in eval mode without a graph, add to the sums."""
        self.gather()
        was_training = self.model.training
        self.model.eval()
        try:
            with autograd.no_grad():
                logits = self.model(self.x)
                self.add_to_sums(self.loss_fn(logits, self.y), logits)
        finally:
            self.model.train(was_training)


class CaptureProblem(RuntimeError):
    """A step could not be captured (the message says why); nothing was changed, so it can run eagerly."""


class CaptureMismatch(CaptureProblem):
    """Replaying the captured graph disagreed with running the same steps eagerly from the same state."""


class CapturedStep:
    """A static step (``StaticStep`` or ``StaticEval``, with a ``BatchGather`` source) recorded as a CUDA graph
    on its own stream and memory pool, and replayed by ``step()``.

    Setting up: a warm-up on the capture stream (compiles every kernel, fills the pool); ``checks`` eager steps
    from a snapshot of the step's state as the reference; the capture; as many replays from the same snapshot,
    compared with the reference bit for bit (``CaptureMismatch`` when they differ: two steps also check that the
    batch position and the dropout counter move on); the snapshot restored. So capturing leaves the model, the
    dropout counter and the sums as they were.

    Work on other streams and the replays are ordered on the GPU by events, without the host waiting:
    ``start_epoch`` runs after what the current stream has queued, and ``wait_for_replays()`` makes the
    current stream wait for the replays launched so far.
    """

    def __init__(
        self, static: StaticStep | StaticEval, warmup: int = CHECKED_STEPS, checks: int = CHECKED_STEPS
    ) -> None:
        cupy = backend.cupy
        assert static.source is not None, "a captured step gathers its own batches: give its static step a source"
        self.static, self.source = static, static.source
        self.full_batches = static.source.full_batches
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()  # private: the graph's arrays live as long as the graph
        cupy.cuda.get_current_stream().synchronize()
        with self._on_capture_stream():
            snapshot = [array.copy() for array in static.state().values()]
            try:
                mismatch = self._warm_up_capture_and_check(snapshot, warmup, checks)
            finally:  # also when capturing fails: training goes on, eagerly, from the state it had
                self._restore(snapshot)
                self.stream.synchronize()
        if mismatch:
            raise CaptureMismatch(f"after {checks} steps the replayed graph and the eager steps differ in {mismatch}")

    def _warm_up_capture_and_check(self, snapshot, warmup, checks):
        """Warm up, run the eager reference, capture, replay; what differs from the reference ('' if nothing)."""
        static = self.static
        for _ in range(warmup):
            static.step()
        self._restore(snapshot)
        for _ in range(checks):
            static.step()
        reference = {name: array.copy() for name, array in static.state().items()}
        self._restore(snapshot)
        self.stream.synchronize()
        gc.collect()
        gc.disable()  # a graph collected during capture would call CUDA, which capture forbids
        try:
            self.stream.begin_capture()
            try:
                static.step()
            finally:
                self.graph = self.stream.end_capture()
        finally:
            gc.enable()
        self.graph.upload(self.stream)
        for _ in range(checks):
            self.graph.launch(self.stream)
        self.stream.synchronize()
        return ", ".join(name for name, array in static.state().items() if not bool((array == reference[name]).all()))

    @contextlib.contextmanager
    def _on_capture_stream(self):
        cupy = backend.cupy
        previous = autograd.set_value_checks(False)  # no host reads inside the step
        try:
            with self.stream, cupy.cuda.using_allocator(self.pool.malloc), backend.capturing():
                yield
        finally:
            autograd.set_value_checks(previous)

    def _restore(self, snapshot):
        for array, saved in zip(self.static.state().values(), snapshot):
            array[...] = saved

    def on_stream(self) -> Any:
        """The graph's stream as the current one (``with captured.on_stream():``), so that other work of the pass
        (a smaller last batch, the monitor's marks) queues behind the replays."""
        return self.stream

    def start_epoch(self, order: Array | None = None) -> None:
        """Before an epoch's replays: its order (see ``BatchGather``), after the current stream's queued work."""
        self.stream.wait_event(backend.current_stream().record())
        with self.stream:
            self.source.start_epoch(order)

    def wait_for_replays(self) -> None:
        """Make the current stream wait (on the GPU) until the replays launched so far have finished."""
        backend.current_stream().wait_event(self.stream.record())

    def set_lr(self) -> None:
        """Write the optimizer's current learning rates into the graph's device scalars, on its stream."""
        assert isinstance(self.static, StaticStep), "only a training step has learning rates"
        with self.stream:
            self.static.set_lr()

    def step(self) -> None:
        """Replay: one step on the next batch of the epoch (at most ``full_batches`` per ``start_epoch``)."""
        self.graph.launch(self.stream)

    def take_sums(self) -> tuple[float, int]:
        """(loss sum, correct count) since the last call, after the replays finish; then reset."""
        self.stream.synchronize()
        with self.stream:
            return self.static.take_sums()


class CapturedTraining:
    """What ``Trainer`` runs when capture is on: each loader's full batches by replaying a captured step (one for
    training, one for evaluation, made on a loader's first use), a smaller last batch eagerly.

    A graph holds fixed what it recorded besides the values in its arrays: the arrays themselves (it writes to
    the memory it recorded; ``load_state_dict`` and ``nn.init`` fill it in place, but ``.data = ...`` or ``.to()``
    give a parameter a new array), the layers'
    settings (a dropout probability), the optimizer's settings but the learning rate (which it reads at replay),
    the dropout stream (``manual_seed`` makes a new one) and the loader's data. Each pass checks them, and
    captures again when one has changed.
    """

    def __init__(self, model: Module, optimizer: Optimizer, loss_fn: Callable[..., Any] = F.cross_entropy) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        # (loader, training) -> (CapturedStep, eager step for a smaller last batch, dependencies)
        self.steps: dict[Any, Any] = {}

    def train_epoch(self, loader: DataLoader, monitor: Monitor, epoch: int) -> tuple[float, int, int]:
        """One epoch, timed and shown by ``monitor``; the (loss sum, correct, examples) for ``end_epoch(sums=)``."""
        replay = self.start(loader, training=True)
        with replay.captured.on_stream():  # the monitor's marks then time the replays
            for index in monitor.epoch(range(len(loader)), epoch):
                replay.step(index)
                monitor.replayed_step()
        return replay.finish()

    def evaluate(self, loader: DataLoader) -> dict[str, float]:
        """Mean loss and accuracy over ``loader``, dropout off, as ``train.evaluate`` gives them."""
        replay = self.start(loader, training=False)
        with replay.captured.on_stream():
            for index in range(len(loader)):
                replay.step(index)
        loss_sum, correct, count = replay.finish()
        return {"loss": loss_sum / count, "acc": correct / count}

    def start(self, loader: DataLoader, training: bool = True) -> Replay:
        """A ``Replay`` of one pass over ``loader``, capturing its step first where there is no graph for it yet
        or its graph is stale. ``CaptureProblem`` when the step cannot be captured (nothing has changed then)."""
        problem = capture_problem(self.model, self.optimizer, self.loss_fn) or loader_problem(self.model, loader)
        if problem is not None:  # checked at every pass: a setting may have changed since the last
            raise CaptureProblem(problem)
        dependencies = self.dependencies(loader)
        if (loader, training) in self.steps and not _same(self.steps[loader, training][2], dependencies):
            del self.steps[loader, training]
        if (loader, training) not in self.steps:
            self.steps[loader, training] = (*self._capture(loader, training), dependencies)
        captured, last, _ = self.steps[loader, training]
        if training:
            for step in (captured, last):
                if step is not None:
                    step.set_lr()
        return Replay(loader, captured, last)

    def dependencies(self, loader: DataLoader) -> tuple[list[Any], tuple[str, list[dict[str, Any]]]]:
        """(the objects a graph holds, compared by identity; the settings it holds, compared by value)."""
        device = next(iter(self.model.parameters())).device
        groups = self.optimizer.param_groups
        objects = [p.data for p in self.model.parameters()] + [p for group in groups for p in group["params"]]
        objects += [dropout_stream(device), loader.images, loader.labels]
        optimizer_settings = [{k: v for k, v in group.items() if k not in ("params", "lr")} for group in groups]
        return objects, (repr(self.model), optimizer_settings)

    def _capture(self, loader, training):
        def static(shape, source=None):
            if training:
                return StaticStep(self.model, self.optimizer, shape, self.loss_fn, source)
            return StaticEval(self.model, shape, self.loss_fn, source)

        shape = (loader.batch_size, *loader.images.shape[1:])
        tail = 0 if loader.drop_last else len(loader.labels) % loader.batch_size
        try:
            return CapturedStep(static(shape, BatchGather(loader))), static((tail, *shape[1:])) if tail else None
        except CaptureProblem:
            raise
        except Exception as error:  # CuPy's refusals and CUDA's errors: this step cannot be captured here
            raise CaptureProblem(f"capturing failed ({type(error).__name__}: {error})") from error


def _same(dependencies, now):
    (objects, settings), (objects_now, settings_now) = dependencies, now
    return (
        len(objects) == len(objects_now)
        and all(a is b for a, b in zip(objects, objects_now))
        and (settings == settings_now)
    )


class Replay:
    """One pass over a loader's batches in the order drawn for it: ``step(index)`` for each batch number in turn
    (a replay for a full batch, the eager static step for a smaller last one), then ``finish()``. The steps run
    best inside ``with replay.captured.on_stream():``; outside it, the last batch waits for the replays on the GPU.
    """

    def __init__(self, loader: DataLoader, captured: CapturedStep, last: Any) -> None:
        self.loader, self.captured, self.last = loader, captured, last
        self.order = loader.epoch_order()
        captured.start_epoch(self.order)
        self.loss_sum = self.correct = self.count = 0

    def step(self, index: int) -> None:
        """Run batch ``index``: a graph replay for a full batch, the eager static step for a smaller last one."""
        if index < self.captured.full_batches:
            self.captured.step()
            self.count += self.captured.static.batch_size
            return
        self.captured.wait_for_replays()  # the last batch: the same static step, run eagerly on its own buffers
        self.last.load(*self.loader.batch(self.order, index))
        self.last.step()
        loss_sum, correct = self.last.take_sums()
        self.loss_sum, self.correct = self.loss_sum + loss_sum, self.correct + correct
        self.count += self.last.batch_size

    def finish(self) -> tuple[float, int, int]:
        """(loss sum, correct count, examples) of the pass (the host waits for the replays)."""
        loss_sum, correct = self.captured.take_sums()
        return self.loss_sum + loss_sum, self.correct + correct, self.count
