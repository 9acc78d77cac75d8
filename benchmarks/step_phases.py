"""Where a training step's time goes: forward, backward and update of minigrad (planned, concise and scratch)
against the hand-written floor, and the matrix products alone, per phase.

    python -m benchmarks.step_phases [--device cpu|cuda] [--rounds 40] [--steps 20] [--json PATH]

The chapter's model on a batch of 256 random images (the data's values do not change the time); the planned
step's forward phase includes gathering its batch (from a loader over 16 such batches; the others get theirs
ready-made) and the loss's gradient, which its loss stage makes with the loss. The contenders take turns,
``--steps`` steps at a time, for ``--rounds`` rounds in a rotating order, so that noise hits them alike; each
phase's time is the median over rounds of the mean step. "products" times the matrix products alone: the
forward's three and the backward's five (no dX for the input images), at the chapter's shapes. What a
contender spends over the products in a phase is its elementwise passes, allocation and Python. (The training
run's metrics.json times whole steps; this splits them.)
"""

import statistics
import sys
import time

import numpy

import minigrad as mg
import minigrad.nn.functional as F
from benchmarks.numpy_floor import FloorMLP
from minigrad import backend, cli
from minigrad.chapter.model import BATCH_SIZE, LR, NUM_INPUTS, NUM_OUTPUTS, ScratchMLP, concise_mlp
from minigrad.data import ArrayDataset, DataLoader
from minigrad.data.loader import BatchCursor
from minigrad.fast import PlannedStep
from minigrad.files import save_json

PHASES = ("forward", "backward", "update")


def contenders(device):
    """{name: step(x, y, clock) -> (forward, backward, update) seconds}; ``clock()`` reads the time."""
    planned_model = concise_mlp(device=device)
    planned_optimizer = mg.optim.SGD(planned_model.parameters(), lr=LR)
    rng = numpy.random.default_rng(1)
    images = ArrayDataset(
        rng.integers(0, 256, (16 * BATCH_SIZE, NUM_INPUTS), dtype=numpy.uint8), rng.integers(0, 10, 16 * BATCH_SIZE)
    )
    cursor = BatchCursor(DataLoader(images, BATCH_SIZE, device=device))
    planned = PlannedStep(planned_model, planned_optimizer, cursor, BATCH_SIZE, cursor.full_batches)
    concise = concise_mlp(device=device)
    optimizer = mg.optim.SGD(concise.parameters(), lr=LR)
    scratch, floor = ScratchMLP(device=device), FloorMLP(device=device)
    weights = [layer.weight.data for layer in concise if isinstance(layer, mg.nn.Linear)]

    def planned_step(x, y, clock):
        if int(cursor.position[0]) == len(cursor.labels):
            cursor.start_epoch(None)
            planned.start_epoch()
        t0 = clock()
        lr = planned.folded_lr()
        kinds = planned.forward_step(lr)
        t1 = clock()
        planned.backward_step(kinds)
        t2 = clock()
        planned.update(folded=lr is not None)
        return t1 - t0, t2 - t1, clock() - t2

    def concise_step(x, y, clock):
        t0 = clock()
        loss = F.cross_entropy(concise(mg.Tensor(x)), mg.Tensor(y))
        t1 = clock()
        optimizer.zero_grad()
        loss.backward()
        t2 = clock()
        optimizer.step()
        return t1 - t0, t2 - t1, clock() - t2

    def scratch_step(x, y, clock):
        t0 = clock()
        loss = F.cross_entropy(scratch.net(mg.Tensor(x), is_training=True), mg.Tensor(y))
        t1 = clock()
        loss.backward()
        t2 = clock()
        scratch.sgd(LR)
        return t1 - t0, t2 - t1, clock() - t2

    def floor_step(x, y, clock):
        t0 = clock()
        loss, saved = floor.forward(x, y)
        t1 = clock()
        grads = floor.backward(x, *saved)
        t2 = clock()
        floor.update(grads)
        return t1 - t0, t2 - t1, clock() - t2

    def products(x, y, clock):
        W1, W2, W3 = weights
        t0 = clock()
        h1 = x @ W1.T
        h2 = h1 @ W2.T
        logits = h2 @ W3.T
        t1 = clock()
        logits.T @ h2, logits @ W3  # dW3, dH2
        h2.T @ h1, h2 @ W2  # dW2, dH1
        h1.T @ x  # dW1
        return t1 - t0, clock() - t1, 0.0

    return {
        "minigrad planned": planned_step,
        "minigrad concise": concise_step,
        "minigrad scratch": scratch_step,
        "floor": floor_step,
        "products": products,
    }


def run(args):
    device = backend.check_device(args.device)
    mg.manual_seed(0)
    rng = numpy.random.default_rng(0)
    x = backend.to_device(rng.random((BATCH_SIZE, NUM_INPUTS), dtype=numpy.float32), device)
    y = backend.to_device(rng.integers(0, NUM_OUTPUTS, BATCH_SIZE), device)

    def clock():
        backend.synchronize(device)
        return time.perf_counter()

    steps = contenders(device)
    names = list(steps)
    for name in names:  # warm-up
        for _ in range(3):
            steps[name](x, y, clock)
    rounds = {name: [] for name in names}
    for turn in range(args.rounds):
        for name in names[turn % len(names) :] + names[: turn % len(names)]:
            totals = numpy.zeros(3)
            for _ in range(args.steps):
                totals += steps[name](x, y, clock)
            rounds[name].append(totals / args.steps)
    results = {
        name: {phase: statistics.median(r[k] for r in rounds[name]) for k, phase in enumerate(PHASES)} for name in names
    }
    for name in names:
        results[name]["step"] = statistics.median(sum(r) for r in rounds[name])
    report = {
        "device": device,
        "rounds": args.rounds,
        "steps": args.steps,
        "batch_size": BATCH_SIZE,
        "us": {name: {k: v * 1e6 for k, v in phases.items()} for name, phases in results.items()},
    }
    print(format_table(report))
    if args.json:
        save_json(report, args.json)
    return report


def format_table(report):
    us = report["us"]
    lines = [
        f"{'microseconds per step':22s} "
        + " ".join(f"{phase:>9s}" for phase in (*PHASES, "step"))
        + f" {'x floor':>8s}"
    ]
    for name, phases in us.items():
        ratio = phases["step"] / us["floor"]["step"]
        lines.append(
            f"{name:22s} " + " ".join(f"{phases[phase]:9.0f}" for phase in (*PHASES, "step")) + f" {ratio:8.2f}"
        )
    for name in ("minigrad planned", "minigrad concise", "minigrad scratch", "floor"):
        over = " ".join(f"{us[name][phase] - us['products'][phase]:9.0f}" for phase in PHASES)
        lines.append(f"{name + ' - products':22s} {over}")
    lines.append("medians over rounds; each phase timed with the device synchronised at its ends")
    return "\n".join(lines)


def main(argv=None):
    parser = cli.OneLineParser(prog="python -m benchmarks.step_phases", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", type=cli.device_name, default="cpu")
    parser.add_argument("--rounds", type=cli.positive_int, default=40)
    parser.add_argument("--steps", type=cli.positive_int, default=20)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    args.device = cli.check_device(parser, args.device)
    if args.json:
        cli.check_writable_file(parser, args.json)
    return cli.exit_status(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
