"""The chapter's exercises (section 4.6.7) as experiments anyone can rerun.

    minigrad-dropout-experiments NAME [--epochs N] [--seeds 0 1 2] [--device cpu] [--limit N]
                                                [--out DIR] [--quick]

NAME is one of swap, with-without, variance, test-time, weight-decay, dropconnect, noise, mc-dropout, or
all. Each experiment writes ``DIR/NAME/results.json``, ``report.md`` (the numbers, a conclusion computed
from them, and the exact command) and PNG plots. ``--quick`` trains on a small synthetic dataset for a
few epochs: for tests, not for conclusions. The experiments themselves live in ``minigrad/chapter/experiments/``.
"""

import os
import shlex
import sys
import time

import minigrad as mg
from minigrad import allocator, cli
from minigrad.chapter.experiments.exercises import EXPERIMENTS, epochs_for
from minigrad.chapter.experiments.runs import Data, Runs
from minigrad.chapter.model import BATCH_SIZE, LR, NUM_HIDDENS, NUM_INPUTS, NUM_OUTPUTS
from minigrad.data import DatasetError, IDXFormatError
from minigrad.files import atomic_write, save_json
from minigrad.monitor import TrainingDiverged

# --- the command line -----------------------------------------------------------------------------------


def parse_args(argv=None):
    """The flags, every one checked (folders, device, memory, seeds) before any work starts."""
    parser = cli.OneLineParser(prog=cli.program_name(__name__), description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=[*EXPERIMENTS, "all"], help="the experiment to run, or all of them")
    parser.add_argument("--epochs", type=cli.positive_int, default=None, help="default: 10 (50 for with-without)")
    parser.add_argument("--seeds", type=cli.seed, nargs="+", default=[0, 1, 2], help="one run per seed")
    parser.add_argument("--device", type=cli.device_name, default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--limit", type=cli.positive_int, default=None, help="use the first N examples of each split")
    parser.add_argument(
        "--data-dir", default=None, help="the folder with the four IDX files (the only place looked in)"
    )
    parser.add_argument("--lr", type=cli.positive_float, default=LR, help="SGD learning rate")
    cli.add_hidden_flag(parser, NUM_HIDDENS)
    parser.add_argument("--out", default=os.path.join("runs", "dropout_experiments"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="a small synthetic dataset and 3 epochs: for tests")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(
            f"argument --seeds: each seed once, got {' '.join(map(str, args.seeds))} (a repeated seed "
            f"would count one run twice in the means and standard errors)"
        )
    args.device = cli.check_device(parser, args.device)
    cli.check_data_dir(parser, args.data_dir)
    cli.check_mlp_fits(parser, [NUM_INPUTS, *args.hidden, NUM_OUTPUTS], 1000, args.device)
    cli.check_writable_folder(parser, args.out)
    if args.quick:
        args.epochs = args.epochs or 3
    return args


def main(argv=None):
    """The command line: run the named experiments and write their reports; returns the exit status."""
    args = parse_args(argv)
    words = sys.argv[1:] if argv is None else argv
    allocator.keep_freed_memory()  # this command owns the process: keep freed memory for the next batch
    command = cli.program_name(__name__) + " " + " ".join(shlex.quote(word) for word in words)
    try:
        runs = Runs(Data(args), args, log=lambda text: print(text, flush=True))
        for name in EXPERIMENTS if args.name == "all" else [args.name]:
            run_experiment(name, runs, args, command)
    except KeyboardInterrupt:
        print(
            "interrupted: the experiments finished before it kept their reports; the one running was lost",
            file=sys.stderr,
        )
        return 130
    except (mg.DeviceError, DatasetError, IDXFormatError, TrainingDiverged, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def run_experiment(name, runs, args, command):
    """Run one experiment and write its results.json, report.md and plots into --out/NAME."""
    out = os.path.join(args.out, name)
    os.makedirs(out, exist_ok=True)
    experiment = EXPERIMENTS[name]
    question = experiment.__doc__.strip()
    print(f"{name}: {question}", flush=True)
    started = time.perf_counter()
    results, lines, plots = experiment(runs, args, out, runs.log)
    minutes = (time.perf_counter() - started) / 60
    save_json(
        {
            "name": name,
            "question": question,
            "command": command,
            "minutes": minutes,
            "settings": {k: v for k, v in vars(args).items()},
            "results": results,
        },
        os.path.join(out, "results.json"),
    )
    report = [f"# {name}", "", question, "", *lines, ""]
    report += [f"![{plot}]({plot})" for plot in plots]
    settings = "synthetic data (--quick)" if args.quick else "Fashion-MNIST"
    report += [
        "",
        f"Settings: {settings}, {epochs_for(name, args)} epochs, seeds {args.seeds}, lr {args.lr}, "
        f"batch {BATCH_SIZE}, device {args.device}; {minutes:.1f} minutes.",
        "",
        f"Command: `{command}`",
        "",
    ]
    with atomic_write(os.path.join(out, "report.md"), "w") as file:
        file.write("\n".join(report))
    print(f"  wrote {out}/report.md", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
