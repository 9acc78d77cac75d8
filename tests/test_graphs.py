"""The CUDA-graph recorder (fast.graphs.RecordedStep) and the planned step it records. Without a GPU: the
recorder's own logic with a stand-in for ``cupy.cuda``, the Trainer's recorded path driven through it, and the
graph's matrix-product kernel built for the host. With one (CuPy finds a GPU): replay against the planned step
run eagerly, bit for bit, and against the eager ops and the CPU, to 1e-4."""

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn
from minigrad.chapter.model import concise_mlp
from minigrad.data import ArrayDataset, DataLoader
from minigrad.data.loader import BatchCursor
from minigrad.fast import GraphMismatch, PlannedStep, PlannedTraining, RecordedStep
from minigrad.fast.gemm import SIDES, THREADS_LIMIT, TILE_SHAPES, shape_name
from minigrad.monitor import TrainingDiverged
from minigrad.train import Trainer

from .test_planned import loader

needs_cuda = pytest.mark.skipif(not mg.cuda_available(), reason="no CUDA: CuPy is not installed or finds no GPU")


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("flatten", [True, False])
def test_the_cursor_gives_the_loaders_batches_bit_for_bit(device, shuffle, flatten):
    """On every device: on a GPU its three kernels against the loader's own batches; a smaller last batch too."""
    rng = np.random.default_rng(3)
    data = ArrayDataset(rng.integers(0, 256, (200, 28, 28)).astype(np.uint8), rng.integers(0, 10, 200))
    batches = DataLoader(data, 64, shuffle=shuffle, seed=5, flatten=flatten, device=device)
    cursor = BatchCursor(batches)
    assert cursor.full_batches == 3
    xp = mg.backend.module_for(device)
    with mg.backend.on_device(device):
        buffers = {size: (xp.zeros((size, 784), np.float32), xp.zeros(size, np.int64)) for size in (64, 8)}
    for _epoch in range(2):  # a fresh order each epoch, as iter(loader) draws
        order = batches.epoch_order()
        cursor.start_epoch(order)
        for index in range(4):
            x, y = buffers[64 if index < 3 else 8]
            cursor.gather(x, y)
            expected_x, expected_y = batches.batch(order, index)
            np.testing.assert_array_equal(
                mg.backend.to_numpy(x), mg.backend.to_numpy(expected_x.data).reshape(len(y), -1)
            )
            np.testing.assert_array_equal(mg.backend.to_numpy(y), mg.backend.to_numpy(expected_y.data))
        assert int(cursor.position[0]) == 200
    cursor.start_epoch(None)  # no order: 0, 1, ..., N - 1 again, whatever order came before
    cursor.gather(*buffers[64])
    np.testing.assert_array_equal(mg.backend.to_numpy(buffers[64][1]), data.labels[:64])


def no_dropout_model():  # NumPy's dropout stream is not an array a snapshot could restore: no dropout here
    return nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


def planned_step(model, batches):
    cursor = BatchCursor(batches)
    return PlannedStep(model, mg.optim.SGD(model.parameters(), lr=0.5), cursor, 64, cursor.full_batches)


def test_recording_checks_two_replays_then_leaves_the_state_as_it_was(fake_cuda):
    batches = loader(count=320)
    model = no_dropout_model()
    step = planned_step(model, batches)
    before = {name: array.copy() for name, array in step.state().items()}
    recorded = RecordedStep(step.step, step.state)
    assert (fake_cuda.captures, fake_cuda.launches) == (1, 2)
    for name, array in step.state().items():
        np.testing.assert_array_equal(array, before[name], err_msg=name)

    twin = no_dropout_model()  # the same epoch, eagerly, from a copy of the state
    for ours, theirs in zip(twin.parameters(), model.parameters()):
        ours.data[...] = theirs.data
    eager = planned_step(twin, batches)
    order = batches.epoch_order()
    for each in (step, eager):
        each.cursor.start_epoch(order)
        each.start_epoch()
    for _ in range(step.cursor.full_batches):
        recorded.replay()
        eager.step()
    np.testing.assert_array_equal(step.losses, eager.losses)
    for ours, theirs, start in zip(model.parameters(), twin.parameters(), before.values()):
        np.testing.assert_array_equal(ours.data, theirs.data)
        assert not np.array_equal(ours.data, start)


def test_a_graph_that_disagrees_with_the_eager_steps_is_refused_and_the_state_restored(fake_cuda):
    """A replay that does not move the batch position on: the first step agrees, the second cannot."""
    batches = loader(count=320)
    step = planned_step(no_dropout_model(), batches)
    before = {name: array.copy() for name, array in step.state().items()}

    def stuck():
        step.step()
        step.cursor.position -= 64

    fake_cuda.replay = stuck
    with pytest.raises(
        GraphMismatch, match="differ in parameter 0 .*, the batch position, the step log, the correct counts$"
    ):
        RecordedStep(step.step, step.state)
    for name, array in step.state().items():
        np.testing.assert_array_equal(array, before[name], err_msg=name)


def test_the_trainers_recorded_path_equals_its_eager_path(fake_cuda, monkeypatch):
    """Through PlannedTraining(record=True) with the stand-in graph: the per-batch replays, the smaller last batch,
    evaluation, a learning-rate schedule and the check against the eager ops; then the same weights and records
    as the eager ops, bit for bit."""
    results = []
    for record in (True, False):
        mg.manual_seed(0)
        model = no_dropout_model()
        optimizer = mg.optim.SGD(model.parameters(), lr=0.5)
        trainer = Trainer(
            model,
            optimizer,
            progress=False,
            eager=not record,
            scheduler=mg.optim.StepLR(optimizer, step_size=1, gamma=0.5),
        )
        if record:
            trainer.planned = PlannedTraining(model, optimizer, record=True)
        trainer.fit(loader(count=300), loader(count=200, seed=1), epochs=3)
        results.append(
            (
                [{k: v for k, v in r.items() if "seconds" not in k} for r in trainer.history],
                [p.data.copy() for p in model.parameters()],
            )
        )
    assert fake_cuda.captures == 2  # one graph for training, one for evaluation
    assert results[0][0] == results[1][0]
    for ours, theirs in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(ours, theirs)


def test_a_planned_step_that_disagrees_with_the_eager_ops_is_refused(fake_cuda, monkeypatch, capsys):
    """The guard for a GPU whose planned step was never run before: the replays are checked against two steps of
    the eager ops; a wrong step (here: the update skipped) falls back to the eager ops in one line."""
    monkeypatch.setattr(PlannedStep, "update", lambda self, folded: None)
    mg.manual_seed(0)
    model = no_dropout_model()
    optimizer = mg.optim.SGD(model.parameters(), lr=0.5)
    trainer = Trainer(model, optimizer, progress=False)
    trainer.planned = PlannedTraining(model, optimizer, record=True)
    start = [p.data.copy() for p in model.parameters()]
    trainer.fit(loader(count=300), loader(count=200, seed=1), epochs=1)
    err = capsys.readouterr().err
    assert err.startswith("planned step off: the planned step disagrees with the eager ops on this GPU (a parameter")
    assert trainer.planned is None and trainer.step_kind.startswith("eager: the planned step disagrees")
    mg.manual_seed(0)
    twin = no_dropout_model()
    eager = Trainer(twin, mg.optim.SGD(twin.parameters(), lr=0.5), progress=False, eager=True)
    for p, data in zip(twin.parameters(), start):
        p.data[...] = data
    eager.fit(loader(count=300), loader(count=200, seed=1), epochs=1)
    for ours, theirs in zip(model.parameters(), twin.parameters()):  # the failed check changed nothing
        np.testing.assert_array_equal(ours.data, theirs.data)


def test_the_cpu_twin_with_the_streams_replica_takes_the_models_own_steps():
    """The reference a GPU's recorded step is checked against: a copy of the model and of its SGD on the CPU, its
    dropout drawing from a replica of the model's stream, takes the very steps the model takes (the same
    masks, on the CPU the same bits), and changes neither the model nor its stream."""
    from minigrad.fast.training import cpu_twin
    from minigrad.random import dropout_stream, lent_dropout_stream

    mg.manual_seed(0)
    model = concise_mlp(hidden=(32, 16))  # dropout 0.2 and 0.5
    optimizer = mg.optim.SGD(
        [{"params": list(model.parameters())[:2], "lr": 0.3}, {"params": list(model.parameters())[2:]}], lr=0.5
    )
    batches = loader(count=128)
    start = [p.data.copy() for p in model.parameters()]
    twin, twin_optimizer = cpu_twin(model, optimizer)
    assert [g["lr"] for g in twin_optimizer.param_groups] == [0.3, 0.5]
    stream = dropout_stream("cpu")
    with lent_dropout_stream("cpu", stream.replica("cpu")):
        for index in range(2):
            x, y = batches.batch(None, index, "cpu")
            twin_optimizer.zero_grad()
            mg.nn.functional.cross_entropy(twin(x), y).backward()
            twin_optimizer.step()
    assert stream.counter == 0
    for p, data in zip(model.parameters(), start):
        np.testing.assert_array_equal(p.data, data)
    for index in range(2):
        x, y = batches.batch(None, index)
        optimizer.zero_grad()
        mg.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    for ours, theirs in zip(model.parameters(), twin.parameters()):
        np.testing.assert_array_equal(ours.data, theirs.data)


def recorded_fit():
    """An epoch of the no-dropout model by PlannedTraining(record=True) (with fake_cuda: a stand-in graph)."""
    mg.manual_seed(0)
    model = no_dropout_model()
    optimizer = mg.optim.SGD(model.parameters(), lr=0.5)
    trainer = Trainer(model, optimizer, progress=False)
    trainer.planned = PlannedTraining(model, optimizer, record=True)
    trainer.fit(loader(count=300), loader(count=200, seed=1), epochs=1)
    return trainer


@pytest.mark.parametrize("twin_goes", ["wrong", "nowhere"])
def test_where_the_cpus_steps_disagree_or_fail_the_eager_ops_decide(fake_cuda, monkeypatch, twin_goes):
    """The CPU's steps are a shortcut, never the last word: where they disagree with the replays (here: a twin
    one weight off) or cannot run, the check falls back on the model's own eager ops, which accept a right step
    and say why they were asked."""
    from minigrad.fast import training

    made = training.cpu_twin

    def twin(model, optimizer):
        if twin_goes == "nowhere":
            raise RuntimeError("no CPU today")
        copy, copy_optimizer = made(model, optimizer)
        copy[0].weight.data[0, 0] += 1.0
        return copy, copy_optimizer

    monkeypatch.setattr(training, "cpu_twin", twin)
    trainer = recorded_fit()
    assert trainer.planned is not None  # accepted: no fall back on the eager ops
    why = {"wrong": "a parameter of shape (32, 784) differs by up to 1", "nowhere": "the CPU's steps failed (Run"}
    assert trainer.planned.checked_against.startswith(f"the GPU's eager ops ({why[twin_goes]}")


def test_a_right_step_is_accepted_by_the_cpus_steps_alone(fake_cuda, monkeypatch):
    from minigrad.fast import training

    def eager_steps(self, model, optimizer, loader, device):
        assert device == "cpu", "the GPU's eager ops were asked"
        return original(self, model, optimizer, loader, device)

    original = training.PlannedTraining._eager_steps
    monkeypatch.setattr(training.PlannedTraining, "_eager_steps", eager_steps)
    trainer = recorded_fit()
    assert trainer.planned.checked_against == "the CPU's eager ops"


def host_gemm(multiply, shape):
    """``a @ b`` by fast.gemm's kernel built for the host (``multiply``) in its tile shape, launched as
    ``gemm.gemm`` launches it (with any arguments the kernel takes after the product's)."""
    from minigrad.fast.gemm import tile_grid

    groups, _, per_thread, side = shape

    def gemm(a, b, *after):
        (m, k), n = a.shape, b.shape[1]
        out = np.full((m, n), np.nan, np.float32)
        strides = [np.int64(s // 4) for s in (*a.strides, *b.strides)]
        buffers = [view if view.base is None else view.base for view in (a, b)]
        grid, threads = tile_grid(m, n, per_thread, side), (side, side, groups)
        multiply(grid, threads, (*buffers, out, *map(np.int32, (m, n, k)), *strides, *after))
        return out

    return gemm


def one_per_thread(shape):
    """The tile shape whose threads make one element of C each, with the same sum's order (groups and slice):
    16 threads a side, or fewer where 16 x 16 x groups would be more than a block holds."""
    groups, slice_, _, _ = shape
    return groups, slice_, 1, max(side for side in SIDES if side * side * groups <= THREADS_LIMIT)


def step_like_operands(groups, slice_):
    """Plain and transposed (strided) views as the planned step multiplies them, with sides that no tile divides;
    and a long K, which the groups of a block split into two trips and a part."""
    rng = np.random.default_rng(0)
    x, w, gy = (rng.standard_normal(shape).astype(np.float32) for shape in ((37, 29), (23, 29), (37, 23)))
    long = rng.standard_normal((groups * slice_ * 2 + 22, 18)).astype(np.float32)
    return ((x, w.T), (gy, w), (gy.T, x), (long.T, long))


def assert_within_float32_rounding(product, a, b):
    """``product`` is ``a @ b`` as float32 sums of products make it, in whatever order: each element within
    gamma_K |a| |b| of the exact product, the worst case of K products summed in any order, each operation
    rounded (gamma_K = K u / (1 - K u), u = 2^-24). NumPy's own float32 product is no reference: it rounds too, by
    as much, in another order."""
    a64, b64, k, u = a.astype(np.float64), b.astype(np.float64), a.shape[1], 2.0**-24
    error, bound = np.abs(product - a64 @ b64), k * u / (1 - k * u) * (np.abs(a64) @ np.abs(b64))
    assert np.all(error <= bound), f"{np.sum(error > bound)} elements off by more than rounding: {error.max()}"


@pytest.mark.parametrize("shape", TILE_SHAPES, ids=shape_name)
def test_the_graphs_gemm_source_multiplies_correctly_when_emulated_on_the_host(tmp_path, shape):
    """fast.gemm's kernel built for the host (a thread per CUDA thread, a barrier for __syncthreads), in each tile
    shape benchmarks.gemm_speed times: the products of plain and transposed (strided) views, as the planned step
    uses them, are the exact products but for float32's rounding; and a long K, which the groups of a block split
    into several trips. Every shape under both sanitizers too: any may become the default on a GPU's timings, and
    a race in one would give wrong sums silently."""
    from minigrad.fast.gemm import tile_kernel

    from .cuda_host import HostFunction

    gemm = host_gemm(HostFunction(tile_kernel(*shape), tmp_path), shape)
    for a, b in step_like_operands(*shape[:2]):
        assert_within_float32_rounding(gemm(a, b), a, b)


@pytest.mark.parametrize("shape", [shape for shape in TILE_SHAPES if shape[2] > 1], ids=shape_name)
def test_a_thread_making_more_elements_of_the_product_gives_the_same_bits(tmp_path, shape):
    """Each element of C is the same sum in the same order whatever the elements a thread makes and the threads
    a side of a block (the kernel's comment): the tile shape's per_thread and side change its speed, never its
    result."""
    from minigrad.fast.gemm import tile_kernel

    from .cuda_host import HostFunction, sanitizer

    if sanitizer():
        pytest.skip("the products themselves are checked under the sanitizers by the test above")
    (tmp_path / "wide").mkdir(), (tmp_path / "one").mkdir()
    wide = host_gemm(HostFunction(tile_kernel(*shape), tmp_path / "wide"), shape)
    one = host_gemm(HostFunction(tile_kernel(*one_per_thread(shape)), tmp_path / "one"), one_per_thread(shape))
    for a, b in step_like_operands(*shape[:2]):
        np.testing.assert_array_equal(wide(a, b), one(a, b))


# The tile kernel with each operand read through a loader that notes, for block (0, 0), the offset (in elements)
# of each element a thread reads, in the order it reads them: offsets[t * reads_noted + c] for thread t's c-th read
NOTED_READS_CUDA = r"""
struct noted_reads {
    minigrad_strided operand;
    long long* offsets;
    int* reads;
    int reads_noted;
    __device__ bool down() const { return operand.down(); }
    __device__ float operator()(int i, int j) const {
        if (blockIdx.x == 0 && blockIdx.y == 0) {
            const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
            const int c = reads[t]++;
            if (c < reads_noted) offsets[t * reads_noted + c] = i * operand.s0 + j * operand.s1;
        }
        return operand(i, j);
    }
};
extern "C" __global__ void noted_sgemm(const float* A, const float* B, float* C, int M, int N, int K, long long sAm,
                                       long long sAk, long long sBk, long long sBn, long long* a_offsets,
                                       int* a_reads, long long* b_offsets, int* b_reads, int reads_noted) {
    minigrad_sgemm_tile_of(noted_reads{{A, sAm, sAk}, a_offsets, a_reads, reads_noted},
                           noted_reads{{B, sBk, sBn}, b_offsets, b_reads, reads_noted}, M, N, K,
                           [&](int row, int col, float sum) { C[(long long)row * N + col] = sum; });
}
"""


@pytest.mark.parametrize("shape", [(4, 16, 1, 16), (4, 32, 2, 16), (8, 32, 2, 8), (8, 16, 4, 4)], ids=shape_name)
def test_a_warps_lanes_read_adjacent_elements_of_each_operand_whatever_its_layout(tmp_path, shape):
    """Consecutive lanes of a warp (threads one tx apart) read adjacent elements of A and of B, whether the operand
    is C-ordered or a transposed view (W^T in the forward products, dz^T in the weight gradients): a read by a
    warp then touches one or two lines of memory, not one per lane. (Reading along k whatever the layout, lanes
    of a transposed view were a row of the matrix apart.) Checked on the reads of the block's first slice, which
    every thread makes in full, for each combination of layouts; the product is right too."""
    from minigrad.backend import CudaFunction
    from minigrad.fast.gemm import gemm_source

    from .cuda_host import HostFunction, sanitizer

    if sanitizer():
        pytest.skip("which thread reads what is the same under the sanitizers; the products are checked above")
    groups, slice_, per_thread, side = shape
    kernel = CudaFunction(gemm_source(*shape, entry=False) + NOTED_READS_CUDA, "noted_sgemm")
    noted = host_gemm(HostFunction(kernel, tmp_path), shape)
    threads, first_reads = side * side * groups, per_thread * slice_ // side  # R x L elements of each operand a slice
    m, k, n = 70, groups * slice_ + 9, 67  # block (0, 0) reads whole slices at first: K >= groups x slice
    rng = np.random.default_rng(3)
    for a_transposed in (False, True):
        for b_transposed in (False, True):
            a = rng.standard_normal((k, m) if a_transposed else (m, k)).astype(np.float32)
            b = rng.standard_normal((n, k) if b_transposed else (k, n)).astype(np.float32)
            a_view, b_view = (a.T if a_transposed else a), (b.T if b_transposed else b)
            offsets = [np.full((threads, first_reads), -1, np.int64) for _ in range(2)]
            reads = [np.zeros(threads, np.int32) for _ in range(2)]
            out = noted(a_view, b_view, offsets[0], reads[0], offsets[1], reads[1], np.int32(first_reads))
            assert_within_float32_rounding(out, a_view, b_view)
            for name, noted_offsets, transposed in zip("AB", offsets, (a_transposed, b_transposed)):
                assert (noted_offsets >= 0).all(), f"{name}: a thread read less than its part of the first slice"
                # (thread t = tx + side (ty + side g)): lanes one tx apart, each read of theirs side by side
                by_lane = noted_offsets.reshape(groups, side, side, first_reads)
                steps = np.diff(by_lane, axis=2)
                layout = f"{name} {'transposed' if transposed else 'C-ordered'}"
                assert (steps == 1).all(), f"{layout}: consecutive lanes read elements {set(steps.ravel())} apart"


def test_a_tile_shape_a_gpu_cannot_launch_is_refused():
    from minigrad.fast.gemm import gemm_source

    for shape in ((5, 16, 1), (4, 24, 1), (4, 128, 1), (4, 16, 3), (4, 64, 2), (8, 16, 2, 12), (32, 16, 1, 8)):
        with pytest.raises(ValueError, match="cannot be launched"):
            gemm_source(*shape)


# --- on a GPU -------------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("shape", TILE_SHAPES, ids=shape_name)
def test_cuda_the_graphs_gemm_equals_cupys_matmul(shape):
    """On the GPU, in each tile shape: the step's products at the chapter's sizes equal CuPy's (cuBLAS's), and a
    thread making more elements of C gives the same bits as one making one (the host tests' claims, on the GPU)."""
    import cupy

    from minigrad.fast.gemm import gemm

    rng = np.random.default_rng(0)
    shapes = ((256, 784), (256, 784), (256, 256))
    x, w, gy = (cupy.asarray(rng.standard_normal(shape).astype(np.float32)) for shape in shapes)
    for a, b in ((x, w.T), (gy, w), (gy.T, x)):
        out = cupy.empty((a.shape[0], b.shape[1]), dtype=np.float32)
        product = cupy.asnumpy(gemm(a, b, out, *shape))
        np.testing.assert_allclose(product, cupy.asnumpy(a @ b), rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(product, cupy.asnumpy(gemm(a, b, None, *one_per_thread(shape))))


def fit_cuda(record, hidden=(64, 64), lr=0.5, epochs=1, count=640, eager=False, products="tile"):
    mg.manual_seed(0)
    model = concise_mlp(hidden=hidden, device="cuda")
    optimizer = mg.optim.SGD(model.parameters(), lr=lr)
    trainer = Trainer(model, optimizer, progress=False, eager=eager)
    if not eager:
        trainer.planned = PlannedTraining(model, optimizer, record=record, products=products)
    trainer.fit(loader(device="cuda", count=count), loader(device="cuda", count=200, seed=1), epochs=epochs)
    return trainer, [mg.backend.to_numpy(p.data) for p in model.parameters()]


@needs_cuda
@pytest.mark.parametrize("products", ["tile", "cublas"])
def test_cuda_graph_replay_equals_the_planned_step_run_eagerly_bit_for_bit(products):
    (recorded, ours), (plain, theirs) = (
        fit_cuda(record=True, epochs=2, count=600, products=products),
        fit_cuda(record=False, epochs=2, count=600, products=products),
    )
    assert recorded.step_kind == "planned, recorded as a CUDA graph" and recorded.planned is not None
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    assert recorded.history[-1]["train_loss"] == plain.history[-1]["train_loss"]
    assert recorded.history[-1]["test_loss"] == plain.history[-1]["test_loss"]


@needs_cuda
@pytest.mark.parametrize("products", ["tile", "cublas"])
def test_cuda_the_planned_step_follows_the_eager_ops(products):
    """The same batches and masks; other kernels (the planned step's against the ops'): close numbers."""
    (planned, ours) = fit_cuda(record=True, lr=0.1, products=products)
    (eager, theirs) = fit_cuda(record=True, lr=0.1, eager=True)
    assert planned.planned is not None, planned.step_kind
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    assert planned.history[0]["train_loss"] == pytest.approx(eager.history[0]["train_loss"], rel=1e-4)
    assert planned.history[0]["test_acc"] == pytest.approx(eager.history[0]["test_acc"], abs=0.01)


@needs_cuda
@pytest.mark.parametrize("products", ["tile", "cublas"])
def test_cuda_the_recorded_step_is_checked_against_the_cpus_steps(products):
    """On a GPU the replays agree with a copy of the model on the CPU drawing the GPU's masks (the chapter's model,
    dropout and all), so that the GPU's eager ops, and the kernels they would compile, are not needed; the
    CPU's own dropout stream is left where it was."""
    from minigrad.random import dropout_stream

    mg.manual_seed(0)
    model = concise_mlp(device="cuda")
    optimizer = mg.optim.SGD(model.parameters(), lr=0.5)
    trainer = Trainer(model, optimizer, progress=False)
    trainer.planned = PlannedTraining(model, optimizer, products=products)
    on_cpu = dropout_stream("cpu").counter
    trainer.fit(loader(device="cuda", count=1024, batch=256), loader(device="cuda", count=256, seed=1), epochs=1)
    assert trainer.step_kind == "planned, recorded as a CUDA graph"
    assert trainer.planned.checked_against == "the CPU's eager ops"
    assert dropout_stream("cpu").counter == on_cpu


@needs_cuda
def test_cuda_a_replayed_step_reads_the_learning_rate_at_replay_time():
    mg.manual_seed(0)
    model = concise_mlp(hidden=(32, 32), device="cuda")
    optimizer = mg.optim.SGD(model.parameters(), lr=0.5)
    trainer = Trainer(model, optimizer, progress=False)
    batches = loader(device="cuda", count=128, batch=64)  # one loader: its graph is recorded once, in epoch 1
    trainer.train_epoch(batches, 1)
    assert trainer.step_kind == "planned, recorded as a CUDA graph"
    before = [p.data.copy() for p in model.parameters()]
    optimizer.param_groups[0]["lr"] = 1e-30  # effectively no update, if and only if the graph reads it
    trainer.train_epoch(batches, 2)
    for ours, theirs in zip(model.parameters(), before):
        np.testing.assert_allclose(mg.backend.to_numpy(ours.data), mg.backend.to_numpy(theirs), atol=1e-20)


@needs_cuda
def test_cuda_the_trainer_plans_by_default_and_runs_the_eager_ops_when_told():
    for eager, kind in ((False, "planned, recorded as a CUDA graph"), (True, "eager: asked for")):
        model = concise_mlp(hidden=(16, 16), device="cuda")
        trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.5), progress=False, eager=eager)
        trainer.fit(loader(device="cuda"), loader(device="cuda", seed=1), epochs=1)
        assert trainer.step_kind == kind


@needs_cuda
def test_cuda_a_recorded_run_that_diverges_stops_at_that_epoch():
    """A replayed step reads no loss on the host, so the epoch's logged losses carry a NaN to end_epoch."""
    model = concise_mlp(hidden=(16, 16), device="cuda")
    trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.5), progress=False)
    train, test = loader(device="cuda"), loader(device="cuda", seed=1)
    trainer.fit(train, test, epochs=1)
    model[0].weight.data[0, :] = float("nan")  # in place: the graph's own array, no new recording
    with pytest.raises(TrainingDiverged, match=r"became nan"):
        trainer.fit(train, test, epochs=1)
    assert trainer.planned is not None and len(trainer.history) == 1


@needs_cuda
def test_cuda_a_seeded_epoch_draws_the_cpus_masks_and_follows_its_losses_step_by_step():
    """The chapter's model for a whole epoch (235 steps of up to 256) on cpu and cuda in lockstep, from the same
    seed (so the same weights, order and dropout streams): at every step both layers' masks are identical and
    the losses agree to 1e-4 (relative). A recorded planned epoch's mean loss agrees with the CPU's to 1e-4 too."""
    from minigrad.autograd import topological_order

    models, optimizers = {}, {}
    for device in ("cpu", "cuda:0"):
        mg.manual_seed(0)  # initial weights are drawn on the CPU's generator for every device
        models[device] = concise_mlp(device=device)
        optimizers[device] = mg.optim.SGD(models[device].parameters(), lr=0.1)
    loss_sum = count = 0
    epochs = (loader(device=device, count=60000, batch=256) for device in ("cpu", "cuda"))
    for step, batches in enumerate(zip(*epochs)):
        losses, masks = {}, {}
        for device, (x, y) in zip(("cpu", "cuda:0"), batches):
            loss = mg.nn.functional.cross_entropy(models[device](x), y)
            masks[device] = [
                mg.backend.to_numpy(t.grad_fn.mask)
                for t in topological_order(loss)
                if type(t.grad_fn).__name__ == "Dropout"
            ]
            optimizers[device].zero_grad()
            loss.backward()
            optimizers[device].step()
            losses[device] = float(loss.data)
        assert len(masks["cpu"]) == len(masks["cuda:0"]) == 2
        for on_cpu, on_gpu in zip(masks["cpu"], masks["cuda:0"]):
            np.testing.assert_array_equal(on_cpu, on_gpu, err_msg=f"step {step}")
        assert losses["cuda:0"] == pytest.approx(losses["cpu"], rel=1e-4), f"step {step}"
        loss_sum, count = loss_sum + losses["cpu"] * len(batches[0][1]), count + len(batches[0][1])
    assert step == 234 and count == 60000

    mg.manual_seed(0)
    model = concise_mlp(device="cuda")
    trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.1), progress=False)
    trainer.train_epoch(loader(device="cuda", count=60000, batch=256), 1)
    record = trainer.monitor.end_epoch()
    assert trainer.step_kind == "planned, recorded as a CUDA graph"
    assert record["train_loss"] == pytest.approx(loss_sum / count, rel=1e-4)
