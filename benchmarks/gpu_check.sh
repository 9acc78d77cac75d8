#!/usr/bin/env bash
# The GPU check. Run from the repository root on a machine with an NVIDIA GPU, CuPy, PyTorch, pytest and
# hypothesis, with Fashion-MNIST's four .gz files copied into data/fashion-mnist/ beforehand:
#     mkdir -p data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/
#     OUT=/some/folder bash benchmarks/gpu_check.sh
# Its steps (STEPS=a,b runs some; the default is every step but example and cpu-tests):
#   cuda-tests  the CUDA variants of the tests: the Philox stream and masks CPU == GPU, each of the planned step's
#               kernels against its NumPy passes, cuBLAS through ctypes (eager and in a graph), the batch cursor,
#               graph replay against the planned step run eagerly (bit for bit), the planned step against the
#               eager ops and the CPU (1e-4), the learning rate read at replay, the fallback
#   graph       the recorded step's graph with each kind of products (nodes, kernels, the 15-kernel target, the
#               cost of a replay)
#   example     the chapter's 10 epochs on cuda with the eager ops (--eager)
#   planned     the same with the planned step (the default); then SEEDS (default 0 1 2 3 4) of it, their final
#               test accuracies beside the CPU's
#   speed       benchmarks.train_speed on cuda: minigrad planned (tile and cuBLAS products) and eager, the CuPy
#               floor, PyTorch eager, graph, graph+gather (the bar) and torch.compile
#   gemm        the step's eight products alone and in a graph: the tile kernel, cuBLAS via ctypes, CuPy's
#   runtime     the example's run from the prompt to its last line, phase by phase (cold and warm kernel cache),
#               beside a plain PyTorch script
#   nsys        where nsys is installed: the recorded step's kernels node by node (--cuda-graph-trace=node)
#   cpu-tests   the rest of the suite (CI runs it too)
# About 8 minutes on an H200 (est.). Where a command may run at most 10 minutes, make it two calls:
#     STEPS=cuda-tests,graph,gemm ...            (est. 3-4 minutes)
#     STEPS=planned,speed,runtime,nsys ...       (est. 5-6 minutes)
# Writes its log and results under $OUT (default: runs/gpu_check); exits non-zero if any step failed.
set -uo pipefail
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONPATH=. PYTHONUNBUFFERED=1
PY=$(command -v python3 || command -v python)  # the image names its Python python3
status=0
step() {
  echo "== $*"
  local started=$SECONDS
  "$@" || { echo "!! failed: $*"; status=1; }
  echo "== took $((SECONDS - started)) s"
}
step nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step $PY -c "import cupy, numpy, torch; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__, 'gpus', cupy.cuda.runtime.getDeviceCount())"
# pytest-xdist, where installed, spreads the tests over 8 processes (each compiles its kernels once), each
# with 2 BLAS threads so that 16 cores are not oversubscribed. The CUDA variants run first, the CPU tests last.
parallel=$($PY -c "import xdist" 2>/dev/null && echo "-n 8")
pytest_args="-q -p no:cacheprovider -rs --durations=5 $parallel"
wants() { [[ ",${STEPS:-cuda-tests,graph,planned,speed,gemm,runtime,nsys}," == *",$1,"* ]]; }
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2
wants cuda-tests && step timeout 200 $PY -m pytest $pytest_args -k cuda
unset OMP_NUM_THREADS OPENBLAS_NUM_THREADS
# The examples write their runs beside $OUT's files, not in it: $OUT keeps the few files worth fetching
RUNS=${RUNS:-runs/gpu_check_examples}
for products in tile cublas; do
  wants graph && step timeout 90 $PY -m benchmarks.step_graph --products $products --dot "$OUT/step_graph_$products.dot" \
    --json "$OUT/step_graph_$products.json"
done
wants example && step timeout 60 $PY -m examples.dropout_mlp --device cuda --epochs 10 --no-progress --eager \
  --out "$RUNS/dropout_mlp"
wants planned && step timeout 60 $PY -m examples.dropout_mlp --device cuda --epochs 10 --no-progress \
  --out "$RUNS/dropout_mlp_planned" && cp "$RUNS/dropout_mlp_planned/metrics.json" "$OUT/planned_metrics.json"
# The same run from other seeds: the final test accuracies' mean and range, beside the CPU's (docs/results.md)
if wants planned; then
  for seed in ${SEEDS:-0 1 2 3 4}; do
    step timeout 60 $PY -m examples.dropout_mlp --device cuda --epochs 10 --no-progress --no-plot --seed "$seed" \
      --out "$RUNS/seed$seed"
  done
  step $PY - "$RUNS" ${SEEDS:-0 1 2 3 4} <<'SUMMARY'
import json, statistics, sys
runs, seeds = sys.argv[1], sys.argv[2:]
cpu = {"0": 0.8426, "1": 0.8683, "2": 0.8590, "3": 0.8634, "4": 0.8633}  # docs/results.md, planned and eager alike
gpu = {s: json.load(open(f"{runs}/seed{s}/metrics.json"))["final_test_acc"] for s in seeds}
for s in seeds:
    print(f"seed {s}: cuda {gpu[s]:.4f}  cpu {cpu.get(s, float('nan')):.4f}")
both = [s for s in seeds if s in cpu]
for name, accs in (("cuda", [gpu[s] for s in seeds]), ("cpu", [cpu[s] for s in both])):
    if accs:
        print(f"{name}: mean {statistics.mean(accs):.4f}, range {min(accs):.4f}-{max(accs):.4f} over {len(accs)} seeds")
SUMMARY
fi
wants speed && step timeout 400 $PY -m benchmarks.train_speed --device cuda --epochs 3 --repeats 3 \
  --json "$OUT/train_speed.json"
wants gemm && step timeout 90 $PY -m benchmarks.gemm_speed --json "$OUT/gemm_speed.json"
wants runtime && step timeout 200 $PY -m benchmarks.run_time --device cuda --epochs 10 --json "$OUT/run_time.json"
if wants nsys && command -v nsys >/dev/null; then
  step timeout 120 nsys profile --cuda-graph-trace=node --force-overwrite true -o "$RUNS/step_graph" \
    $PY -m benchmarks.step_graph --passes 2
  step timeout 60 nsys stats --report cuda_gpu_kern_sum --format csv --output "$OUT/nsys" "$RUNS/step_graph.nsys-rep"
elif wants nsys; then
  echo "== nsys is not installed here: the node-by-node trace is left out"
fi
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2
wants cpu-tests && step timeout 150 $PY -m pytest $pytest_args -k "not cuda"
echo "== gpu_check exit status: $status"
exit $status
