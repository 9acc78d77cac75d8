"""The static-buffer step that a GPU captures as a CUDA graph: on the CPU it runs eagerly and must equal the
Trainer's eager step bit for bit; the learning rate is read when the step runs; what capture cannot handle is
named. The CUDA tests (replay against eager, the fallback, the accumulators) run where CuPy finds a GPU."""

import contextlib

import numpy as np
import pytest

import minigrad as mg
from minigrad import capture, nn
from minigrad.capture import BatchGather, StaticEval, StaticStep, capture_problem, loader_problem
from minigrad.chapter.model import concise_mlp
from minigrad.data import ArrayDataset, DataLoader
from minigrad.monitor import TrainingDiverged
from minigrad.train import Trainer, evaluate

needs_cuda = pytest.mark.skipif(not mg.cuda_available(), reason="no CUDA: CuPy is not installed or finds no GPU")


def loader(device="cpu", count=300, batch=64, seed=0):
    rng = np.random.default_rng(seed)
    data = ArrayDataset(rng.integers(0, 256, (count, 784), dtype=np.uint8), rng.integers(0, 10, count))
    return DataLoader(data, batch, shuffle=True, device=device, seed=0)


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("flatten", [True, False])
def test_the_gather_gives_the_loaders_batches_bit_for_bit(device, shuffle, flatten):
    """On every device: on a GPU its three kernels against the loader's own batches."""
    rng = np.random.default_rng(3)
    data = ArrayDataset(rng.integers(0, 256, (200, 28, 28)).astype(np.uint8), rng.integers(0, 10, 200))
    batches = DataLoader(data, 64, shuffle=shuffle, seed=5, flatten=flatten, device=device)
    gather = BatchGather(batches)
    assert gather.full_batches == 3
    xp = mg.backend.module_for(device)
    with mg.backend.on_device(device):
        x, y = xp.zeros((64, *batches.images.shape[1:]), np.float32), xp.zeros(64, np.int64)
    for _epoch in range(2):  # a fresh order each epoch, as iter(loader) draws
        order = batches.epoch_order()
        gather.start_epoch(order)
        for index in range(gather.full_batches):
            gather.gather(x, y)
            expected_x, expected_y = batches.batch(order, index)
            np.testing.assert_array_equal(mg.backend.to_numpy(x), mg.backend.to_numpy(expected_x.data))
            np.testing.assert_array_equal(mg.backend.to_numpy(y), mg.backend.to_numpy(expected_y.data))
        assert int(gather.position[0]) == 192
    gather.start_epoch(None)  # no order: 0, 1, ..., N - 1 again, whatever order came before
    gather.gather(x, y)
    np.testing.assert_array_equal(mg.backend.to_numpy(y), data.labels[:64])


def test_the_static_step_gathering_its_batches_equals_the_trainers_eager_epoch_bit_for_bit():
    batches = loader(count=320)  # full batches only
    mg.manual_seed(0)
    eager = concise_mlp(hidden=(32, 32))
    trainer = Trainer(eager, mg.optim.SGD(eager.parameters(), lr=0.5), progress=False)
    trainer.train_epoch(batches, 1)
    eager_record = trainer.monitor.end_epoch()

    batches = loader(count=320)
    mg.manual_seed(0)
    model = concise_mlp(hidden=(32, 32))
    gather = BatchGather(batches)
    step = StaticStep(model, mg.optim.SGD(model.parameters(), lr=0.5), (64, 784), source=gather)
    gather.start_epoch(batches.epoch_order())
    for _ in range(gather.full_batches):
        step.step()
    for ours, theirs in zip(model.parameters(), eager.parameters()):
        np.testing.assert_array_equal(ours.data, theirs.data)
    loss_sum, correct = step.take_sums()
    assert correct / 320 == eager_record["train_acc"]
    assert loss_sum / 320 == pytest.approx(eager_record["train_loss"], rel=1e-6)


def test_the_static_evaluation_equals_evaluate():
    batches = loader(count=320, seed=2)
    model = concise_mlp(hidden=(32, 32))
    model.train()
    gather = BatchGather(batches)
    step = StaticEval(model, (64, 784), source=gather)
    gather.start_epoch(batches.epoch_order())
    for _ in range(gather.full_batches):
        step.step()
    loss_sum, correct = step.take_sums()
    expected = evaluate(model, loader(count=320, seed=2))
    assert correct / 320 == expected["acc"]
    assert loss_sum / 320 == pytest.approx(expected["loss"], rel=1e-6)
    assert model.training  # its mode is restored
    assert mg.random.dropout_stream("cpu").counter == 0  # dropout was off


class EagerStandIn:
    """CapturedStep's interface, running the static step eagerly instead of replaying a graph: the Trainer's
    captured path (the order, the gathers, the smaller last batch, the sums, evaluation) on the CPU."""

    def __init__(self, static):
        self.static, self.full_batches = static, static.source.full_batches

    def start_epoch(self, order=None):
        self.static.source.start_epoch(order)

    def wait_for_replays(self):
        pass

    def on_stream(self):
        return contextlib.nullcontext()

    def set_lr(self):
        self.static.set_lr()

    def step(self):
        self.static.step()

    def take_sums(self):
        return self.static.take_sums()


def fit_with_stand_in(monkeypatch, stand_in, captured, train_loader, test_loader, hidden=(32, 32)):
    """A seeded Trainer(capture=captured) fit for three epochs on the CPU, the learning rate stepped down after
    each (StepLR), ``stand_in`` made in CapturedStep's place."""
    with monkeypatch.context() as patch:
        patch.setattr(capture, "CapturedStep", stand_in)
        patch.setattr(capture, "capture_problem", lambda *args: None)
        mg.manual_seed(0)
        model = concise_mlp(hidden=hidden)
        optimizer = mg.optim.SGD(model.parameters(), lr=0.5, weight_decay=1e-3)
        trainer = Trainer(
            model,
            optimizer,
            progress=False,
            capture=captured,
            scheduler=mg.optim.StepLR(optimizer, step_size=1, gamma=0.5),
        )
        trainer.fit(train_loader, test_loader, epochs=3)
    return trainer, model


def test_the_trainers_captured_path_equals_its_eager_path(monkeypatch):
    """Three epochs with smaller last batches, shuffled training and evaluation, a learning-rate schedule and
    weight decay: the same weights, the same records (the loss sums are added in another order), the same
    dropout counter."""
    results = []
    for captured in (True, False):
        trainer, model = fit_with_stand_in(
            monkeypatch, EagerStandIn, captured, loader(count=300), loader(count=200, seed=1)
        )
        assert (trainer.captured is not None) == captured
        results.append(
            (trainer.history, [p.data.copy() for p in model.parameters()], mg.random.dropout_stream("cpu").counter)
        )
    (history, weights, counter), (eager_history, eager_weights, eager_counter) = results
    for ours, theirs in zip(weights, eager_weights):
        np.testing.assert_array_equal(ours, theirs)
    assert counter == eager_counter
    for record, eager in zip(history, eager_history):
        assert record["train_acc"] == eager["train_acc"] and record["test_acc"] == eager["test_acc"]
        assert record["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-6)
        assert record["test_loss"] == pytest.approx(eager["test_loss"], rel=1e-6)


def test_a_failed_capture_says_why_and_trains_eagerly_from_where_it_was(monkeypatch, capsys):
    def refuse(static):
        raise RuntimeError("cuBLAS is not allowed while capturing")

    histories = []
    for captured in (True, False):
        trainer, _ = fit_with_stand_in(monkeypatch, refuse, captured, loader(), loader(seed=1), hidden=(16, 16))
        assert trainer.captured is None
        histories.append([{k: v for k, v in r.items() if "seconds" not in k} for r in trainer.history])
    assert histories[0] == histories[1]
    assert capsys.readouterr().err == (
        "capture off: capturing failed (RuntimeError: cuBLAS is not allowed while capturing); the step runs eagerly\n"
    )


def test_a_graph_is_captured_again_when_what_it_holds_fixed_changes(monkeypatch):
    """A graph writes to the arrays and uses the settings it recorded: after load_state_dict (new arrays), a new
    weight decay or dropout probability, or manual_seed (a new dropout stream), the next pass captures again."""
    captured = []

    class Counting(EagerStandIn):
        def __init__(self, static):
            super().__init__(static)
            captured.append(type(static).__name__)

    monkeypatch.setattr(capture, "CapturedStep", Counting)
    monkeypatch.setattr(capture, "capture_problem", lambda *args: None)
    model = concise_mlp(hidden=(16, 16))
    optimizer = mg.optim.SGD(model.parameters(), lr=0.5)
    trainer = Trainer(model, optimizer, progress=False, capture=True)
    train, test = loader(), loader(seed=1)
    trainer.fit(train, test, epochs=2)
    assert captured == ["StaticStep", "StaticEval"]  # once per loader and kind, however many epochs
    # (load_state_dict and nn.init fill the arrays in place, as in PyTorch: a graph reads the new values.)
    changes = [
        lambda: setattr(model[0].weight, "data", model[0].weight.data.copy()),
        lambda: optimizer.param_groups[0].update(weight_decay=1e-4),
        lambda: setattr(model[2], "p", 0.3),
        lambda: mg.manual_seed(1),
    ]
    for number, change in enumerate(changes, start=2):
        change()
        trainer.fit(train, test, epochs=1)
        assert len(captured) == 2 * number
    optimizer.param_groups[0]["lr"] = 0.1  # read at replay: no new capture
    trainer.fit(train, test, epochs=1)
    assert len(captured) == 2 * len(changes) + 2


class FakeCuda:
    """Just enough of ``cupy.cuda`` for CapturedStep's own logic to run on the CPU. NumPy cannot record work, so
    a "capture" runs the step and then puts its state back (a real capture executes nothing), and the graph it
    returns runs ``replay`` (by default the step again) at each launch."""

    def __init__(self, static, replay=None):
        fake = self

        class Stream:
            def __init__(self, non_blocking=False):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def synchronize(self):
                pass

            def record(self):
                return None

            def wait_event(self, event):
                pass

            def begin_capture(self):
                fake.captures += 1
                self.saved = {name: array.copy() for name, array in static.state().items()}

            def end_capture(self):
                for name, array in static.state().items():
                    array[...] = self.saved[name]
                return Graph()

        class Graph:
            def upload(self, stream):
                pass

            def launch(self, stream):
                fake.launches += 1
                (replay or static.step)()

        class MemoryPool:
            def malloc(self, size):
                raise AssertionError("NumPy allocates by itself")

        self.Stream, self.Graph, self.MemoryPool = Stream, Graph, MemoryPool
        self.captures = self.launches = 0
        self.get_current_stream = Stream
        self.using_allocator = lambda malloc: contextlib.nullcontext()


def fake_cupy(monkeypatch, static, replay=None):
    cuda = FakeCuda(static, replay)
    monkeypatch.setattr(mg.backend, "cupy", type("FakeCuPy", (), {"cuda": cuda, "ndarray": type("NoArray", (), {})}))
    return cuda


def no_dropout_model():  # NumPy's dropout stream is not an array a snapshot could restore: no dropout here
    return nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


def test_capturing_checks_two_replays_then_leaves_the_state_as_it_was(monkeypatch):
    batches = loader(count=320)
    model = no_dropout_model()
    static = StaticStep(model, mg.optim.SGD(model.parameters(), lr=0.5), (64, 784), source=BatchGather(batches))
    before = {name: array.copy() for name, array in static.state().items()}
    cuda = fake_cupy(monkeypatch, static)
    captured = capture.CapturedStep(static)
    assert (cuda.captures, cuda.launches) == (1, 2)
    for name, array in static.state().items():
        np.testing.assert_array_equal(array, before[name], err_msg=name)

    expected = [p.data.copy() for p in model.parameters()]  # the same epoch, eagerly, from a copy of the state
    twin = no_dropout_model()
    for ours, theirs in zip(twin.parameters(), model.parameters()):
        ours.data[...] = theirs.data
    eager = StaticStep(twin, mg.optim.SGD(twin.parameters(), lr=0.5), (64, 784), source=BatchGather(batches))
    order = batches.epoch_order()
    captured.start_epoch(order)
    eager.source.start_epoch(order)
    for _ in range(captured.full_batches):
        captured.step()
        eager.step()
    assert captured.take_sums() == eager.take_sums()
    for ours, theirs, start in zip(model.parameters(), twin.parameters(), expected):
        np.testing.assert_array_equal(ours.data, theirs.data)
        assert not np.array_equal(ours.data, start)


def test_a_graph_that_disagrees_with_the_eager_steps_is_refused_and_the_state_restored(monkeypatch):
    """A replay that does not move the batch position on: the first step agrees, the second cannot."""
    batches = loader(count=320)
    model = no_dropout_model()
    static = StaticStep(model, mg.optim.SGD(model.parameters(), lr=0.5), (64, 784), source=BatchGather(batches))
    before = {name: array.copy() for name, array in static.state().items()}

    def stuck():
        static.step()
        static.source.position -= 64

    fake_cupy(monkeypatch, static, replay=stuck)
    with pytest.raises(capture.CaptureMismatch, match="differ in parameter 0.weight .*the batch position$"):
        capture.CapturedStep(static)
    for name, array in static.state().items():
        np.testing.assert_array_equal(array, before[name], err_msg=name)


def test_the_static_step_equals_the_trainers_eager_step_bit_for_bit():
    batches = loader()
    mg.manual_seed(0)
    eager = concise_mlp(hidden=(32, 32))
    trainer = Trainer(eager, mg.optim.SGD(eager.parameters(), lr=0.5, weight_decay=1e-3), progress=False)
    trainer.train_epoch(batches, 1)
    eager_record = trainer.monitor.end_epoch()

    batches = loader()
    mg.manual_seed(0)
    static_model = concise_mlp(hidden=(32, 32))
    optimizer = mg.optim.SGD(static_model.parameters(), lr=0.5, weight_decay=1e-3)
    steps = {}
    count = 0
    for x, y in batches:
        if tuple(x.shape) not in steps:  # the last batch is smaller: its own buffers, as Trainer does
            steps[tuple(x.shape)] = StaticStep(static_model, optimizer, tuple(x.shape))
        steps[tuple(x.shape)].load(x, y)
        steps[tuple(x.shape)].step()
        count += len(y)
    for ours, theirs in zip(static_model.parameters(), eager.parameters()):
        np.testing.assert_array_equal(ours.data, theirs.data)
    sums = [step.take_sums() for step in steps.values()]
    loss_sum, correct = sum(s[0] for s in sums), sum(s[1] for s in sums)
    assert correct / count == eager_record["train_acc"]
    assert loss_sum / count == pytest.approx(eager_record["train_loss"], rel=1e-6)  # summed in another order
    assert mg.random.dropout_stream("cpu").counter > 0


def test_the_learning_rate_is_read_when_the_step_runs():
    """set_lr() writes the device scalar; the step needs nothing else (on a GPU: no new capture)."""
    rng = np.random.default_rng(1)
    x, y = mg.Tensor(rng.random((8, 784), dtype=np.float32)), mg.tensor(rng.integers(0, 10, 8))
    results = []
    for static in (True, False):
        mg.manual_seed(0)
        model = concise_mlp(hidden=(16, 16))
        optimizer = mg.optim.SGD(model.parameters(), lr=0.5)
        step = StaticStep(model, optimizer, (8, 784))
        for lr in (0.5, 0.1, 0.02):
            optimizer.param_groups[0]["lr"] = lr
            if static:
                step.set_lr()
                step.load(x, y)
                step.step()
            else:
                loss = mg.nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        results.append([p.data.copy() for p in model.parameters()])
    for ours, theirs in zip(*results):
        np.testing.assert_array_equal(ours, theirs)


class Doubler(nn.Module):
    def forward(self, x):
        return x * 2


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda: (concise_mlp(hidden=(8, 8)), dict(momentum=0.9)), "SGD with momentum"),
        (lambda: (nn.Sequential(nn.Linear(784, 8), Doubler(), nn.Linear(8, 10)), {}), "holds a Doubler"),
        (
            lambda: (nn.Sequential(nn.Linear(784, 8), nn.GaussianNoise(0.1), nn.Linear(8, 10)), {}),
            "holds a GaussianNoise",
        ),
        (
            lambda: (nn.Sequential(nn.Linear(784, 8, dtype="float64"), nn.Linear(8, 10, dtype="float64")), {}),
            "float32 parameters",
        ),
        (lambda: (concise_mlp(hidden=(8, 8)), {}), "needs a model on a GPU"),
    ],
)
def test_capture_names_what_it_cannot_handle(make, problem):
    model, settings = make()
    assert problem in capture_problem(model, mg.optim.SGD(model.parameters(), lr=0.1, **settings))


def test_a_forward_hook_rules_capture_out():
    model = concise_mlp(hidden=(8, 8))
    model[1].register_forward_hook(lambda *args: None)
    assert "forward hooks" in capture_problem(model, mg.optim.SGD(model.parameters(), lr=0.1))


def test_labels_are_checked_once_against_the_models_outputs():
    model = concise_mlp(hidden=(8, 8))
    assert loader_problem(model, loader()) is None
    bad = DataLoader(ArrayDataset(np.zeros((4, 784), np.uint8), np.array([0, 1, 10, 3])), 2)
    assert loader_problem(model, bad) == "the labels run from 0 to 10, outside [0, 9]"


def test_a_loader_too_short_for_the_capture_check_is_named():
    """Capturing runs two steps to check the graph: a loader needs two full batches, or the gather would read
    past the end of its order."""
    model = concise_mlp(hidden=(8, 8))
    assert "fewer than 2 full batches of 64" in loader_problem(model, loader(count=127))
    assert loader_problem(model, loader(count=128)) is None


def test_asking_for_capture_on_the_cpu_says_why_not_and_trains_the_same(capsys):
    histories = []
    for captured in (True, False):
        mg.manual_seed(0)
        model = concise_mlp(hidden=(16, 16))
        trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.5), progress=False, capture=captured)
        histories.append(
            [
                {k: v for k, v in r.items() if "seconds" not in k}
                for r in trainer.fit(loader(), loader(seed=1), epochs=2)
            ]
        )
    assert histories[0] == histories[1]
    err = capsys.readouterr().err
    assert err == "capture off: capture needs a model on a GPU; the step runs eagerly\n"


GEMM_HOST_PRELUDE = r"""
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>
struct dim { int x, y; };
static thread_local dim threadIdx, blockIdx;
static std::barrier<>* block_barrier;
#define __global__
#define __shared__ static
#define __syncthreads() block_barrier->arrive_and_wait()
"""
GEMM_HOST_MAIN = r"""
int main(int argc, char** argv) {  // M N K sAm sAk sBk sBn |A| |B|; A's and B's buffers on stdin; C on stdout
    int M = atoi(argv[1]), N = atoi(argv[2]), K = atoi(argv[3]);
    long long sAm = atoll(argv[4]), sAk = atoll(argv[5]), sBk = atoll(argv[6]), sBn = atoll(argv[7]);
    std::vector<float> A(atoll(argv[8])), B(atoll(argv[9])), C((size_t)M * N);
    for (auto& a : A) if (scanf("%a", &a) != 1) return 1;
    for (auto& b : B) if (scanf("%a", &b) != 1) return 1;
    for (int by = 0; by < (M + 15) / 16; ++by)
        for (int bx = 0; bx < (N + 15) / 16; ++bx) {  // a block at a time: its 256 threads, __syncthreads a barrier
            std::barrier<> sync(256);
            block_barrier = &sync;
            std::vector<std::thread> threads;
            for (int ty = 0; ty < 16; ++ty)
                for (int tx = 0; tx < 16; ++tx)
                    threads.emplace_back([&, tx, ty] {
                        threadIdx = {tx, ty};
                        blockIdx = {bx, by};
                        minigrad_sgemm(A.data(), B.data(), C.data(), M, N, K, sAm, sAk, sBk, sBn);
                    });
            for (auto& thread : threads) thread.join();
        }
    for (auto c : C) printf("%a\n", c);
    return 0;
}
"""


def test_the_capturable_gemm_source_multiplies_correctly_when_emulated_on_the_host(tmp_path):
    """backend.GEMM_CUDA built as C++20 with a thread per CUDA thread and a barrier for __syncthreads: the
    products of plain and transposed (strided) views equal NumPy's, as Linear's forward and backward use them."""
    import shutil
    import subprocess

    from minigrad.backend import GEMM_CUDA

    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler (g++ or clang++) to emulate the CUDA kernel on the host")
    source, program = tmp_path / "gemm.cpp", tmp_path / "gemm"
    source.write_text(GEMM_HOST_PRELUDE + GEMM_CUDA + GEMM_HOST_MAIN)
    built = subprocess.run(
        [compiler, "-std=c++20", "-O1", "-pthread", "-o", str(program), str(source)], capture_output=True, text=True
    )
    if built.returncode:
        pytest.skip(f"this compiler cannot build the C++20 emulation: {built.stderr.strip()[:200]}")

    def gemm(a, b):
        (m, k), n = a.shape, b.shape[1]
        buffers = [view if view.base is None else view.base for view in (a, b)]
        args = [
            m,
            n,
            k,
            a.strides[0] // 4,
            a.strides[1] // 4,
            b.strides[0] // 4,
            b.strides[1] // 4,
            buffers[0].size,
            buffers[1].size,
        ]
        text = "\n".join(float(v).hex() for buffer in buffers for v in buffer.ravel()) + "\n"
        out = subprocess.run(
            [str(program), *map(str, args)], input=text, capture_output=True, text=True, check=True
        ).stdout.split()
        return np.array([float.fromhex(v) for v in out], dtype=np.float32).reshape(m, n)

    rng = np.random.default_rng(0)
    x, w, gy = (rng.standard_normal(shape).astype(np.float32) for shape in ((37, 29), (23, 29), (37, 23)))
    for a, b in ((x, w.T), (gy, w), (gy.T, x)):  # x W^T, dL/dx = gy W, dL/dW = gy^T x
        np.testing.assert_allclose(gemm(a, b), a @ b, rtol=1e-5, atol=1e-5)


# --- on a GPU -------------------------------------------------------------------------------------------


@needs_cuda
def test_cuda_capturable_gemm_equals_cupys_matmul():
    import cupy

    from minigrad import backend

    rng = np.random.default_rng(0)
    shapes = ((256, 784), (256, 784), (256, 256))
    x, w, gy = (cupy.asarray(rng.standard_normal(shape).astype(np.float32)) for shape in shapes)
    for a, b in ((x, w.T), (gy, w), (gy.T, x)):
        np.testing.assert_allclose(
            cupy.asnumpy(backend.capturable_gemm(a, b)), cupy.asnumpy(a @ b), rtol=1e-4, atol=1e-4
        )


@needs_cuda
def test_cuda_graph_replay_equals_the_eager_static_step_after_an_epoch():
    """The replayed graph against the same step run eagerly with the same (capturable) kernels: equal weights."""
    from minigrad import backend

    weights = []
    for replay in (True, False):
        batches = loader("cuda", count=640, batch=64)  # full batches only
        mg.manual_seed(0)
        model = concise_mlp(hidden=(64, 64), device="cuda")
        optimizer = mg.optim.SGD(model.parameters(), lr=0.5)
        trainer = Trainer(model, optimizer, progress=False, capture=replay)
        if replay:
            trainer.train_epoch(batches, 1)
            assert trainer.captured is not None, trainer.capture_off
        else:
            step = StaticStep(model, optimizer, (64, 784))
            with backend.capturing():
                for x, y in batches:
                    step.load(x, y)
                    step.step()
        weights.append([backend.to_numpy(p.data) for p in model.parameters()])
    for ours, theirs in zip(*weights):
        np.testing.assert_array_equal(ours, theirs)


@needs_cuda
def test_cuda_replayed_step_reads_the_learning_rate_at_replay_time():
    mg.manual_seed(0)
    model = concise_mlp(hidden=(32, 32), device="cuda")
    optimizer = mg.optim.SGD(model.parameters(), lr=0.5)
    trainer = Trainer(model, optimizer, progress=False, capture=True)
    batches = loader("cuda", count=128, batch=64)  # one loader: its graph is captured once, in epoch 1
    trainer.train_epoch(batches, 1)
    before = [p.data.copy() for p in model.parameters()]
    optimizer.param_groups[0]["lr"] = 1e-30  # effectively no update, if and only if the graph reads it
    trainer.train_epoch(batches, 2)
    for ours, theirs in zip(model.parameters(), before):
        np.testing.assert_allclose(mg.backend.to_numpy(ours.data), mg.backend.to_numpy(theirs), atol=1e-20)


@needs_cuda
def test_cuda_model_capture_cannot_handle_runs_eagerly_and_says_why(capsys):
    mg.manual_seed(0)
    model = concise_mlp(hidden=(16, 16), device="cuda")
    trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.5, momentum=0.9), progress=False, capture=True)
    trainer.fit(loader("cuda"), loader("cuda", seed=1), epochs=1)
    assert trainer.captured is None
    assert capsys.readouterr().err.startswith("capture off: SGD with momentum")


def test_the_trainer_runs_a_cpu_model_eagerly_by_default_and_says_nothing(capsys):
    model = concise_mlp(hidden=(16, 16))
    trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.5), progress=False)
    trainer.fit(loader(), loader(seed=1), epochs=1)
    assert trainer.captured is None and trainer.capture_off == "the model is on the CPU"
    assert capsys.readouterr().err == ""


def test_a_trainer_asked_to_capture_a_cpu_model_says_why_it_cannot(capsys):
    model = concise_mlp(hidden=(16, 16))
    trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.5), progress=False, capture=True)
    trainer.fit(loader(), loader(seed=1), epochs=1)
    assert trainer.captured is None
    assert capsys.readouterr().err == "capture off: capture needs a model on a GPU; the step runs eagerly\n"


@needs_cuda
def test_cuda_the_trainer_captures_by_default_and_not_when_told():
    for asked, captured in ((None, True), (True, True), (False, False)):
        model = concise_mlp(hidden=(16, 16), device="cuda")
        trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.5), progress=False, capture=asked)
        trainer.fit(loader("cuda"), loader("cuda", seed=1), epochs=1)
        assert (trainer.captured is not None) == captured, (asked, trainer.capture_off)


@needs_cuda
def test_cuda_a_captured_run_that_diverges_stops_at_that_epoch():
    """A replayed step reads no loss on the host, so the epoch's device sum carries a NaN to end_epoch."""
    model = concise_mlp(hidden=(16, 16), device="cuda")
    trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.5), progress=False)
    train, test = loader("cuda"), loader("cuda", seed=1)
    trainer.fit(train, test, epochs=1)
    model[0].weight.data[0, 0] = float("nan")  # in place: the graph's own array, no new capture
    with pytest.raises(TrainingDiverged, match=r"the train loss became nan in epoch 2"):
        trainer.fit(train, test, epochs=1)
    assert trainer.captured is not None and len(trainer.history) == 1


@needs_cuda
def test_cuda_accumulators_give_the_epochs_loss_and_accuracy():
    """The captured epoch's record against the eager Trainer's: the same batches, close numbers."""
    records = []
    for captured in (True, False):
        mg.manual_seed(0)
        model = concise_mlp(hidden=(64, 64), device="cuda")
        trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.1), progress=False, capture=captured)
        records.append(trainer.fit(loader("cuda", count=600), loader("cuda", seed=1), epochs=1)[0])
    assert records[0]["train_acc"] == pytest.approx(records[1]["train_acc"], abs=0.02)
    assert records[0]["train_loss"] == pytest.approx(records[1]["train_loss"], rel=1e-3)


@needs_cuda
def test_cuda_a_seeded_epoch_draws_the_cpus_masks_and_follows_its_losses_step_by_step():
    """The chapter's model for a whole epoch (235 steps of up to 256) on cpu and cuda in lockstep, from the same
    seed (so the same weights, order and dropout streams): at every step both layers' masks are identical and
    the losses agree to 1e-4 (relative). A captured epoch's mean loss agrees with the CPU's to 1e-4 too."""
    from minigrad.autograd import topological_order

    models, optimizers = {}, {}
    for device in ("cpu", "cuda:0"):
        mg.manual_seed(0)  # initial weights are drawn on the CPU's generator for every device
        models[device] = concise_mlp(device=device)
        optimizers[device] = mg.optim.SGD(models[device].parameters(), lr=0.1)
    loss_sum = count = 0
    for step, batches in enumerate(zip(loader("cpu", count=60000, batch=256), loader("cuda", count=60000, batch=256))):
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
    trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.1), progress=False, capture=True)
    record = trainer.monitor.end_epoch(sums=trainer.train_epoch(loader("cuda", count=60000, batch=256), 1))
    assert trainer.captured is not None, trainer.capture_off
    assert record["train_loss"] == pytest.approx(loss_sum / count, rel=1e-4)
