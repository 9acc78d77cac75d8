"""Peak memory of a training run: minigrad's example (the planned step, its default, and ``--eager``) against the
hand-written floor, each in its own process.

    python -m benchmarks.memory [--device cpu|cuda] [--epochs 2] [--limit N] [--json PATH]

Each contender runs in a fresh subprocess (so neither inherits the other's memory) that loads both
splits, trains the chapter's MLP for ``--epochs`` epochs and evaluates on the test split, then
reports its peak resident set size (``ru_maxrss``) and, on CUDA, the bytes CuPy's memory pool holds.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

from minigrad import cli
from minigrad.files import save_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(kind, device, epochs, limit, data_dir, skip_checksum):
    """Run one contender in this process and print its peaks as JSON."""
    import minigrad as mg

    mg.manual_seed(0)
    if kind in ("minigrad", "minigrad-eager"):
        from minigrad.chapter import dropout_mlp

        argv = [
            "--device",
            device,
            "--epochs",
            str(epochs),
            "--no-progress",
            "--out",
            tempfile.mkdtemp(prefix="minigrad-memory-"),
        ]
        argv += ["--limit", str(limit)] if limit else []
        argv += ["--eager"] if kind == "minigrad-eager" else []
        argv += ["--data-dir", data_dir] if data_dir else []
        argv += ["--skip-checksum"] if skip_checksum else []
        with open(os.devnull, "w") as quiet:
            sys.stdout = quiet
            code = dropout_mlp.main(argv)
            sys.stdout = sys.__stdout__
        if code:
            raise SystemExit(code)
    else:
        from benchmarks.numpy_floor import FloorMLP, train_epoch
        from minigrad.chapter.model import BATCH_SIZE
        from minigrad.data import DataLoader, FashionMNIST

        train = FashionMNIST(data_dir, train=True, verify=not skip_checksum, progress=False)
        test = FashionMNIST(data_dir, train=False, verify=not skip_checksum, progress=False)
        train_loader = DataLoader(train, BATCH_SIZE, shuffle=True, device=device, limit=limit, seed=0)
        test_loader = DataLoader(test, BATCH_SIZE, device=device, limit=limit)
        model = FloorMLP(device=device)
        for _ in range(epochs):
            train_epoch(model, train_loader)
            for x, _y in test_loader:  # evaluation: the forward pass without dropout
                h = x.data
                for W, b in zip(model.weights, model.biases):
                    h = h @ W.T + b
                    if W is not model.weights[-1]:
                        h = h * (h > 0)
    peaks = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device != "cpu":
        import cupy

        peaks["cupy_pool_mb"] = cupy.get_default_memory_pool().total_bytes() / 2**20
    print(json.dumps(peaks))


def measure(kind, args):
    command = [
        sys.executable,
        "-m",
        "benchmarks.memory",
        "--child",
        kind,
        "--device",
        args.device,
        "--epochs",
        str(args.epochs),
    ]
    command += ["--limit", str(args.limit)] if args.limit else []
    command += ["--data-dir", args.data_dir] if args.data_dir else []
    command += ["--skip-checksum"] if args.skip_checksum else []
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    if result.returncode:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"error: the {kind} run failed (exit status {result.returncode}): {last}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = cli.OneLineParser(prog="python -m benchmarks.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", type=cli.device_name, default="cpu")
    parser.add_argument("--epochs", type=cli.positive_int, default=2)
    parser.add_argument("--limit", type=cli.positive_int, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--skip-checksum", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", choices=["minigrad", "minigrad-eager", "floor"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.device = cli.check_device(parser, args.device)
    cli.check_data_dir(parser, args.data_dir)
    if args.json:
        cli.check_writable_file(parser, args.json)
    if args.child:
        return child(args.child, args.device, args.epochs, args.limit, args.data_dir, args.skip_checksum)
    report = {
        "device": args.device,
        "epochs": args.epochs,
        "limit": args.limit,
        "minigrad": measure("minigrad", args),
        "minigrad_eager": measure("minigrad-eager", args),
        "floor": measure("floor", args),
    }
    report["rss_ratio"] = report["minigrad"]["peak_rss_mb"] / report["floor"]["peak_rss_mb"]
    minigrad_mb, floor_mb = report["minigrad"]["peak_rss_mb"], report["floor"]["peak_rss_mb"]
    eager_mb = report["minigrad_eager"]["peak_rss_mb"]
    print(
        f"peak RSS: minigrad {minigrad_mb:.0f} MB (planned step; --eager {eager_mb:.0f} MB), floor "
        f"{floor_mb:.0f} MB, ratio {report['rss_ratio']:.2f}"
    )
    if args.json:
        save_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
