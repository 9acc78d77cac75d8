"""A training step a GPU can record once as a CUDA graph and replay: static buffers, in-place updates, no host reads.

``StaticStep`` is the chapter's step (forward, loss, backward, SGD) written so that it can be captured:
the batch sits in buffers it owns (``load`` copies each batch in), the learning rates are 1-element arrays
read when the update runs (``set_lr`` writes them between steps, so a schedule needs no new capture), the loss
and the correct count are summed into device accumulators, and dropout's counter lives on the device
(``random.PhiloxStream``). Nothing in ``StaticStep.step`` reads a value on the host, so on a GPU
``CapturedStep`` records it once with CuPy's stream capture and then replays it with one launch per batch.
On the CPU ``StaticStep.step`` simply runs: the same code, tested there against ``Trainer``'s eager step,
bit for bit.

Capture has rules (CuPy's, see ``shared/research/gpu/README.md``): a private memory pool kept as long as the
graph, warm-up on the capture stream, no cuBLAS (CuPy refuses it during capture, so ``ops.Linear``
multiplies with ``backend.matmul``, which uses ``backend.capturable_gemm`` while ``backend.capturing()`` is
on), no host reads (value checks are off inside the step: ``Trainer`` checks the labels of the whole dataset
once instead). A model or optimizer outside what this handles is named by ``capture_problem``, and
``Trainer`` then runs eagerly and says why. ``CapturedStep`` checks its first replay against the eager step
from the same state and refuses a graph that disagrees.
"""
import contextlib
import gc

import numpy

from . import autograd, backend
from ._tensor import Tensor
from .monitor import correct_count
from .nn import Dropout, Flatten, Linear, ReLU, Sequential
from .nn import functional as F
from .optim import SGD
from .random import dropout_stream

CAPTURABLE_LAYERS = (Linear, ReLU, Dropout, Flatten, Sequential)


def capture_problem(model, optimizer, loss_fn=F.cross_entropy):
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
            return (f"the model holds a {type(module).__name__}, which capture does not handle (it handles "
                    f"{', '.join(cls.__name__ for cls in CAPTURABLE_LAYERS)})")
        if module._forward_hooks:
            return "the model has forward hooks: they run Python at every step, which a replayed graph would skip"
    if any(p.dtype != numpy.float32 for p in parameters):
        return "capture handles float32 parameters (its matrix-product kernel is float32)"
    if parameters[0].device == "cpu":
        return "capture needs a model on a GPU"
    if not hasattr(backend.cupy.cuda, "Graph"):
        return "capture needs CuPy 11 or newer (cupy.cuda.Graph)"
    return None


def labels_problem(model, loader):
    """Why the loader's labels cannot go through a captured step (which reads no values), or None: they are
    checked here once, for the whole dataset, against the model's number of outputs."""
    classes = [module for module in model.modules() if isinstance(module, Linear)][-1].out_features
    low, high = int(loader.labels.min()), int(loader.labels.max())
    if low < 0 or high >= classes:
        return f"the labels run from {low} to {high}, outside [0, {classes - 1}]"
    return None


class StaticStep:
    """The chapter's training step on static buffers: ``load(x, y)``, then ``step()``; ``set_lr()`` between steps.

    ``loss_sum`` (the sum of each step's mean loss times its batch size) and ``correct`` accumulate on the
    device; ``take_sums()`` reads and resets them.
    """

    def __init__(self, model, optimizer, batch_shape, loss_fn=F.cross_entropy):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        parameter = next(iter(model.parameters()))
        self.device, dtype = parameter.device, parameter.dtype
        xp = backend.get_array_module(parameter.data)
        with backend.on_device(self.device):
            self.x = Tensor(xp.zeros(batch_shape, dtype=dtype))
            self.y = Tensor(xp.zeros(batch_shape[0], dtype=xp.int64))
            self.lrs = [xp.zeros(1, dtype=dtype) for _ in optimizer.param_groups]  # 1-D: a kernel reads lr[0]
            self.loss_sum = xp.zeros((), dtype=dtype)
            self.correct = xp.zeros((), dtype=xp.int64)
        self.batch_size = batch_shape[0]
        self.set_lr()

    def load(self, x, y):
        """Copy a batch (Tensors of the buffers' shapes, on their device) into the static buffers."""
        self.x.data[...] = x.data
        self.y.data[...] = y.data

    def set_lr(self):
        """Write each parameter group's current learning rate into its device scalar."""
        for group, lr in zip(self.optimizer.param_groups, self.lrs):
            lr.fill(group["lr"])

    def step(self):
        """Forward, loss, backward and SGD on the loaded batch; the loss and correct count added to the sums."""
        self.model.train()
        logits = self.model(self.x)
        loss = self.loss_fn(logits, self.y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step(lr_arrays=self.lrs)
        self.loss_sum += loss.data * self.loss_sum.dtype.type(self.batch_size)
        self.correct += correct_count(logits, self.y)

    def take_sums(self):
        """(loss sum, correct count) since the last call, read on the host (one wait for a GPU); then reset."""
        sums = float(self.loss_sum), int(self.correct)
        self.loss_sum.fill(0)
        self.correct.fill(0)
        return sums


class CaptureMismatch(RuntimeError):
    """The replayed graph's first step disagreed with the eager step from the same state."""


class CapturedStep:
    """``StaticStep.step`` recorded as a CUDA graph on its own stream and memory pool, and replayed by ``step()``.

    Setting up: a warm-up on the capture stream (compiles every kernel, fills the pool), one eager step from
    a snapshot of the state as the reference, the capture, one replay from the same snapshot compared with
    the reference (``CaptureMismatch`` when they differ), and the snapshot restored. So capturing leaves the
    model, the dropout counter and the sums as they were.
    """

    def __init__(self, static, warmup=2):
        cupy = backend.cupy
        self.static, self.done = static, None
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()  # private: the graph's arrays live as long as the graph
        cupy.cuda.get_current_stream().synchronize()
        with self._on_capture_stream():
            snapshot = self._snapshot()
            try:
                worst = self._warm_up_capture_and_check(snapshot, warmup)
            finally:  # also when capturing fails: training goes on, eagerly, from the state it had
                self._restore(snapshot)
                self.stream.synchronize()
        if worst != 0.0:
            raise CaptureMismatch(f"the captured step's weights differ from the eager step's by up to {worst:.3g}")

    def _warm_up_capture_and_check(self, snapshot, warmup):
        """Warm up, take the eager reference, capture, replay once; the largest weight difference to the reference."""
        static = self.static
        for _ in range(warmup):
            static.step()
        self._restore(snapshot)
        static.step()  # the reference: the eager step from the snapshot
        reference = [p.data.copy() for p in static.model.parameters()]
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
        self.graph.launch(self.stream)
        self.stream.synchronize()
        return max(float(abs(p.data - r).max()) for p, r in zip(static.model.parameters(), reference))

    @contextlib.contextmanager
    def _on_capture_stream(self):
        cupy = backend.cupy
        previous = autograd.set_value_checks(False)  # no host reads inside the step
        try:
            with self.stream, cupy.cuda.using_allocator(self.pool.malloc), backend.capturing():
                yield
        finally:
            autograd.set_value_checks(previous)

    def _snapshot(self):
        static = self.static
        return ([p.data.copy() for p in static.model.parameters()],
                dropout_stream(static.device).counter_on_device.copy(), static.loss_sum.copy(), static.correct.copy())

    def _restore(self, snapshot):
        weights, counter, loss_sum, correct = snapshot
        for parameter, saved in zip(self.static.model.parameters(), weights):
            parameter.data[...] = saved
        dropout_stream(self.static.device).counter_on_device[...] = counter
        self.static.loss_sum[...] = loss_sum
        self.static.correct[...] = correct

    # The batches are made on the current stream and the graph runs on its own: events order the two on the GPU,
    # without the host waiting. A batch is copied in after it was made and after the previous replay read the
    # buffers; the replay starts after the copy.
    def load(self, x, y):
        current = backend.cupy.cuda.get_current_stream()
        self.wait_for_replays(current)
        self.static.load(x, y)
        self.stream.wait_event(current.record())

    def wait_for_replays(self, stream):
        """Make ``stream`` wait (on the GPU) until the replays launched so far have finished."""
        if self.done is not None:
            stream.wait_event(self.done)

    def set_lr(self):
        with self.stream:
            self.static.set_lr()

    def step(self):
        self.graph.launch(self.stream)
        self.done = self.stream.record()

    def take_sums(self):
        self.stream.synchronize()
        with self.stream:
            return self.static.take_sums()
