#!/usr/bin/env bash
# The GPU check. Run from the repository root on a machine with an NVIDIA GPU, CuPy, PyTorch, pytest and
# hypothesis, with Fashion-MNIST's four .gz files copied into data/fashion-mnist/ beforehand:
#     mkdir -p data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/
#     OUT=/some/folder BUDGET=420 bash benchmarks/gpu_check.sh
# Its steps, in the order they run (STEPS=a,b runs some; the default is every step but example and cpu-tests):
#   cuda-tests  the CUDA variants of the tests: the Philox stream and masks CPU == GPU, each of the planned step's
#               kernels against its NumPy passes, cuBLAS through ctypes (eager and in a graph), the batch cursor,
#               graph replay against the planned step run eagerly (bit for bit), the planned step against the
#               eager ops and the CPU (1e-4), the recorded step's kernel count, the learning rate read at replay
#   graph       the recorded step's graph with each kind of products (nodes, kernels, the 15-kernel target, its
#               longest chain of nodes, the cost of a replay)
#   gemm        the step's eight products alone and in a graph: the tile kernel in each of its shapes, cuBLAS via
#               ctypes, CuPy's; each product's fastest tile shape becomes the products of speed and profile
#               (PRODUCTS)
#   speed       benchmarks.train_speed on cuda: minigrad planned (the fastest tile shapes, and cuBLAS products) and
#               eager, the CuPy floor, PyTorch eager, graph, graph+gather (the bar) and torch.compile; its
#               verdict: the faster planned step's products (fast.plan.DEFAULT_PRODUCTS), and the target met or not
#   planned     the chapter's 10 epochs on cuda with the planned step (the default) from SEEDS (default 0 1 2 3
#               4, run side by side), their final test accuracies beside the CPU's
#   runtime     the example's run from the prompt to its last line, phase by phase (cold and warm kernel cache),
#               beside a plain PyTorch script
#   profile     the recorded step's kernels one by one: nsys (--cuda-graph-trace=node) where it works, else ncu
#   example     the chapter's 10 epochs on cuda with the eager ops (--eager)
#   cpu-tests   the rest of the suite (CI runs it too)
# BUDGET (seconds, default 540) bounds the whole call: a step starts only if about the time it needs is left,
# and no command runs past the budget. What did not fit is named at the end as the STEPS of a next call, after
# a summary of every step's results (the last lines of the output). All of it takes about 8 minutes on an
# H200 (est.); with 15 minutes of device time, make a first call of BUDGET=420 (timeout 480 s) and a second of
# what it names.
# Writes its log and results under $OUT (default runs/gpu_check), at most 8 files; exits non-zero if a step
# failed or did not fit.
set -uo pipefail
OUT=${OUT:-runs/gpu_check}
RUNS=${RUNS:-runs/gpu_check_examples}  # the examples' runs and the bulky outputs: $OUT keeps the few worth fetching
BUDGET=${BUDGET:-540}
deadline=$((SECONDS + BUDGET))
mkdir -p "$OUT" "$RUNS/logs"
exec > >(tee "$OUT/gpu_check.log") 2>&1
tee_pid=$!
export PYTHONPATH=. PYTHONUNBUFFERED=1
PY=$(command -v python3 || command -v python)  # the image names its Python python3
status=0
later=()
summary=$RUNS/summary.txt
: >"$summary"

left() { echo $((deadline - SECONDS)); }
wants() { [[ ",${STEPS:-cuda-tests,graph,gemm,speed,planned,runtime,profile}," == *",$1,"* ]]; }

# begin STEP NEED: whether STEP runs now: asked for, and at least NEED seconds of the budget left (else it is
# named for the next call)
begin() {
  wants "$1" || return 1
  if (($(left) < $2)); then
    echo "==== $1: left for the next call (it needs about $2 s; $(left) s of the budget left)"
    later+=("$1")
    return 1
  fi
  echo "==== $1 ($(left) s of the budget left)"
  echo "-- $1" >>"$summary"
}

# run LIMIT NAME command...: at most LIMIT seconds and never past the budget; its output also goes to
# $RUNS/logs/NAME.log (which keep() reads)
run() {
  local limit=$1 name=$2 cap
  shift 2
  cap=$(left)
  ((cap > limit)) && cap=$limit
  if ((cap < 10)); then
    echo "!! out of budget before: $*"
    echo "out of budget before: $*" >>"$summary"
    status=1
    return 1
  fi
  echo "== $* (at most $cap s)"
  local started=$SECONDS rc
  timeout "$cap" "$@" 2>&1 | tee "$RUNS/logs/$name.log"
  rc=${PIPESTATUS[0]}
  echo "== took $((SECONDS - started)) s, exit status $rc"
  if ((rc != 0)); then
    echo "!! failed ($rc$( ((rc == 124)) && echo ", out of time")): $*"
    echo "FAILED ($rc): $*" >>"$summary"
    status=1
  fi
  return "$rc"
}

# keep NAME SED-SCRIPT: the lines of NAME's log worth repeating in the summary
keep() { [[ -f "$RUNS/logs/$1.log" ]] && sed -n "$2" "$RUNS/logs/$1.log" >>"$summary"; }

needs_data() { wants graph || wants speed || wants planned || wants runtime || wants profile || wants example; }
if needs_data && (($(ls data/fashion-mnist/*-ubyte.gz 2>/dev/null | wc -l) < 4)); then
  echo "!! Fashion-MNIST is not in data/fashion-mnist/: copy its four .gz files there first (see the header)"
  exec >&- 2>&-
  wait "$tee_pid"
  exit 2
fi
run 30 gpu nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
run 60 versions $PY -c "import cupy, numpy, torch; print('cupy', cupy.__version__, 'numpy', numpy.__version__, \
'torch', torch.__version__, 'cuda', cupy.cuda.runtime.runtimeGetVersion(), 'gpus', cupy.cuda.runtime.getDeviceCount())"
keep gpu '2p'
keep versions '1p'

# pytest-xdist, where installed, spreads the tests over 8 processes (each compiles its kernels once), each
# with 2 BLAS threads so that 16 cores are not oversubscribed. The CUDA variants run first, the CPU tests last.
parallel=$($PY -c "import xdist" 2>/dev/null && echo "-n 8")
pytest_args="-q -p no:cacheprovider -rs --durations=5 $parallel"
if begin cuda-tests 60; then
  OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 run 240 cuda-tests $PY -m pytest $pytest_args -k cuda
  keep cuda-tests '/^FAILED\|^ERROR\| passed\| failed/p'
fi

if begin graph 60; then
  for products in tile cublas; do
    run 90 "graph-$products" $PY -m benchmarks.step_graph --products $products \
      --dot "$RUNS/step_graph_$products.dot" --json "$RUNS/step_graph_$products.json"
    keep "graph-$products" '/^the recorded training step/p;/^its longest chain/p;/replays per pass/p'
  done
fi

# PRODUCTS: the planned step's products for speed and profile; the gemm step sets it to each product's fastest
# tile shape it timed (fast.plan.tile_shapes's setting, the fastest shape for the products faster in no other;
# a later call with STEPS=speed can be given it: PRODUCTS="tile 4x16 2x2, forward 256x784x256=tile 4x64")
products=${PRODUCTS:-}
if begin gemm 30; then
  run 90 gemm $PY -m benchmarks.gemm_speed --json "$OUT/gemm_speed.json"
  keep gemm '/^product/,$p'
  fastest=$($PY - "$OUT/gemm_speed.json" 2>/dev/null <<'FASTEST'
import json, sys
report = json.load(open(sys.argv[1]))
print(report.get("fastest_by_product") or report.get("fastest_tile") or "")
FASTEST
)
  [[ -n $fastest ]] && products=$fastest
fi
products_args=()
[[ -n $products ]] && products_args=(--products "$products") && echo "== the planned step's products: $products"

if begin speed 150; then
  run 420 speed $PY -m benchmarks.train_speed --device cuda --epochs 3 --repeats 3 --ready-timeout 240 \
    ${products_args[@]+"${products_args[@]}"} --json "$OUT/train_speed.json"
  keep speed '/^contender/,$p'
fi

if begin planned 45; then
  seeds=${SEEDS:-0 1 2 3 4}
  # the runs side by side (16 cores, one GPU): their accuracies do not depend on it, their speeds are not read
  pids=()
  for seed in $seeds; do
    run 150 "seed$seed" $PY -m examples.dropout_mlp --device cuda --epochs 10 --no-progress --no-plot \
      --seed "$seed" --out "$RUNS/seed$seed" >/dev/null &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  for seed in $seeds; do tail -3 "$RUNS/logs/seed$seed.log"; done
  run 30 seeds $PY - "$RUNS" "$OUT/seeds.json" $seeds <<'SUMMARY'
import json, os, statistics, sys
runs, out, seeds = sys.argv[1], sys.argv[2], sys.argv[3:]
cpu = {"0": 0.8426, "1": 0.8683, "2": 0.8590, "3": 0.8634, "4": 0.8633}  # docs/results.md, planned and eager alike
metrics = {s: json.load(open(f"{runs}/seed{s}/metrics.json")) for s in seeds if os.path.exists(f"{runs}/seed{s}/metrics.json")}
gpu = {s: m["final_test_acc"] for s, m in metrics.items()}
for s in seeds:
    acc = f"{gpu[s]:.4f}" if s in gpu else "no metrics (the run failed)"
    kind = metrics[s].get("step", "?") if s in metrics else "-"
    print(f"seed {s}: cuda {acc}  cpu {cpu.get(s, float('nan')):.4f}  ({kind})")
both = [s for s in gpu if s in cpu]
for name, accs in (("cuda", list(gpu.values())), ("cpu", [cpu[s] for s in both])):
    if accs:
        print(f"{name}: mean {statistics.mean(accs):.4f}, range {min(accs):.4f}-{max(accs):.4f} over {len(accs)} seeds")
json.dump({"cuda": gpu, "cpu": cpu, "metrics": metrics}, open(out, "w"), indent=1)
sys.exit(0 if len(gpu) == len(seeds) else 1)
SUMMARY
  keep seeds '1,$p'
fi

if begin runtime 90; then
  run 240 runtime $PY -m benchmarks.run_time --device cuda --epochs 10 --json "$OUT/run_time.json"
  keep runtime '/^seconds/,$p'
fi

if begin profile 60; then
  if command -v nsys >/dev/null && run 120 nsys nsys profile --cuda-graph-trace=node --force-overwrite true \
    -o "$RUNS/step_graph" $PY -m benchmarks.step_graph --passes 2 ${products_args[@]+"${products_args[@]}"}; then
    run 60 nsys-stats nsys stats --report cuda_gpu_kern_sum --format csv --output "$RUNS/nsys" \
      "$RUNS/step_graph.nsys-rep" && cp "$RUNS"/nsys*.csv "$OUT/profile.csv"
  elif command -v ncu >/dev/null; then
    # each kernel node of the replays timed on its own; the clocks and caches as they are (no ncu control)
    run 150 ncu ncu --graph-profiling node --clock-control none --cache-control none \
      --metrics gpu__time_duration.sum --csv --launch-count 400 --log-file "$OUT/profile.csv" \
      $PY -m benchmarks.step_graph --passes 2 ${products_args[@]+"${products_args[@]}"}
    run 30 ncu-summary $PY - "$OUT/profile.csv" <<'KERNELS'
import csv, statistics, sys
rows = [line for line in open(sys.argv[1]) if line.startswith('"')]
US = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3, "second": 1e6, "s": 1e6}
times = {}
for row in csv.DictReader(rows):
    if row.get("Metric Name") == "gpu__time_duration.sum":
        us = float(row["Metric Value"].replace(",", "")) * US[row["Metric Unit"]]
        times.setdefault(row["Kernel Name"][:60], []).append(us)
if not times:
    sys.exit(f"no kernel durations in {sys.argv[1]} (ncu's output is there)")
print(f"{'kernel (ncu, each node alone)':60s} {'count':>6s} {'median us':>10s}")
for name, us in sorted(times.items(), key=lambda item: -statistics.median(item[1])):
    print(f"{name:60s} {len(us):6d} {statistics.median(us):10.2f}")
KERNELS
    keep ncu-summary '1,$p'
  else
    echo "== neither nsys nor ncu is installed here: the kernel-by-kernel profile is left out"
  fi
fi

if begin example 30; then
  run 90 example $PY -m examples.dropout_mlp --device cuda --epochs 10 --no-progress --eager --out "$RUNS/eager"
  keep example '$p'
fi

if begin cpu-tests 120; then
  OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 run 300 cpu-tests $PY -m pytest $pytest_args -k "not cuda"
  keep cpu-tests '/ passed\| failed/p'
fi

# the recorded graphs and their reports in one file ($OUT brings back at most 8)
tar czf "$OUT/graphs.tar.gz" -C "$RUNS" $(cd "$RUNS" && ls step_graph_* 2>/dev/null) 2>/dev/null \
  || rm -f "$OUT/graphs.tar.gz"

echo
echo "======== summary (the full output is $OUT/gpu_check.log)"
cat "$summary"
if ((${#later[@]})); then
  status=1
  echo "======== not run, for lack of budget: run them next with STEPS=$(
    IFS=,
    echo "${later[*]}"
  )"
fi
echo "======== gpu_check exit status: $status ($((SECONDS)) s)"
exec >&- 2>&-
wait "$tee_pid"
exit $status
