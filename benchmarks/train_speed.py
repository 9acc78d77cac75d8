"""Epoch time of the chapter's MLP: minigrad (planned, concise and scratch) against the NumPy floor, the
matrix products alone and PyTorch.

    python -m benchmarks.train_speed [--device cpu|cuda] [--epochs 3] [--repeats 3] [--slices 5] [--limit N]
                                     [--json PATH] [--skip planned|concise|scratch|products|pytorch|cublas|compiled ...]
                                     [--products NAME]
                                     [--ready-timeout SECONDS]

Every contender trains the chapter's model (``minigrad/chapter/model.py``: 784-256-256-10, dropout 0.2/0.5,
SGD lr 0.5, batch 256) on the same batches from the same device-resident DataLoader, for ``--epochs``
full training epochs, ``--repeats`` times, each in its own worker process. The contenders take turns
every ``1/--slices`` of an epoch (interleaved, in a rotating order) so that noise on a shared machine,
which comes and goes over seconds, hits them alike; an epoch's time is the sum of its slices. Reported: median, min
and max epoch seconds, ratios, and the floor's achieved GFLOP/s against this machine's sgemm rate,
measured in the same run. "minigrad planned" is what ``Trainer`` runs by default (``minigrad.fast``),
"minigrad concise" the eager ops (``Trainer(eager=True)``), "minigrad scratch" the example's own loop; all three
report through the same ``monitor.Monitor``, so they pay for the same instruments; the floor and PyTorch have
none. "products" runs only the step's eight matrix products (forward three, backward five), as many times as
there are batches: what no implementation of this step can go below.
With ``--device cuda`` these contenders replay their step as a CUDA graph: minigrad planned (recorded, the batch
gathered inside the graph; its products by the project's tile kernel, in the shape ``--products`` names),
minigrad planned cublas (the same with cuBLAS's products, ``fast.cublas``), PyTorch graph (each batch copied
into static input buffers, as PyTorch's notes on CUDA graphs do), PyTorch graph+gather (the batch gathered
inside the graph, as minigrad's is: the bar) and PyTorch compiled (``torch.compile(mode="reduce-overhead")``,
Inductor's fused kernels as CUDA graphs). A contender that fails is left out of the table, and the report
says why.
"""

import itertools
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import time
import traceback

import numpy

import minigrad as mg
from benchmarks.numpy_floor import FloorMLP
from benchmarks.numpy_floor import train_epoch as floor_epoch
from minigrad import backend, cli
from minigrad.chapter.dropout_mlp import train_scratch_epoch
from minigrad.chapter.model import (
    BATCH_SIZE,
    DROPOUT1,
    DROPOUT2,
    LR,
    NUM_HIDDENS,
    NUM_INPUTS,
    NUM_OUTPUTS,
    ScratchMLP,
    concise_mlp,
)
from minigrad.data import DataLoader, DatasetError, FashionMNIST, IDXFormatError
from minigrad.data.loader import PIXEL_SCALE
from minigrad.fast import PlannedTraining
from minigrad.fast.plan import DEFAULT_PRODUCTS, PRODUCTS
from minigrad.files import save_json
from minigrad.monitor import Monitor
from minigrad.random import generator
from minigrad.train import Trainer

PAUSE_S = 0.25  # between turns on the CPU (see run); none on a GPU, where a turn ends synchronized


def matmul_flops_per_example(hidden=NUM_HIDDENS):
    """Forward 2·in·out per layer, backward 2·in·out for dW and (but for the first layer) for dX."""
    sizes = [NUM_INPUTS, *hidden, NUM_OUTPUTS]
    layers = list(zip(sizes[:-1], sizes[1:]))
    forward = sum(2 * a * b for a, b in layers)
    return 2 * forward + sum(2 * a * b for a, b in layers[1:])


def sgemm_gflops(device, size=2048, repeats=5):
    """This machine's float32 matrix-product rate (best of a few)."""
    rng = generator(device)
    a = rng.random((size, size), dtype=numpy.float32)
    b = rng.random((size, size), dtype=numpy.float32)
    best = float("inf")
    for _ in range(repeats):
        backend.synchronize(device)
        start = time.perf_counter()
        a @ b
        backend.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


# --- the contenders: each is (setup, one_epoch) -------------------------------------------------


def minigrad_concise(device):
    """The chapter's concise model trained by the eager ops (``Trainer(eager=True)``): the lesson's loop."""
    model = concise_mlp(device=device)
    trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=LR), progress=False, eager=True)

    def epoch(loader, number):
        trainer.train_epoch(loader, number)
        trainer.monitor.end_epoch()

    return epoch


def minigrad_planned(device, products=DEFAULT_PRODUCTS):
    """The concise model trained by the planned step, what ``Trainer`` runs by default (fast.PlannedTraining;
    recorded as a CUDA graph on a GPU, batches gathered inside it), driven slice by slice with the same
    Monitor: a pass starts at an epoch's first batch. ``products``: the GPU's matrix products ("minigrad
    planned cublas" takes cuBLAS's, through fast.cublas)."""
    model = concise_mlp(device=device)
    # No eager fallback here: a step that cannot be planned raises PlanProblem in the warm-up, untimed
    training = PlannedTraining(model, mg.optim.SGD(model.parameters(), lr=LR), products=products)
    monitor, passes = Monitor(device, progress=False), {}

    def epoch(batches, number):
        if batches.indices.start == 0:
            passes[batches.loader] = training.start(batches.loader)
        planned = passes[batches.loader]
        with planned.on_stream():
            for index in monitor.epoch(batches.indices, number):
                step, slot = planned.run(index)
                monitor.record_step(step.losses[slot], step.corrects[slot], step.batch_size)
        planned.end()
        monitor.end_epoch()

    return epoch


def minigrad_scratch(device):
    """The example's own scratch loop (``dropout_mlp.train_scratch_epoch``), with the same Monitor."""
    model, monitor = ScratchMLP(device=device), Monitor(device, progress=False)

    def epoch(loader, number):
        train_scratch_epoch(model, loader, monitor, number, LR)
        monitor.end_epoch()

    return epoch


def products_alone(device):
    """Only the step's matrix products, at the chapter's shapes, once per batch (no data, no update)."""
    floor = FloorMLP(NUM_HIDDENS, (DROPOUT1, DROPOUT2), LR, device)
    W1, W2, W3 = floor.weights
    x = floor.xp.ones((BATCH_SIZE, NUM_INPUTS), dtype=numpy.float32)

    def epoch(loader, _):
        for _ in range(len(loader)):
            h1 = x @ W1.T
            h2 = h1 @ W2.T
            logits = h2 @ W3.T
            logits.T @ h2, logits @ W3  # dW3, dH2
            h2.T @ h1, h2 @ W2  # dW2, dH1
            h1.T @ x  # dW1

    return epoch


def numpy_floor(device):
    model = FloorMLP(NUM_HIDDENS, (DROPOUT1, DROPOUT2), LR, device)
    return lambda loader, _: floor_epoch(model, loader)


def torch_model(device):
    """The chapter's model and SGD in PyTorch, as the plain PyTorch script of the chapter builds them."""
    from benchmarks.pytorch_chapter import torch_mlp

    return torch_mlp(device)


def pytorch_eager(device):
    import torch

    model, optimizer = torch_model(device)
    to_torch = torch.from_numpy if device == "cpu" else torch.from_dlpack  # zero-copy views of our batches

    def epoch(loader, _):
        model.train()
        for x, y in loader:
            torch_train_step(model, optimizer, to_torch(x.data), to_torch(y.data))

    return epoch


def torch_train_step(model, optimizer, x, y):
    import torch

    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


def torch_graph(step):
    """``step()`` recorded as a ``torch.cuda.CUDAGraph`` after three warm-up runs on a side stream, as PyTorch's
    notes on CUDA graphs require."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph


def pytorch_graph(device):
    """PyTorch with the whole step captured as a CUDA graph (torch.cuda.graph, static input buffers), as in
    PyTorch's notes on CUDA graphs: each batch is copied into the static buffers, then the graph replayed; a
    smaller last batch runs eagerly."""
    import torch

    model, optimizer = torch_model(device)
    static_x = torch.zeros((BATCH_SIZE, NUM_INPUTS), device=device)
    static_y = torch.zeros(BATCH_SIZE, dtype=torch.int64, device=device)
    graph = torch_graph(lambda: torch_train_step(model, optimizer, static_x, static_y))

    def epoch(loader, _):
        model.train()
        for x, y in loader:
            x, y = torch.from_dlpack(x.data), torch.from_dlpack(y.data)
            if len(y) == BATCH_SIZE:
                static_x.copy_(x)
                static_y.copy_(y)
                graph.replay()
            else:
                torch_train_step(model, optimizer, x, y)

    return epoch


def pytorch_graph_gather(device):
    """As "pytorch graph", but the graph also gathers its batch, as minigrad's recorded planned step does: from the
    dataset on the GPU (the loader's arrays, shared through DLPack), by the epoch's order and a position held
    on the GPU, so the host only launches the graph. Captured on the first pass (the untimed warm-up)."""
    import torch

    model, optimizer = torch_model(device)
    position = torch.zeros(1, dtype=torch.int64, device=device)
    held = {}

    def gathered_step():
        rows = held["order"][position + held["offsets"]]
        x = held["images"][rows].float() * float(PIXEL_SCALE)
        position.add_(len(rows))
        return torch_train_step(model, optimizer, x, held["labels"][rows])

    def epoch(batches, _):
        loader = batches.loader
        if "graph" not in held:
            held["images"] = torch.from_dlpack(loader.images).reshape(len(loader.labels), -1)
            held["labels"] = torch.from_dlpack(loader.labels)
            held["order"] = torch.arange(len(loader.labels), device=device)
            held["offsets"] = torch.arange(loader.batch_size, device=device)
            held["graph"] = torch_graph(gathered_step)
        model.train()
        if batches.indices.start == 0:
            held["order now"] = loader.epoch_order()
            if held["order now"] is not None:
                held["order"].copy_(torch.from_dlpack(held["order now"]))
            position.zero_()
        for index in batches.indices:
            if index < len(loader.labels) // loader.batch_size:
                held["graph"].replay()
            else:
                x, y = loader.batch(held["order now"], index)
                torch_train_step(model, optimizer, torch.from_dlpack(x.data), torch.from_dlpack(y.data))

    return epoch


def pytorch_compiled(device):
    """PyTorch's strongest offer for this model: ``torch.compile(mode="reduce-overhead")`` (Inductor's fused
    kernels, replayed as CUDA graphs) of the forward and backward, and SGD with ``fused=True``; a smaller last
    batch runs the plain model, so that no shape recompiles in the timed epochs. Compiled in the warm-up."""
    import torch

    model, _ = torch_model(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, fused=True)
    compiled = torch.compile(model, mode="reduce-overhead", dynamic=False)

    def epoch(loader, _):
        model.train()
        for x, y in loader:
            x, y = torch.from_dlpack(x.data), torch.from_dlpack(y.data)
            torch_train_step(compiled if len(y) == BATCH_SIZE else model, optimizer, x, y)

    return epoch


def torch_version():
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


# --- the run ---------------------------------------------------------------------------------------

CONTENDERS = {
    "minigrad planned": minigrad_planned,
    "minigrad concise": minigrad_concise,
    "minigrad scratch": minigrad_scratch,
    "floor": numpy_floor,
    "products": products_alone,
    "pytorch eager": pytorch_eager,
    "pytorch graph": pytorch_graph,
    "pytorch graph+gather": pytorch_graph_gather,
    "pytorch compiled": pytorch_compiled,
    "minigrad planned cublas": lambda device: minigrad_planned(device, products="cublas"),
}


class EpochSlices:
    """A loader's epochs handed out a slice of batches at a time, so that contenders can take turns within an epoch.

    ``next_slice()`` returns the next ``1/slices`` of the current epoch (an iterable with a length, which
    is all a training loop needs); after the last slice the next call starts a new epoch.
    """

    def __init__(self, loader, slices):
        batches = len(loader)
        slices = max(1, min(slices, batches))  # no empty slices
        self.loader = loader
        self.sizes = [batches * (k + 1) // slices - batches * k // slices for k in range(slices)]
        self.iterator, self.position, self.start = None, 0, 0

    def next_slice(self):
        if self.position == 0:
            self.iterator, self.start = iter(self.loader), 0
        size = self.sizes[self.position]
        self.position = (self.position + 1) % len(self.sizes)
        batches = BatchSlice(self.loader, self.iterator, range(self.start, self.start + size))
        self.start += size
        return batches


class BatchSlice:
    """The next batches of a running epoch's iterator: those numbered ``indices`` in the epoch of ``loader``
    (the planned step takes its batches from the loader itself, by number)."""

    def __init__(self, loader, iterator, indices):
        self.loader, self.iterator, self.indices = loader, iterator, indices

    def __len__(self):
        return len(self.indices)

    def __iter__(self):
        return itertools.islice(self.iterator, len(self.indices))


def worker(connection, name, args):
    """One contender in its own process (so no library's threads compete with another's), timing on request.

    Loads the data, builds the model, runs a short warm-up, then answers every "slice" message with the
    seconds that training on the next ``1/--slices`` of an epoch took, until "stop".
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; the workers are daemons
    device = backend.check_device(args.device)
    mg.manual_seed(0)
    if name == "pytorch eager" and device == "cpu":
        import torch

        # Every core, as NumPy's BLAS uses, unless OMP_NUM_THREADS caps both (as when tests run in parallel)
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))
    try:
        try:
            data = FashionMNIST(args.data_dir, train=True, verify=not args.skip_checksum, progress=False)
            loader = DataLoader(data, BATCH_SIZE, shuffle=True, device=device, limit=args.limit, seed=0)
            epoch_slices = EpochSlices(loader, args.slices)
            if name == "minigrad planned":  # its products as --products says (on a GPU: whose, or which tile)
                run_epoch = minigrad_planned(device, args.products)
            else:
                run_epoch = CONTENDERS[name](device)
            # Warm-up on the loader's first two batches: first-call costs, and the planned step's plan (and graph)
            run_epoch(EpochSlices(loader, len(loader) // 2).next_slice(), 0)
        except Exception as error:  # this contender is out; the others still run
            return report_failure(connection, error)
        connection.send(("ready", loader.num_examples))
        while connection.recv() == "slice":
            batches = epoch_slices.next_slice()
            try:
                backend.synchronize(device)
                start = time.perf_counter()
                run_epoch(batches, 1)
                backend.synchronize(device)
            except Exception as error:
                return report_failure(connection, error)
            connection.send(time.perf_counter() - start)
    except (EOFError, BrokenPipeError):  # the parent has gone (Ctrl-C): nothing left to time
        return
    connection.close()


def report_failure(connection, error):
    """A worker's last word: the traceback on stderr, the error to the parent, which drops the contender."""
    traceback.print_exc()
    connection.send(("failed", f"{type(error).__name__}: {error}"))


def receive(connection, timeout):
    """The worker's next message, or None if it died or said nothing for ``timeout`` seconds."""
    try:
        return connection.recv() if connection.poll(timeout) else None
    except EOFError:
        return None


def run(args):
    device = backend.check_device(args.device)
    skip = set(args.skip or ())
    contenders = ("minigrad planned", "minigrad concise", "minigrad scratch", "floor", "products")
    names = [name for name in contenders if name.split()[-1] not in skip]
    skipped = []
    if "pytorch" in skip:
        skipped.append("pytorch eager: --skip pytorch")
    elif torch_version() is None:
        skipped.append("pytorch eager: torch is not importable (pip install torch==2.13.0 for the comparison)")
        print(f"skipping {skipped[-1]}")
    else:
        names.append("pytorch eager")
    if device != "cpu" and "planned" not in skip and "cublas" not in skip:
        names.insert(1, "minigrad planned cublas")
    if device != "cpu" and "pytorch eager" in names:  # PyTorch's CUDA-graph contenders
        names += ["pytorch graph", "pytorch graph+gather"] + ([] if "compiled" in skip else ["pytorch compiled"])
    context = multiprocessing.get_context("spawn")
    workers = {}
    for name in names:
        parent_end, child_end = context.Pipe()
        process = context.Process(target=worker, args=(child_end, name, args), daemon=True)
        process.start()
        child_end.close()  # the worker's end lives in the worker only: if it dies, recv() raises at once
        workers[name] = (process, parent_end)
    examples = None

    def drop(name, why):  # a contender that failed: the run goes on without it, and the report says why
        skipped.append(f"{name}: failed ({why})")
        print(f"dropping {skipped[-1]}", flush=True)
        names.remove(name)
        workers.pop(name)[0].join(timeout=30)

    for name, (process, connection) in list(workers.items()):
        message = receive(connection, args.ready_timeout)
        if message is None or message[0] != "ready":
            if message is not None:
                why = message[1]
            elif process.is_alive():
                why = f"not ready after {args.ready_timeout} s (--ready-timeout)"
                process.kill()
            else:
                why = f"it did not start, exit code {process.exitcode}"
            if name == "floor":  # every ratio is to the floor
                raise RuntimeError(f"the floor's worker failed: {why}")
            drop(name, why)
        else:
            examples = message[1]
    epochs = {name: [] for name in names}
    turn = 0
    for _ in range(args.repeats * args.epochs):
        seconds = dict.fromkeys(names, 0.0)
        for _ in range(args.slices):  # every contender trains on a slice, in a rotating order, then the next slice
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                # Idle thread pools (OpenMP, OpenBLAS) spin for up to ~0.1 s after their last job; let them
                # go to sleep so that they do not steal the cores from the next contender.
                if device == "cpu":
                    time.sleep(PAUSE_S)
                workers[name][1].send("slice")
                answer = receive(workers[name][1], 600)
                if isinstance(answer, float):
                    seconds[name] += answer
                elif name == "floor":
                    raise RuntimeError(f"the floor's worker failed: {answer}")
                else:
                    drop(name, answer[1] if answer is not None else "its worker died")
                    del seconds[name], epochs[name]
            turn += 1
        for name in names:
            epochs[name].append(seconds[name])
    for process, connection in workers.values():
        connection.send("stop")
        process.join(timeout=30)
    gflops = sgemm_gflops(device)
    medians = {name: statistics.median(times) for name, times in epochs.items()}
    flops = matmul_flops_per_example() * examples
    results = {}
    for name, times in epochs.items():
        label = name if name != "floor" else ("numpy floor" if device == "cpu" else "cupy floor")
        results[label] = {
            "median_s": medians[name],
            "min_s": min(times),
            "max_s": max(times),
            "epochs_s": times,
            "ratio_to_floor": medians[name] / medians["floor"],
            # epoch k of this contender against epoch k of the floor (the same round): less exposed to slow drift
            "paired_ratio_to_floor": statistics.median(a / b for a, b in zip(times, epochs["floor"])),
            "paired_ratio_to_products": (
                statistics.median(a / b for a, b in zip(times, epochs["products"])) if "products" in epochs else None
            ),
            "ratio_to_pytorch": medians[name] / medians["pytorch eager"] if "pytorch eager" in medians else None,
            "ratio_to_pytorch_graph": (
                medians[name] / medians["pytorch graph"] if "pytorch graph" in medians else None
            ),
            "ratio_to_pytorch_graph_gather": (
                medians[name] / medians["pytorch graph+gather"] if "pytorch graph+gather" in medians else None
            ),
        }
    report = {
        "device": device,
        "machine": platform.processor() or platform.machine(),
        "torch": torch_version(),
        "numpy": numpy.__version__,
        "config": {
            "epochs": args.epochs,
            "repeats": args.repeats,
            "slices": args.slices,
            "limit": args.limit,
            "examples_per_epoch": examples,
            "batch_size": BATCH_SIZE,
            "planned_products": args.products,
        },
        "matmul_gflop_per_epoch": flops / 1e9,
        "sgemm_gflops": gflops,
        "floor_gflops": flops / medians["floor"] / 1e9,
        "results": results,
        "skipped": skipped,
    }
    print(format_table(report))
    if args.json:
        save_json(report, args.json)
    return report


def format_table(report):
    graph = any(r["ratio_to_pytorch_graph"] is not None for r in report["results"].values())
    lines = [
        f"{'contender':24s} {'median s':>9s} {'min s':>8s} {'max s':>8s} {'x floor':>8s} {'paired':>7s} "
        f"{'x products':>11s} {'x pytorch':>10s}" + (f" {'x graph':>8s} {'x gather':>9s}" if graph else "")
    ]

    def ratio(value, width):
        return f"{value:{width}.2f}" if value is not None else f"{'-':>{width}s}"

    for name, r in report["results"].items():
        lines.append(
            f"{name:24s} {r['median_s']:9.3f} {r['min_s']:8.3f} {r['max_s']:8.3f} "
            f"{r['ratio_to_floor']:8.2f} {r['paired_ratio_to_floor']:7.2f} "
            f"{ratio(r.get('paired_ratio_to_products'), 11)} {ratio(r['ratio_to_pytorch'], 10)}"
            + (
                f" {ratio(r['ratio_to_pytorch_graph'], 8)} {ratio(r.get('ratio_to_pytorch_graph_gather'), 9)}"
                if graph
                else ""
            )
        )
    lines.append(
        "x floor, x pytorch (eager), x graph (pytorch graph), x gather (pytorch graph+gather): ratios of the "
        "medians; paired, x products: median over rounds of the ratio to the floor's (the products') epoch run in "
        "the same round"
    )
    lines.append(
        f"floor: {report['matmul_gflop_per_epoch']:.1f} GFLOP of matrix products per epoch at "
        f"{report['floor_gflops']:.0f} GFLOP/s; this machine's sgemm: {report['sgemm_gflops']:.0f} GFLOP/s"
    )
    if report["device"] != "cpu":
        lines.append(f"minigrad planned: its products by {report['config']['planned_products']!r}")
        lines += verdicts(report["results"], report["config"]["planned_products"])
    lines += [f"left out: {line}" for line in report["skipped"]]
    return "\n".join(lines)


TARGET_TO_GATHER = 0.5  # issue 25: minigrad's planned epoch at most half of "pytorch graph+gather"'s


def verdicts(results, products):
    """On a GPU, what the run says to set and whether it meets the target: the faster planned step, by its
    products (``products``, a tile shape's name, against cuBLAS's; the tile's step is also two kernels fewer, so
    the step's time decides, not the products' alone) as ``fast.plan.DEFAULT_PRODUCTS``, and the faster one's
    ratio to "pytorch graph+gather"."""
    planned, cublas = results.get("minigrad planned"), results.get("minigrad planned cublas")
    if planned is None:
        return []
    lines, best = [], ("minigrad planned", products)
    if cublas is not None and products != "cublas":
        ratio = planned["median_s"] / cublas["median_s"]
        best = ("minigrad planned", products) if ratio < 1 else ("minigrad planned cublas", "cublas")
        lines.append(
            f"the planned step by {products!r} takes {ratio:.2f}x its time by 'cublas' (medians): "
            f"fast.plan's DEFAULT_PRODUCTS = {best[1]!r}"
        )
    gather = results[best[0]].get("ratio_to_pytorch_graph_gather")
    if gather is not None:
        met = "met" if gather <= TARGET_TO_GATHER else "NOT met"
        lines.append(
            f"target: the planned step by {best[1]!r} at {gather:.2f}x pytorch graph+gather's epoch "
            f"(at most {TARGET_TO_GATHER}): {met}"
        )
    return lines


def main(argv=None):
    parser = cli.OneLineParser(prog="python -m benchmarks.train_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", type=cli.device_name, default="cpu")
    parser.add_argument("--epochs", type=cli.positive_int, default=3, help="timed epochs per contender per repeat")
    parser.add_argument("--repeats", type=cli.positive_int, default=3, help="rounds of the interleaved contenders")
    parser.add_argument(
        "--slices",
        type=cli.positive_int,
        default=5,
        help="the contenders take turns every 1/SLICES of an epoch (finer turns: noise hits all alike)",
    )
    parser.add_argument(
        "--products",
        type=cli.products_setting,
        default=DEFAULT_PRODUCTS,
        metavar="NAME",
        help=f"on a GPU, minigrad planned's matrix products: {', '.join(map(repr, PRODUCTS))}, or a tile shape "
        f"by product, as benchmarks.gemm_speed names the fastest (default: {DEFAULT_PRODUCTS!r}, the planned step's)",
    )
    parser.add_argument("--limit", type=cli.positive_int, default=None, help="train on the first N examples (quicker)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--skip-checksum", action="store_true", help="accept IDX files that are not the official ones")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--ready-timeout",
        type=cli.positive_int,
        default=600,
        help="seconds a contender may take to load, compile and warm up before it is left out (default: 600)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        choices=["planned", "concise", "scratch", "products", "pytorch", "cublas", "compiled"],
        help="leave out a contender (repeatable; the floor always runs: the ratios need it)",
    )
    args = parser.parse_args(argv)
    args.device = cli.check_device(parser, args.device)
    cli.check_data_dir(parser, args.data_dir)
    if args.json:
        cli.check_writable_file(parser, args.json)

    def check_data_then_run():
        FashionMNIST(args.data_dir, train=True, verify=not args.skip_checksum, progress=False)  # before the workers
        run(args)

    return cli.exit_status(check_data_then_run, (DatasetError, IDXFormatError, OSError, RuntimeError))


if __name__ == "__main__":
    sys.exit(main())
