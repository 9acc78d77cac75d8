"""benchmarks/gpu_check.sh's own mechanics, on stand-ins for Python and nvidia-smi: device time is short, so a
script that loses a step's results, overruns its budget or brings back more files than the tool returns would
waste a GPU that a session rarely gets."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"

# The stand-in python3: writes what each step's command would (its --json, an example's metrics) and prints a
# line of its result; "python3 -" (the script's own summaries) runs with the real Python.
STUB_PYTHON = f"""#!/usr/bin/env bash
if [[ "$1" == "-" ]]; then exec {sys.executable} "$@"; fi
if [[ "$1" == "-c" ]]; then echo "cupy 14 numpy 2 torch 2 cuda 13000 gpus 1"; exit 0; fi
module=$2 all="$*"
out= json=
while (($#)); do
  case $1 in --out) out=$2 ;; --json) json=$2 ;; esac
  shift
done
if [[ "$module" == benchmarks.gemm_speed ]]; then
  by_product="tile 4x16 2x2, forward 256x784x256=tile 4x64"
  echo '{{"fastest_tile": "tile 4x16 2x2", "fastest_by_product": "'"$by_product"'"}}' >"$json"
elif [[ -n "$json" ]]; then
  echo '{{}}' >"$json"
fi
if [[ -n "$out" ]]; then
  mkdir -p "$out" && echo '{{"final_test_acc": 0.85, "step": "planned, recorded as a CUDA graph"}}' >"$out/metrics.json"
fi
case $module in
  pytest) echo "12 passed, 3 skipped in 1.0s" ;;
  benchmarks.step_graph)
    echo "the recorded training step (tile products): 8 nodes"
    echo "its longest chain of nodes: 6"
    echo "234 replays per pass" ;;
  benchmarks.train_speed) echo "contender  median s"; echo "minigrad planned  0.010"; echo "args: $all" ;;
  benchmarks.run_time) echo "seconds  minigrad cold"; echo "total  3.0" ;;
  benchmarks.gemm_speed) echo "product (m x k x n)  tile us"; echo "one step  20.0" ;;
esac
exit 0
"""


def check(tmp_path, budget="600", data=True, **env):
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and timeout")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("python3", STUB_PYTHON), ("nvidia-smi", "#!/bin/sh\necho 'name'\necho 'NVIDIA H200'\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    if data:
        (tmp_path / "data" / "fashion-mnist").mkdir(parents=True)
        for name in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"):
            (tmp_path / "data" / "fashion-mnist" / f"{name}-ubyte.gz").write_bytes(b"")
    path = f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"  # no nsys or ncu: the profile says so
    run_env = dict(os.environ, PATH=path, OUT=str(tmp_path / "out"), RUNS=str(tmp_path / "runs"), BUDGET=budget)
    run_env.update(env)
    done = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=run_env, capture_output=True, text=True)
    return done, tmp_path / "out"


def test_every_step_runs_and_the_summary_holds_their_results(tmp_path):
    done, out = check(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    summary = done.stdout[done.stdout.index("======== summary") :]
    for line in (
        "NVIDIA H200",
        "12 passed, 3 skipped",
        "the recorded training step (tile products): 8 nodes",
        "its longest chain of nodes: 6",
        "minigrad planned  0.010",
        "seed 3: cuda 0.8500  cpu 0.8634  (planned, recorded as a CUDA graph)",
        "cuda: mean 0.8500, range 0.8500-0.8500 over 5 seeds",
        "total  3.0",
        "one step  20.0",
        "exit status: 0",
    ):
        assert line in summary, line
    assert "neither nsys nor ncu is installed here" in done.stdout
    # gemm runs before speed, and speed times the planned step with each product's fastest tile shape gemm found
    assert done.stdout.index("==== gemm") < done.stdout.index("==== speed")
    assert "--products tile 4x16 2x2, forward 256x784x256=tile 4x64 --json" in summary
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8, files  # the device tool brings back at most 8
    assert {"gpu_check.log", "train_speed.json", "seeds.json", "run_time.json", "gemm_speed.json"} <= set(files)
    assert "graphs.tar.gz" in files
    assert json.loads((out / "seeds.json").read_text())["cuda"] == {str(s): 0.85 for s in range(5)}
    assert "======== gpu_check exit status: 0" in (out / "gpu_check.log").read_text()  # the log is complete


def test_a_step_that_does_not_fit_the_budget_is_named_for_the_next_call(tmp_path):
    # 100 s: enough for graph (60) and gemm (30), not for speed (150), which waits for the next call
    done, out = check(tmp_path, budget="100", STEPS="graph,speed,gemm")
    assert done.returncode == 1
    assert "==== speed: left for the next call (it needs about 150 s" in done.stdout
    assert "run them next with STEPS=speed\n" in done.stdout
    summary = done.stdout[done.stdout.index("======== summary") :]
    assert "the recorded training step (tile products)" in summary and "one step  20.0" in summary
    assert "minigrad planned" not in done.stdout


def test_a_later_call_times_the_products_it_is_given(tmp_path):
    done, _ = check(tmp_path, STEPS="speed", PRODUCTS="tile 2x32 2x2")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "== the planned step's products: tile 2x32 2x2" in done.stdout
    assert "--products tile 2x32 2x2 --json" in done.stdout
    (tmp_path / "again").mkdir()
    done, _ = check(tmp_path / "again", STEPS="speed")  # neither: the planned step's default
    assert "--products" not in done.stdout


def test_without_the_data_it_stops_before_any_work(tmp_path):
    done, out = check(tmp_path, data=False)
    assert done.returncode == 2
    assert "Fashion-MNIST is not in data/fashion-mnist/" in done.stdout
    assert "====" not in done.stdout
