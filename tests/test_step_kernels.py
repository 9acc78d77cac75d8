"""The planned step's GPU kernels against the NumPy code beside them, on every machine: each kernel's CUDA source
built for the host (tests/cuda_host.py) and run on the same inputs as the CPU's passes. Masks, sums and the
update are compared bit for bit; the loss to a few ulp (the C library's expf and logf against NumPy's). Then the
whole GPU step, its kernels run on the host and its products by NumPy (or by the tile kernel itself, built for
the host too), against the CPU's planned step, with its kernels counted. On a GPU, tests/test_graphs.py checks
the kernels themselves."""

import contextlib

import numpy as np
import pytest

import minigrad as mg
from minigrad import backend, nn
from minigrad.backend import CudaFunction, CudaKernel
from minigrad.chapter.model import concise_mlp
from minigrad.data.loader import PIXEL_SCALE, BatchCursor, scaled_pixels
from minigrad.fast import PlannedTraining
from minigrad.fast import plan as fast_plan
from minigrad.fast.gemm import TILE_NAMES
from minigrad.fast.plan import (
    COLUMN_GROUPS,
    COLUMN_THREADS,
    LOSS_THREADS,
    THREADS,
    PlannedEval,
    PlannedStep,
    SideStream,
    tile_shapes,
)
from minigrad.ops import keep_threshold
from minigrad.random import PhiloxStream, blocks_for, dropout_stream
from minigrad.train import Trainer

from .cuda_host import HostFunction
from .test_planned import loader, odd_model

MASK64 = 2**64 - 1
needs_cuda = pytest.mark.skipif(not mg.cuda_available(), reason="no CUDA: CuPy is not installed or finds no GPU")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """host(function) -> the CudaFunction built for the host, once per module."""
    folder, built = tmp_path_factory.mktemp("cuda_host"), {}

    def build(function):
        if function.source not in built:  # by source: the GEMM's tile shapes share a name
            (folder / f"{len(built)}").mkdir()
            built[function.source] = HostFunction(function, folder / f"{len(built)}")
        return built[function.source]

    return build


def on_the_gpu(function):
    """The CudaFunction itself, called with NumPy arrays: each copied to the GPU, and back when it has run."""

    def call(grid, block, args):
        on_device = [backend.cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
        function(grid, block, tuple(on_device))
        for given, result in zip(args, on_device):
            if isinstance(given, np.ndarray):
                given[...] = backend.cupy.asnumpy(result)

    return call


@pytest.fixture(params=["host", pytest.param("cuda", marks=needs_cuda)])
def run(request, host):
    """run(function) -> a callable taking the GPU call's (grid, block, args) with NumPy arrays: the kernel built
    for the host, or (the "cuda" variants) the kernel on a GPU."""
    return host if request.param == "host" else on_the_gpu


def blocks(size, threads=THREADS):
    return ((size + threads - 1) // threads,)


def planned(model, batch, count=120, lr=0.1):
    """A CPU PlannedStep of ``model`` for batches of ``batch`` (its buffers are what the kernels are given)."""
    data = loader(count=count, batch=batch)
    return PlannedStep(model, mg.optim.SGD(model.parameters(), lr=lr), BatchCursor(data), batch, 4)


def column_sums(x):
    """fast.plan.COLUMN_SUMS_CUDA's sums in NumPy, in its order: every COLUMN_GROUPS-th row into a partial sum,
    then the partial sums in turn."""
    partial = np.zeros((COLUMN_GROUPS, x.shape[1]), dtype=x.dtype)
    for r, row in enumerate(x):
        partial[r % COLUMN_GROUPS] += row
    total = partial[0].copy()
    for group in partial[1:]:
        total += group
    return total


def counter_words(counter):
    return np.array([(counter >> (64 * k)) & MASK64 for k in range(4)], dtype=np.uint64)


def test_the_gather_kernel_gives_the_cursors_batch_and_leaves_the_position(run):
    data = loader(count=50, batch=30, images=(13,))
    cursor = BatchCursor(data)
    cursor.start_epoch(data.epoch_order())
    cursor.position[0] = 7
    x, y = np.empty((30, 13), np.float32), np.empty(30, np.int64)
    cursor.gather(x, y, advance=False)
    assert cursor.position[0] == 7
    got_x, got_y, position = np.full_like(x, np.nan), np.full_like(y, -1), cursor.position.copy()
    args = (cursor.images, cursor.labels, cursor.order, position, np.int64(x.size), np.int64(13), PIXEL_SCALE)
    run(BatchCursor.gather_gpu)(blocks(x.size), (THREADS,), (*args, got_x, got_y))  # 390 threads: two blocks
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    assert position[0] == 7


ACTIVATIONS = {  # (layers after the first Linear, bias, kind)
    "ReLU and dropout": ([nn.ReLU(), nn.Dropout(0.3)], True, "mask"),
    "dropout alone": ([nn.Dropout(0.5)], True, "mask"),
    "ReLU and dropout, no bias": ([nn.ReLU(), nn.Dropout(0.2)], False, "mask"),
    "ReLU alone": ([nn.ReLU()], True, "relu"),
    "the bias alone": ([], True, ""),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_the_activate_kernel_equals_the_numpy_passes(run, name):
    """From a counter with blocks already drawn this step (first_word), as the second block of a step draws."""
    layers, bias, kind = ACTIVATIONS[name]
    mg.manual_seed(4)
    model = nn.Sequential(nn.Linear(784, 37, bias=bias), *layers, nn.Linear(37, 10))
    step = planned(model, batch=9)
    block, buffers = step.blocks[0], step.buffers[0]
    assert step.kind(block, training=True) == kind
    rng = np.random.default_rng(1)
    if bias:  # (a Linear's bias starts at zero, which would hide a bias read from the wrong column)
        block.linear.bias.data[...] = rng.standard_normal(37).astype(np.float32)
    z = rng.standard_normal(buffers.z.shape).astype(np.float32)
    z[0, :3] = [0.0, -0.0, np.nan]
    stream, start, drawn = dropout_stream("cpu"), 5, 3
    stream.set_counter(start + drawn)
    buffers.z[...] = z
    step.activate(block, buffers, kind, training=True)  # the CPU's passes
    expected_z, expected_M = buffers.z.copy(), buffers.M.copy()
    got_z, got_M = z.copy(), np.full_like(z, 7.0)
    args = (got_z, np.int64(z.size), np.int64(37), *activation_args(got_M, block, kind, stream, start, drawn))
    run(fast_plan.Plan.ACTIVATE)(blocks(z.size), (THREADS,), args)
    np.testing.assert_array_equal(got_z, expected_z)
    if kind == "mask":
        np.testing.assert_array_equal(got_M, expected_M)
        assert 0 < (got_M == 0).mean() < 1
    elif kind == "relu":
        np.testing.assert_array_equal(got_M, (expected_z > 0).astype(np.float32))  # [z + b > 0]


def activation_args(M, block, kind, stream, start, drawn):
    """What minigrad_activate_element is given after the element (Plan.activation_arguments's order): the mask
    into M, the block's bias, the Philox counter at block ``start`` with ``drawn`` blocks drawn this step."""
    bias, p = block.linear.bias, block.dropout.p if kind == "mask" else 0.0
    return (
        M,
        bias.data if bias is not None else M,
        np.int32(bias is not None),
        np.int32(block.relu),
        np.int32(kind == "mask"),
        stream.key,
        counter_words(start),
        np.uint64(8 * drawn),
        keep_threshold(p),
        np.float32(1 / (1 - p)),
    )


@pytest.mark.parametrize("tile", ["tile", "tile 4x16 2x2", "tile 2x16 4x4", "tile 8x16 2x2 side 8"])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_the_activated_product_equals_the_product_then_the_numpy_passes(run, name, tile):
    """The tile kernel's product with the block's activation in its store (fast.plan.fused_product "activate"): the
    same bits as the tile kernel's product followed by the CPU's activate passes, z and M, for every kind of
    block, the dropout words from a counter with blocks already drawn this step; sides no tile divides and a
    K of several trips, B a transposed view as the step passes its weights (on the host, and on a GPU)."""
    from minigrad.fast.gemm import tile_grid, tile_kernel

    from .cuda_host import sanitizer

    if sanitizer() and (tile != "tile" or name not in ("ReLU and dropout", "ReLU and dropout, no bias")):
        pytest.skip("under the sanitizers the default shape, with and without a bias (test_graphs covers the shapes)")
    layers, bias, kind = ACTIVATIONS[name]
    mg.manual_seed(4)
    model = nn.Sequential(nn.Linear(150, 37, bias=bias), *layers, nn.Linear(37, 10))
    step = planned(model, batch=19, count=60)
    block, buffers = step.blocks[0], step.buffers[0]
    shape = TILE_NAMES[tile]
    rng = np.random.default_rng(2)
    if bias:  # (a Linear's bias starts at zero, which would hide a bias read from the wrong column)
        block.linear.bias.data[...] = rng.standard_normal(37).astype(np.float32)
    x = rng.standard_normal((19, 150)).astype(np.float32)
    weight = block.linear.weight.data  # (37, 150): the product takes its transpose, a strided view
    operands = (x, weight, *map(np.int32, (19, 37, 150)), *map(np.int64, (150, 1, 1, 150)))
    groups, _, per_thread, side = shape
    grid, threads = tile_grid(19, 37, per_thread, side), (side, side, groups)
    product = np.full((19, 37), np.nan, np.float32)
    run(tile_kernel(*shape))(grid, threads, (x, weight, product, *operands[2:]))
    np.testing.assert_allclose(product, x @ weight.T, rtol=1e-5, atol=1e-5)
    stream, start, drawn = dropout_stream("cpu"), 5, 3
    stream.set_counter(start + drawn)
    buffers.z[...] = product
    step.activate(block, buffers, kind, training=True)  # the CPU's passes on the tile's product
    got_z, got_M = np.full_like(product, np.nan), np.full_like(product, 7.0)
    epilogue = activation_args(got_M, block, kind, stream, start, drawn)
    run(fast_plan.fused_product("activate", *shape))(grid, threads, (x, weight, got_z, *operands[2:], *epilogue))
    np.testing.assert_array_equal(got_z, buffers.z)
    if kind == "mask":
        np.testing.assert_array_equal(got_M, buffers.M)
        assert 0 < (got_M == 0).mean() < 1
    elif kind == "relu":
        np.testing.assert_array_equal(got_M, (buffers.z > 0).astype(np.float32))


@pytest.mark.parametrize("tile", ["tile", "tile 4x64", "tile 2x16 4x4", "tile 8x16 2x2 side 8"])
def test_the_gathered_product_equals_the_gather_then_the_activated_product(run, tile):
    """The first block's product that gathers its batch as it reads it (fast.plan.fused_product
    "gather_activate"): x and y as the gather kernel writes them (every element once, by the blocks of C's first
    column), z and M the same bits as the activated product on that x. The batch from the middle of a shuffled
    epoch, its rows and the images' pixels in numbers no tile divides, several trips of K, the weight a
    transposed view (on the host, and on a GPU)."""
    from minigrad.fast.gemm import tile_grid

    from .cuda_host import sanitizer

    # under the sanitizers a thread gathering one row of A (the default shape), and four rows (4 x 4 a thread)
    if sanitizer() and tile not in ("tile", "tile 2x16 4x4"):
        pytest.skip("under the sanitizers the default shape and 4 x 4 a thread (every shape runs without them)")
    mg.manual_seed(4)
    model = nn.Sequential(nn.Linear(150, 37), nn.ReLU(), nn.Dropout(0.3), nn.Linear(37, 10))
    data = loader(count=60, batch=19, images=(150,))
    step = PlannedStep(model, mg.optim.SGD(model.parameters(), lr=0.1), BatchCursor(data), 19, 4)
    block, cursor = step.blocks[0], step.cursor
    block.linear.bias.data[...] = np.random.default_rng(2).standard_normal(37).astype(np.float32)
    cursor.start_epoch(data.epoch_order())
    cursor.position[0] = 23
    x, y = np.full_like(step.x, np.nan), np.full_like(step.y, -1)
    gather_args = (cursor.images, cursor.labels, cursor.order, cursor.position, np.int64(x.size), np.int64(150))
    run(BatchCursor.gather_gpu)(blocks(x.size), (THREADS,), (*gather_args, PIXEL_SCALE, x, y))
    weight = block.linear.weight.data  # (37, 150): the product takes its transpose, a strided view
    shape = TILE_NAMES[tile]
    groups, _, per_thread, side = shape
    grid, threads = tile_grid(19, 37, per_thread, side), (side, side, groups)
    sizes, strides = tuple(map(np.int32, (19, 37, 150))), tuple(map(np.int64, (150, 1, 1, 150)))
    stream, start, drawn = dropout_stream("cpu"), 5, 3
    z, M = np.full((19, 37), np.nan, np.float32), np.full((19, 37), 7.0, np.float32)
    epilogue = activation_args(M, block, "mask", stream, start, drawn)
    run(fast_plan.fused_product("activate", *shape))(grid, threads, (x, weight, z, *sizes, *strides, *epilogue))
    got_x, got_y = np.full_like(x, np.nan), np.full_like(y, -1)
    got_z, got_M = np.full_like(z, np.nan), np.full_like(M, 7.0)
    epilogue = activation_args(got_M, block, "mask", stream, start, drawn)
    batch = (cursor.images, cursor.labels, cursor.order, cursor.position, PIXEL_SCALE, got_x, got_y)
    args = (weight, *batch, got_z, *sizes, *strides[2:], *epilogue)
    run(fast_plan.fused_product("gather_activate", *shape))(grid, threads, args)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    np.testing.assert_array_equal(got_z, z)
    np.testing.assert_array_equal(got_M, M)
    assert cursor.position[0] == 23 and 0 < (got_M == 0).mean() < 1
    rows = cursor.order[23:42]  # the examples at positions 23 to 41 of the epoch's order
    np.testing.assert_array_equal(got_y, data.labels[rows])
    np.testing.assert_array_equal(got_x, scaled_pixels(cursor.images[rows]))


def loss_inputs(rows, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((rows, classes)).astype(np.float32) * 3
    logits[1, [2, 7]] = 9.0  # a tie: the first largest is the prediction
    return logits, rng.standard_normal(classes).astype(np.float32), rng.integers(0, classes, rows)


def loss_args(step, logits, bias, y, training, scale, out, bias_gradient, positions=None):
    """The loss kernel's arguments; ``positions`` (the batch position, the dropout counter, the Philox blocks the
    step drew) those it moves on when training (by default arrays no test reads)."""
    rows, classes = logits.shape
    positions = positions or (np.zeros(1, np.int64), np.zeros(4, np.uint64), np.uint64(0))
    return (
        logits,
        bias,
        np.int32(1),
        y,
        np.int64(rows),
        np.int64(classes),
        np.int32(training),
        np.float32(scale),
        step.probs,
        bias_gradient,
        np.int32(training),
        *out,
        *positions,
    )


@pytest.mark.parametrize("rows, classes", [(7, 10), (300, 10), (40, 37)])  # rows < or > threads; 2 column tiles
def test_the_loss_kernel_equals_the_numpy_loss_and_gradient(run, rows, classes):
    mg.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, classes))
    step = planned(model, batch=rows, count=rows)
    logits, bias, y = loss_inputs(rows, classes)
    scale = np.float32(1) / np.float32(rows)
    step.y[...] = y
    np.add(logits, bias, out=step.buffers[-1].z)  # the CPU adds the bias in activate
    losses, corrects, slot = np.zeros(4, np.float32), np.zeros(4, np.int64), np.array([2])
    step.loss(scale, (losses, corrects, slot))
    gradient, bias_gradient = step.probs.copy(), step.probs.sum(axis=0)
    assert corrects[2] == (np.argmax(logits + bias, axis=1) == y).sum()

    got_losses, got_corrects = np.zeros(4, np.float32), np.zeros(4, np.int64)
    got_bias_gradient = np.zeros(classes, np.float32)
    got_logits = logits.copy()
    step.probs[...] = np.nan
    out = (got_losses, got_corrects, slot)
    position, counter = np.array([64]), counter_words(MASK64 - 1)
    args = loss_args(step, got_logits, bias, y, 1, scale, out, got_bias_gradient, (position, counter, np.uint64(5)))
    run(fast_plan.Plan.LOSS)((1,), (LOSS_THREADS,), args)
    np.testing.assert_array_equal(got_logits, logits + bias)  # the bias added in place, as the CPU's activate does
    np.testing.assert_allclose(step.probs, gradient, rtol=2e-6, atol=1e-9)
    np.testing.assert_array_equal(got_bias_gradient, column_sums(step.probs))  # in the kernel's order
    np.testing.assert_allclose(got_bias_gradient, bias_gradient, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(got_losses, losses, rtol=2e-6)
    np.testing.assert_array_equal(got_corrects, corrects)
    assert got_losses[[0, 1, 3]].tolist() == [0, 0, 0]  # only the slot is written
    # then the positions past this step's: the log's, the batch's by its rows, the counter across 64 bits
    assert slot[0] == 3 and position[0] == 64 + rows
    np.testing.assert_array_equal(counter, counter_words(MASK64 - 1 + 5))


# (rows fewer than a block's, a tile's rows dividing none, more than the loss's threads) x (tiles 16, 32 and 64 rows
# high, of 1024, 1024, 512 and 128 threads)
@pytest.mark.parametrize("rows", [7, 37, 300])
@pytest.mark.parametrize("tile", ["tile", "tile 4x16 2x2", "tile 2x16 4x4", "tile 8x16 4x4 side 4"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluating"])
def test_the_loss_product_equals_the_product_then_the_loss_kernel(run, rows, tile, training):
    """The last block's product with the loss in it (fast.plan.fused_product "loss"), against the plain product
    in the same shape, then the loss kernel: the same bits in the logits (the bias added in place), the
    gradient, the log (or the evaluation's sums) and the positions, made by the last of its blocks to finish,
    which sets the count of those back to 0: twice in a row, the second step's slot after the first's."""
    from minigrad.fast.gemm import tile_grid, tile_kernel

    from .cuda_host import sanitizer

    # under the sanitizers the loss's part shared by 1024, 512 and 128 threads (the loss and sums' barriers)
    if sanitizer() and (tile == "tile 4x16 2x2" or rows == 300):
        pytest.skip("under the sanitizers three shapes on two sizes (every case runs without them)")
    mg.manual_seed(0)
    features, classes = 24, 10
    model = nn.Sequential(nn.Linear(784, features), nn.ReLU(), nn.Linear(features, classes))
    step = planned(model, batch=rows, count=rows)
    rng = np.random.default_rng(5)
    a = rng.standard_normal((rows, features)).astype(np.float32)
    weight = rng.standard_normal((classes, features)).astype(np.float32)  # the product takes its transpose, a view
    _, bias, y = loss_inputs(rows, classes)
    shape = TILE_NAMES[tile]
    groups, _, per_thread, side = shape
    grid, threads = tile_grid(rows, classes, per_thread, side), (side, side, groups)
    assert grid[0] == 1  # one column of tiles: each block has whole rows
    sizes, strides = tuple(map(np.int32, (rows, classes, features))), tuple(map(np.int64, (features, 1, 1, features)))
    scale = np.float32(1) / np.float32(rows) if training else np.float32(0)

    def logs():  # the step's log (or the evaluation's sums), its slot, the batch position and the dropout counter
        return np.full(4, 1.5, np.float32), np.array([0, 0, 3, 0]), np.array([2]), np.array([64]), counter_words(9)

    expected, got = logs(), logs()
    expected_gradient, got_gradient = np.full((rows, classes), np.nan, np.float32), np.full((rows, classes), 7.0)
    got_gradient = got_gradient.astype(np.float32)
    arrived = np.zeros(1, np.uint32)
    for _ in range(2):
        logits = np.full((rows, classes), np.nan, np.float32)
        run(tile_kernel(*shape))(grid, threads, (a, weight, logits, *sizes, *strides))
        losses, corrects, slot, position, counter = expected
        out = (losses, corrects, slot) if training else (losses, corrects, corrects)
        step.probs = expected_gradient
        args = loss_args(step, logits, bias, y, int(training), scale, out, np.zeros(classes, np.float32))
        run(fast_plan.Plan.LOSS)((1,), (LOSS_THREADS,), (*args[:-3], position, counter, np.uint64(5)))

        got_logits, (losses, corrects, slot, position, counter) = np.full_like(logits, -3.0), got
        out = (losses, corrects, slot) if training else (losses, corrects, corrects)
        row_losses, row_hits = np.full(rows, np.nan, np.float32), np.full(rows, -1)
        loss_args_ = (bias, np.int32(1), y, np.int32(training), scale, got_gradient, row_losses, row_hits, *out)
        epilogue = (*loss_args_, position, counter, np.uint64(5), arrived)
        run(fast_plan.fused_product("loss", *shape))(
            grid, threads, (a, weight, got_logits, *sizes, *strides, *epilogue)
        )
        np.testing.assert_array_equal(got_logits, logits)
        assert arrived[0] == 0
    for ours, theirs in zip(got, expected):
        np.testing.assert_array_equal(ours, theirs)
    if training:
        np.testing.assert_array_equal(got_gradient, expected_gradient)
        assert expected[2][0] == 4 and expected[3][0] == 64 + 2 * rows and (expected[0][2:4] != 1.5).all()
    else:
        assert (got_gradient == 7.0).all()  # evaluating, no gradient is written
        assert expected[0][0] != 1.5 and expected[3][0] == 64 and expected[2][0] == 2


@pytest.mark.parametrize("nan", [False, True])
def test_the_loss_kernel_adds_an_evaluations_sums_as_numpy_does(run, nan):
    """Added to what the sums held; with a NaN logit, argmax takes the NaN's place, as NumPy's does."""
    mg.manual_seed(0)
    rows = 40
    evaluation = PlannedEval(concise_mlp(hidden=(16, 16)), BatchCursor(loader(count=rows, batch=rows)), rows)
    logits, bias, y = loss_inputs(rows, seed=3)
    if nan:
        logits[5, 4], y[5] = np.nan, 4
    evaluation.y[...] = y
    np.add(logits, bias, out=evaluation.buffers[-1].z)
    expected = np.array([1.5], np.float32), np.array([3])
    evaluation.loss(None, (*expected, expected[1]))
    got = np.array([1.5], np.float32), np.array([3])
    positions = np.array([64]), counter_words(7), np.uint64(5)
    args = loss_args(evaluation, logits.copy(), bias, y, 0, 0.0, (*got, got[1]), np.zeros(10, np.float32), positions)
    run(fast_plan.Plan.LOSS)((1,), (LOSS_THREADS,), args)
    np.testing.assert_allclose(got[0], expected[0], rtol=2e-6)  # NaN where NumPy's is NaN
    assert np.isnan(got[0][0]) == nan
    assert got[1][0] == expected[1][0] > 3
    assert positions[0][0] == 64  # evaluation's cursor moves itself on; nothing else moves
    np.testing.assert_array_equal(positions[1], counter_words(7))


@pytest.mark.parametrize("kind, bias", [("mask", True), ("mask", False), ("relu", True), ("relu", False), ("", True)])
def test_the_backward_mask_kernel_equals_the_numpy_passes(run, kind, bias):
    """(With neither a mask nor a bias a GPU launches nothing.)"""
    mg.manual_seed(0)
    step = planned(nn.Sequential(nn.Linear(784, 45, bias=bias), nn.ReLU(), nn.Linear(45, 10)), batch=23)
    buffers = step.buffers[0]
    rng = np.random.default_rng(2)
    dz = rng.standard_normal((23, 45)).astype(np.float32)
    buffers.positive[...] = rng.random((23, 45)) > 0.4
    buffers.M[...] = buffers.positive * np.float32(1 / 0.7) if kind == "mask" else buffers.positive
    expected = dz.copy()
    step.backward_mask(expected, buffers, kind)
    expected_gb = buffers.gb.copy() if bias else None
    got, got_gb = dz.copy(), np.zeros(45, np.float32)
    args = (got, buffers.M, np.int32(kind != ""), got_gb, np.int32(bias), np.int64(23), np.int64(45))
    run(PlannedStep.BACKWARD_MASK)(((45 + 31) // 32,), (COLUMN_THREADS,), args)  # 45 columns: 2 blocks
    np.testing.assert_array_equal(got, expected)
    if bias:
        np.testing.assert_array_equal(got_gb, column_sums(expected))  # in the kernel's order
        np.testing.assert_allclose(got_gb, expected_gb, rtol=1e-5, atol=1e-6)  # the CPU's, one row after another


def tile_row_sums(a, groups, slice_):
    """gemm.GEMM_CUDA's ROW_SUMS in NumPy, in its order: group g sums A's columns in its slices of K (slices g,
    g + groups, ... of slice_ columns) one after another, then the groups' sums are added in turn."""
    partial = np.zeros((groups, a.shape[0]), dtype=a.dtype)
    for k in range(a.shape[1]):
        partial[k // slice_ % groups] += a[:, k]
    total = partial[0].copy()
    for group in partial[1:]:
        total += group
    return total


@pytest.mark.parametrize("tile", ["tile", "tile 4x64", "tile 4x16 2x2", "tile 2x16 4x4", "tile 8x16 2x2 side 8"])
def test_the_backward_products_equal_the_product_then_backward_mask_and_sgd(run, tile):
    """The tile kernel's input gradient that masks as it stores (fast.plan.fused_product "mask"): the same bits as
    the tile kernel's product times M, BACKWARD_MASK's multiply. Its weight gradient dz^T a that also sums
    dz^T's rows and applies SGD to the weight (its C) and the bias (fast.plan.fused_product "sgd"): the same bits
    as SGD's passes on the product and on the bias gradient in the tile's order (that order in NumPy, near the
    CPU's column sums), with and without weight decay, each parameter's rate its group's; without a bias, the
    weight alone. A batch of several trips of K, sides no tile divides, dz^T a transposed view as the step passes
    it (on the host, and on a GPU)."""
    from minigrad.fast.gemm import tile_grid, tile_kernel

    from .cuda_host import sanitizer

    # under the sanitizers the bias gradient's sums over 4, 2 and 8 groups (their own barriers), 1 to 4 a thread
    if sanitizer() and tile == "tile 4x64":
        pytest.skip("under the sanitizers four shapes: all but the widest slice (test_graphs covers the products)")
    shape = TILE_NAMES[tile]
    groups, slice_, per_thread, side = shape
    rng = np.random.default_rng(5)
    batch, width, inputs = 133, 45, 70
    dz = rng.standard_normal((batch, width)).astype(np.float32)
    a = rng.standard_normal((batch, inputs)).astype(np.float32)
    weight = rng.standard_normal((width, inputs)).astype(np.float32)
    M = (rng.random((batch, inputs)) > 0.3) * np.float32(1 / 0.7)
    threads = (side, side, groups)

    def product(work, left, right, m, n, k, strides, *epilogue, out=None):  # work: fused_product's, or None
        kernel = tile_kernel(*shape) if work is None else fast_plan.fused_product(work, *shape)
        out = np.full((m, n), np.nan, np.float32) if out is None else out
        args = (left, right, out, *map(np.int32, (m, n, k)), *map(np.int64, strides), *epilogue)
        run(kernel)(tile_grid(m, n, per_thread, side), threads, args)
        return out

    # the input gradient da = dz W, masked by the block before's M
    plain = product(None, dz, weight, batch, inputs, width, (width, 1, inputs, 1))
    np.testing.assert_allclose(plain, dz @ weight, rtol=1e-4, atol=1e-4)
    masked = product("mask", dz, weight, batch, inputs, width, (width, 1, inputs, 1), M)
    np.testing.assert_array_equal(masked, plain * M)
    assert 0 < (masked == 0).mean() < 1
    # the weight gradient dW = dz^T a (dz^T: dz's strides swapped) and the bias gradient, dz's column sums
    plain = product(None, dz, a, width, inputs, batch, (1, width, inputs, 1))
    np.testing.assert_allclose(plain, dz.T @ a, rtol=1e-4, atol=1e-4)
    bias_gradient = tile_row_sums(dz.T, groups, slice_)
    np.testing.assert_allclose(bias_gradient, dz.sum(axis=0), rtol=1e-5, atol=1e-5)
    # SGD with them, w - lr (g + decay w): the weight in group 1 (rate 0.1), the bias in group 2 (rate 0.25)
    start = rng.standard_normal((width, inputs)).astype(np.float32), rng.standard_normal(width).astype(np.float32)
    lr = np.array([0.5, 0.1, 0.25], np.float32)
    # with a bias (the weight decayed, the bias not), then without (nor decay); under the sanitizers the first
    cases = ((1, (1e-2, 0.0)), (0, (0.0, 0.0)))
    for has_bias, decays in cases[:1] if sanitizer() else cases:
        weight, bias = (x.copy() for x in start)
        epilogue = (bias, np.int32(has_bias), lr, np.int32(1), np.float32(decays[0]), np.int32(2))
        product("sgd", dz, a, width, inputs, batch, (1, width, inputs, 1), *epilogue, np.float32(decays[1]), out=weight)
        np.testing.assert_array_equal(weight, sgd_passes(start[0], plain, decays[0], lr[1]))
        updated_bias = sgd_passes(start[1], bias_gradient, decays[1], lr[2]) if has_bias else start[1]
        np.testing.assert_array_equal(bias, updated_bias)
        assert not np.array_equal(weight, start[0]) and has_bias == (not np.array_equal(bias, start[1]))


def sgd_passes(w, g, decay, lr):
    """fast.plan.PlannedStep.update's NumPy passes for one parameter (in float32): w - lr (g + decay w)."""
    g = g + w * np.float32(decay) if decay else g
    return w - g * np.float32(lr)


def update_case():
    """A CPU PlannedStep with two groups (one with weight decay, another rate) and random gradients: (the step,
    the parameters before, the gradients, the parameters after the CPU's update)."""
    mg.manual_seed(0)
    model = concise_mlp(hidden=(16, 16))
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    optimizer = mg.optim.SGD([{"params": weights, "weight_decay": 1e-2}, {"params": biases, "lr": 0.3}], lr=0.1)
    step = PlannedStep(model, optimizer, BatchCursor(loader(count=64, batch=32)), 32, 2)
    rng = np.random.default_rng(5)
    for _, grad, _ in step.updates:
        grad[...] = rng.standard_normal(grad.shape).astype(np.float32)
    start = [p.data.copy() for p, _, _ in step.updates]
    grads = [g.copy() for _, g, _ in step.updates]
    step.update(folded=False)  # the CPU's passes (which change the gradients in place)
    expected = [p.data.copy() for p, _, _ in step.updates]
    return step, start, grads, expected


def update_args(table, lr, total):
    return (*table, lr, np.int32(len(table[0])), np.int64(total))


def test_the_update_kernel_equals_sgds_passes(host):
    """Every parameter in one launch."""
    step, start, grads, expected = update_case()
    for (p, g, _), w, saved in zip(step.updates, start, grads):
        p.data[...], g[...] = w, saved
    table = step._update_table()  # host addresses of the parameters and gradients
    total = sum(w.size for w in start)
    host(PlannedStep.UPDATE)(blocks(total), (THREADS,), update_args(table, step.lr, total))
    for (p, _, _), w in zip(step.updates, expected):
        np.testing.assert_array_equal(p.data, w)


@needs_cuda
def test_cuda_the_update_kernel_equals_sgds_passes():
    """The same on a GPU: the table holds the device copies' addresses."""
    cupy = backend.cupy
    step, start, grads, expected = update_case()
    weights, gradients = [cupy.asarray(w) for w in start], [cupy.asarray(g) for g in grads]
    table = (
        cupy.asarray([backend.address(w) for w in weights], dtype=np.uint64),
        cupy.asarray([backend.address(g) for g in gradients], dtype=np.uint64),
        *(cupy.asarray(part) for part in step._update_table()[2:]),
    )
    total = sum(w.size for w in start)
    PlannedStep.UPDATE(blocks(total), (THREADS,), update_args(table, cupy.asarray(step.lr), total))
    for w, after in zip(weights, expected):
        np.testing.assert_array_equal(cupy.asnumpy(w), after)


# The chapter's model's step with cuBLAS's products, its kernels but the products (the host emulation below
# counts the same launches): the loss, the gather, two activations, two backward_mask kernels and the update
CUBLAS_STEP_KERNELS = {"minigrad_softmax_cross_entropy": 1, "minigrad_gather_batch": 1, "minigrad_activate": 2}
CUBLAS_STEP_KERNELS.update({"minigrad_backward_mask": 2, "minigrad_sgd_update": 1})


@needs_cuda
@pytest.mark.parametrize("products", ["tile", "cublas"])
def test_cuda_the_recorded_training_step_holds_each_kernel_once(products):
    """Counted in the recorded graph itself (CUDA's DOT dump), for the chapter's model: by our tile kernel, 8
    nodes (the 8 products, the first gathering its batch as it reads it and the first two activating as they
    store, the last taking the loss, the two input gradients masking as they store, three weight gradients
    making the bias gradients and applying SGD), 6 of them one after another and two weight gradients beside;
    by cuBLAS, the loss, the gather, the two activations, two backward masks and the update, and the 8 products
    in as many kernels as its heuristics choose, one or more a product (benchmarks.step_graph gives the verdict
    on those)."""
    from benchmarks.step_graph import KERNEL_TARGET, graph_contents, longest_chain

    mg.manual_seed(0)
    model = concise_mlp(device="cuda")
    training = PlannedTraining(model, mg.optim.SGD(model.parameters(), lr=0.5), products=products)
    planned = training.start(loader(device="cuda", count=1024, batch=256))
    planned.end()
    dot = planned.recorded.graph.debug_dot_str()
    (nodes, kernels), chain = graph_contents(dot), longest_chain(dot)
    ours = {name: count for name, count in kernels.items() if name.startswith("minigrad_")}
    if products == "tile":
        fused = {"minigrad_sgemm_gather_activate": 1, "minigrad_sgemm_activate": 1, "minigrad_sgemm_loss": 1}
        assert ours == {**fused, "minigrad_sgemm_mask": 2, "minigrad_sgemm_sgd": 3}, kernels
        assert nodes == sum(ours.values()) == 8 <= KERNEL_TARGET, (nodes, kernels)
        assert chain == 6, dot  # dW3 and dW2 beside the chain; dW1 ends it
    else:
        assert ours == CUBLAS_STEP_KERNELS, kernels
        assert nodes >= sum(ours.values()) + 8, (nodes, kernels)
        assert chain <= nodes - 2, dot  # at least one node beside each of dH2 + its mask and dH1 + its mask


# --- the whole GPU step, on the host -----------------------------------------------------------------------


class DeviceCounterStream(PhiloxStream):
    """The CPU's dropout stream with its counter in an array, as a GPU's is (``counter_on_device``): the GPU
    step's kernels read and move that array, and the eager ops draw from it too, as on a GPU."""

    def __init__(self, seed):
        super().__init__(seed, "cpu")
        self.key_on_device, self.counter_on_device = self.key.copy(), np.zeros(4, np.uint64)

    def words(self, n):
        start = self.counter
        self.set_counter(start + blocks_for(n))
        return np.random.Philox(key=self.key, counter=start).random_raw((n + 1) // 2).view(np.uint32)[:n]

    @property
    def counter(self):
        return sum(int(word) << (64 * k) for k, word in enumerate(self.counter_on_device))

    def set_counter(self, counter):
        self.counter_on_device[...] = counter_words(counter)


def kernel_argument(value):
    """What a kernel is given for ``value`` on the host. A GPU kernel gets an array's first element's address (CuPy
    passes a view's data pointer); HostFunction takes C-contiguous arrays, so a view that starts where the array
    it views does (a transposed operand, whose strides the kernel is given) is passed as that array."""
    if isinstance(value, np.ndarray) and not value.flags.c_contiguous and value.base is not None:
        if value.base.flags.c_contiguous and value.ctypes.data == value.base.ctypes.data:
            return value.base
    return value


class TwoStreams:
    """The planned step's CUDA streams on the host, ordered as CUDA orders them, to find the races a GPU could
    run into. Every launch is logged with the stream it went to, the arrays it reads and writes, and the launches
    that happen before it: those before it on its stream, and, through each event its stream waited for, those
    before the event's record on the stream that recorded it (kept closed under "before", so one lookup says
    whether two launches are ordered). The host runs them in the order they are made, one at a time."""

    class Stream:
        def __init__(self, streams, name):
            self.streams, self.name, self.before = streams, name, set()

        def __enter__(self):
            self.outer, self.streams.current = self.streams.current, self
            return self

        def __exit__(self, *exc):
            self.streams.current = self.outer
            return False

        def wait_event(self, event):
            if event is not None:  # (None: an event of fake_cuda's streams, which run nothing of their own)
                self.before |= event.before

        def record(self):
            event = TwoStreams.Event()
            event.record(self)
            return event

    class Event:
        before: set = set()

        def record(self, stream):
            self.before = set(stream.before)

    def __init__(self):
        self.current = self.main = self.Stream(self, "main")
        self.launches = []  # (stream's name, kernel's name, arrays read, arrays written, launches before it)
        self.tables = {}  # address -> array, for the arrays a kernel reaches through a table of addresses
        self.read_by_products = []  # arrays the tile products are given but only read

    def side_stream(self):
        """A SideStream whose stream and events are this model's."""
        side = SideStream.__new__(SideStream)
        side.stream, side.forked, side.done = self.Stream(self, "side"), self.Event(), self.Event()
        return side

    def launch(self, name, reads, writes):
        stream = self.current
        self.launches.append((stream.name, name, list(reads), list(writes), frozenset(stream.before)))
        stream.before.add(len(self.launches) - 1)

    def launch_function(self, name, args):
        """A CudaFunction's launch: arrays it is given are read and written, but the tile products' operands and
        the arrays they are given to read only (the learning rates, the cursor's), and a table of addresses
        stands for the arrays it points to (the update's)."""
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        if name.startswith("minigrad_sgemm"):  # A and B (or the first's B and images), then the rest
            self.launch(name, arrays, [a for a in arrays[2:] if not any(a is r for r in self.read_by_products)])
            return
        for table in [a for a in arrays if a.dtype == np.uint64]:
            arrays += [self.tables[int(address)] for address in table if int(address) in self.tables]
        self.launch(name, arrays, arrays)

    def register(self, arrays):
        self.tables.update({backend.address(array): array for array in arrays})

    def unordered(self, i, j):
        """Whether launches i < j may run at the same time on a GPU."""
        return i not in self.launches[j][4]

    def longest_chain(self, launches):
        """The most of ``launches`` (indices) that run one after another on a GPU, each ordered after the one
        before (benchmarks.step_graph.longest_chain counts the same in a recorded graph)."""
        longest = {}
        for j in launches:
            longest[j] = 1 + max((longest[i] for i in launches if i < j and not self.unordered(i, j)), default=0)
        return max(longest.values())

    def races(self):
        """(i, j, kernel names) for each two launches that nothing orders and that touch the same memory, one
        of them writing it."""

        def touch(these, those):
            return any(np.may_share_memory(x, y) for x in these for y in those)

        found = []
        for j, (_, name_j, reads_j, writes_j, _) in enumerate(self.launches):
            for i in range(j):
                _, name_i, reads_i, writes_i, _ = self.launches[i]
                if self.unordered(i, j) and (touch(writes_i, reads_j + writes_j) or touch(reads_i, writes_j)):
                    found.append((i, j, name_i, name_j))
        return found


def emulate_gpu(m, host, tile=None, streams=None):
    """From here on (``m``, a monkeypatch context), every PlannedStep, PlannedEval and BatchCursor made takes its
    GPU branches with NumPy arrays: CudaFunctions run on the host (``host``), products by NumPy with the
    activations a kernel of their own, as with cuBLAS's products (or with ``tile``, a products setting of tile
    shapes, fast.plan.tile_shapes's, by the tile kernel in those shapes, built for the host, the forward products
    activating), the dropout stream's
    counter an array (DeviceCounterStream), and the step's streams those of ``streams`` (a TwoStreams, which
    logs each launch; a new one by default). Returns the launches, by name, as they are made."""
    launches = []
    streams = streams or TwoStreams()
    m.setattr(backend, "current_stream", lambda: streams.current)

    def launch(self, grid, block, args):
        launches.append(self.name)
        streams.launch_function(self.name, args)
        host(self)(grid, block, tuple(kernel_argument(value) for value in args))

    m.setattr(CudaFunction, "__call__", launch)

    def products(a, b, out, kind):
        launches.append("gemm")
        streams.launch("gemm", [a, b], [out])
        np.matmul(a, b, out=out)

    def no_elementwise_kernel(self, *args, **kwargs):
        raise AssertionError(f"the step launched {self.source[3]}, a CudaKernel, besides its planned kernels")

    def advance(self, count, position, size):  # the evaluation's cursor moves itself on: its one CudaKernel
        launches.append("minigrad_advance_position")
        position += count

    m.setattr(CudaKernel, "__call__", no_elementwise_kernel)
    m.setattr(BatchCursor, "advance_gpu", advance)
    for kind in (PlannedStep, PlannedEval):

        def init(self, *args, original=kind.__init__, **kwargs):
            original(self, *args, **kwargs)
            self.on_gpu = self.cursor.on_gpu = True
            if tile is None:  # products by NumPy, as cuBLAS's would be made
                self.gemm, self.tile, self.tiles = products, None, {}
            else:  # the plan's own products, by the tile kernel in the shapes ``tile`` names
                self.tile, self.tiles = tile_shapes(tile)
            if isinstance(self, PlannedStep):
                self.update_table = self._update_table()
                self.side = streams.side_stream()
                streams.register(
                    [array for parameter, gradient, _ in self.updates for array in (parameter.data, gradient)]
                )
                streams.read_by_products += [self.lr, self.cursor.labels, self.cursor.order, self.cursor.position]

        m.setattr(kind, "__init__", init)
    mg.random._dropout_streams["cpu"] = DeviceCounterStream(mg.random._current_seed())
    return launches


# a step of the chapter's model's launches, by its products (NumPy's as cuBLAS's, or the tile kernel's)
CHAPTER_LAUNCHES = {
    None: [
        "minigrad_gather_batch",
        *["gemm", "minigrad_activate"] * 2,
        "gemm",
        "minigrad_softmax_cross_entropy",
        "gemm",  # dz2 = dz3 W3, then dW3
        "gemm",
        *["minigrad_backward_mask", "gemm", "gemm"],  # dz2's mask and db2, dz1, dW2
        *["minigrad_backward_mask", "gemm"],
        "minigrad_sgd_update",
    ],
    "tile": [
        "minigrad_sgemm_gather_activate",  # the batch gathered as the first product reads it
        "minigrad_sgemm_activate",
        "minigrad_sgemm_loss",  # the logits and their loss in one kernel
        *["minigrad_sgemm_mask", "minigrad_sgemm_sgd"] * 2,  # dz2 = dz3 W3 masked, then W3 and b3 updated; ...
        "minigrad_sgemm_sgd",  # W1 and b1
    ],
}


# (the tile in a shape of 128 threads a block: each is a thread on the host)
@pytest.mark.parametrize("products", [None, "tile 8x16 4x4 side 4"], ids=["products as cuBLAS's", "tile"])
@pytest.mark.parametrize("case", ["the chapter's model", "flatten, nesting, no bias, p = 0, ReLU last"])
def test_the_gpu_step_run_on_the_host_follows_the_cpus_planned_step(monkeypatch, host, case, products):
    """Three steps of each, with two groups of parameters (the weights with weight decay, the biases at another
    rate): the same losses (to the loss kernel's ulp), correct counts, weights, dropout counter and positions.
    The chapter's model takes 15 launches a step with its products by NumPy, as cuBLAS's (a kernel of their own
    activates the first two, another masks, another updates), and 10 with the tile kernel's (which do that as
    they store; the odd model's last block, ReLU after its Linear, has its dz masked by a backward_mask of its
    own, its second block's product has no bias to update)."""
    from .cuda_host import sanitizer
    from .test_planned import groups

    if sanitizer() and products is not None:
        pytest.skip("the kernels are checked under the sanitizers one by one (and the GEMM's shapes in test_graphs)")
    model_of, images = (concise_mlp, (784,)) if case == "the chapter's model" else (odd_model, (28, 28))
    data = loader(count=96, batch=32, images=images, flatten=images == (784,))
    results = []
    for emulated in (False, True):
        with monkeypatch.context() as m:
            mg.manual_seed(0)
            launches = emulate_gpu(m, host, products) if emulated else []
            model = model_of() if model_of is odd_model else model_of(hidden=(48, 32))
            cursor = BatchCursor(data)
            step = PlannedStep(model, groups(model, 0.1), cursor, 32, 3)
            cursor.start_epoch(np.random.default_rng(7).permutation(96))
            step.start_epoch()
            per_step = []
            for _ in range(3):
                before = len(launches)
                step.step()
                per_step.append(launches[before:])
            counter = dropout_stream("cpu").counter
            results.append(([p.data.copy() for p in model.parameters()], step, counter, per_step))
    (cpu_weights, cpu, cpu_counter, _), (gpu_weights, gpu, gpu_counter, launches) = results
    np.testing.assert_allclose(gpu.losses, cpu.losses, rtol=1e-5)
    np.testing.assert_array_equal(gpu.corrects, cpu.corrects)
    for ours, theirs in zip(gpu_weights, cpu_weights):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    assert gpu_counter == cpu_counter > 0
    assert gpu.cursor.position[0] == cpu.cursor.position[0] == 96 and gpu.logged[0] == cpu.logged[0] == 3
    if case == "the chapter's model":
        assert launches == 3 * [CHAPTER_LAUNCHES[None if products is None else "tile"]]
    elif products is not None:  # the last block's mask of its own (ReLU last), and no update
        assert launches[0].count("minigrad_backward_mask") == 1 and "minigrad_sgd_update" not in launches[0]
        assert launches[0].count("minigrad_sgemm_sgd") == 4


# the small model's products (batch 32, 64-40-24-10) in shapes of their own, the rest in "tile 2x16 4x4"
BY_PRODUCT = (
    "forward 32x64x40=tile 8x16 2x2 side 8, weight gradient 40x32x64=tile 4x16 2x2, tile 2x16 4x4, "
    "input gradient 32x24x40=tile 8x16 4x4 side 4"
)


@pytest.mark.parametrize("tile", ["tile", "tile 4x16 2x2", "tile 2x16 4x4", "tile 8x16 2x2 side 8", BY_PRODUCT])
def test_the_gpu_step_with_the_tile_kernel_run_on_the_host_follows_the_cpus_planned_step(monkeypatch, host, tile):
    """The whole GPU step on the host with its products by the tile kernel itself (in the default shape, in
    two whose threads make 2 x 2 and 4 x 4 elements, in one of 8 x 8 x 8 threads, and in a shape for each of
    three products and another for the rest), the forward ones activating as they store (the first gathering
    its batch as it reads it), the backward ones masking as they store or applying SGD with the gradients
    they make: the operands the step passes (transposed views, their strides, its buffers) give the CPU's
    planned step's weights and losses, in 8 launches a step (no gather, no loss of its own, no update), each
    product in the shape named for it. A small model: every CUDA thread of a block is a thread on the host."""
    from .cuda_host import sanitizer

    if sanitizer():
        pytest.skip("the kernels are checked under the sanitizers one by one (and the GEMM's shapes in test_graphs)")
    data = loader(count=64, batch=32, images=(64,))
    results, shapes = [], []

    def tile_for(self, kind, a, b, original=fast_plan.Plan.tile_for):  # each product's shape, as it asks for it
        shapes.append(((a.shape[0], a.shape[1], b.shape[1]), original(self, kind, a, b)))
        return shapes[-1][1]

    for emulated in (False, True):
        with monkeypatch.context() as m:
            mg.manual_seed(0)
            launches = emulate_gpu(m, host, tile) if emulated else []
            m.setattr(fast_plan.Plan, "tile_for", tile_for)
            model = nn.Sequential(
                *(nn.Linear(64, 40), nn.ReLU(), nn.Dropout(0.2)),
                *(nn.Linear(40, 24), nn.ReLU(), nn.Dropout(0.5)),
                nn.Linear(24, 10),
            )
            cursor = BatchCursor(data)
            step = PlannedStep(model, mg.optim.SGD(model.parameters(), lr=0.1), cursor, 32, 2)
            cursor.start_epoch(None)
            step.start_epoch()
            for _ in range(2):
                step.step()
            results.append(([p.data.copy() for p in model.parameters()], step.losses.copy()))
    (cpu_weights, cpu_losses), (gpu_weights, gpu_losses) = results
    assert launches == 2 * CHAPTER_LAUNCHES["tile"]  # 8 launches a step
    rest, named = tile_shapes(tile)
    sizes = [(32, 64, 40), (32, 40, 24), (32, 24, 10), (32, 10, 24), (10, 32, 24), (32, 24, 40), (24, 32, 40)]
    sizes.append((40, 32, 64))  # forward, then backward: each input gradient before its weight gradient
    kinds = 3 * ["forward"] + 2 * ["input gradient", "weight gradient"] + ["weight gradient"]
    expected = [(size, named.get((kind, *size), rest)) for kind, size in zip(kinds, sizes)]
    assert shapes == 2 * expected
    assert len(named) == (3 if tile == BY_PRODUCT else 0) and len(set(shape for _, shape in shapes)) == 1 + len(named)
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-5)
    for ours, theirs in zip(gpu_weights, cpu_weights):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


def two_streamed_steps(monkeypatch, host, tile, steps=3):
    """``steps`` steps of the GPU step on the host (by ``tile``'s products, or NumPy's as cuBLAS's) with its
    streams modelled by a TwoStreams: (the TwoStreams, the step). Not under the sanitizers, which check the
    kernels one by one: these check the order of the launches."""
    from .cuda_host import sanitizer

    if sanitizer():
        pytest.skip("the kernels are checked under the sanitizers one by one; this checks the launches' order")
    data = loader(count=96, batch=32, images=(64,))
    streams = TwoStreams()
    with monkeypatch.context() as m:
        mg.manual_seed(0)
        emulate_gpu(m, host, tile, streams)
        model = nn.Sequential(
            *(nn.Linear(64, 40), nn.ReLU(), nn.Dropout(0.2)),
            *(nn.Linear(40, 24), nn.ReLU(), nn.Dropout(0.5)),
            nn.Linear(24, 10),
        )
        cursor = BatchCursor(data)
        step = PlannedStep(model, mg.optim.SGD(model.parameters(), lr=0.1), cursor, 32, steps)
        cursor.start_epoch(None)
        step.start_epoch()
        for _ in range(steps):
            step.step()
    return streams, step


@pytest.mark.parametrize("tile", [None, "tile"], ids=["products as cuBLAS's", "tile"])
def test_the_gpu_steps_weight_gradients_run_beside_its_chain_and_race_with_nothing(monkeypatch, host, tile):
    """The weight gradients' products but the first block's go to the side stream, each after the input gradient
    that read its block's weight (which the tile's product updates); on a GPU each may run at the same time as
    the chain's next launches (the block before's input gradient, the first block's weight gradient), and what
    comes after the step waits for them. Over three steps, no two launches that nothing orders touch the same
    memory with one writing it: none of the step's later launches (the chain, the update, the next step's
    gather and forward) races the side's."""
    streams, step = two_streamed_steps(monkeypatch, host, tile)
    assert streams.races() == []
    side = [i for i, launch in enumerate(streams.launches) if launch[0] == "side"]
    # dW3, then dW2, into the gradients' buffers (cuBLAS's); the tile's update W3 and b3, then W2 and b2
    blocks = [(b, block.linear) for b, block in zip(step.buffers, step.blocks)]
    written = [[b.gW] if tile is None else [linear.weight.data, linear.bias.data] for b, linear in blocks][::-1]
    assert len(side) == 2 * 3
    for count, i in enumerate(side):
        assert streams.launches[i][3] == written[count % 2]
        weight = blocks[::-1][count % 2][1].weight.data
        assert streams.launches[i - 1][0] == "main" and streams.launches[i - 1][2][1] is weight  # dz W, then
        assert i - 1 in streams.launches[i][4]  # this, after that input gradient that read the weight
    assert all(any(streams.unordered(i, j) for j in range(i + 1, len(streams.launches))) for i in side)
    # a step's launches, one after another but dW3 and dW2: of 8 (by the tile), 6; of 15, 13 (cuBLAS's, the
    # gather, each block's mask and activation a kernel of its own, and the update)
    launches = len(streams.launches) // 3
    assert launches == (15 if tile is None else 8)
    assert streams.longest_chain(range(launches, 2 * launches)) == launches - 2
    updates = [i for i, launch in enumerate(streams.launches) if launch[1] == "minigrad_sgd_update"]
    assert len(updates) == (3 if tile is None else 0)
    assert all(i in streams.launches[update][4] for update in updates for i in side if i < update)


def test_the_race_check_finds_a_side_stream_left_unjoined_or_unwaited(monkeypatch, host):
    """The check above can fail: without the join, the update reads a weight gradient the side may still be
    writing (the tile's, the next step's forward reads a weight and a bias the side may still be updating); with
    a fork that does not wait, a weight gradient's product reads its block's dz before the mask (the tile's
    updates its weight while the input gradient's product reads it)."""

    def races(tile):
        return {(first, then) for _, _, first, then in two_streamed_steps(monkeypatch, host, tile, 2)[0].races()}

    monkeypatch.setattr(SideStream, "join", lambda self: None)
    assert ("gemm", "minigrad_sgd_update") in races(None)
    assert ("minigrad_sgemm_sgd", "minigrad_sgemm_activate") in races("tile")
    monkeypatch.undo()

    @contextlib.contextmanager
    def fork_without_waiting(self):
        with self.stream:
            yield

    monkeypatch.setattr(SideStream, "fork", fork_without_waiting)
    assert ("minigrad_backward_mask", "gemm") in races(None)
    assert ("minigrad_sgemm_mask", "minigrad_sgemm_sgd") in races("tile")


# (the tile in a shape of 128 threads a block: each is a thread on the host)
@pytest.mark.parametrize("products", [None, "tile 8x16 4x4 side 4"], ids=["products as cuBLAS's", "tile"])
def test_the_gpu_evaluation_run_on_the_host_gives_the_cpus_sums(monkeypatch, host, products):
    """Two batches' sums, by the products as cuBLAS's (the gather and the loss kernels of their own) and by the
    tile kernel's, whose first product gathers the batch and whose last takes the loss, adding to the sums; the
    cursor moves itself on, after the gather."""
    from .cuda_host import sanitizer

    if sanitizer() and products is not None:
        pytest.skip("the kernels are checked under the sanitizers one by one (and the GEMM's shapes in test_graphs)")
    data = loader(count=64, batch=32)
    sums = []
    for emulated in (False, True):
        with monkeypatch.context() as m:
            mg.manual_seed(0)
            launches = emulate_gpu(m, host, products) if emulated else []
            evaluation = PlannedEval(concise_mlp(hidden=(48, 32)), BatchCursor(data), 32)
            evaluation.cursor.start_epoch(None)
            for _ in range(2):
                evaluation.step()
            sums.append(evaluation.take_sums())
    (cpu_loss, cpu_correct), (gpu_loss, gpu_correct) = sums
    assert gpu_correct == cpu_correct and gpu_loss == pytest.approx(cpu_loss, rel=1e-5)
    step = ["minigrad_gather_batch", "minigrad_advance_position", *["gemm", "minigrad_activate"] * 2, "gemm"]
    step.append("minigrad_softmax_cross_entropy")
    if products is not None:
        step = ["minigrad_sgemm_gather_activate", "minigrad_sgemm_activate", "minigrad_sgemm_loss"]
        step.append("minigrad_advance_position")
    assert launches == 2 * step


def test_the_trainer_recording_the_gpu_step_run_on_the_host_trains_as_the_eager_ops(fake_cuda, monkeypatch, host):
    """The Trainer's GPU path end to end, its kernels on the host and its graph the stand-in of
    tests/test_graphs.py: recording, the check against the eager ops, replays across epochs, the smaller last
    batch, evaluation, a schedule read at replay, dropout. Against Trainer(eager=True): the same records (losses
    to a few ulp) and weights (to 1e-4)."""
    results, launches = [], []
    for emulated in (True, False):
        with monkeypatch.context() as m:
            mg.manual_seed(0)
            if emulated:
                launches = emulate_gpu(m, host)
            model = concise_mlp(hidden=(48, 32))
            optimizer = mg.optim.SGD(model.parameters(), lr=0.5)
            schedule = mg.optim.StepLR(optimizer, step_size=1, gamma=0.5)
            trainer = Trainer(model, optimizer, progress=False, eager=not emulated, scheduler=schedule)
            if emulated:
                trainer.planned = PlannedTraining(model, optimizer, record=True)
            trainer.fit(loader(count=300), loader(count=200, seed=1), epochs=3)
            if emulated:  # (no fallback to the eager ops happened, which would agree with them too)
                assert trainer.planned is not None and trainer.planned.record
            results.append((trainer.history, [p.data.copy() for p in model.parameters()]))
    assert fake_cuda.captures == 2 and "minigrad_sgd_update" in launches  # a graph each: training, evaluation
    (gpu_history, gpu_weights), (cpu_history, cpu_weights) = results
    for ours, theirs in zip(gpu_history, cpu_history):
        for key in ("train_loss", "test_loss"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5), key
        for key in ("train_acc", "test_acc"):
            assert ours[key] == pytest.approx(theirs[key], abs=1 / 200), key
    for ours, theirs in zip(gpu_weights, cpu_weights):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
