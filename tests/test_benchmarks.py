"""Smoke tests of the benchmarks: they run on a tiny synthetic dataset and write the documented JSON.

They assert the schema, never a time: CI machines are shared and noisy.
"""

import argparse
import json
import os
import subprocess
import sys

import pytest

from minigrad import backend

from . import torch_oracle
from .fakedata import write_fake_fashion

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module, *args, cwd):
    env = {**os.environ, "PYTHONPATH": ROOT}
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_train_speed_writes_its_table_and_json(tmp_path):
    data = tmp_path / "fake"
    write_fake_fashion(data, train=600, test=100)
    out = tmp_path / "speed.json"
    printed = run_module(
        "benchmarks.train_speed",
        "--epochs",
        "1",
        "--repeats",
        "2",
        "--limit",
        "512",
        "--data-dir",
        str(data),
        "--skip-checksum",
        "--json",
        str(out),
        cwd=ROOT,
    )
    report = json.loads(out.read_text())
    assert {"device", "config", "sgemm_gflops", "floor_gflops", "matmul_gflop_per_epoch", "results", "skipped"} <= set(
        report
    )
    assert report["config"]["examples_per_epoch"] == 512
    names = set(report["results"])
    assert {"minigrad concise", "minigrad scratch", "numpy floor"} <= names
    assert ("pytorch eager" in names) != bool(report["skipped"])
    for result in report["results"].values():
        assert len(result["epochs_s"]) == 2 and result["min_s"] <= result["median_s"] <= result["max_s"]
        assert set(result) >= {"ratio_to_floor", "paired_ratio_to_floor", "ratio_to_pytorch"}
    assert report["results"]["numpy floor"]["ratio_to_floor"] == 1.0
    assert "minigrad concise" in printed and "x floor" in printed


def test_train_speed_skips_the_contenders_it_is_told_to(tmp_path):
    data = tmp_path / "fake"
    write_fake_fashion(data, train=300, test=100)
    out = tmp_path / "speed.json"
    run_module(
        "benchmarks.train_speed",
        "--epochs",
        "1",
        "--repeats",
        "1",
        "--limit",
        "256",
        "--skip",
        "scratch",
        "--skip",
        "pytorch",
        "--skip",
        "planned",
        "--data-dir",
        str(data),
        "--skip-checksum",
        "--json",
        str(out),
        cwd=ROOT,
    )
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"minigrad concise", "numpy floor", "products"}
    assert report["results"]["minigrad concise"]["ratio_to_pytorch"] is None
    assert any("pytorch" in line for line in report["skipped"])


def test_memory_benchmark_reports_every_peak(tmp_path):
    data = tmp_path / "fake"
    write_fake_fashion(data, train=300, test=100)
    out = tmp_path / "memory.json"
    run_module(
        "benchmarks.memory", "--epochs", "1", "--data-dir", str(data), "--skip-checksum", "--json", str(out), cwd=ROOT
    )
    report = json.loads(out.read_text())
    assert report["minigrad"]["peak_rss_mb"] > 0 and report["floor"]["peak_rss_mb"] > 0 and report["rss_ratio"] > 0
    assert report["minigrad_eager"]["peak_rss_mb"] > 0


def test_op_overhead_benchmark_runs(tmp_path):
    out = tmp_path / "ops.json"
    run_module("benchmarks.op_overhead", "--number", "20", "--json", str(out), cwd=ROOT)
    results = json.loads(out.read_text())["results"]
    assert {"add", "matmul", "linear", "dropout", "cross_entropy"} <= set(results)
    assert all(r["minigrad_forward_backward_us"] > 0 for r in results.values())


def test_step_phases_reports_every_phase_of_every_contender(tmp_path):
    out = tmp_path / "phases.json"
    printed = run_module("benchmarks.step_phases", "--rounds", "4", "--steps", "2", "--json", str(out), cwd=ROOT)
    report = json.loads(out.read_text())
    assert set(report["us"]) == {"minigrad planned", "minigrad concise", "minigrad scratch", "floor", "products"}
    for name, phases in report["us"].items():
        assert set(phases) == {"forward", "backward", "update", "step"}
        assert phases["forward"] > 0 and phases["backward"] > 0 and (phases["update"] > 0) == (name != "products")
    assert "minigrad concise - products" in printed and "minigrad planned - products" in printed


def test_dropout_bits_reports_both_generators(tmp_path):
    data = tmp_path / "fake"
    write_fake_fashion(data, train=600, test=100)
    out = tmp_path / "bits.json"
    printed = run_module(
        "benchmarks.dropout_bits",
        "--rounds",
        "2",
        "--data-dir",
        str(data),
        "--skip-checksum",
        "--json",
        str(out),
        cwd=ROOT,
    )
    report = json.loads(out.read_text())
    assert set(report["median_epoch_s"]) == set(report["mask_256x256_us"]) == {"philox", "pcg64"}
    assert all(len(times) == 2 for times in report["epochs_s"].values()) and report["paired_ratio"] > 0
    assert "paired median" in printed


def test_epoch_slices_hand_out_every_batch_once_per_epoch():
    from benchmarks.train_speed import EpochSlices

    class Loader:  # a stand-in: an epoch is the batches 0..6, and every pass is a new epoch
        epochs = 0

        def __len__(self):
            return 7

        def __iter__(self):
            Loader.epochs += 1
            return iter(range(7))

    slices = EpochSlices(Loader(), 3)
    first = [slices.next_slice() for _ in range(3)]
    assert [len(part) for part in first] == [2, 2, 3]
    assert [batch for part in first for batch in part] == list(range(7)) and Loader.epochs == 1
    assert [part.indices for part in first] == [range(0, 2), range(2, 4), range(4, 7)]
    assert list(slices.next_slice()) == [0, 1] and Loader.epochs == 2  # the next epoch
    assert [len(EpochSlices(Loader(), 20).next_slice())] == [1]  # never an empty slice


@pytest.mark.parametrize(
    "module, flags, message",
    [
        ("benchmarks.train_speed", ["--device", "tpu"], "argument --device: unknown device 'tpu'"),
        ("benchmarks.train_speed", ["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
        ("benchmarks.train_speed", ["--repeats", "-2"], "argument --repeats: must be at least 1, got -2"),
        ("benchmarks.train_speed", ["--limit", "x"], "argument --limit: expected an integer, got 'x'"),
        ("benchmarks.train_speed", ["--json", "benchmarks"], "argument --json: 'benchmarks' is a folder"),
        ("benchmarks.train_speed", ["--json", "README.md/x.json"], "argument --json: cannot write into"),
        ("benchmarks.train_speed", ["--data-dir", "README.md"], "argument --data-dir: 'README.md' is a file"),
        ("benchmarks.memory", ["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
        ("benchmarks.memory", ["--device", "tpu"], "argument --device: unknown device 'tpu'"),
        ("benchmarks.op_overhead", ["--number", "0"], "argument --number: must be at least 1, got 0"),
        ("benchmarks.op_overhead", ["--json", "benchmarks"], "argument --json: 'benchmarks' is a folder"),
        ("benchmarks.step_phases", ["--rounds", "0"], "argument --rounds: must be at least 1, got 0"),
        ("benchmarks.dropout_bits", ["--rounds", "0"], "argument --rounds: must be at least 1, got 0"),
        ("benchmarks.dropout_bits", ["--data-dir", "README.md"], "argument --data-dir: 'README.md' is a file"),
        ("benchmarks.step_phases", ["--device", "tpu"], "argument --device: unknown device 'tpu'"),
        ("benchmarks.gemm_speed", ["--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
        ("benchmarks.step_graph", ["--passes", "0"], "argument --passes: must be at least 1, got 0"),
        ("benchmarks.step_graph", ["--products", "blas"], "argument --products: products must be one of 'tile'"),
        ("benchmarks.train_speed", ["--products", "tile, forward 1x2=tile"], "whose item 'forward 1x2=tile' is"),
        ("benchmarks.run_time", ["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
        ("benchmarks.run_time", ["--data-dir", "README.md"], "argument --data-dir: 'README.md' is a file"),
        ("benchmarks.train_speed", ["--skip", "tile"], "argument --skip: invalid choice: 'tile'"),
        ("benchmarks.train_speed", ["--ready-timeout", "0"], "argument --ready-timeout: must be at least 1, got 0"),
        ("benchmarks.kernel_code", ["--arch", "90"], "argument --arch: expected sm_ and a compute capability"),
    ],
)
def test_bad_flags_exit_2_with_one_line(module, flags, message, capsys, monkeypatch):
    import importlib

    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as caught:
        importlib.import_module(module).main(flags)
    err = capsys.readouterr().err
    assert caught.value.code == 2 and err.count("\n") == 1 and message in err


@pytest.mark.skipif(backend.cuda_available(), reason="a GPU is here: the benchmark would run")
@pytest.mark.parametrize("module", ["gemm_speed", "step_graph"])
def test_the_gpu_benchmarks_say_they_need_a_gpu(module, capsys):
    import importlib

    with pytest.raises(SystemExit) as caught:
        importlib.import_module(f"benchmarks.{module}").main([])
    err = capsys.readouterr().err
    assert caught.value.code == 2 and err.count("\n") == 1 and "needs a GPU" in err


def test_the_graph_benchmark_reads_a_dot_dump():
    from benchmarks.step_graph import graph_contents

    # The start of the dump an H100 gave (benchmarks.step_graph --dot), one mangled CUB kernel added
    dot = (
        'digraph dot {\nsubgraph cluster_1 {\nlabel="graph_1" graph[style="dashed"];\n'
        '"graph_1_node_0"[style="bold" shape="octagon" label="0\nminigrad_gather_pixels\n"];\n\n'
        '"graph_1_node_1"[style="bold" shape="octagon" label="1\ncupy_add__float32_float32_float32\n"];\n\n'
        '"graph_1_node_2"[style="bold" shape="octagon" label="2\n_ZN3cub6detail6reduce11DeviceReduceKernel\n"];\n\n'
        '"graph_1_node_3"[style="bold" shape="octagon" label="3\ncupy_add__float32_float32_float32\n"];\n'
        '"graph_1_node_0" -> "graph_1_node_1";\n}\n}'
    )
    nodes, kernels = graph_contents(dot)
    assert nodes == 4
    assert kernels == {
        "cupy_add__float32_float32_float32": 2,
        "minigrad_gather_pixels": 1,
        "_ZN3cub6detail6reduce11DeviceReduceKernel": 1,
    }


def test_the_graph_benchmark_finds_the_longest_chain_of_a_graphs_nodes():
    from benchmarks.step_graph import longest_chain

    def dot(edges, count=6):
        nodes = "".join(
            f'"graph_1_node_{n}"[style="bold" shape="octagon" label="{n}\nminigrad_k{n}\n"];\n' for n in range(count)
        )
        return (
            "digraph dot {\nsubgraph cluster_1 {\n"
            + nodes
            + "".join(f'"graph_1_node_{a}" -> "graph_1_node_{b}";\n' for a, b in edges)
            + "}\n}"
        )

    assert longest_chain(dot([(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)])) == 6  # one stream: every node in turn
    # a fork after 1 (2 beside 3 -> 4) and the join at 5: 0, 1, 3, 4, 5
    assert longest_chain(dot([(0, 1), (1, 2), (1, 3), (3, 4), (2, 5), (4, 5)])) == 5
    assert longest_chain(dot([], 3)) == 1 and longest_chain("digraph dot {}") == 0


def test_the_gemm_benchmark_lists_every_product_of_a_step():
    from benchmarks.gemm_speed import step_products

    products = step_products(256)
    assert len(products) == 8  # forward and gy^T @ x for 3 layers, gy @ W for the last two
    assert products[0] == ("layer 1 forward x @ W^T", (256, 784), ("T", 256, 784))
    assert products[-1] == ("layer 3 backward gy^T @ x", ("T", 256, 10), (256, 256))


def test_the_gemm_benchmark_names_each_tile_shape_once_and_the_default_tile():
    from minigrad.fast import gemm

    kinds = gemm.TILE_NAMES
    assert kinds["tile"] == (gemm.GROUPS, gemm.SLICE, gemm.PER_THREAD, gemm.SIDE)
    assert sorted(kinds.values()) == sorted({*gemm.TILE_SHAPES, kinds["tile"]})
    assert kinds["tile 4x64"] == (4, 64, 1, 16) and kinds["tile 4x16 2x2"] == (4, 16, 2, 16)
    assert kinds["tile 8x16 2x2 side 8"] == (8, 16, 2, 8)


def test_the_gemm_benchmark_says_what_to_set_and_leaves_out_a_wrong_kernel():
    """The verdict lines a GPU run acts on, from made-up timings: the fastest tile shape that computes the right
    products (a faster but wrong one is flagged and passed over), and tile against cuBLAS."""
    from benchmarks.gemm_speed import step_products, summary
    from minigrad.fast.gemm import TILE_NAMES
    from minigrad.fast.plan import tile_shapes

    kinds = ["cupy", *TILE_NAMES, "cublas"]
    graph = {kind: 40.0 + index for index, kind in enumerate(kinds[1:])}
    graph["tile 4x16 2x2"], graph["tile 2x16 4x4"], graph["cublas"] = 25.0, 10.0, 30.0
    rows = []
    for name, *_ in step_products(256):
        row = {"product": name, "shape": [256, 784, 256], "cupy_us": 30.0}
        for kind in kinds[1:]:
            row[f"{kind}_us"], row[f"{kind}_max_abs_difference"] = 31.0, 2e-5
            row[f"{kind}_graph_us"] = 4.0
        row["tile 2x16 4x4_max_abs_difference"] = 3.5  # fastest, and wrong
        row["tile 2x16 4x4_graph_us"] = row["tile 4x16 2x2_graph_us"] = 1.0
        rows.append(row)
    rows[-1]["tile 4x64_graph_us"] = 0.5  # the last product is fastest in another shape
    lines, fastest, by_product = summary(rows, kinds, graph)
    assert fastest == "tile 4x16 2x2"
    # the last product, layer 3's weight gradient, is faster in its own shape: a setting the planned step takes
    assert by_product == "tile 4x16 2x2, weight gradient 256x784x256=tile 4x64"
    assert tile_shapes(by_product) == (TILE_NAMES[fastest], {("weight gradient", 256, 784, 256): (4, 64, 1, 16)})
    assert lines[0] == "product 1: layer 1 forward x @ W^T (256x784x256, m x k x n)"
    assert sum(line.startswith("tile") for line in lines) == len(TILE_NAMES)
    (wrong,) = [line for line in lines if line.startswith("tile 2x16 4x4 ")]
    assert wrong.endswith("WRONG: left out of the verdicts")
    assert lines[-4] == (
        "in a graph, the fastest tile shape is 'tile 4x16 2x2' (25.0 us; the default 40.0 us): "
        "fast.gemm's GROUPS, SLICE, PER_THREAD, SIDE = 4, 16, 2, 16"
    )
    assert lines[-3] == (
        "each product by its fastest tile shape: 7.5 us against 8.0 us all by 'tile 4x16 2x2' (copies in a graph): "
        + ", ".join(f"{index} 'tile 4x16 2x2'" for index in range(1, 8))
        + ", 8 'tile 4x64'"
    )
    assert lines[-2] == (
        "as the planned step's products (train_speed --products, fast.plan's DEFAULT_PRODUCTS): "
        "'tile 4x16 2x2, weight gradient 256x784x256=tile 4x64'"
    )
    assert lines[-1].startswith("in a graph, the fastest tile takes 0.83x cuBLAS's time (tile faster;")
    graph["cublas"] = 20.0
    assert "1.25x cuBLAS's time (cublas faster;" in summary(rows, kinds, graph)[0][-1]
    for row in rows:  # every product fastest in the fastest shape: the setting is its name alone
        row["tile 4x64_graph_us"] = 4.0
    assert summary(rows, kinds, graph)[2] == "tile 4x16 2x2"


def test_train_speed_says_whose_products_to_set_and_whether_the_target_is_met():
    """From made-up medians: the faster planned step names fast.plan's DEFAULT_PRODUCTS, and its ratio to
    "pytorch graph+gather" is held against the target (0.5), either way."""
    from benchmarks.train_speed import verdicts

    def results(tile_s, cublas_s, gather_s=0.038):
        return {
            "minigrad planned": {"median_s": tile_s, "ratio_to_pytorch_graph_gather": tile_s / gather_s},
            "minigrad planned cublas": {"median_s": cublas_s, "ratio_to_pytorch_graph_gather": cublas_s / gather_s},
            "pytorch graph+gather": {"median_s": gather_s, "ratio_to_pytorch_graph_gather": 1.0},
        }

    assert verdicts(results(0.0171, 0.019), "tile 4x16 2x2") == [
        "the planned step by 'tile 4x16 2x2' takes 0.90x its time by 'cublas' (medians): "
        "fast.plan's DEFAULT_PRODUCTS = 'tile 4x16 2x2'",
        "target: the planned step by 'tile 4x16 2x2' at 0.45x pytorch graph+gather's epoch (at most 0.5): met",
    ]
    first, target = verdicts(results(0.03, 0.0228), "tile")
    assert first.endswith("1.32x its time by 'cublas' (medians): fast.plan's DEFAULT_PRODUCTS = 'cublas'")
    assert target == "target: the planned step by 'cublas' at 0.60x pytorch graph+gather's epoch (at most 0.5): NOT met"
    only = {"minigrad planned": {"median_s": 0.02, "ratio_to_pytorch_graph_gather": None}}
    assert verdicts(only, "cublas") == [] and verdicts({}, "tile") == []


def test_train_speed_with_broken_data_is_one_line(tmp_path):
    data = tmp_path / "broken"
    write_fake_fashion(data, train=30, test=10)
    (data / "train-images-idx3-ubyte.gz").write_bytes(b"<html>404</html>")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.train_speed", "--data-dir", str(data)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "is not the official" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_the_planned_contender_driven_slice_by_slice_trains_as_the_concise_one(monkeypatch):
    """Driven by EpochSlices (a pass starts at an epoch's first slice and ends after its last, the smaller last
    batch included), the planned contender ends two epochs with the eager concise contender's weights, bit for
    bit."""
    import numpy as np

    import minigrad as mg
    from benchmarks import train_speed
    from minigrad.chapter.model import concise_mlp

    from .test_planned import loader

    made = []

    def recording_concise_mlp(device):
        made.append(concise_mlp(device=device))
        return made[-1]

    monkeypatch.setattr(train_speed, "concise_mlp", recording_concise_mlp)
    for contender in (train_speed.minigrad_planned, train_speed.minigrad_concise):
        mg.manual_seed(0)
        epoch = contender("cpu")
        slices = train_speed.EpochSlices(loader(count=300), 3)  # 5 batches (the last of 44) in slices of 1, 2, 2
        for _ in range(6):
            epoch(slices.next_slice(), 1)
    for ours, theirs in zip(made[0].parameters(), made[1].parameters()):
        np.testing.assert_array_equal(ours.data, theirs.data)


def test_the_scratch_contender_runs_the_examples_own_loop():
    """Not a copy: the benchmark calls dropout_mlp.train_scratch_epoch, so a change to the lesson's loop is timed."""
    import inspect

    from benchmarks import train_speed
    from minigrad.chapter import dropout_mlp

    assert train_speed.train_scratch_epoch is dropout_mlp.train_scratch_epoch
    assert "train_scratch_epoch(" in inspect.getsource(train_speed.minigrad_scratch)
    assert "train_scratch_epoch(" in inspect.getsource(dropout_mlp.fit_scratch)


def test_the_pytorch_contender_that_gathers_in_its_graph_trains_on_the_loaders_batches(monkeypatch):
    """On the CPU, with a stand-in "graph" that runs the step when replayed (a real capture needs a GPU): the
    batches gathered by the order and position tensors are the loader's, so two epochs driven slice by slice
    end with the eager PyTorch contender's weights, bit for bit."""
    torch = pytest.importorskip("torch", reason=torch_oracle.MISSING)
    import types

    from benchmarks import train_speed

    from .test_planned import loader

    made = []

    def recording_torch_model(device):
        made.append(real_torch_model(device))
        return made[-1]

    real_torch_model = train_speed.torch_model
    monkeypatch.setattr(train_speed, "torch_model", recording_torch_model)
    monkeypatch.setattr(train_speed, "torch_graph", lambda step: types.SimpleNamespace(replay=step))
    for contender in (train_speed.pytorch_graph_gather, train_speed.pytorch_eager):
        epoch = contender("cpu")
        slices = train_speed.EpochSlices(loader(count=300), 3)  # 5 batches (the last of 44) in slices of 1, 2, 2
        for _ in range(6):
            epoch(slices.next_slice(), 1)
    for ours, theirs in zip(made[0][0].parameters(), made[1][0].parameters()):
        assert torch.equal(ours, theirs)


class Boom(RuntimeError):
    pass


def fails_at_setup(device):
    raise Boom("no such model")


def fails_at_second_slice(device):
    slices = []

    def epoch(loader, number):
        slices.append(number)
        if len(slices) == 3:  # the warm-up, one timed slice, then this one
            raise Boom("the replay broke")

    return epoch


def hangs_at_setup(device):
    import time

    time.sleep(120)  # a compiler that never finishes: --ready-timeout leaves the contender out


def test_train_speed_drops_a_failing_contender_and_says_why(tmp_path, monkeypatch):
    # Forked workers inherit the stand-ins (spawned ones would import the real contenders)
    import multiprocessing

    from benchmarks import train_speed

    fork = multiprocessing.get_context("fork")
    monkeypatch.setattr(train_speed.multiprocessing, "get_context", lambda method: fork)
    monkeypatch.setitem(train_speed.CONTENDERS, "minigrad concise", fails_at_setup)
    monkeypatch.setitem(train_speed.CONTENDERS, "minigrad scratch", fails_at_second_slice)
    monkeypatch.setitem(train_speed.CONTENDERS, "products", hangs_at_setup)
    monkeypatch.setattr(train_speed, "PAUSE_S", 0.0)
    data = tmp_path / "fake"
    write_fake_fashion(data, train=300, test=100)
    out = tmp_path / "speed.json"
    assert (
        train_speed.main(
            [
                "--epochs",
                "1",
                "--repeats",
                "2",
                "--slices",
                "2",
                "--limit",
                "256",
                "--skip",
                "pytorch",
                "--data-dir",
                str(data),
                "--skip-checksum",
                "--json",
                str(out),
                "--ready-timeout",
                "5",
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"minigrad planned", "numpy floor"}
    assert "products: failed (not ready after 5 s (--ready-timeout))" in report["skipped"]
    assert len(report["results"]["numpy floor"]["epochs_s"]) == 2
    assert "minigrad concise: failed (Boom: no such model)" in report["skipped"]
    assert "minigrad scratch: failed (Boom: the replay broke)" in report["skipped"]


def test_run_time_splits_the_examples_run_into_its_phases(tmp_path):
    """The example as a user runs it, on fake data: every phase is there, none negative, and they add up to the
    wall time from start to exit (other is what the wrapped calls do not cover)."""
    data = tmp_path / "fake"
    write_fake_fashion(data, train=600, test=100)
    out = tmp_path / "run_time.json"
    printed = run_module(
        "benchmarks.run_time", "--epochs", "2", "--data-dir", str(data), "--skip-checksum", "--json", str(out), cwd=ROOT
    )
    from benchmarks.run_time import PHASES

    report = json.loads(out.read_text())
    assert set(report["runs"]) == ({"minigrad", "pytorch"} if torch_oracle.torch is not None else {"minigrad"})
    for run in report["runs"].values():
        assert all(run[phase] >= 0 for phase in PHASES if phase != "other") and run["total"] > 0
        assert sum(run[phase] for phase in PHASES) == pytest.approx(run["total"])
    minigrad = report["runs"]["minigrad"]
    assert (
        minigrad["training"] > 0 and minigrad["data"] > 0 and minigrad["final line"].startswith("final test accuracy")
    )
    assert "training" in printed and "total" in printed


def test_the_phases_count_each_calls_own_time():
    """A wrapped call inside another counts toward its own phase, not its caller's."""
    import time

    from benchmarks.run_time import Phases

    class Work:
        def outer(self):
            time.sleep(0.05)
            self.inner()
            time.sleep(0.05)

        def inner(self):
            time.sleep(0.1)

    phases = Phases()
    phases.wrap(Work, "outer", "training")
    phases.wrap(Work, "inner", "planning")
    Work().outer()
    assert phases.seconds["planning"] == pytest.approx(0.1, abs=0.05)
    assert phases.seconds["training"] == pytest.approx(0.1, abs=0.05)


def test_the_plain_pytorch_script_has_the_chapters_settings():
    import ast

    from minigrad.chapter import model

    tree = ast.parse(open(os.path.join(ROOT, "benchmarks", "pytorch_chapter.py")).read())
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple):
            names = [target.id for target in node.targets[0].elts]
            values.update(zip(names, ast.literal_eval(node.value)))
    assert values == {name: getattr(model, name) for name in values}
    assert set(values) == {"NUM_INPUTS", "NUM_HIDDENS", "NUM_OUTPUTS", "DROPOUT1", "DROPOUT2", "LR", "BATCH_SIZE"}


def test_kernel_code_reports_each_cuda_functions_resources(capsys):
    """Without a GPU: every CudaFunction compiled for sm_90, with ptxas's registers and shared memory."""
    from benchmarks import kernel_code

    from .test_cuda_sources import nvrtc_or_skip

    nvrtc_or_skip()
    report = kernel_code.run(argparse.Namespace(arch="sm_90", sass=None, tile_shapes=False))
    names = {function.name for function in kernel_code.cuda_functions().values()}
    assert set(report) == names and "minigrad_sgemm" in names
    assert all(row["registers"] > 0 and row["spills"] == 0 for row in report.values())
    assert report["minigrad_sgemm"]["shared"] == 4 * (2 * 4 * 16 * 17 + 3 * 16 * 16)  # As, Bs, 3 groups' partial sums
    printed = capsys.readouterr().out
    assert all(name in printed for name in names)


def test_kernel_code_reports_the_gemm_in_each_tile_shape():
    from benchmarks import kernel_code
    from minigrad.fast import gemm

    from .test_cuda_sources import nvrtc_or_skip

    nvrtc_or_skip()
    report = kernel_code.run(argparse.Namespace(arch="sm_90", sass=None, tile_shapes=True))
    assert report["minigrad_sgemm 4x16 2x2"]["shared"] == gemm.shared_bytes(4, 16, 2)
    assert report["minigrad_sgemm 4x64"]["shared"] == gemm.shared_bytes(4, 64, 1)
    assert report["minigrad_sgemm_activate 4x64"]["shared"] == gemm.shared_bytes(4, 64, 1)
    assert report["minigrad_sgemm 8x16 2x2 side 8"]["shared"] == gemm.shared_bytes(8, 16, 2, 8)
    assert report["minigrad_sgemm_sgd 8x16 2x2 side 8"]["shared"] == gemm.shared_bytes(8, 16, 2, 8, True)
    kernels = ("minigrad_sgemm", "minigrad_sgemm_activate", "minigrad_sgemm_gather_activate", "minigrad_sgemm_mask")
    kernels += ("minigrad_sgemm_sgd", "minigrad_sgemm_loss")
    for name in kernels:  # the default's label is the kernel's name
        assert len([label for label in report if label.split()[0] == name]) == len(gemm.TILE_SHAPES)


def test_kernel_code_counts_the_instructions_of_a_disassembly():
    from benchmarks.kernel_code import instruction_counts

    code = """
        /*0420*/                   LDG.E R23, desc[UR6][R8.64] ;
        /*0450*/              @!P0 LDG.E R26, desc[UR6][R8.64] ;
        /*04f0*/                   FMUL R23, R23, R26 ;
        /*0500*/               @P1 FFMA R2, R3, R4, R2 ;
        /*0520*/                   STG.E desc[UR6][R8.64], R23 ;
        /*0570*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
    """
    counts = instruction_counts(code)
    assert (counts["LDG"], counts["FMUL"], counts["FFMA"], counts["STG"], counts["BAR"], counts["FADD"]) == (
        2,
        1,
        1,
        1,
        1,
        0,
    )
