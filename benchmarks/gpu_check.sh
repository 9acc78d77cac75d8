#!/usr/bin/env bash
# The GPU check (issue 6). Run from the repository root on a machine with an NVIDIA GPU, CuPy, PyTorch,
# pytest and hypothesis, with Fashion-MNIST's four .gz files copied into data/fashion-mnist/ beforehand:
#     mkdir -p data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/
#     OUT=/some/folder bash benchmarks/gpu_check.sh
# It runs the test suite (CPU and CUDA variants: the Philox stream and masks CPU == GPU, a seeded epoch's
# losses CPU == GPU to 1e-4, the batch cursor's kernels, graph replay against the planned step run eagerly,
# the planned step against the eager ops, the learning rate read at replay, the fallback), the recorded
# planned step's graph (its nodes, one replay's cost), the chapter's 10-epoch training on cuda with the eager
# ops (--eager) and with the planned step (the default), the speed benchmark on cuda (minigrad planned and
# eager, the CuPy floor, PyTorch eager and with a CUDA graph, on the same GPU) and the step's matrix products
# (cuBLAS against the graph's kernel), in about
# 5 minutes on an H200, and writes its log and results under $OUT (default: runs/gpu_check). Exits non-zero if
# any step failed.
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
wants() { [[ ",${STEPS:-cuda-tests,graph,example,planned,speed,gemm,cpu-tests}," == *",$1,"* ]]; }  # STEPS=a,b: parts
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2
wants cuda-tests && step timeout 150 $PY -m pytest $pytest_args -k cuda
unset OMP_NUM_THREADS OPENBLAS_NUM_THREADS
# The examples write their runs beside $OUT's files, not in it: $OUT keeps the few files worth fetching
RUNS=${RUNS:-runs/gpu_check_examples}
wants graph && step timeout 60 $PY -m benchmarks.step_graph --dot "$OUT/step_graph.dot" --json "$OUT/step_graph.json"
wants example && step timeout 60 $PY -m examples.dropout_mlp --device cuda --epochs 10 --no-progress --eager \
  --out "$RUNS/dropout_mlp"
wants planned && step timeout 60 $PY -m examples.dropout_mlp --device cuda --epochs 10 --no-progress \
  --out "$RUNS/dropout_mlp_planned" && cp "$RUNS/dropout_mlp_planned/metrics.json" "$OUT/planned_metrics.json"
# The same run from other seeds, planned and eager: how far one seed's final test accuracy tells the target
for seed in ${SEEDS:-}; do
  for mode in --planned --eager; do
    step timeout 60 $PY -m examples.dropout_mlp --device cuda --epochs 10 --no-progress --no-plot --seed "$seed" \
      ${mode/--planned/} --out "$RUNS/seed$seed$mode"
  done
done
wants speed && step timeout 150 $PY -m benchmarks.train_speed --device cuda --epochs 3 --repeats 3 \
  --json "$OUT/train_speed.json"
wants gemm && step timeout 60 $PY -m benchmarks.gemm_speed --json "$OUT/gemm_speed.json"
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2
wants cpu-tests && step timeout 150 $PY -m pytest $pytest_args -k "not cuda"
echo "== gpu_check exit status: $status"
exit $status
