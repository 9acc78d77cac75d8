"""Section 4.6 end to end: the chapter's MLP with dropout, trained on Fashion-MNIST.

    minigrad-dropout-mlp [--device cpu|cuda|cuda:N] [--impl concise|scratch] [--epochs 10] ...

``--impl scratch`` follows section 4.6.4 (explicit parameters, a hand-written ``dropout_layer``,
``net(X, is_training)``, a plain loop with a manual SGD update); ``--impl concise`` (the default)
follows section 4.6.5 (``nn.Sequential``, ``optim.SGD`` and the library's ``Trainer``).
Writes ``metrics.json`` and ``checkpoint.npz`` into ``--out`` after every epoch, and ``model.npz`` and
``curves.png`` at the end. Ctrl-C keeps the last finished epoch; ``--resume`` continues from it and ends
with the same numbers and weights as an uninterrupted run.
"""

import argparse
import contextlib
import json
import math
import os
import sys

import numpy

import minigrad as mg
import minigrad.nn.functional as F
from minigrad import allocator, cli
from minigrad.chapter.model import (
    BATCH_SIZE,
    DROPOUT1,
    DROPOUT2,
    LR,
    NUM_EPOCHS,
    NUM_HIDDENS,
    NUM_INPUTS,
    NUM_OUTPUTS,
    ScratchMLP,
    concise_mlp,
    dropout_layer,
)
from minigrad.checkpoint import load_checkpoint, save_checkpoint, save_state_dict
from minigrad.data import DataLoader, DatasetError, FashionMNIST, IDXFormatError
from minigrad.files import save_json
from minigrad.monitor import Monitor, Stopwatch, TrainingDiverged
from minigrad.train import Trainer, evaluate_predictions


def chapter_demo(device):
    """Section 4.6.4's demonstration: ``dropout_layer`` on ``arange(16)`` for p = 0, 0.5 and 1."""
    X = mg.arange(16.0, device=device).reshape(2, 8)
    for p in (0.0, 0.5, 1.0):
        print(f"dropout_layer(X, {p}):\n{dropout_layer(X, p).numpy()}")


# A run has diverged when an epoch's mean training loss is NaN or infinite, or above ten times the loss of a
# uniform guess over the classes, 10 ln 10 = 23.0: a model that learns nothing and guesses uniformly scores
# ln 10 = 2.30, one that predicts confidently and wrongly a few times that, and only weights that exploded
# reach ten times it (a learning rate of 5 gives 1e5). The README states the rule.
DIVERGED_LOSS = 10 * math.log(NUM_OUTPUTS)


def train_scratch_epoch(model, train_loader, monitor, epoch, lr):
    """One epoch of section 4.6.4's loop: the chapter's four lines per batch, reported to ``monitor``."""
    for X, y in monitor.epoch(train_loader, epoch):
        y_hat = model.net(X, is_training=True)
        loss = F.cross_entropy(y_hat, y)
        loss.backward()
        model.sgd(lr)
        monitor.step(loss, y_hat, y)


def fit_scratch(model, train_loader, test_loader, args, on_epoch_end, history=()):
    """Section 4.6.4's training loop (continuing after ``history``'s epochs when resuming).

    The step is the chapter's four lines; the timings, progress bar and each epoch's record come from
    the Monitor that ``Trainer`` uses too.
    """
    monitor = Monitor(args.device, progress=not args.no_progress, loss_limit=DIVERGED_LOSS)
    monitor.history = list(history)
    for epoch in range(len(history) + 1, args.epochs + 1):
        train_scratch_epoch(model, train_loader, monitor, epoch, args.lr)
        record = monitor.end_epoch(lambda: evaluate_predictions(lambda X: model.net(X, is_training=False), test_loader))
        on_epoch_end(record)
    return monitor


# --- the command line -------------------------------------------------------------------------------

# What a run's numbers depend on: --resume refuses a checkpoint whose run differed in any of these.
RUN_DEFINING = (
    "impl",
    "device",
    "lr",
    "batch_size",
    "dropout1",
    "dropout2",
    "hidden",
    "weight_decay",
    "lr_schedule",
    "limit",
    "seed",
    "skip_checksum",
)
OUTPUTS = ("metrics.json", "checkpoint.npz", "model.npz", "curves.png")


def build_parser():
    """The argument parser with every flag, its type and its default."""
    parser = cli.OneLineParser(prog=cli.program_name(__name__), description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--device", type=cli.device_name, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    add("--impl", choices=["concise", "scratch"], default="concise", help="section 4.6.5 or 4.6.4 (default: concise)")
    add("--epochs", type=cli.positive_int, default=None, help=f"default: $MAX_EPOCH or {NUM_EPOCHS}")
    add("--lr", type=cli.positive_float, default=LR, help=f"SGD learning rate (default: {LR})")
    add("--batch-size", type=cli.positive_int, default=BATCH_SIZE, help="examples per SGD step")
    add(
        "--dropout1",
        type=cli.probability,
        default=DROPOUT1,
        help=f"dropout after the first hidden layer (default: {DROPOUT1})",
    )
    add(
        "--dropout2",
        type=cli.probability,
        default=DROPOUT2,
        help=f"dropout after the second hidden layer (default: {DROPOUT2})",
    )
    cli.add_hidden_flag(parser, NUM_HIDDENS)
    add(
        "--weight-decay",
        type=cli.non_negative_float,
        default=0.0,
        help="L2 penalty on the weights (SGD's weight_decay)",
    )
    add(
        "--lr-schedule",
        choices=["constant", "step", "cosine"],
        default="constant",
        help="constant (the chapter), step (x0.1 after each third of the epochs) or cosine (to 0 at the last "
        "epoch); concise only",
    )
    add(
        "--limit",
        type=cli.positive_int,
        default=None,
        help="use the first N examples of each split (default: $DATASET_LIMIT or all)",
    )
    add("--seed", type=cli.seed, default=0, help="seeds the weights, the dropout masks and the shuffling")
    add(
        "--data-dir",
        default=None,
        help="the folder with the four Fashion-MNIST IDX files (gzip'd or not): the only "
        "place looked in (default: $MINIGRAD_DATA, else ./data/fashion-mnist, else Debian's "
        "/usr/share/datasets/fashion-mnist, else a download into ./data/fashion-mnist)",
    )
    add("--skip-checksum", action="store_true", help="accept IDX files that are not the official ones")
    add("--out", default=os.path.join("runs", "dropout_mlp"), help="output folder (default: runs/dropout_mlp)")
    add("--resume", action="store_true", help="continue the run whose checkpoint.npz is in --out")
    add(
        "--eager",
        action="store_true",
        help="run the eager ops, step by step, instead of the planned step (minigrad.fast: the default for "
        "--impl concise, recorded as a CUDA graph on a GPU), for comparison",
    )
    add("--no-progress", action="store_true", help="no progress bars")
    add("--no-plot", action="store_true", help="do not draw curves.png")
    add("--debug", action="store_true", help="show tracebacks")
    return parser


def parse_args(argv=None):
    """The flags, every one checked (files, device and memory too) before any work starts."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.impl == "scratch" and (args.lr_schedule != "constant" or args.weight_decay or args.eager):
        parser.error("--lr-schedule, --weight-decay and --eager are implemented for --impl concise only")
    for flag, variable, default in (("epochs", "MAX_EPOCH", NUM_EPOCHS), ("limit", "DATASET_LIMIT", None)):
        if getattr(args, flag) is None:
            text = os.environ.get(variable)
            if text is None:
                setattr(args, flag, default)
                continue
            try:
                setattr(args, flag, cli.positive_int(text))
            except argparse.ArgumentTypeError as error:
                parser.error(f"environment variable {variable}: {error}")
    args.device = cli.check_device(parser, args.device)
    cli.check_data_dir(parser, args.data_dir)
    cli.check_mlp_fits(
        parser, [NUM_INPUTS, *args.hidden, NUM_OUTPUTS], min(args.batch_size, args.limit or 60000), args.device
    )
    if args.resume and not os.path.isfile(os.path.join(args.out, "checkpoint.npz")):
        parser.error(f"argument --resume: there is no checkpoint.npz in {args.out!r} to resume from")
    cli.check_writable_folder(parser, args.out)
    args.lock = cli.lock_folder(parser, args.out)  # held until the process ends: one run per folder
    cli.remove_partial_files(args.out, OUTPUTS)  # what a killed run left half-written (no other run is writing)
    return args


def make_scheduler(name, optimizer, epochs):
    """The learning-rate schedule ``--lr-schedule`` names (None for the chapter's constant rate)."""
    if name == "step":
        return mg.optim.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    if name == "cosine":
        return mg.optim.CosineAnnealingLR(optimizer, T_max=epochs)
    return None


class Run:
    """One training run and its files in ``--out``, which never contradict each other.

    ``metrics.json`` says what state the run is in ("running", "completed", "diverged", "interrupted",
    "failed") and lists exactly the epochs that ``checkpoint.npz`` holds (both rewritten, atomically, after
    every epoch, the checkpoint first: a kill between the two leaves it one epoch ahead, and ``--resume``
    goes on from it, or finishes the run when it holds them all);
    ``model.npz`` and ``curves.png`` appear when the run completes (``curves.png`` also when it diverges).

    Nothing in ``--out`` is touched until the run has something to put there: everything (flags, data,
    checkpoint) is checked first, and the files of the run that was there before are replaced only when
    this run's first epoch ends (``claim``). A run that fails before that leaves them as they were.
    """

    def __init__(self, args):
        self.args = args
        self.path = {name: os.path.join(args.out, name) for name in OUTPUTS}
        config = {
            key: value
            for key, value in vars(args).items()
            if key not in ("no_progress", "no_plot", "debug", "resume", "lock")
        }
        self.metrics = {
            "impl": args.impl,
            "device": args.device,
            "config": config,
            "status": "starting",
            "data": None,
            "epochs": [],
            "final_test_acc": None,
            "timings": {},
        }
        self.model = self.optimizer = self.scheduler = self.train_loader = None
        self.claimed = False  # whether this run's files have replaced the previous ones in --out

    def claim(self):
        """Called once this run has written its first record: remove what would contradict it (the previous run's
        final weights and curves; its checkpoint too, unless this run has replaced it or continues it)."""
        if self.claimed:
            return
        self.claimed = True
        saved_none = not self.args.resume and not self.metrics["epochs"]
        self.remove("model.npz", "curves.png", *(("checkpoint.npz",) if saved_none else ()))

    def read_checkpoint(self):
        """The checkpoint this run resumes, checked whole (every record, array, shape and dtype) before any of
        it is used: a CheckpointError naming the file and what is wrong."""
        path = self.path["checkpoint.npz"]
        try:
            arrays, meta = load_checkpoint(path)
        except ValueError as error:
            raise CheckpointError(f"{error}; start afresh without --resume") from None
        expected_meta = {"epoch": int, "config": dict, "data": dict, "history": list, "rng": dict, "loader": dict}
        if self.optimizer is not None:
            expected_meta["optimizer"] = dict
        if self.scheduler is not None:
            expected_meta["scheduler"] = dict
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: its record is not a JSON object; start afresh without --resume")
        for key, kind in expected_meta.items():
            if not isinstance(meta.get(key), kind):
                found = "missing" if key not in meta else f"a {type(meta[key]).__name__}"
                raise CheckpointError(
                    f"{path}: its record's {key!r} is {found} (expected a {kind.__name__}); the "
                    f"file is damaged or from another program: start afresh without --resume"
                )
        if len(meta["history"]) != meta["epoch"] or not all(isinstance(r, dict) for r in meta["history"]):
            raise CheckpointError(
                f"{path}: its history does not hold its {meta['epoch']} epochs; start afresh without --resume"
            )
        if not isinstance(meta["rng"].get("unsaved"), list):
            raise CheckpointError(f"{path}: its random generators' state is incomplete; start afresh without --resume")
        expected = {f"model/{name}": value for name, value in self.model.state_dict().items()}
        if self.optimizer is not None:
            optimizer_state = meta["optimizer"].get("state")
            if not isinstance(optimizer_state, dict) or not isinstance(meta["optimizer"].get("param_groups"), list):
                raise CheckpointError(f"{path}: its optimizer record is incomplete; start afresh without --resume")
            parameters = list(self.model.parameters())
            for index, names in optimizer_state.items():
                if not (index.isdigit() and int(index) < len(parameters)) or not isinstance(names, list):
                    raise CheckpointError(
                        f"{path}: its optimizer state names parameter {index!r}, which the model "
                        f"does not have; start afresh without --resume"
                    )
                expected.update({f"optimizer/{index}/{name}": parameters[int(index)].data for name in names})
        missing = sorted(set(expected) - set(arrays))
        unexpected = sorted(set(arrays) - set(expected))
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(unexpected)}"] if unexpected else []
        )
        if problems:
            raise CheckpointError(f"{path}: {'; '.join(problems)}; start afresh without --resume")
        for name, reference in expected.items():
            array = arrays[name]
            if array.shape != reference.shape or array.dtype != reference.dtype:
                raise CheckpointError(
                    f"{path}: {name} is {array.dtype} of shape {array.shape}, the model needs "
                    f"{reference.dtype} of shape {reference.shape}; start afresh without --resume"
                )
            if not numpy.isfinite(array).all():
                raise CheckpointError(f"{path}: {name} holds NaN or infinite values; start afresh without --resume")
        return arrays, meta

    def completed(self, meta):
        """Whether --out holds the completed run of the checkpoint's epochs: metrics.json says "completed" with
        those epochs, and model.npz is there."""
        try:
            with open(self.path["metrics.json"]) as file:
                written = json.load(file)
        except (OSError, ValueError):
            return False
        if not isinstance(written, dict) or written.get("status") != "completed":
            return False
        epochs = written.get("epochs")
        return isinstance(epochs, list) and len(epochs) == meta["epoch"] and os.path.exists(self.path["model.npz"])

    def remove(self, *names):
        """Delete the named output files that exist."""
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path[name])

    def check_resumable(self, meta):
        """The checkpoint must come from the same run: the same settings and the same data, byte for byte."""
        saved, current = meta["config"], self.metrics["config"]
        keys = RUN_DEFINING + (("epochs",) if self.args.lr_schedule != "constant" else ())
        differ = [
            f"--{key.replace('_', '-')} {saved.get(key)} (now {current[key]})"
            for key in keys
            if saved.get(key) != current[key]
        ]
        if differ:
            raise ResumeError(
                f"{self.path['checkpoint.npz']} is from another run: it had {', '.join(differ)}; "
                f"resume with the same settings, or start afresh without --resume"
            )
        if sorted(meta["data"].values()) != sorted(self.metrics["data"]["sha256"].values()):
            raise ResumeError(
                f"{self.path['checkpoint.npz']} was trained on other data files than {self.metrics['data']['folders']}"
            )
        if meta["rng"]["unsaved"]:
            raise ResumeError(
                f"{self.path['checkpoint.npz']} comes from a run on {', '.join(meta['rng']['unsaved'])}, "
                f"whose random generator (CuPy's) cannot be saved, so the run cannot continue "
                f"exactly; start it afresh"
            )

    def save_epoch(self, record):
        """After each epoch: the checkpoint of exactly the epochs in metrics.json, then metrics.json (then, after
        the first, the previous run's files that would contradict them are removed: ``claim``)."""
        self.metrics["epochs"].append(record)
        self.metrics["final_test_acc"] = record["test_acc"]
        self.metrics["status"] = "running"
        arrays = {f"model/{name}": value for name, value in self.model.state_dict().items()}
        meta = {
            "epoch": record["epoch"],
            "config": self.metrics["config"],
            "data": self.metrics["data"]["sha256"],
            "history": self.metrics["epochs"],
            "rng": mg.get_rng_state(),
            "loader": self.train_loader.state_dict(),
        }
        if self.optimizer is not None:
            optimizer_state = self.optimizer.state_dict()
            meta["optimizer"] = {
                "param_groups": optimizer_state["param_groups"],
                "state": {str(i): sorted(entries) for i, entries in optimizer_state["state"].items()},
            }
            arrays.update(
                {
                    f"optimizer/{i}/{name}": value
                    for i, entries in optimizer_state["state"].items()
                    for name, value in entries.items()
                }
            )
        if self.scheduler is not None:
            meta["scheduler"] = self.scheduler.state_dict()
        save_checkpoint(self.path["checkpoint.npz"], arrays, meta)
        save_json(self.metrics, self.path["metrics.json"])
        self.claim()

    def restore(self, arrays, meta):
        """Put the model, optimizer, schedule and random generators where the checkpoint left them."""
        self.model.load_state_dict(
            {name[len("model/") :]: value for name, value in arrays.items() if name.startswith("model/")}
        )
        if self.optimizer is not None:
            self.optimizer.load_state_dict(
                {
                    "param_groups": meta["optimizer"]["param_groups"],
                    "state": {
                        int(i): {name: arrays[f"optimizer/{i}/{name}"] for name in names}
                        for i, names in meta["optimizer"]["state"].items()
                    },
                }
            )
        if self.scheduler is not None:
            self.scheduler.load_state_dict(meta["scheduler"])
        mg.set_rng_state(meta["rng"])
        self.train_loader.load_state_dict(meta["loader"])
        self.metrics["epochs"] = list(meta["history"])
        self.metrics["final_test_acc"] = meta["history"][-1]["test_acc"] if meta["history"] else None
        self.metrics["resumed_from_epoch"] = meta["epoch"]

    def finish(self, stopwatch):
        """Write a completed run's weights, curves and metrics (metrics last: "completed" means all are there)."""
        self.metrics["timings"] = stopwatch.summary()  # of the epochs trained in this process
        self.metrics["status"] = "completed"
        save_state_dict(self.model.state_dict(), self.path["model.npz"])
        self.plot(self.metrics["epochs"])
        save_json(self.metrics, self.path["metrics.json"])  # last: "completed" only once every file is there

    def plot(self, epochs, note=""):
        """Draw ``curves.png`` from the epochs' records, unless ``--no-plot``."""
        args = self.args
        if not args.no_plot and epochs:
            from minigrad.viz import plot_curves

            plot_curves(
                epochs,
                self.path["curves.png"],
                title=f"{args.impl}, dropout {args.dropout1}/{args.dropout2}, lr {args.lr}{note}",
            )

    def stop(self, status, reason, diverged_epoch=None):
        """Record why the run stopped, if it has written anything yet; a run that stopped before its first record
        leaves ``--out`` as it found it. A diverged epoch is kept beside the epochs, and drawn with them."""
        if status == "diverged":  # a result to show (the curve that diverged), so it replaces the previous run
            self.claim()
        if diverged_epoch is not None:
            self.metrics["diverged_epoch"] = diverged_epoch  # not in "epochs": the checkpoint is the epoch before
        if not self.claimed:
            return False
        self.metrics["status"] = status
        self.metrics["stopped"] = reason
        save_json(self.metrics, self.path["metrics.json"])
        if diverged_epoch is not None:
            self.plot(self.metrics["epochs"] + [diverged_epoch], f": diverged in epoch {diverged_epoch['epoch']}")
        return True


class ResumeError(ValueError):
    """--resume was given a checkpoint this run cannot continue."""


class CheckpointError(ResumeError):
    """--resume was given a checkpoint that is damaged or incomplete."""


def run(args):
    """Train as the flags say. Everything is read and checked before the first file is written in --out."""
    device = args.device
    mg.manual_seed(args.seed)
    outputs = Run(args)
    train_set = FashionMNIST(args.data_dir, train=True, verify=not args.skip_checksum, progress=not args.no_progress)
    test_set = FashionMNIST(args.data_dir, train=False, verify=not args.skip_checksum, progress=not args.no_progress)
    outputs.metrics["data"] = {
        "folders": {"train": train_set.root, "test": test_set.root},
        "sha256": {**train_set.files, **test_set.files},
    }
    if args.impl == "scratch":
        chapter_demo(device)  # here, before anything else draws: its draws come first in the seeded stream
    train_loader = DataLoader(train_set, args.batch_size, shuffle=True, device=device, limit=args.limit, seed=args.seed)
    test_loader = DataLoader(test_set, args.batch_size, device=device, limit=args.limit)
    outputs.train_loader = train_loader
    if args.impl == "scratch":
        outputs.model = ScratchMLP(args.hidden, args.dropout1, args.dropout2, device)
    else:
        outputs.model = concise_mlp(args.hidden, args.dropout1, args.dropout2, device)
        outputs.optimizer = mg.optim.SGD(outputs.model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        outputs.scheduler = make_scheduler(args.lr_schedule, outputs.optimizer, args.epochs)
    resume_from = None
    if args.resume:
        resume_from = arrays, meta = outputs.read_checkpoint()
        outputs.check_resumable(meta)
        if meta["epoch"] == args.epochs and not outputs.completed(meta):
            # stopped after its last checkpoint and before the files that end a run (a kill between two of its
            # writes): nothing to train, the run to finish from the checkpoint
            outputs.restore(arrays, meta)
            outputs.finish(Stopwatch(device))
            print(
                f"nothing to train: {outputs.path['checkpoint.npz']} holds all {meta['epoch']} epochs; the run had "
                f"not been finished: wrote {args.out}/metrics.json, model.npz",
                flush=True,
            )
            return outputs.metrics
        if meta["epoch"] >= args.epochs:
            print(
                f"nothing to do: {outputs.path['checkpoint.npz']} already holds {meta['epoch']} epochs (--epochs "
                f"{args.epochs}); to train longer, resume with a larger --epochs",
                flush=True,
            )
            return None
        try:  # every record was checked above; what remains (a generator's state, say) is checked by using it
            outputs.restore(arrays, meta)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"{outputs.path['checkpoint.npz']}: cannot be restored ({type(error).__name__}: "
                f"{error}); start afresh without --resume"
            ) from None

    def on_epoch_end(record):
        outputs.save_epoch(record)
        print(
            f"epoch {record['epoch']:3d}  train loss {record['train_loss']:.4f}  train acc {record['train_acc']:.4f}"
            f"  test acc {record['test_acc']:.4f}  {record['seconds']:.2f}s (+{record['eval_seconds']:.2f}s eval)",
            flush=True,
        )

    done = len(outputs.metrics["epochs"])
    folders = sorted(set(outputs.metrics["data"]["folders"].values()))
    print(
        f"{args.impl} MLP {NUM_INPUTS}-{args.hidden[0]}-{args.hidden[1]}-{NUM_OUTPUTS}, dropout "
        f"{args.dropout1}/{args.dropout2}, lr {args.lr}, batch {args.batch_size}, {args.epochs} epochs"
        f"{f' (resuming after epoch {done})' if resume_from else ''}, {train_loader.num_examples} training "
        f"examples from {', '.join(folders)} on {device}",
        flush=True,
    )
    try:
        if args.impl == "scratch":
            stopwatch = fit_scratch(
                outputs.model, train_loader, test_loader, args, on_epoch_end, outputs.metrics["epochs"]
            ).stopwatch
            outputs.metrics["step"] = "eager: --impl scratch runs its own loop"
        else:
            trainer = Trainer(
                outputs.model,
                outputs.optimizer,
                progress=not args.no_progress,
                eager=args.eager,
                scheduler=outputs.scheduler,
                loss_limit=DIVERGED_LOSS,
            )
            trainer.history = outputs.metrics["epochs"]
            trainer.fit(train_loader, test_loader, args.epochs - done, on_epoch_end)
            stopwatch = trainer.stopwatch
            outputs.metrics["step"] = trainer.step_kind
    except TrainingDiverged as error:
        outputs.stop("diverged", str(error), error.record)
        raise
    except KeyboardInterrupt as interrupt:
        if not outputs.stop("interrupted", "interrupted (Ctrl-C)") and not args.resume:
            interrupt.nothing_kept = True  # the checkpoint in --out, if any, is the previous run's
        raise
    except Exception as error:
        outputs.stop("failed", f"{type(error).__name__}: {error}")
        raise
    outputs.finish(stopwatch)
    metrics = outputs.metrics
    for name, timing in metrics["timings"].items():
        unit, scale = ("ms", 1000) if name == "step" else ("s", 1)
        print(f"{name:8s} P50 {timing['p50'] * scale:8.3f} {unit}   P90 {timing['p90'] * scale:8.3f} {unit}")
    print(
        f"final test accuracy {metrics['final_test_acc']:.4f}; wrote {args.out}/metrics.json, model.npz"
        + ("" if args.no_plot else ", curves.png")
        + ", checkpoint.npz"
    )
    return metrics


def main(argv=None):
    """The command line: parse and check every flag, then train; returns the exit status."""
    args = parse_args(argv)
    allocator.keep_freed_memory()  # this command owns the process: keep freed memory for the next batch
    try:
        run(args)
    except KeyboardInterrupt as interrupt:
        if args.debug:
            raise
        kept = None if getattr(interrupt, "nothing_kept", False) else _checkpoint_epoch(args.out)
        where = (
            f"kept epoch {kept} in {args.out}/checkpoint.npz; continue with --resume"
            if kept
            else "no epoch had finished, so nothing was kept"
        )
        print(f"interrupted: {where}", file=sys.stderr)
        return 130
    except (mg.DeviceError, DatasetError, IDXFormatError, TrainingDiverged, ValueError, OSError) as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        cli.unlock_folder(args.lock)
    return 0


def _checkpoint_epoch(folder):
    try:
        return load_checkpoint(os.path.join(folder, "checkpoint.npz"))[1]["epoch"]
    except (OSError, ValueError, KeyError):
        return None


if __name__ == "__main__":
    sys.exit(main())
