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

On the CPU ``PlannedStep.step()`` is an ordinary call per batch, NumPy's passes. On a GPU it is what
``graphs.RecordedStep`` records: it reads no value on the host (the batch comes from a ``BatchCursor``, the
learning rates from a device array written between epochs, the loss and correct count go to per-step slots),
and each stage is one kernel, a ``CudaFunction`` declared right after the NumPy passes it stands for:
``activate`` (bias, ReLU and dropout's mask, the Philox words computed in it), ``loss`` (the last bias, the
loss, its gradient, the sums and the log; it also moves the batch position, the dropout counter and the log
position on), ``backward_mask`` (the mask and the bias gradient) and ``update`` (every parameter at once). With
the cursor's gather and the eight products (``gemm.gemm``, or cuBLAS through ``cublas``: capture allows both),
that is 15 kernels for the chapter's model; 8 with the tile kernel's products, which do the other work beside
them as they go, so that it needs no kernel of its own (``fused_product``): the forward ones apply ``activate``
to each element as they store it ("activate"), the first also gathering the batch as it reads it
("gather_activate"), the last, where nothing masks its block, taking the ``loss`` of the logits it makes
("loss"), and backward, ``backward_mask``'s and ``update``'s
work is split between a block's two products, the input gradient of the block after masking each element as it
stores it ("mask"), and the weight gradient summing the rows of its dz^T, the bias gradient, and applying SGD
to the weight and the bias with their gradients as it stores them ("sgd").
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy

from .. import backend
from ..autograd import mark_changed_in_place
from ..backend import Array, CudaFunction
from ..data.loader import PIXEL_SCALE, BatchCursor
from ..nn import Dropout, Flatten, Linear, ReLU, Sequential
from ..nn import functional as F
from ..nn.module import Module
from ..ops import keep_threshold
from ..optim import SGD
from ..random import PHILOX_CUDA, blocks_for, dropout_stream
from .gemm import GROUPS, PER_THREAD, SIDE, SLICE, TILE_NAMES, gemm, gemm_source, tile_grid

PLANNED_LAYERS = (Linear, ReLU, Dropout, Flatten, Sequential)
THREADS = 256  # threads per block of the elementwise kernels on a GPU
COLUMN_THREADS = 256  # threads per block of backward_mask, for 32 columns (minigrad_column_sums)
LOSS_THREADS = 256  # the loss kernel's one block (MINIGRAD_LOSS_THREADS in its source; minigrad_column_sums's too)
# the shared memory LOSS_PRODUCT takes beside its tile's (gemm.shared_bytes): minigrad_loss_total's 32 sums of
# losses (floats) and of hits (long longs), and the flag that says a block is the last, padded to 8 bytes
LOSS_SHARED_BYTES = 32 * (4 + 8) + 8
# whose matrix products a GPU's plan makes (Plan.matmul): the tile kernel in one of its shapes, or cuBLAS; or a
# shape for each kind of product and its dimensions (tile_shapes)
PRODUCTS = (*TILE_NAMES, "cublas")
DEFAULT_PRODUCTS = "tile"  # the fastest in a graph, by benchmarks.gemm_speed on a GPU (not yet timed)
PRODUCT_KINDS = ("forward", "input gradient", "weight gradient")  # a W^T, dz W and dz^T a (Plan.matmul's kind)


def tile_shapes(products: str) -> tuple[tuple[int, int, int, int] | None, dict[tuple[str, int, int, int], Any]]:
    """The tile shapes a ``products`` setting names: (the shape of every product it does not name, None for
    cuBLAS's; {(kind, m, k, n): shape} for those it names, an m x k by k x n product of a kind of
    ``PRODUCT_KINDS``). The setting is one name of ``PRODUCTS`` for every product, or items separated by
    commas, each a tile name (for the products no item names; the default tile's if no item does) or
    "KIND MxKxN=NAME", as benchmarks.gemm_speed prints it: "tile, weight gradient 256x256x784=tile 4x16 2x2".
    ValueError, saying what is wrong, for anything else."""
    if products in PRODUCTS:
        return TILE_NAMES.get(products), {}
    rest, named = None, {}
    for item in (part.strip() for part in products.split(",")):
        product, _, name = (part.strip() for part in item.rpartition("="))
        kind, _, size = product.rpartition(" ")
        dimensions = size.split("x")
        if name not in TILE_NAMES or (product and (kind not in PRODUCT_KINDS or len(dimensions) != 3)):
            raise ValueError(
                f"products must be one of {', '.join(map(repr, PRODUCTS))}, or tile names and "
                f"'KIND MxKxN=TILE NAME' items separated by commas (KIND one of {', '.join(PRODUCT_KINDS)}); "
                f"got {products!r}, whose item {item!r} is neither"
            )
        if not product:
            if rest is not None:
                raise ValueError(f"products names two tiles for the products no item names: {products!r}")
            rest = TILE_NAMES[name]
            continue
        try:
            m, k, n = (int(d) for d in dimensions)
        except ValueError:
            raise ValueError(f"products's item {item!r}: the dimensions must be whole numbers, MxKxN") from None
        named[(kind, m, k, n)] = TILE_NAMES[name]
    return rest or TILE_NAMES["tile"], named


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


# The column sums a GPU's step takes (the bias gradients), by a block of 256 threads for 32 columns at a time:
# thread t adds rows t / 32, t / 32 + 8, ... of column j0 + t % 32 (multiplying them by M first, in place, when M
# is given), then the 8 partial sums of a column are added in order. A fixed order (no atomics), so a replay
# gives the same bits every time; 8 threads per column, each reading 8 of its rows at once: 64 rows in flight per
# column, not 1. It rounds differently from the CPU's ``sum(axis=0)`` (one row after another) by a few ulp;
# tests/test_step_kernels.py has its order in NumPy.
COLUMN_SUMS_CUDA = r"""
#define MINIGRAD_COLUMN_GROUPS 8
__device__ void minigrad_column_sums(float* x, const float* M, long long rows, long long columns, long long j0,
                                     float* sums, float* shared /* 256 floats */) {
    const int t = threadIdx.x, column = t % 32, group = t / 32;
    const long long j = j0 + column;
    float sum = 0.0f;
    // 8 of a thread's rows at a time: all their reads first, so that they wait for memory together (read after
    // the last row's write, each would wait in turn), then each row in order, as one at a time; the product is
    // rounded on its own (__fmul_rn: never fused into the sum)
    if (j < columns)
        for (long long r0 = group; r0 < rows; r0 += 8 * MINIGRAD_COLUMN_GROUPS) {
            float v[8], m[8];
            #pragma unroll
            for (int u = 0; u < 8; ++u) {
                const long long r = r0 + u * MINIGRAD_COLUMN_GROUPS;
                v[u] = r < rows ? x[r * columns + j] : 0.0f;
                m[u] = M && r < rows ? M[r * columns + j] : 0.0f;
            }
            #pragma unroll
            for (int u = 0; u < 8; ++u) {
                const long long r = r0 + u * MINIGRAD_COLUMN_GROUPS;
                if (r >= rows) break;
                if (M) { v[u] = __fmul_rn(v[u], m[u]); x[r * columns + j] = v[u]; }
                sum += v[u];
            }
        }
    shared[t] = sum;
    __syncthreads();
    if (group == 0 && j < columns && sums) {
        float total = shared[column];
        for (int g = 1; g < MINIGRAD_COLUMN_GROUPS; ++g) total += shared[g * 32 + column];
        sums[j] = total;
    }
    __syncthreads();
}
"""
COLUMN_GROUPS = 8  # MINIGRAD_COLUMN_GROUPS: rows summed side by side per column

# The loss on a GPU, in the two parts that Plan.LOSS and the last block's product with the loss in it
# (LOSS_PRODUCT) share. minigrad_row_loss: one row of the logits, by one thread, max-shifted as
# ops.SoftmaxCrossEntropy does: its bias added in place, its loss log(sum exp(o - top)) - (o[label] - top), whether
# its prediction (the first largest, or the first NaN: NumPy's argmax and max) is the label, and, training, its
# gradient (softmax - onehot) * gradient_scale. minigrad_loss_total: the batch's loss and correct count from
# MINIGRAD_LOSS_THREADS partial sums, part(s, loss, hits) giving the s-th (the rows s, s + MINIGRAD_LOSS_THREADS,
# ... in order), added in a fixed order (no atomics: a replay gives the same bits every time), the tree that
# halves them, 128 apart, then 64, ..., 1, into loss_sums and hit_sums (32 of each, which may be where the parts
# are: thread t reads its parts before it writes there, and no other thread reads part t); then thread 0 writes
# the mean loss and the count to the step's slot of the log and moves the positions on (the log's, the batch's by
# the rows, the dropout counter by the Philox blocks the step drew: nothing after the loss in the step reads
# them), or, evaluating, adds loss * rows and the count to the sums.
LOSS_PARTS_CUDA = r"""
#define MINIGRAD_LOSS_THREADS 256
__device__ float minigrad_row_loss(float* o, const float* bias, int add_bias, long long label, long long classes,
                                   int training, float gradient_scale, float* gradient, long long* hit) {
    if (add_bias) for (long long c = 0; c < classes; ++c) o[c] += bias[c];
    float top = o[0];
    long long predicted = 0;
    for (long long c = 1; c < classes; ++c)
        if (o[c] > top || (o[c] != o[c] && top == top)) { top = o[c]; predicted = c; }
    *hit = predicted == label;
    float sum = 0.0f;
    for (long long c = 0; c < classes; ++c) sum += expf(o[c] - top);
    if (training)
        for (long long c = 0; c < classes; ++c)
            gradient[c] = (expf(o[c] - top) / sum - (c == label ? 1.0f : 0.0f)) * gradient_scale;
    return logf(sum) - (o[label] - top);
}
template <class Part>
__device__ void minigrad_loss_total(Part part, float* loss_sums, long long* hit_sums, int t, long long rows,
                                    int training, float* losses, long long* corrects, long long* slot,
                                    long long* position, unsigned long long* counter, unsigned long long blocks) {
    if (t < 32) {  // the tree's levels 128, 64 and 32 apart: thread t adds parts t + 32 k, k < 8, as they do
        float loss[8];
        long long hits[8];
        #pragma unroll
        for (int k = 0; k < 8; ++k) part(t + 32 * k, loss[k], hits[k]);
        #pragma unroll
        for (int half = 4; half > 0; half /= 2)
            #pragma unroll
            for (int k = 0; k < half; ++k) { loss[k] += loss[k + half]; hits[k] += hits[k + half]; }
        loss_sums[t] = loss[0];
        hit_sums[t] = hits[0];
    }
    __syncthreads();
    if (t == 0) {  // then 16 apart, ..., 1
        for (int half = 16; half > 0; half /= 2)
            for (int s = 0; s < half; ++s) { loss_sums[s] += loss_sums[s + half]; hit_sums[s] += hit_sums[s + half]; }
        const float mean = loss_sums[0] / (float)rows;
        if (training) {
            losses[slot[0]] = mean;
            corrects[slot[0]] = hit_sums[0];
            slot[0] += 1;
            position[0] += rows;
            minigrad_philox_advance(counter, blocks);
        } else { losses[0] = __fadd_rn(losses[0], __fmul_rn(mean, (float)rows)); corrects[0] += hit_sums[0]; }
    }
}
"""


class Plan:
    """What the planned training and evaluation steps share: the blocks, the batch buffers filled by the cursor,
    each block's buffers, and the loss's."""

    def __init__(self, model: Module, cursor: BatchCursor, batch_size: int, products: str = DEFAULT_PRODUCTS) -> None:
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
            self.row_hits = xp.empty(batch_size, dtype=xp.int64)  # LOSS_PRODUCT's: 1 where a row's prediction is right
            self.arrived = xp.zeros(1, dtype=xp.uint32)  # LOSS_PRODUCT's blocks done (0 between its launches)
        self.words_drawn = 0  # on a GPU: dropout words the last forward drew (the loss moves the counter past them)
        # on a GPU by the tile kernel: the last forward's logits product (a, b and its tile shape), left to the
        # loss's kernel to make (LOSS_PRODUCT), or None
        self.logits_product: tuple[Array, Array, tuple[int, int, int, int]] | None = None
        # the tile kernel's shape (None for cuBLAS's products), and the shapes of the products named apart
        self.tile, self.tiles = tile_shapes(products)
        self.gemm: Callable[..., Array] = self.tile_gemm
        if self.on_gpu and products == "cublas":
            from .cublas import Cublas

            with backend.on_device(self.device):
                self.blas = Cublas()
            self.gemm = self.cublas_gemm

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

    @property
    def products_fused(self) -> bool:
        """Whether the step's elementwise work is done in its products as they store (``fused_product``): on a
        GPU by the tile kernel, not by cuBLAS."""
        return self.on_gpu and self.tile is not None

    def matmul(self, a: Array, b: Array, out: Array, kind: str) -> None:
        """out = a @ b, a product of ``kind`` (one of ``PRODUCT_KINDS``): NumPy's (OpenBLAS) on the CPU; on a GPU
        the plan's ``products`` said whose: "tile", this project's tiled kernel (``gemm.gemm``; "tile 4x16 2x2"
        and the other names of ``gemm.TILE_NAMES`` in another of its shapes, or a shape for each kind and size
        of product: ``tile_shapes``), or "cublas", cuBLAS called so that capture allows it (``Cublas``)."""
        if self.on_gpu:
            self.gemm(a, b, out, kind)
        else:
            numpy.matmul(a, b, out=out)

    def tile_for(self, kind: str, a: Array, b: Array) -> tuple[int, int, int, int]:
        """The tile kernel's shape for the product a @ b of ``kind``."""
        assert self.tile is not None, "cuBLAS's products have no tile shape"
        return self.tiles.get((kind, a.shape[0], a.shape[1], b.shape[1]), self.tile)

    def tile_gemm(self, a: Array, b: Array, out: Array, kind: str) -> Array:
        """out = a @ b by the tile kernel, in the shape the plan's ``products`` gives that product."""
        groups, slice_, per_thread, side = self.tile_for(kind, a, b)
        return gemm(a, b, out, groups=groups, slice_=slice_, per_thread=per_thread, side=side)

    def fused_gemm(self, work: str, a: Array, b: Array, out: Array, kind: str, *epilogue: Any) -> None:
        """out = a @ b by the tile's product with ``work`` in it (``fused_product``: "activate", "mask" or
        "sgd") in the shape the plan's ``products`` gives that product, given the ``epilogue`` arguments
        after the product's."""
        tile = self.tile_for(kind, a, b)
        gemm(a, b, out, *tile, kernel=fused_product(work, *tile), epilogue=epilogue)

    def gathered_gemm(self, b: Array, out: Array, *epilogue: Any) -> None:
        """out = x @ b, the cursor's next batch gathered into x (and its labels into y) by the product as it reads
        it, ``GATHERED_PRODUCT`` in the shape the plan's ``products`` gives the first forward product, given the
        ``epilogue`` arguments after the product's (``activation_arguments``): one kernel, not the cursor's
        gather and ``fused_gemm("activate", x, b, ...)``, with the same values in x, y and out."""
        cursor, (m, k), n = self.cursor, self.x.shape, b.shape[1]
        groups, slice_, per_thread, side = tile = self.tile_for("forward", self.x, b)
        batch = (cursor.images, cursor.labels, cursor.order, cursor.position, PIXEL_SCALE, self.x, self.y)
        sizes = (numpy.int32(m), numpy.int32(n), numpy.int32(k), numpy.int64(b.strides[0] // 4))
        args = (b, *batch, out, *sizes, numpy.int64(b.strides[1] // 4), *epilogue)
        fused_product("gather_activate", *tile)(tile_grid(m, n, per_thread, side), (side, side, groups), args)

    def cublas_gemm(self, a: Array, b: Array, out: Array, kind: str) -> Array:
        """out = a @ b by cuBLAS (``Cublas.gemm``), whatever its kind."""
        return self.blas.gemm(a, b, out)

    @staticmethod
    def kind(block: Block, training: bool) -> str:
        """How the block's activation is masked: "mask" (ReLU, if any, and dropout's keep decisions, in M),
        "relu" (ReLU alone) or "" (nothing: the product plus the bias is the block's output)."""
        dropout = block.dropout
        if training and dropout is not None and dropout.training and dropout.p > 0:
            return "mask"
        return "relu" if block.relu else ""

    @staticmethod
    def drop_probability(block: Block, kind: str) -> float:
        """The probability p that the block's dropout zeroes an element: its Dropout's p for a "mask", else 0."""
        return block.dropout.p if kind == "mask" and block.dropout is not None else 0.0

    def bias_in_loss(self, index: int, kind: str) -> bool:
        """Whether block ``index``'s bias is left to the loss's kernel (and, with cuBLAS's products, its bias
        gradient): on a GPU, the last block's when nothing masks it (its product then stores nothing but the
        product)."""
        return self.on_gpu and kind == "" and index == len(self.blocks) - 1

    def gathers(self, training: bool) -> bool:
        """Whether ``forward``'s first product gathers the cursor's next batch as it reads it (``gathered_gemm``):
        by the tile kernel on a GPU, where that product is activated (else it stores nothing but the product)."""
        return self.products_fused and not self.bias_in_loss(0, self.kind(self.blocks[0], training))

    def forward(self, training: bool, gathered: bool = False) -> list[str]:
        """The blocks on ``self.x``, the logits left in the last block's z for ``loss``. Returns each block's
        ``kind``. On a GPU, the last block's bias (when nothing masks it) is left to the loss's kernel, and the
        tile kernel's products activate each block as they store it (one kernel, ``ACTIVATED_PRODUCT``, not two);
        with ``gathered``, the first one also gathers the cursor's next batch as it reads it (``gathered_gemm``),
        and the last block's product, where nothing masks it, is the loss's kernel's (``logits_product``)."""
        a, kinds, self.words_drawn, self.logits_product = self.x, [], 0, None
        for index, (block, buffers) in enumerate(zip(self.blocks, self.buffers)):
            kind, weight = self.kind(block, training), block.linear.weight.data.T
            if self.bias_in_loss(index, kind):
                tile = self.tile_for("forward", a, weight) if self.products_fused else None
                if tile is not None and weight.shape[1] <= tile[2] * tile[3]:  # a tile as wide as a row of logits
                    self.logits_product = (a, weight, tile)
                else:
                    self.matmul(a, weight, buffers.z, "forward")
            elif self.products_fused:
                epilogue = self.activation_arguments(block, buffers, kind)
                if gathered and index == 0:
                    self.gathered_gemm(weight, buffers.z, *epilogue)
                else:
                    self.fused_gemm("activate", a, weight, buffers.z, "forward", *epilogue)
            else:
                self.matmul(a, weight, buffers.z, "forward")
                self.activate(block, buffers, kind, training)
            kinds.append(kind)
            a = buffers.z
        return kinds

    def activate(self, block: Block, buffers: Buffers, kind: str, training: bool) -> None:
        """z <- z + b, then z <- z * M for a "mask" (M = [z > 0 where ReLU] * keep * 1/(1-p)) or ReLU's max(z, 0)
        (with positive = [z > 0] kept for backward when training). On a GPU one kernel: ``ACTIVATE``."""
        xp, z, bias, p = self.xp, buffers.z, block.linear.bias, self.drop_probability(block, kind)
        if self.on_gpu:
            if kind == "" and bias is None:
                return
            size = numpy.int64(z.size)
            args = (z, size, numpy.int64(z.shape[1]), *self.activation_arguments(block, buffers, kind))
            self.ACTIVATE(((int(size) + THREADS - 1) // THREADS,), (THREADS,), args)
            return
        if bias is not None:
            xp.add(z, bias.data, out=z)
        if kind == "mask":
            words = dropout_stream(self.device).words(z.size).reshape(z.shape)
            xp.greater(words, keep_threshold(p), out=buffers.keep)
            if block.relu:
                xp.greater(z, 0, out=buffers.positive)
                xp.logical_and(buffers.keep, buffers.positive, out=buffers.keep)
            buffers.M[...] = buffers.keep  # 1 or 0, then times the scale: faster than one mixed-type pass
            buffers.M *= self.dtype.type(1.0 / (1.0 - p))
            xp.multiply(z, buffers.M, out=z)
        elif kind == "relu":
            xp.maximum(z, 0, out=z)
            if training:
                xp.greater(z, 0, out=buffers.positive)

    def activation_arguments(self, block: Block, buffers: Buffers, kind: str) -> tuple[Any, ...]:
        """What ``minigrad_activate_element`` is given for the block (after the element's own), on a GPU; counts
        the dropout words it draws into ``words_drawn``."""
        bias, stream, p = block.linear.bias, dropout_stream(self.device), self.drop_probability(block, kind)
        arguments = (
            buffers.M,
            bias.data if bias is not None else buffers.M,  # (not read without a bias)
            numpy.int32(bias is not None),
            numpy.int32(block.relu),
            numpy.int32(kind == "mask"),
            stream.key_on_device,
            stream.counter_on_device,
            numpy.uint64(self.words_drawn),
            keep_threshold(p),
            numpy.float32(1.0 / (1.0 - p)),
        )
        self.words_drawn += 8 * blocks_for(buffers.z.size) if kind == "mask" else 0
        return arguments

    # activate on a GPU: element i (column j) of the block's output, whose product is v, and its mask. Word i of
    # the step's dropout draws is Philox word i after the counter (random.PHILOX_CUDA): the step's blocks draw in
    # turn from first_word, and the loss moves the counter past them all. M is written for "relu" too (1 or 0),
    # so that backward has one case on a GPU. The ACTIVATE kernel applies it with a thread per element of z;
    # the tile kernel's products apply it as they store each element (ACTIVATED_PRODUCT).
    ACTIVATE_ELEMENT_CUDA = (
        PHILOX_CUDA
        + r"""
__device__ __forceinline__ void minigrad_activate_element(float* z, long long i, long long j, float v, float* M,
                                                          const float* bias, int has_bias, int relu, int dropout,
                                                          const unsigned long long* key,
                                                          const unsigned long long* counter,
                                                          unsigned long long first_word, unsigned int threshold,
                                                          float scale) {
    if (has_bias) v += bias[j];
    if (dropout) {
        const bool kept = minigrad_philox_u32(key, counter, first_word + (unsigned long long)i) > threshold;
        const float m = kept && (!relu || v > 0.0f) ? scale : 0.0f;
        M[i] = m;
        z[i] = v * m;
    } else if (relu) {
        M[i] = v > 0.0f ? 1.0f : 0.0f;
        z[i] = v > 0.0f || v != v ? v : 0.0f;  // NumPy's maximum(v, 0): a NaN stays NaN
    } else {
        z[i] = v;
    }
}
"""
    )
    ACTIVATE = CudaFunction(
        ACTIVATE_ELEMENT_CUDA
        + r"""
extern "C" __global__ void minigrad_activate(float* z, long long size, long long columns, float* M, const float* bias,
                                             int has_bias, int relu, int dropout, const unsigned long long* key,
                                             const unsigned long long* counter, unsigned long long first_word,
                                             unsigned int threshold, float scale) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= size) return;
    minigrad_activate_element(z, i, i % columns, z[i], M, bias, has_bias, relu, dropout, key, counter, first_word,
                              threshold, scale);
}
""",
        "minigrad_activate",
    )

    def loss(self, gradient_scale: float | None, out: tuple[Array, Array, Array]) -> None:
        """Softmax cross-entropy of the logits against ``self.y``, max-shifted as ``ops.SoftmaxCrossEntropy``
        does; with ``gradient_scale`` (training) its gradient (softmax - onehot) * gradient_scale goes to
        ``probs``. ``out`` is (losses, corrects, slot): training writes the mean loss and the correct count to
        losses[slot[0]] and corrects[slot[0]]; evaluation adds loss * batch size and the count to losses[0] and
        corrects[0]. On the CPU the logits' buffer is shifted in place. On a GPU one kernel (``LOSS``) does it
        all, the last block's bias too where nothing masks that block, and its gradient where the products do not
        make it; training, it then moves the log position, the batch position and the dropout counter past this
        step's (nothing after it in the step reads them). Where ``forward`` left the last block's product to it
        (``logits_product``), that kernel is the product's too: ``LOSS_PRODUCT``."""
        if self.on_gpu:
            self._loss_gpu(gradient_scale, out)
            return
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
        losses, corrects, slot = out
        if gradient_scale is None:
            losses[0] += loss * self.batch_size
            corrects[0] += correct
            return
        self.probs[self.rows, self.y] -= 1
        self.probs *= self.dtype.type(gradient_scale)
        k = int(slot[0])
        losses[k], corrects[k] = loss, correct

    def _loss_gpu(self, gradient_scale: float | None, out: tuple[Array, Array, Array]) -> None:
        last, buffers = self.blocks[-1], self.buffers[-1]
        bias, training = last.linear.bias, gradient_scale is not None
        advance = (
            self.cursor.position,
            dropout_stream(self.device).counter_on_device,
            numpy.uint64(self.words_drawn // 8),
        )
        if self.logits_product is not None:
            (a, weight, tile), logits = self.logits_product, buffers.z
            epilogue = (
                bias.data if bias is not None else logits,  # (not read without a bias)
                numpy.int32(bias is not None),
                self.y,
                numpy.int32(training),
                numpy.float32(gradient_scale or 0.0),
                self.probs,
                self.row_losses,
                self.row_hits,
                *out,
                *advance,
                self.arrived,
            )
            gemm(a, weight, logits, *tile, kernel=fused_product("loss", *tile), epilogue=epilogue)
            return
        fused_bias = bias is not None and self.bias_in_loss(len(self.blocks) - 1, self.kind(last, training))
        bias_gradient = fused_bias and training and not self.products_fused  # (else the weight gradient's product)
        args = (
            buffers.z,
            bias.data if fused_bias and bias is not None else buffers.z,
            numpy.int32(fused_bias),
            self.y,
            numpy.int64(self.batch_size),
            numpy.int64(buffers.z.shape[1]),
            numpy.int32(training),
            numpy.float32(gradient_scale or 0.0),
            self.probs,
            buffers.gb if bias_gradient else buffers.z,
            numpy.int32(bias_gradient),
            *out,
            *advance,
        )
        self.LOSS((1,), (LOSS_THREADS,), args)

    # loss on a GPU: one block of LOSS_THREADS threads (the parts minigrad_loss_total adds), thread t taking rows t,
    # t + LOSS_THREADS, ... (minigrad_row_loss each) and adding their losses and hits, then minigrad_loss_total. Then
    # the last block's bias gradient, by minigrad_column_sums (loss_parts is its scratch).
    LOSS = CudaFunction(
        PHILOX_CUDA
        + COLUMN_SUMS_CUDA
        + LOSS_PARTS_CUDA
        + r"""
extern "C" __global__ void minigrad_softmax_cross_entropy(
        float* logits, const float* bias, int add_bias, const long long* y, long long rows, long long classes,
        int training, float gradient_scale, float* gradient, float* bias_gradient, int want_bias_gradient,
        float* losses, long long* corrects, long long* slot, long long* position, unsigned long long* counter,
        unsigned long long blocks) {
    __shared__ float loss_parts[MINIGRAD_LOSS_THREADS];
    __shared__ long long hit_parts[MINIGRAD_LOSS_THREADS];
    const int t = threadIdx.x;
    float loss = 0.0f;
    long long hits = 0;
    for (long long r = t; r < rows; r += MINIGRAD_LOSS_THREADS) {
        long long hit;
        loss += minigrad_row_loss(logits + r * classes, bias, add_bias, y[r], classes, training, gradient_scale,
                                  gradient + r * classes, &hit);
        hits += hit;
    }
    loss_parts[t] = loss;
    hit_parts[t] = hits;
    __syncthreads();
    auto part = [&](int s, float& loss, long long& hits) { loss = loss_parts[s]; hits = hit_parts[s]; };
    minigrad_loss_total(part, loss_parts, hit_parts, t, rows, training, losses, corrects, slot, position, counter,
                        blocks);
    __syncthreads();  // (loss_parts is the column sums' scratch next)
    if (training && want_bias_gradient)
        for (long long j0 = 0; j0 < classes; j0 += 32)
            minigrad_column_sums(gradient, nullptr, rows, classes, j0, bias_gradient, loss_parts);
}
""",
        "minigrad_softmax_cross_entropy",
    )


# A block's product and its activation in one kernel (Plan.forward, by the tile kernel on a GPU): the tile kernel
# (gemm.GEMM_CUDA) with a store of its own, which applies minigrad_activate_element to each element of C as it is
# summed, instead of writing it for ACTIVATE to read back. The same bits as the product, then ACTIVATE.
ACTIVATING_TILE_CUDA = r"""
template <class LoadA>
__device__ __forceinline__ void minigrad_sgemm_activate_of(LoadA load_a, const float* B, float* C, int M, int N,
                                                           int K, long long sBk, long long sBn, float* mask,
                                                           const float* bias, int has_bias, int relu, int dropout,
                                                           const unsigned long long* key,
                                                           const unsigned long long* counter,
                                                           unsigned long long first_word, unsigned int threshold,
                                                           float scale) {
    minigrad_sgemm_tile_of(load_a, minigrad_strided{B, sBk, sBn}, M, N, K, [&](int row, int col, float sum) {
        minigrad_activate_element(C, (long long)row * N + col, col, sum, mask, bias, has_bias, relu, dropout, key,
                                  counter, first_word, threshold, scale);
    });
}
"""
ACTIVATED_PRODUCT_CUDA = r"""
extern "C" __global__ void minigrad_sgemm_activate(const float* A, const float* B, float* C, int M, int N, int K,
                                                   long long sAm, long long sAk, long long sBk, long long sBn,
                                                   float* mask, const float* bias, int has_bias, int relu,
                                                   int dropout, const unsigned long long* key,
                                                   const unsigned long long* counter, unsigned long long first_word,
                                                   unsigned int threshold, float scale) {
    minigrad_sgemm_activate_of(minigrad_strided{A, sAm, sAk}, B, C, M, N, K, sBk, sBn, mask, bias, has_bias,
                               relu, dropout, key, counter, first_word, threshold, scale);
}
"""
# The first block's product, activated, on the batch it gathers as it reads it (PlannedStep.forward_step, by the
# tile kernel on a GPU): row r of A is the example order[position + r] of the images, its pixels times scale, the
# values BatchCursor.gather_gpu writes. The blocks of C's first column of tiles first write their rows of the
# batch to x (the first block's weight gradient dz^T x reads it) and their labels to y, as the gather does, so
# that every row is written once: one kernel, not the gather and the product. (Written inside the product's
# loop, as it reads A, x's and y's pointers would cost the loop registers: 38 a thread in the default shape,
# not 32, which halves the 1024-thread blocks a multiprocessor holds.)
GATHERED_PRODUCT_CUDA = r"""
struct minigrad_gathered_rows {  // A's row r: the images' example order[first + r], its pixels times scale
    const unsigned char* pixels;
    const long long* order;
    long long first;
    int K;
    float scale;
    __device__ float operator()(int row, int k) const { return (float)pixels[order[first + row] * K + k] * scale; }
    __device__ bool down() const { return false; }  // a row's pixels are adjacent
};
extern "C" __global__ void minigrad_sgemm_gather_activate(const float* B, const unsigned char* pixels,
                                                          const long long* labels, const long long* order,
                                                          const long long* position, float pixel_scale, float* x,
                                                          long long* y, float* C, int M, int N, int K, long long sBk,
                                                          long long sBn, float* mask, const float* bias,
                                                          int has_bias, int relu, int dropout,
                                                          const unsigned long long* key,
                                                          const unsigned long long* counter,
                                                          unsigned long long first_word, unsigned int threshold,
                                                          float scale) {
    const long long first = position[0];
    if (blockIdx.x == 0) {
        constexpr int T = MINIGRAD_GEMM_SIDE * MINIGRAD_GEMM_PER_THREAD;  // the tile's rows
        const int threads = blockDim.x * blockDim.y * blockDim.z;
        const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
        for (int row = blockIdx.y * T; row < blockIdx.y * T + T && row < M; ++row) {
            const long long example = order[first + row];
            for (int k = t; k < K; k += threads)
                x[(long long)row * K + k] = (float)pixels[example * K + k] * pixel_scale;
            if (t == 0) y[row] = labels[example];
        }
    }
    const minigrad_gathered_rows gather{pixels, order, first, K, pixel_scale};
    minigrad_sgemm_activate_of(gather, B, C, M, N, K, sBk, sBn, mask, bias, has_bias, relu, dropout, key, counter,
                               first_word, threshold, scale);
}
"""


# backward_mask's work and SGD's in the backward's products (PlannedStep.backward_step, by the tile kernel on a
# GPU), split between the two products each block's dz comes into: the input gradient of the block after,
# dz = dz' W', stores each element masked, times the block's M (the same bits as the product, then
# BACKWARD_MASK's multiply); the block's weight gradient dW = dz^T a also sums the rows of its A = dz^T, which
# are dz's columns, the bias gradient (gemm.GEMM_CUDA's ROW_SUMS, whose order of the sums is the tile's: a few
# ulp from BACKWARD_MASK's, as those are from the CPU's), and applies SGD to W and b with the two gradients as
# it stores them (minigrad_sgd_element, the same bits as UPDATE's), so that no gradient is written or read back.
MASKED_PRODUCT_CUDA = r"""
extern "C" __global__ void minigrad_sgemm_mask(const float* A, const float* B, float* C, int M, int N, int K,
                                               long long sAm, long long sAk, long long sBk, long long sBn,
                                               const float* mask) {
    minigrad_sgemm_tile(A, B, M, N, K, sAm, sAk, sBk, sBn, [&](int row, int col, float sum) {
        const long long i = (long long)row * N + col;
        C[i] = __fmul_rn(sum, mask[i]);
    });
}
"""
# SGD's step for one element w of a parameter whose gradient is g, as PlannedStep.update's NumPy passes make
# it: w - lr (g + weight_decay w), each product and sum rounded on its own (no fused multiply-add)
SGD_ELEMENT_CUDA = r"""
__device__ __forceinline__ float minigrad_sgd_element(float w, float g, float weight_decay, float lr) {
    if (weight_decay != 0.0f) g = __fadd_rn(g, __fmul_rn(w, weight_decay));
    return __fsub_rn(w, __fmul_rn(g, lr));
}
"""
# C is the weight W itself, which the product's sums (its gradient) update in place: each element is read and
# written by the one thread that summed its gradient
SGD_PRODUCT_CUDA = r"""
extern "C" __global__ void minigrad_sgemm_sgd(const float* A, const float* B, float* W, int M, int N, int K,
                                              long long sAm, long long sAk, long long sBk, long long sBn,
                                              float* bias, int has_bias, const float* lr, int weight_group,
                                              float weight_decay, int bias_group, float bias_decay) {
    auto store = [&](int row, int col, float sum) {
        const long long i = (long long)row * N + col;
        W[i] = minigrad_sgd_element(W[i], sum, weight_decay, lr[weight_group]);
    };
    auto row_store = [&](int row, float sum) {
        if (has_bias) bias[row] = minigrad_sgd_element(bias[row], sum, bias_decay, lr[bias_group]);
    };
    minigrad_sgemm_tile<decltype(store), true, decltype(row_store)>(A, B, M, N, K, sAm, sAk, sBk, sBn, store,
                                                                     row_store);
}
"""


# The last block's product and its loss in one kernel (Plan.loss, by the tile kernel on a GPU, where nothing
# masks that block and a tile is as wide as the logits' rows: its blocks make C in one column of tiles, each
# block whole rows). Each block stores its rows of the logits as the plain product does, then, once all its
# threads have, takes each row's loss, hit and gradient as LOSS does (minigrad_row_loss, a thread a row) into
# row_losses and row_hits; the last block to finish (counted in arrived, which it sets back to 0 for the next
# step: CUDA's threadFenceReduction) adds them up in LOSS's order and makes its sums (minigrad_loss_total). The
# same bits as the product, then LOSS: one kernel, not two, in the step's chain.
LOSS_PRODUCT_CUDA = r"""
extern "C" __global__ void minigrad_sgemm_loss(const float* A, const float* B, float* C, int M, int N, int K,
                                               long long sAm, long long sAk, long long sBk, long long sBn,
                                               const float* bias, int add_bias, const long long* y, int training,
                                               float gradient_scale, float* gradient, float* row_losses,
                                               long long* row_hits, float* losses, long long* corrects,
                                               long long* slot, long long* position, unsigned long long* counter,
                                               unsigned long long blocks, unsigned int* arrived) {
    minigrad_sgemm_tile(A, B, M, N, K, sAm, sAk, sBk, sBn,
                        [&](int row, int col, float sum) { C[(long long)row * N + col] = sum; });
    __syncthreads();  // the block's rows of C written, every column of them (N is at most the tile's width)
    constexpr int T = MINIGRAD_GEMM_SIDE * MINIGRAD_GEMM_PER_THREAD;  // the tile's rows
    const int threads = blockDim.x * blockDim.y * blockDim.z;
    const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    for (int row = blockIdx.y * T + t; row < blockIdx.y * T + T && row < M; row += threads)
        row_losses[row] = minigrad_row_loss(C + (long long)row * N, bias, add_bias, y[row], N, training,
                                            gradient_scale, gradient + (long long)row * N, row_hits + row);
    __shared__ int last;
    __threadfence();  // the block's rows seen by every block before it counts itself done
    __syncthreads();
    if (t == 0) last = atomicAdd(arrived, 1u) == gridDim.x * gridDim.y - 1;
    __syncthreads();
    if (!last) return;
    __shared__ float loss_sums[32];
    __shared__ long long hit_sums[32];
    auto part = [&](int s, float& loss, long long& hits) {  // rows s, s + MINIGRAD_LOSS_THREADS, ..., as LOSS's are
        loss = 0.0f;
        hits = 0;
        for (long long r = s; r < M; r += MINIGRAD_LOSS_THREADS) {  // (__ldcg: from L2, where the others wrote)
            loss += __ldcg(row_losses + r);
            hits += __ldcg(row_hits + r);
        }
    };
    minigrad_loss_total(part, loss_sums, hit_sums, t, M, training, losses, corrects, slot, position, counter, blocks);
    if (t == 0) arrived[0] = 0;
}
"""


# each kernel that is the tile's product with work of its own in it, by what that work is: its CUDA source
FUSED_PRODUCTS_CUDA = {
    "activate": Plan.ACTIVATE_ELEMENT_CUDA + ACTIVATING_TILE_CUDA + ACTIVATED_PRODUCT_CUDA,
    "gather_activate": Plan.ACTIVATE_ELEMENT_CUDA + ACTIVATING_TILE_CUDA + GATHERED_PRODUCT_CUDA,
    "mask": MASKED_PRODUCT_CUDA,
    "sgd": SGD_ELEMENT_CUDA + SGD_PRODUCT_CUDA,
    "loss": PHILOX_CUDA + LOSS_PARTS_CUDA + LOSS_PRODUCT_CUDA,
}


@functools.cache
def fused_product(
    work: str, groups: int = GROUPS, slice_: int = SLICE, per_thread: int = PER_THREAD, side: int = SIDE
) -> CudaFunction:
    """The kernel ``minigrad_sgemm_<work>`` of ``FUSED_PRODUCTS_CUDA`` on the tile kernel in a shape, made once;
    launched by ``gemm.gemm(..., kernel=, epilogue=)`` with its arguments after the product's: for "activate"
    ``Plan.activation_arguments(...)``, for "mask" ``(mask,)``, for "sgd" ``PlannedStep.sgd_arguments(...)``
    (and the weight as C); "gather_activate", whose A is the cursor's images, by ``Plan.gathered_gemm``; "loss"
    by ``Plan.loss``."""
    tile = gemm_source(groups, slice_, per_thread, side, entry=False)
    return CudaFunction(tile + FUSED_PRODUCTS_CUDA[work], f"minigrad_sgemm_{work}")


# as the step asks for them (the shape spelled out: one cached kernel each, not two)
ACTIVATED_PRODUCT = fused_product("activate", GROUPS, SLICE, PER_THREAD, SIDE)
GATHERED_PRODUCT = fused_product("gather_activate", GROUPS, SLICE, PER_THREAD, SIDE)
MASKED_PRODUCT = fused_product("mask", GROUPS, SLICE, PER_THREAD, SIDE)
SGD_PRODUCT = fused_product("sgd", GROUPS, SLICE, PER_THREAD, SIDE)
LOSS_PRODUCT = fused_product("loss", GROUPS, SLICE, PER_THREAD, SIDE)


def fused_products(shape: tuple[int, int, int, int]) -> tuple[CudaFunction, ...]:
    """The step's kernels built on the tile kernel in ``shape``, each with work of its own in the product."""
    return tuple(fused_product(work, *shape) for work in FUSED_PRODUCTS_CUDA)


class SideStream:
    """A second CUDA stream, for work of a step that nothing after it reads until a join: the weight gradients'
    products, which the backward's chain (each block's input gradient, then the mask of the block before it)
    does not wait for. ``with side.fork():`` queues its body on the side stream behind all the current stream
    has queued; ``side.join()`` makes the current stream wait for all the side's work. Both order the GPU's
    work by events, without the host waiting, so a CUDA graph captured across them holds the side's kernels as
    a branch beside the chain, which the GPU runs alongside it (``torch.cuda.Stream.wait_stream`` is PyTorch's
    way of the same). The events are made once, without timing (capture records through them, nothing more)."""

    def __init__(self) -> None:
        cuda = backend.cupy.cuda
        self.stream = cuda.Stream(non_blocking=True)
        self.forked, self.done = cuda.Event(disable_timing=True), cuda.Event(disable_timing=True)

    @contextlib.contextmanager
    def fork(self) -> Iterator[None]:
        """The block's launches on the side stream, after all the current stream has queued so far."""
        self.forked.record(backend.current_stream())
        self.stream.wait_event(self.forked)
        with self.stream:
            yield

    def join(self) -> None:
        """The current stream's next work waits for all the side stream has queued so far."""
        self.done.record(self.stream)
        backend.current_stream().wait_event(self.done)


class PlannedStep(Plan):
    """The chapter's training step on buffers made once: ``step()`` gathers the next batch from the cursor,
    then forward, loss, backward and SGD, and logs the step's loss and correct count in ``losses[k]`` and
    ``corrects[k]`` for the k-th step since ``start_epoch()`` (slots that later steps do not overwrite, so a
    monitor may keep them until the epoch ends). ``steps`` is how many a pass has.

    On a GPU the step is 8 kernels for the chapter's model: three products forward (the first two activating
    as they store, ``fused_product`` "activate", the first gathering the batch as it reads it, so that the
    cursor's gather needs no kernel of its own, "gather_activate", the last taking the ``loss`` of its logits,
    "loss": the last bias, the loss, its gradient and the logs; it also moves the batch position, the dropout
    counter and the log position on, which the kernels before it read), and five products backward: two input
    gradients masking as they store ("mask"), and three weight gradients making the bias gradients and applying
    SGD to their block's weight and bias ("sgd"). With cuBLAS's products, the gather, two ``activate``, the
    ``loss`` and two ``backward_mask`` kernels do that work instead, and one ``update`` for every parameter: 15
    in all. The weight gradients' products but the first
    block's run on a second stream (``SideStream``), beside the chain of input gradients that the step waits
    for: a recorded graph holds them as a branch."""

    def __init__(
        self,
        model: Module,
        optimizer: SGD,
        cursor: BatchCursor,
        batch_size: int,
        steps: int,
        products: str = DEFAULT_PRODUCTS,
    ) -> None:
        super().__init__(model, cursor, batch_size, products)
        self.optimizer = optimizer
        xp = self.xp
        groups = optimizer.param_groups
        with backend.on_device(self.device):
            self.losses = xp.zeros(steps, dtype=self.dtype)
            self.corrects = xp.zeros(steps, dtype=xp.int64)
            self.logged = xp.zeros(1, dtype=xp.int64)  # steps logged since start_epoch (a graph reads it on the GPU)
            self.lr = xp.zeros(len(groups), dtype=self.dtype)  # each group's rate, which a GPU's update reads
        self.group_of = group_of = {id(p): g for g, group in enumerate(groups) for p in group["params"]}
        self.updates = []  # (parameter, gradient buffer, the index of its group), in the model's order
        for block, buffers in zip(self.blocks, self.buffers):
            self.updates.append((block.linear.weight, buffers.gW, group_of[id(block.linear.weight)]))
            if block.linear.bias is not None:
                self.updates.append((block.linear.bias, buffers.gb, group_of[id(block.linear.bias)]))
        self.decay: dict[int, Array] = {}  # per parameter: scratch for weight decay, made on first use
        self.parameter_count = sum(p.data.size for p, _, _ in self.updates)  # elements, over every parameter
        self.side: SideStream | None = None  # on a GPU: the stream of the weight gradients' products
        if self.on_gpu:
            self.update_table = self._update_table()
            with backend.on_device(self.device):
                self.side = SideStream()
        self.set_lr()

    def sgd_arguments(self, block: Block) -> tuple[Any, ...]:
        """What the "sgd" product (``fused_product``) is given after the product's, whose C is the block's
        weight: the bias, the learning rates on the device, the weight's and the bias's groups and weight decays
        (the plan is made again when a weight decay changes; the rates are read at replay)."""
        weight, bias = block.linear.weight, block.linear.bias
        groups = self.optimizer.param_groups
        weight_group = self.group_of[id(weight)]
        bias_group = self.group_of[id(bias)] if bias is not None else weight_group
        return (
            bias.data if bias is not None else weight.data,  # (not read without a bias)
            numpy.int32(bias is not None),
            self.lr,
            numpy.int32(weight_group),
            numpy.float32(groups[weight_group]["weight_decay"]),
            numpy.int32(bias_group),
            numpy.float32(groups[bias_group]["weight_decay"]),
        )

    def _update_table(self) -> tuple[Array, ...]:
        """What ``UPDATE`` reads about the parameters: their and their gradients' addresses, where each ends in
        the concatenation of them all, their groups and their groups' weight decays."""
        xp, groups = self.xp, self.optimizer.param_groups
        with backend.on_device(self.device):
            return (
                xp.asarray([backend.address(p.data) for p, _, _ in self.updates], dtype=xp.uint64),
                xp.asarray([backend.address(g) for _, g, _ in self.updates], dtype=xp.uint64),
                xp.asarray(numpy.cumsum([p.data.size for p, _, _ in self.updates]), dtype=xp.int64),
                xp.asarray([g for _, _, g in self.updates], dtype=xp.int32),
                xp.asarray([groups[g]["weight_decay"] for _, _, g in self.updates], dtype=xp.float32),
            )

    def set_lr(self) -> None:
        """Write each group's current learning rate where a GPU's update reads it (between steps)."""
        self.lr[...] = self.xp.asarray([group["lr"] for group in self.optimizer.param_groups], dtype=self.dtype)

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
        lr = self.folded_lr()
        kinds = self.forward_step(lr)
        self.backward_step(kinds)
        self.update(folded=lr is not None)

    def forward_step(self, lr: float | None) -> list[str]:
        """Gather the next batch, run the blocks and the loss, log the loss and correct count, and leave the
        loss's gradient in ``probs``, times ``lr`` when it is folded in; the blocks' kinds for ``backward_step``.
        On a GPU the loss's kernel moves the cursor's position on, and by the tile kernel the first block's
        product gathers the batch (``gathered_gemm``), but where it stores nothing but the product."""
        gathered = self.gathers(training=True)
        if not gathered:
            self.cursor.gather(self.x, self.y, advance=not self.on_gpu)
        kinds = self.forward(training=True, gathered=gathered)
        scale = self.dtype.type(1) / self.dtype.type(self.batch_size)  # dL/dlogits = (softmax - onehot) / N
        self.loss(scale if lr is None else scale * self.dtype.type(lr), (self.losses, self.corrects, self.logged))
        if not self.on_gpu:
            self.logged += 1
        return kinds

    def backward_step(self, kinds: list[str]) -> None:
        """Every block's gradients, from the loss's gradient in ``probs``. Each block's dz (masked) feeds two
        products: its input gradient, which the block before waits for, and its weight gradient, which nothing
        after it reads but the update. The weight gradient comes second, after the input gradient has read the
        weight (which the tile kernel's product updates); on a GPU it goes on the side stream (``SideStream``),
        beside the chain, and the step waits for it at the end, but the first block's, which ends the chain.
        On the CPU and with cuBLAS's products the gradients go to the gradient buffers, for ``update``. By the
        tile kernel on a GPU (``products_fused``), the products do ``backward_mask``'s work and SGD's: the input
        gradient of the block after masks dz as it stores it, and the weight gradient makes the bias gradient
        and applies SGD to the block's weight and bias ("sgd")."""
        upstream, last, fused = self.probs, len(self.blocks) - 1, self.products_fused
        for index in range(last, -1, -1):
            block, buffers, kind = self.blocks[index], self.buffers[index], kinds[index]
            dz = upstream
            if fused:  # dz came masked from the block after's input gradient, but the last block's
                if index == last and kind != "":
                    self.backward_mask(dz, buffers, kind, bias_gradient=False)
            elif not self.bias_in_loss(index, kind):  # (there the loss's kernel made the bias's gradient)
                self.backward_mask(dz, buffers, kind)
            weight = block.linear.weight.data
            if index > 0:
                before = self.buffers[index - 1]
                if fused and kinds[index - 1] != "":
                    self.fused_gemm("mask", dz, weight, before.dz, "input gradient", before.M)
                else:
                    self.matmul(dz, weight, before.dz, "input gradient")
                upstream = before.dz
            a = self.x if index == 0 else self.buffers[index - 1].z
            with self.beside() if index > 0 else contextlib.nullcontext():
                if fused:
                    self.fused_gemm("sgd", dz.T, a, weight, "weight gradient", *self.sgd_arguments(block))
                else:
                    self.matmul(dz.T, a, buffers.gW, "weight gradient")
        if self.side is not None:
            self.side.join()

    @contextlib.contextmanager
    def beside(self) -> Iterator[None]:
        """The block's work on the side stream (``SideStream.fork``) on a GPU; in order on the CPU."""
        if self.side is None:
            yield
        else:
            with self.side.fork():
                yield

    def backward_mask(self, dz: Array, buffers: Buffers, kind: str, bias_gradient: bool = True) -> None:
        """dz <- dz * M (a "mask") or dz * [z > 0] ("relu"), then (with ``bias_gradient``, where there is a bias)
        the bias gradient db = column sums of dz. On a GPU one kernel: ``BACKWARD_MASK``."""
        xp, gb = self.xp, buffers.gb if bias_gradient else None
        if self.on_gpu:
            if kind == "" and gb is None:
                return
            rows, columns = dz.shape
            args = (
                dz,
                buffers.M,
                numpy.int32(kind != ""),
                gb if gb is not None else dz,
                numpy.int32(gb is not None),
                numpy.int64(rows),
                numpy.int64(columns),
            )
            self.BACKWARD_MASK(((columns + 31) // 32,), (COLUMN_THREADS,), args)
            return
        if kind == "mask":
            xp.multiply(dz, buffers.M, out=dz)
        elif kind == "relu":
            xp.multiply(dz, buffers.positive, out=dz)
        if gb is not None:
            xp.sum(dz, axis=0, out=gb)

    # backward_mask on a GPU: a block of 256 threads per 32 columns, minigrad_column_sums masking as it sums
    # (M is 1 or 0 for "relu").
    BACKWARD_MASK = CudaFunction(
        COLUMN_SUMS_CUDA
        + r"""
extern "C" __global__ void minigrad_backward_mask(float* dz, const float* M, int masked, float* bias_gradient,
                                                  int want_bias_gradient, long long rows, long long columns) {
    __shared__ float scratch[256];
    minigrad_column_sums(dz, masked ? M : nullptr, rows, columns, (long long)blockIdx.x * 32,
                         want_bias_gradient ? bias_gradient : nullptr, scratch);
}
""",
        "minigrad_backward_mask",
    )

    def update(self, folded: bool) -> None:
        """SGD: w <- w - lr (g + weight_decay w), each parameter in place (g already times lr when folded). On a
        GPU one kernel for all of them, ``UPDATE``, with cuBLAS's products (the tile kernel's have applied it)."""
        xp, dtype = self.xp, self.dtype.type
        if self.on_gpu:
            if not self.products_fused:  # (else the weight gradients' products applied it as they stored)
                args = (*self.update_table, self.lr, numpy.int32(len(self.updates)), numpy.int64(self.parameter_count))
                self.UPDATE(((self.parameter_count + THREADS - 1) // THREADS,), (THREADS,), args)
        else:
            for parameter, grad, group in self.updates:
                w = parameter.data
                if folded:
                    xp.subtract(w, grad, out=w)
                    continue
                # eager's passes: g + weight_decay * w, then w - lr * g
                weight_decay, lr = (self.optimizer.param_groups[group][key] for key in ("weight_decay", "lr"))
                if weight_decay:
                    decay = self._decay_buffer(parameter, grad)
                    xp.multiply(w, dtype(weight_decay), out=decay)
                    xp.add(grad, decay, out=grad)
                xp.multiply(grad, dtype(lr), out=grad)
                xp.subtract(w, grad, out=w)
        for parameter, _, _ in self.updates:
            mark_changed_in_place(parameter)  # a graph that saved the old weights must not backward

    def _decay_buffer(self, parameter, grad):
        if id(parameter) not in self.decay:
            self.decay[id(parameter)] = self.xp.empty_like(grad)
        return self.decay[id(parameter)]

    # update on a GPU, one thread per element of all the parameters together (PyTorch's multi-tensor SGD), the
    # rates read from device memory when it runs (a replayed graph follows a schedule), minigrad_sgd_element's
    # step (each product rounded on its own, as the CPU's passes round).
    UPDATE = CudaFunction(
        SGD_ELEMENT_CUDA
        + r"""
extern "C" __global__ void minigrad_sgd_update(const unsigned long long* parameters,
                                               const unsigned long long* gradients, const long long* ends,
                                               const int* group, const float* weight_decay, const float* lr,
                                               int tensors, long long total) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    int t = 0;
    while (ends[t] <= i) ++t;
    const long long k = i - (t > 0 ? ends[t - 1] : 0);
    float* w = (float*)parameters[t];
    w[k] = minigrad_sgd_element(w[k], ((const float*)gradients[t])[k], weight_decay[t], lr[group[t]]);
}
""",
        "minigrad_sgd_update",
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

    def __init__(self, model: Module, cursor: BatchCursor, batch_size: int, products: str = DEFAULT_PRODUCTS) -> None:
        super().__init__(model, cursor, batch_size, products)
        with backend.on_device(self.device):
            self.loss_sum = self.xp.zeros(1, dtype=self.dtype)
            self.correct = self.xp.zeros(1, dtype=self.xp.int64)

    def step(self) -> None:
        """One evaluation step: gather, forward without dropout, add to the sums (in ``train.evaluate``'s order),
        move the cursor on. By the tile kernel on a GPU the first product gathers (``gathers``), and the last
        takes the loss: three kernels and the cursor's advance for the chapter's model."""
        gathered = self.gathers(training=False)
        if not gathered:
            self.cursor.gather(self.x, self.y)
        self.forward(training=False, gathered=gathered)
        self.loss(None, (self.loss_sum, self.correct, self.correct))
        if gathered:  # (after the product that read the position)
            self.cursor.advance(self.batch_size)

    def take_sums(self) -> tuple[float, int]:
        """(loss sum, correct count) since the last call, read on the host (one wait for a GPU); then reset."""
        sums = float(self.loss_sum[0]), int(self.correct[0])
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
