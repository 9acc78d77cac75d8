"""How long a user waits for the chapter's run, from the shell prompt to its last line, and where the time goes.

    python -m benchmarks.run_time [--device cpu|cuda] [--epochs 10] [--skip pytorch] [--json PATH] [--data-dir DIR]

Runs ``python -m examples.dropout_mlp --device D --epochs E --no-progress --no-plot`` as a user does (into a
temporary folder), timed from the moment it is started to its exit, under a thin wrapper (``inner``) that
changes nothing but notes where the time goes: Python's start, the imports, the data (reading and checking the
IDX files, the loaders), planning (the planned step's buffers), on a GPU recording (the CUDA graph's warm-up,
which compiles the planned step's kernels on a first run, capture and replays checked bit for bit), the cpu
steps (two steps of the eager ops of a copy of the model on the CPU, drawing the GPU's masks, to compare the
replays with) and the eager check (the replays and their comparison, and only where the CPU's steps disagree,
two steps of the GPU's own eager ops, which compile their kernels on a first run), training, evaluation and
writing the results (each epoch's checkpoint and metrics); what is left is "other". Each phase's time is its
own, less the phases it calls (planning happens inside the first epoch's training). On a GPU the run is made
twice: with an empty CuPy kernel cache (cold: every kernel compiled, as on a first run) and again with the
cache that run filled (warm).
Beside it, the same for ``benchmarks.pytorch_chapter``, a plain PyTorch script of the chapter.
"""

import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
import time

PHASES = (
    "python start",
    "imports",
    "data",
    "planning",
    "recording",
    "cpu steps",
    "eager check",
    "training",
    "evaluation",
    "writing",
    "other",
)


# --- inside the timed run -------------------------------------------------------------------------------


class Phases:
    """Exclusive wall time per phase: a call wrapped by ``wrap`` counts toward its phase, less the wrapped calls
    made inside it, which count toward theirs."""

    def __init__(self):
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.stack = []  # (phase, when it, or the last call inside it, resumed)

    def wrap(self, owner, name, phase):
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            now = time.perf_counter()
            if self.stack:
                outer, resumed = self.stack[-1]
                self.seconds[outer] += now - resumed
            self.stack.append((phase, now))
            try:
                return original(*args, **kwargs)
            finally:
                now = time.perf_counter()
                inner, resumed = self.stack.pop()
                self.seconds[inner] += now - resumed
                if self.stack:
                    self.stack[-1] = (self.stack[-1][0], now)

        setattr(owner, name, timed)


BOOTSTRAP = (  # the timed run's first line: Python is ready; everything after it is the example's
    "import time; ready = time.time(); import sys; from benchmarks.run_time import inner; "
    "sys.exit(inner(ready, sys.argv[1], sys.argv[2:]))"
)


def inner(python_ready, marks_path, argv):
    """Run the example's ``main(argv)`` with its phases timed; write the marks to ``marks_path``."""
    from minigrad import backend
    from minigrad.chapter import dropout_mlp
    from minigrad.data import DataLoader, FashionMNIST
    from minigrad.fast import PlannedTraining, RecordedStep
    from minigrad.train import Trainer

    imported = time.time()
    phases = Phases()
    phases.wrap(FashionMNIST, "__init__", "data")
    phases.wrap(DataLoader, "__init__", "data")
    phases.wrap(PlannedTraining, "_plan", "planning")
    phases.wrap(RecordedStep, "__init__", "recording")
    phases.wrap(PlannedTraining, "_steps_on_cpu", "cpu steps")
    phases.wrap(PlannedTraining, "_check_against_eager", "eager check")
    phases.wrap(Trainer, "train_epoch", "training")
    phases.wrap(Trainer, "evaluate", "evaluation")
    phases.wrap(dropout_mlp.Run, "save_epoch", "writing")
    phases.wrap(dropout_mlp.Run, "finish", "writing")
    status = 1
    try:
        status = dropout_mlp.main(argv)
        backend.synchronize(next((a for a in argv if a.startswith("cuda")), "cpu"))
    finally:
        marks = {"python ready": python_ready, "imported": imported, "finished": time.time(), "status": status}
        marks["seconds"] = phases.seconds
        with open(marks_path, "w") as file:
            json.dump(marks, file)
    return status


# --- the parent -----------------------------------------------------------------------------------------


def timed(command, env, marks_path):
    """Run ``command``; (its marks, the seconds from its start to its exit, its output)."""
    started = time.time()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    ended = time.time()
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    with open(marks_path) as file:
        marks = json.load(file)
    marks["started"], marks["ended"] = started, ended
    return marks, done.stdout


def minigrad_split(marks):
    seconds = dict(marks["seconds"])
    seconds["python start"] = marks["python ready"] - marks["started"]
    seconds["imports"] = marks["imported"] - marks["python ready"]
    seconds["total"] = marks["ended"] - marks["started"]
    seconds["other"] = seconds["total"] - sum(seconds[p] for p in PHASES if p != "other")
    return seconds


def pytorch_split(marks):
    seconds = {
        "python start": marks["script"] - marks["started"],
        "imports": marks["imports"] - marks["script"],
        "data": marks["data"] - marks["imports"],
        "planning": 0.0,
        "recording": 0.0,
        "cpu steps": 0.0,
        "eager check": 0.0,
        "training": marks["training"] - marks["data"],
        "evaluation": marks["evaluation"] - marks["training"],
        "writing": 0.0,
        "total": marks["ended"] - marks["started"],
    }
    seconds["other"] = seconds["total"] - sum(seconds[p] for p in PHASES if p != "other")
    return seconds


def run(args):
    from minigrad import backend
    from minigrad.data import FashionMNIST

    folder = FashionMNIST(args.data_dir, train=True, verify=not args.skip_checksum, progress=False).root
    columns = {}
    with tempfile.TemporaryDirectory() as scratch:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
        env["CUPY_CACHE_DIR"] = os.path.join(scratch, "cupy-cache")  # empty: the first run compiles every kernel
        example = [sys.executable, "-c", BOOTSTRAP, os.path.join(scratch, "marks.json")]
        example += ["--device", args.device, "--epochs", str(args.epochs), "--no-progress", "--no-plot"]
        example += ["--data-dir", folder] + (["--skip-checksum"] if args.skip_checksum else [])
        runs = ["minigrad cold", "minigrad warm"] if args.device != "cpu" else ["minigrad"]
        for number, name in enumerate(runs):
            out = ["--out", os.path.join(scratch, f"run{number}")]  # a fresh folder: the example keeps what it finds
            marks, output = timed(example + out, env, os.path.join(scratch, "marks.json"))
            columns[name] = minigrad_split(marks)
            columns[name]["final line"] = output.strip().splitlines()[-1]
        if "pytorch" not in (args.skip or ()):
            script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pytorch_chapter.py")
            command = [sys.executable, script, "--data-dir", folder]  # a script: it imports nothing of minigrad
            command += ["--device", args.device, "--epochs", str(args.epochs)]
            command += ["--marks", os.path.join(scratch, "torch.json")]
            try:
                marks, output = timed(command, env, os.path.join(scratch, "torch.json"))
            except RuntimeError as error:
                print(f"left out pytorch: {error}")
            else:
                columns["pytorch"] = pytorch_split(marks)
                columns["pytorch"]["final line"] = output.strip().splitlines()[-1]
    print(f"{'seconds':16s}" + "".join(f"{name:>15s}" for name in columns))
    for phase in (*PHASES, "total"):
        print(f"{phase:16s}" + "".join(f"{column[phase]:15.2f}" for column in columns.values()))
    for name, column in columns.items():
        print(f"{name}: {column['final line']}")
    report = {"device": args.device, "gpu": backend.gpu_name() if args.device != "cpu" else None}
    report.update({"epochs": args.epochs, "runs": columns})
    if args.json:
        from minigrad.files import save_json

        save_json(report, args.json)
    return report


def main(argv=None):
    from minigrad import cli
    from minigrad.data import DatasetError, IDXFormatError

    parser = cli.OneLineParser(prog="python -m benchmarks.run_time", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", type=cli.device_name, default="cpu")
    parser.add_argument("--epochs", type=cli.positive_int, default=10)
    parser.add_argument("--skip", action="append", choices=["pytorch"], help="leave out the PyTorch script")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--skip-checksum", action="store_true", help="accept IDX files that are not the official ones")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    args.device = cli.check_device(parser, args.device)
    cli.check_data_dir(parser, args.data_dir)
    if args.json:
        cli.check_writable_file(parser, args.json)
    with contextlib.suppress(ImportError):
        import torch  # noqa: F401 - only to know whether the PyTorch script can run
    if "torch" not in sys.modules:
        args.skip = [*(args.skip or ()), "pytorch"]
        print("left out pytorch: torch is not importable (pip install torch==2.13.0 for the comparison)")
    return cli.exit_status(lambda: run(args), (DatasetError, IDXFormatError, OSError, RuntimeError))


if __name__ == "__main__":
    sys.exit(main())
