"""The engine's Python overhead: forward + backward of ops on tiny tensors, where the math costs nothing.

    python -m benchmarks.op_overhead [--device cpu] [--number 2000] [--json PATH]

For each op: microseconds for building the graph and running backward through it (minigrad),
next to the same forward computed with raw arrays. A regression in the engine's bookkeeping
(Function.apply, the topological sort, gradient accumulation) shows up here first.
"""

import time

import minigrad as mg
import minigrad.nn.functional as F
from minigrad import cli
from minigrad.files import save_json
from minigrad.ops import keep_mask
from minigrad.random import dropout_stream


def best_time(fn, number, repeats=5):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


def cases(device):
    a = mg.randn(4, 4, device=device, requires_grad=True)
    b = mg.randn(4, 4, device=device, requires_grad=True)
    bias = mg.randn(4, device=device, requires_grad=True)
    labels = mg.tensor([0, 1, 2, 3], device=device)
    A, B = a.data, b.data
    return {  # name: (minigrad forward producing a scalar, raw-array forward)
        "add": (lambda: (a + b).sum(), lambda: (A + B).sum()),
        "mul": (lambda: (a * b).sum(), lambda: (A * B).sum()),
        "matmul": (lambda: (a @ b).sum(), lambda: (A @ B).sum()),
        "relu": (lambda: a.relu().sum(), lambda: (A * (A > 0)).sum()),
        "linear": (lambda: F.linear(a, b, bias).sum(), lambda: (A @ B.T + bias.data).sum()),
        "dropout": (
            lambda: F.dropout(a, 0.5).sum(),
            lambda: (A * keep_mask(dropout_stream(device), A.shape, 0.5) * 2).sum(),
        ),
        "cross_entropy": (lambda: F.cross_entropy(a, labels), None),
        "chain of 10 muls": (lambda: _chain(a), None),
    }


def _chain(x):
    for _ in range(10):
        x = x * 1.01
    return x.sum()


def main(argv=None):
    parser = cli.OneLineParser(prog="python -m benchmarks.op_overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", type=cli.device_name, default="cpu")
    parser.add_argument("--number", type=cli.positive_int, default=2000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = cli.check_device(parser, args.device)
    if args.json:
        cli.check_writable_file(parser, args.json)
    results = {}
    print(f"{'op':18s} {'minigrad fwd+bwd us':>20s} {'raw forward us':>15s}")
    for name, (graph, raw) in cases(device).items():
        minigrad_us = best_time(lambda: graph().backward(), args.number)
        raw_us = best_time(raw, args.number) if raw else None
        results[name] = {"minigrad_forward_backward_us": minigrad_us, "raw_forward_us": raw_us}
        print(f"{name:18s} {minigrad_us:20.1f} {raw_us if raw_us is not None else float('nan'):15.1f}")
    if args.json:
        save_json({"device": device, "results": results}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
