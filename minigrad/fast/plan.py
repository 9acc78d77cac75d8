"""The chapter's training step planned ahead: every buffer made once, every pass written into one with ``out=``.

The eager ops (``ops.py``, driven by ``Trainer.train_epoch``) are the specification; this is the same step
for the family they are used for here, a ``Sequential`` of ``Linear``, ``ReLU``, ``Dropout`` and ``Flatten``
trained by ``F.cross_entropy`` and plain ``SGD``, written out once its shapes are known. Per block (a
Linear and the ReLU and Dropout after it), with a = the block's input and k = dropout's keep decisions:

    forward   z = a W^T + b;  M = [z > 0] * k * 1/(1-p)  (ReLU and dropout in one mask);  z <- z * M
    backward  dz <- dz * M;  dW = dz^T a;  db = column sums of dz;  da = dz W

M is 1/(1-p) where eager's ReLU and Dropout both pass a value and 0 where either stops it, so z * M and
dz * M are the values eager computes in two multiplies (a zero may come out as -0.0 instead of 0.0, which
compares equal). Then the loss's gradient (softmax - onehot) / N, and SGD. Where the learning rate is a
power of two, no weight decay is set and every group shares it, the rate is folded into the loss's
gradient, so that every gradient comes out already multiplied by it and the update is one subtraction per
parameter: multiplying by a power of two is exact, so the weights come out bit for bit as eager's (barring
subnormal numbers). Otherwise the update is eager's, pass for pass. The dropout decisions are the same words
from the same Philox stream (``random.dropout_stream``) as ``ops.Dropout`` draws.

On the CPU ``PlannedStep.step()`` is an ordinary call per batch. On a GPU it is what ``graphs.RecordedStep``
records: it reads no value on the host (the batch comes from a ``BatchCursor``, the learning rates from
1-element device arrays written between epochs, the loss and correct count go to per-step slots), and its
products use ``gemm.gemm``, which capture allows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy

from .. import backend
from ..autograd import mark_changed_in_place
from ..backend import Array, CudaKernel
from ..data.loader import BatchCursor
from ..nn import Dropout, Flatten, Linear, ReLU, Sequential
from ..nn import functional as F
from ..nn.module import Module
from ..ops import keep_threshold
from ..optim import SGD
from ..random import dropout_stream
from .gemm import gemm

PLANNED_LAYERS = (Linear, ReLU, Dropout, Flatten, Sequential)


@dataclass
class Block:
    """One ``Linear`` and the ``ReLU`` and ``Dropout`` after it, up to the next Linear."""

    linear: Linear
    relu: bool = False
    dropout: Dropout | None = None


def leaf_modules(module: Module) -> Iterator[Module]:
    """The modules a Sequential applies, in order, nested Sequentials opened."""
    for child in module.children():
        if type(child) is Sequential:
            yield from leaf_modules(child)
        else:
            yield child


def blocks_of(model: Module) -> list[Block] | str:
    """The model as blocks, or a string saying why it is not one this plan handles."""
    if type(model) is not Sequential:
        return f"the model is a {type(model).__name__}; the planned step handles an nn.Sequential"
    blocks: list[Block] = []
    for module in [model, *model.modules()]:
        if type(module) not in PLANNED_LAYERS:  # exactly these: a subclass may do anything in its forward
            return (
                f"the model holds a {type(module).__name__}, which the planned step does not handle (it handles "
                f"{', '.join(cls.__name__ for cls in PLANNED_LAYERS)})"
            )
        if module._forward_hooks:
            return "the model has forward hooks: they run Python at every step, which the planned step would skip"
    for module in leaf_modules(model):
        if isinstance(module, Flatten):
            if blocks:
                return "the model flattens after a Linear; the planned step handles a Flatten before the first Linear"
        elif isinstance(module, Linear):
            blocks.append(Block(module))
        elif not blocks:
            return f"the model applies a {type(module).__name__} before its first Linear"
        elif isinstance(module, ReLU):
            blocks[-1].relu = True
        elif isinstance(module, Dropout):
            if blocks[-1].dropout is not None:
                return "the model has two Dropouts in a row; the planned step handles one after each Linear"
            if not 0 <= module.p < 1:
                return f"the model has Dropout(p={module.p}), which zeroes everything; the planned step needs p < 1"
            blocks[-1].dropout = module
    if not blocks:
        return "the model has no Linear layer"
    for before, after in zip(blocks, blocks[1:]):
        if before.linear.out_features != after.linear.in_features:
            outputs, inputs = before.linear.out_features, after.linear.in_features
            return f"a Linear with {outputs} outputs feeds one with {inputs} inputs"
    return blocks


def plan_problem(model: Module, optimizer: Any, loss_fn: Any = F.cross_entropy) -> str | None:
    """Why the training step of ``model`` with ``optimizer`` and ``loss_fn`` cannot be planned, or None."""
    if loss_fn is not F.cross_entropy:
        return f"the loss is {getattr(loss_fn, '__name__', loss_fn)!r}; the planned step handles F.cross_entropy"
    if type(optimizer) is not SGD:
        return f"the optimizer is {type(optimizer).__name__}; the planned step handles SGD"
    if any(group["momentum"] for group in optimizer.param_groups):
        return "SGD with momentum keeps a buffer per parameter, which the planned step does not handle yet"
    blocks = blocks_of(model)
    if isinstance(blocks, str):
        return blocks
    parameters = list(model.parameters())
    if {id(p) for p in parameters} != {id(p) for group in optimizer.param_groups for p in group["params"]}:
        return "the optimizer's parameters are not exactly the model's"
    if not all(p.requires_grad for p in parameters):
        return "a parameter has requires_grad=False"
    dtypes = {p.dtype for p in parameters}
    if len(dtypes) != 1 or next(iter(dtypes)).kind != "f":
        return f"the parameters are {', '.join(sorted(map(str, dtypes)))}; the planned step needs one float dtype"
    if parameters[0].device != "cpu" and parameters[0].dtype != numpy.float32:
        return "on a GPU the planned step multiplies float32 matrices (its matrix-product kernel is float32)"
    return None


def loader_problem(model: Module, loader: Any) -> str | None:
    """Why the loader's batches cannot go through the planned step, or None. The step reads no values, so the
    labels are checked here once, for the whole dataset, against the model's number of outputs."""
    blocks = blocks_of(model)
    assert not isinstance(blocks, str), "call plan_problem first"
    parameter = blocks[0].linear.weight
    if loader.device != parameter.device:
        return f"the loader's batches are on {loader.device} but the model is on {parameter.device}"
    images = loader.images
    if images.dtype != numpy.uint8 and (images.dtype != parameter.dtype or parameter.device != "cpu"):
        return (
            f"the loader's images are {images.dtype}; the planned step takes uint8 pixels (or, on the CPU, images "
            f"of the parameters' dtype)"
        )
    flattens = any(isinstance(module, Flatten) for module in leaf_modules(model))
    if images.ndim != 2 and not flattens:
        return f"the loader's batches are {images.shape[1:]} images and the model has no Flatten"
    features = math.prod(images.shape[1:])
    if features != blocks[0].linear.in_features:
        return f"the batches have {features} features and the first Linear takes {blocks[0].linear.in_features}"
    classes = blocks[-1].linear.out_features
    if len(loader.labels):
        low, high = int(loader.labels.min()), int(loader.labels.max())
        if low < 0 or high >= classes:
            return f"the labels run from {low} to {high}, outside [0, {classes - 1}]"
    return None


@dataclass
class Buffers:
    """One block's arrays, made once: the output z (overwritten by the activation), the mask M, its boolean
    parts, and the gradients of z, W and b."""

    z: Array
    dz: Array
    gW: Array
    gb: Array | None
    M: Array
    keep: Array
    positive: Array


class Plan:
    """What the planned training and evaluation steps share: the blocks, the batch buffers filled by the cursor,
    each block's buffers, and the loss's."""

    def __init__(self, model: Module, cursor: BatchCursor, batch_size: int) -> None:
        blocks = blocks_of(model)
        assert not isinstance(blocks, str), blocks
        self.blocks, self.cursor, self.batch_size = blocks, cursor, batch_size
        weight = blocks[0].linear.weight
        self.device, self.dtype = weight.device, weight.dtype
        self.xp = xp = backend.module_for(self.device)
        self.on_gpu = xp is backend.cupy
        classes = blocks[-1].linear.out_features
        with backend.on_device(self.device):
            # the batch as DataLoader makes it: uint8 pixels become float32 whatever the parameters' dtype
            pixels = numpy.float32 if cursor.images.dtype == numpy.uint8 else cursor.images.dtype
            self.x = xp.empty((batch_size, blocks[0].linear.in_features), dtype=pixels)
            self.y = xp.empty(batch_size, dtype=xp.int64)
            self.rows = xp.arange(batch_size)
            self.buffers = [self._block_buffers(block.linear) for block in blocks]
            self.probs = xp.empty((batch_size, classes), dtype=self.dtype)
            self.row_max = xp.empty((batch_size, 1), dtype=self.dtype)
            self.row_sums = xp.empty((batch_size, 1), dtype=self.dtype)
            self.row_losses = xp.empty(batch_size, dtype=self.dtype)
            self.predicted = xp.empty(batch_size, dtype=xp.int64)
            self.hits = xp.empty(batch_size, dtype=bool)

    def _block_buffers(self, linear: Linear) -> Buffers:
        xp, shape = self.xp, (self.batch_size, linear.out_features)
        return Buffers(
            z=xp.empty(shape, dtype=self.dtype),
            dz=xp.empty(shape, dtype=self.dtype),
            gW=xp.empty(linear.weight.shape, dtype=self.dtype),
            gb=xp.empty(linear.bias.shape, dtype=self.dtype) if linear.bias is not None else None,
            M=xp.empty(shape, dtype=self.dtype),
            keep=xp.empty(shape, dtype=bool),
            positive=xp.empty(shape, dtype=bool),
        )

    def matmul(self, a: Array, b: Array, out: Array) -> None:
        """out = a @ b: NumPy's (OpenBLAS) on the CPU, ``gemm`` on a GPU (capture forbids cuBLAS)."""
        if self.on_gpu:
            gemm(a, b, out)
        else:
            numpy.matmul(a, b, out=out)

    def forward(self, training: bool) -> list[str]:
        """The blocks on ``self.x``, the logits left in the last block's z. Returns each block's mask kind for
        backward: "mask" (z was multiplied by M), "relu" (positive holds z > 0) or "" (nothing)."""
        xp, a, kinds = self.xp, self.x, []
        for block, buffers in zip(self.blocks, self.buffers):
            z = buffers.z
            self.matmul(a, block.linear.weight.data.T, z)
            if block.linear.bias is not None:
                xp.add(z, block.linear.bias.data, out=z)
            dropout = block.dropout
            if training and dropout is not None and dropout.training and dropout.p > 0:
                words = dropout_stream(self.device).words(z.size).reshape(z.shape)
                xp.greater(words, keep_threshold(dropout.p), out=buffers.keep)
                if block.relu:
                    xp.greater(z, 0, out=buffers.positive)
                    xp.logical_and(buffers.keep, buffers.positive, out=buffers.keep)
                buffers.M[...] = buffers.keep  # 1 or 0, then times the scale: faster than one mixed-type pass
                buffers.M *= self.dtype.type(1.0 / (1.0 - dropout.p))
                xp.multiply(z, buffers.M, out=z)
                kinds.append("mask")
            elif block.relu:
                xp.maximum(z, 0, out=z)
                if training:
                    xp.greater(z, 0, out=buffers.positive)
                kinds.append("relu")
            else:
                kinds.append("")
            a = z
        return kinds

    def loss(self) -> tuple[Array, Array]:
        """Softmax cross-entropy of the logits against ``self.y``, max-shifted as ``ops.SoftmaxCrossEntropy``
        does: (mean loss, correct count), device scalars. Leaves softmax(o) in ``probs``; the logits' buffer
        is shifted in place."""
        xp, logits = self.xp, self.buffers[-1].z
        xp.argmax(logits, axis=1, out=self.predicted)
        xp.equal(self.predicted, self.y, out=self.hits)
        correct = self.hits.sum()
        xp.max(logits, axis=1, keepdims=True, out=self.row_max)
        xp.subtract(logits, self.row_max, out=logits)
        xp.exp(logits, out=self.probs)
        xp.sum(self.probs, axis=1, keepdims=True, out=self.row_sums)
        xp.log(self.row_sums[:, 0], out=self.row_losses)
        self.row_losses -= logits[self.rows, self.y]
        loss = self.row_losses.mean()
        xp.divide(self.probs, self.row_sums, out=self.probs)
        return loss, correct


class PlannedStep(Plan):
    """The chapter's training step on buffers made once: ``step()`` gathers the next batch from the cursor,
    then forward, loss, backward and SGD, and logs the step's loss and correct count in ``losses[k]`` and
    ``corrects[k]`` for the k-th step since ``start_epoch()`` (slots that later steps do not overwrite, so a
    monitor may keep them until the epoch ends). ``steps`` is how many a pass has."""

    def __init__(self, model: Module, optimizer: SGD, cursor: BatchCursor, batch_size: int, steps: int) -> None:
        super().__init__(model, cursor, batch_size)
        self.optimizer = optimizer
        xp = self.xp
        with backend.on_device(self.device):
            self.losses = xp.zeros(steps, dtype=self.dtype)
            self.corrects = xp.zeros(steps, dtype=xp.int64)
            self.logged = xp.zeros(1, dtype=xp.int64)  # steps logged since start_epoch (a graph reads it on the GPU)
            self.lrs = [xp.zeros(1, dtype=self.dtype) for _ in optimizer.param_groups]  # a GPU kernel reads lr[0]
        group_of = {id(p): (g, lr) for g, lr in zip(optimizer.param_groups, self.lrs) for p in g["params"]}
        self.updates = []  # (parameter, gradient buffer, its group, the group's lr on the device), in the model's order
        for block, buffers in zip(self.blocks, self.buffers):
            self.updates.append((block.linear.weight, buffers.gW, *group_of[id(block.linear.weight)]))
            if block.linear.bias is not None:
                self.updates.append((block.linear.bias, buffers.gb, *group_of[id(block.linear.bias)]))
        self.decay: dict[int, Array] = {}  # per parameter: scratch for weight decay, made on first use
        self.set_lr()

    def set_lr(self) -> None:
        """Write each group's current learning rate into the device scalar a GPU's update reads (between steps)."""
        for group, lr in zip(self.optimizer.param_groups, self.lrs):
            lr.fill(group["lr"])

    def start_epoch(self) -> None:
        """The next step logs into slot 0."""
        self.logged.fill(0)

    def folded_lr(self) -> float | None:
        """The learning rate folded into the loss's gradient, or None: where every group has the same rate, a
        power of two, and no weight decay (only then is folding exact), and on the CPU (a GPU reads the rate at
        replay, so that a schedule needs no new graph)."""
        groups = self.optimizer.param_groups
        lr = groups[0]["lr"]
        if self.on_gpu or any(g["lr"] != lr or g["weight_decay"] for g in groups):
            return None
        return lr if math.frexp(float(self.dtype.type(lr)))[0] == 0.5 else None

    def step(self) -> None:
        """One training step on the next batch of the cursor: ``forward_step``, ``backward_step``, ``update``."""
        kinds = self.forward_step()
        lr = self.folded_lr()
        self.backward_step(kinds, lr)
        self.update(folded=lr is not None)

    def forward_step(self) -> list[str]:
        """Gather the next batch, run the blocks and the loss, log the loss and correct count; the blocks' mask
        kinds for ``backward_step``."""
        self.cursor.gather(self.x, self.y)
        kinds = self.forward(training=True)
        loss, correct = self.loss()
        self._log(loss, correct)
        return kinds

    def backward_step(self, kinds: list[str], lr: float | None) -> None:
        """Every block's gradients, into the gradient buffers; multiplied by ``lr`` when it is folded in."""
        xp = self.xp
        # dL/dlogits = (softmax - onehot) / N, times the learning rate when it is folded in
        scale = self.dtype.type(1) / self.dtype.type(self.batch_size)
        self.probs[self.rows, self.y] -= 1
        self.probs *= scale if lr is None else scale * self.dtype.type(lr)
        upstream = self.probs
        for index in range(len(self.blocks) - 1, -1, -1):
            block, buffers = self.blocks[index], self.buffers[index]
            dz = upstream
            if kinds[index] == "mask":
                xp.multiply(dz, buffers.M, out=dz)
            elif kinds[index] == "relu":
                xp.multiply(dz, buffers.positive, out=dz)
            a = self.x if index == 0 else self.buffers[index - 1].z
            self.matmul(dz.T, a, buffers.gW)
            if buffers.gb is not None:
                xp.sum(dz, axis=0, out=buffers.gb)
            if index > 0:
                self.matmul(dz, block.linear.weight.data, self.buffers[index - 1].dz)
                upstream = self.buffers[index - 1].dz

    def _log(self, loss: Array, correct: Array) -> None:
        if self.on_gpu:
            self.log_gpu(loss.reshape(1), correct.reshape(1), self.losses, self.corrects, self.logged, size=1)
            return
        k = int(self.logged[0])
        self.losses[k], self.corrects[k] = loss, correct
        self.logged += 1

    log_gpu = CudaKernel(
        "raw T loss, raw int64 correct",
        "raw T losses, raw int64 corrects, raw int64 logged",
        "losses[logged[0]] = loss[0]; corrects[logged[0]] = correct[0]; logged[0] += 1",
        "minigrad_log_step",
    )

    def update(self, folded: bool) -> None:
        """SGD: w <- w - lr (g + weight_decay w), each parameter in place (g already times lr when folded)."""
        xp, dtype = self.xp, self.dtype.type
        for parameter, grad, group, lr_on_device in self.updates:
            w = parameter.data
            if folded:
                xp.subtract(w, grad, out=w)
            elif self.on_gpu:
                self.sgd_gpu(grad, lr_on_device, dtype(group["weight_decay"]), w)
            else:  # eager's passes: g + weight_decay * w, then w - lr * g
                if group["weight_decay"]:
                    decay = self._decay_buffer(parameter, grad)
                    xp.multiply(w, dtype(group["weight_decay"]), out=decay)
                    xp.add(grad, decay, out=grad)
                xp.multiply(grad, dtype(group["lr"]), out=grad)
                xp.subtract(w, grad, out=w)
            mark_changed_in_place(parameter)  # a graph that saved the old weights must not backward

    def _decay_buffer(self, parameter, grad):
        if id(parameter) not in self.decay:
            self.decay[id(parameter)] = self.xp.empty_like(grad)
        return self.decay[id(parameter)]

    # The update on a GPU, with the rate read from device memory when it runs (a replayed graph follows a
    # schedule): optim.SGD's expression.
    sgd_gpu = CudaKernel(
        "T grad, raw T lr, T weight_decay",
        "T param",
        "param -= lr[0] * (grad + weight_decay * param)",
        "minigrad_planned_sgd",
    )

    def state(self) -> dict[str, Array]:
        """The arrays a step changes, by name (a recorder snapshots, restores and compares them)."""
        state = {f"parameter {i} {tuple(p.shape)}": p.data for i, (p, *_) in enumerate(self.updates)}
        if self.on_gpu:
            state["the dropout counter"] = dropout_stream(self.device).counter_on_device
        state.update({"the batch position": self.cursor.position, "the step log": self.losses})
        state.update({"the correct counts": self.corrects, "the log position": self.logged})
        return state


class PlannedEval(Plan):
    """Evaluation's step on buffers made once: the next batch of the cursor through the model with dropout
    off, its loss (times the batch size) and correct count added to device sums that ``take_sums()`` reads."""

    def __init__(self, model: Module, cursor: BatchCursor, batch_size: int) -> None:
        super().__init__(model, cursor, batch_size)
        with backend.on_device(self.device):
            self.loss_sum = self.xp.zeros((), dtype=self.dtype)
            self.correct = self.xp.zeros((), dtype=self.xp.int64)

    def step(self) -> None:
        """One evaluation step: gather, forward without dropout, add to the sums (in ``train.evaluate``'s order)."""
        self.cursor.gather(self.x, self.y)
        self.forward(training=False)
        loss, correct = self.loss()
        self.loss_sum += loss * self.batch_size
        self.correct += correct

    def take_sums(self) -> tuple[float, int]:
        """(loss sum, correct count) since the last call, read on the host (one wait for a GPU); then reset."""
        sums = float(self.loss_sum), int(self.correct)
        self.loss_sum.fill(0)
        self.correct.fill(0)
        return sums

    def state(self) -> dict[str, Array]:
        """The arrays a step changes, by name."""
        return {
            "the loss sum": self.loss_sum,
            "the correct count": self.correct,
            "the batch position": self.cursor.position,
        }
