"""Section 4.6 end to end: the chapter's MLP with dropout, trained on Fashion-MNIST.

    python -m examples.dropout_mlp [--device cpu|cuda|cuda:N] [--impl concise|scratch] [--epochs 10] ...

``--impl scratch`` follows section 4.6.4 (explicit parameters, a hand-written ``dropout_layer``,
``net(X, is_training)``, a plain loop with a manual SGD update); ``--impl concise`` (the default)
follows section 4.6.5 (``nn.Sequential``, ``optim.SGD`` and the library's ``Trainer``).
Writes ``metrics.json`` and ``checkpoint.npz`` into ``--out`` after every epoch, and ``model.npz`` and
``curves.png`` at the end. Ctrl-C keeps the last finished epoch; ``--resume`` continues from it and ends
with the same numbers and weights as an uninterrupted run.
"""
import argparse
import contextlib
import os
import sys

import minigrad as mg
import minigrad.nn.functional as F
from examples.chapter import (BATCH_SIZE, DROPOUT1, DROPOUT2, LR, NUM_EPOCHS, NUM_HIDDENS, NUM_INPUTS, NUM_OUTPUTS,
                              ScratchMLP, concise_mlp, dropout_layer)
from minigrad import cli
from minigrad.checkpoint import load_checkpoint, save_checkpoint, save_json, save_state_dict
from minigrad.data import DataLoader, DatasetError, FashionMNIST, IDXFormatError
from minigrad.monitor import Monitor, TrainingDiverged
from minigrad.train import Trainer, evaluate_predictions


def chapter_demo(device):
    X = mg.arange(16.0, device=device).reshape(2, 8)
    for p in (0.0, 0.5, 1.0):
        print(f"dropout_layer(X, {p}):\n{dropout_layer(X, p).numpy()}")


def fit_scratch(model, train_loader, test_loader, args, on_epoch_end, history=()):
    """Section 4.6.4's training loop (continuing after ``history``'s epochs when resuming).

    The step is the chapter's four lines; the timings, progress bar and each epoch's record come from
    the Monitor that ``Trainer`` uses too.
    """
    monitor = Monitor(args.device, progress=not args.no_progress)
    monitor.history = list(history)
    for epoch in range(len(history) + 1, args.epochs + 1):
        for X, y in monitor.epoch(train_loader, epoch):
            y_hat = model.net(X, is_training=True)
            loss = F.cross_entropy(y_hat, y)
            loss.backward()
            model.sgd(args.lr)
            monitor.step(loss, y_hat, y)
        record = monitor.end_epoch(lambda: evaluate_predictions(lambda X: model.net(X, is_training=False),
                                                                test_loader))
        on_epoch_end(record)
    return monitor


# --- the command line -------------------------------------------------------------------------------

# What a run's numbers depend on: --resume refuses a checkpoint whose run differed in any of these.
RUN_DEFINING = ("impl", "device", "lr", "batch_size", "dropout1", "dropout2", "hidden", "weight_decay",
                "lr_schedule", "limit", "seed", "skip_checksum")
OUTPUTS = ("metrics.json", "checkpoint.npz", "model.npz", "curves.png")


def build_parser():
    parser = cli.OneLineParser(prog="python -m examples.dropout_mlp", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--device", type=cli.device_name, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    add("--impl", choices=["concise", "scratch"], default="concise", help="section 4.6.5 or 4.6.4 (default: concise)")
    add("--epochs", type=cli.positive_int, default=None, help=f"default: $MAX_EPOCH or {NUM_EPOCHS}")
    add("--lr", type=cli.positive_float, default=LR, help=f"SGD learning rate (default: {LR})")
    add("--batch-size", type=cli.positive_int, default=BATCH_SIZE)
    add("--dropout1", type=cli.probability, default=DROPOUT1,
        help=f"dropout after the first hidden layer (default: {DROPOUT1})")
    add("--dropout2", type=cli.probability, default=DROPOUT2,
        help=f"dropout after the second hidden layer (default: {DROPOUT2})")
    add("--hidden", type=cli.positive_int, nargs=2, default=list(NUM_HIDDENS), metavar=("H1", "H2"))
    add("--weight-decay", type=cli.non_negative_float, default=0.0)
    add("--lr-schedule", choices=["constant", "step", "cosine"], default="constant",
        help="constant (the chapter), step (x0.1 after each third of the epochs) or cosine (to 0 at the last "
             "epoch); concise only")
    add("--limit", type=cli.positive_int, default=None, help="use the first N examples of each split "
                                                             "(default: $DATASET_LIMIT or all)")
    add("--seed", type=cli.seed, default=0)
    add("--data-dir", default=None, help="the folder with the four Fashion-MNIST IDX files (gzip'd or not): the only "
                                         "place looked in (default: the search path, see the README)")
    add("--skip-checksum", action="store_true", help="accept IDX files that are not the official ones")
    add("--out", default=os.path.join("runs", "dropout_mlp"), help="output folder (default: runs/dropout_mlp)")
    add("--resume", action="store_true", help="continue the run whose checkpoint.npz is in --out")
    add("--capture", action=argparse.BooleanOptionalAction, default=None,
        help="capture the training step and the evaluation as CUDA graphs and replay them (default: on a GPU, "
             "for --impl concise); --no-capture runs eagerly, for comparison")
    add("--no-progress", action="store_true", help="no progress bars")
    add("--no-plot", action="store_true", help="do not draw curves.png")
    add("--debug", action="store_true", help="show tracebacks")
    return parser


def parse_args(argv=None):
    """The flags, every one checked (files, device and memory too) before any work starts."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.impl == "scratch" and (args.lr_schedule != "constant" or args.weight_decay or args.capture):
        parser.error("--lr-schedule, --weight-decay and --capture are implemented for --impl concise only")
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
    cli.check_mlp_fits(parser, [NUM_INPUTS, *args.hidden, NUM_OUTPUTS], min(args.batch_size, args.limit or 60000),
                       args.device)
    if args.resume and not os.path.isfile(os.path.join(args.out, "checkpoint.npz")):
        parser.error(f"argument --resume: there is no checkpoint.npz in {args.out!r} to resume from")
    cli.check_writable_folder(parser, args.out)
    return args


def make_scheduler(name, optimizer, epochs):
    if name == "step":
        return mg.optim.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    if name == "cosine":
        return mg.optim.CosineAnnealingLR(optimizer, T_max=epochs)
    return None


class Run:
    """One training run and its files in ``--out``, which never contradict each other.

    ``metrics.json`` says what state the run is in ("running", "completed", "diverged", "interrupted",
    "failed") and lists exactly the epochs that ``checkpoint.npz`` holds (both rewritten, atomically, after
    every epoch);
    ``model.npz`` and ``curves.png`` appear only when the run completes. A fresh run first removes the
    previous run's files from ``--out``.
    """

    def __init__(self, args):
        self.args = args
        self.path = {name: os.path.join(args.out, name) for name in OUTPUTS}
        config = {key: value for key, value in vars(args).items()
                  if key not in ("no_progress", "no_plot", "debug", "resume")}
        self.metrics = {"impl": args.impl, "device": args.device, "config": config, "status": "starting",
                        "data": None, "epochs": [], "final_test_acc": None, "timings": {}}
        self.model = self.optimizer = self.scheduler = self.train_loader = None

    def start(self):
        """Remove the previous run's files, or (with --resume) read the checkpoint this run continues from."""
        if not self.args.resume:
            self.remove("metrics.json", "checkpoint.npz", "model.npz", "curves.png")
            return None
        return load_checkpoint(self.path["checkpoint.npz"])

    def remove(self, *names):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path[name])

    def check_resumable(self, meta):
        """The checkpoint must come from the same run: the same settings and the same data, byte for byte."""
        saved, current = meta["config"], self.metrics["config"]
        keys = RUN_DEFINING + (("epochs",) if self.args.lr_schedule != "constant" else ())
        differ = [f"--{key.replace('_', '-')} {saved.get(key)} (now {current[key]})" for key in keys
                  if saved.get(key) != current[key]]
        if differ:
            raise ResumeError(f"{self.path['checkpoint.npz']} is from another run: it had {', '.join(differ)}; "
                              f"resume with the same settings, or start afresh without --resume")
        if sorted(meta["data"].values()) != sorted(self.metrics["data"]["sha256"].values()):
            raise ResumeError(f"{self.path['checkpoint.npz']} was trained on other data files than "
                              f"{self.metrics['data']['folders']}")
        if meta["rng"]["unsaved"]:
            raise ResumeError(f"{self.path['checkpoint.npz']} comes from a run on {', '.join(meta['rng']['unsaved'])}, "
                              f"whose random generator (CuPy's) cannot be saved, so the run cannot continue "
                              f"exactly; start it afresh")

    def save_epoch(self, record):
        """After each epoch: the checkpoint of exactly the epochs in metrics.json, then metrics.json."""
        self.metrics["epochs"].append(record)
        self.metrics["final_test_acc"] = record["test_acc"]
        self.metrics["status"] = "running"
        arrays = {f"model/{name}": value for name, value in self.model.state_dict().items()}
        meta = {"epoch": record["epoch"], "config": self.metrics["config"], "data": self.metrics["data"]["sha256"],
                "history": self.metrics["epochs"], "rng": mg.get_rng_state(),
                "loader": self.train_loader.state_dict()}
        if self.optimizer is not None:
            optimizer_state = self.optimizer.state_dict()
            meta["optimizer"] = {"param_groups": optimizer_state["param_groups"],
                                 "state": {str(i): sorted(entries) for i, entries in optimizer_state["state"].items()}}
            arrays.update({f"optimizer/{i}/{name}": value for i, entries in optimizer_state["state"].items()
                           for name, value in entries.items()})
        if self.scheduler is not None:
            meta["scheduler"] = self.scheduler.state_dict()
        save_checkpoint(self.path["checkpoint.npz"], arrays, meta)
        save_json(self.metrics, self.path["metrics.json"])

    def restore(self, arrays, meta):
        """Put the model, optimizer, schedule and random generators where the checkpoint left them."""
        self.remove("model.npz", "curves.png")  # a completed run being extended is not completed any more
        self.model.load_state_dict({name[len("model/"):]: value for name, value in arrays.items()
                                    if name.startswith("model/")})
        if self.optimizer is not None:
            self.optimizer.load_state_dict({
                "param_groups": meta["optimizer"]["param_groups"],
                "state": {int(i): {name: arrays[f"optimizer/{i}/{name}"] for name in names}
                          for i, names in meta["optimizer"]["state"].items()}})
        if self.scheduler is not None:
            self.scheduler.load_state_dict(meta["scheduler"])
        mg.set_rng_state(meta["rng"])
        self.train_loader.load_state_dict(meta["loader"])
        self.metrics["epochs"] = list(meta["history"])
        self.metrics["final_test_acc"] = meta["history"][-1]["test_acc"] if meta["history"] else None
        self.metrics["resumed_from_epoch"] = meta["epoch"]

    def finish(self, stopwatch):
        args = self.args
        self.metrics["timings"] = stopwatch.summary()  # of the epochs trained in this process
        self.metrics["status"] = "completed"
        save_state_dict(self.model.state_dict(), self.path["model.npz"])
        if not args.no_plot:
            from minigrad.viz import plot_curves
            plot_curves(self.metrics["epochs"], self.path["curves.png"],
                        title=f"{args.impl}, dropout {args.dropout1}/{args.dropout2}, lr {args.lr}")
        save_json(self.metrics, self.path["metrics.json"])  # last: "completed" only once every file is there

    def stop(self, status, reason):
        self.metrics["status"] = status
        self.metrics["stopped"] = reason
        save_json(self.metrics, self.path["metrics.json"])


class ResumeError(ValueError):
    """--resume was given a checkpoint this run cannot continue."""


def run(args):
    device = args.device
    mg.manual_seed(args.seed)
    outputs = Run(args)
    resume_from = outputs.start()
    if args.impl == "scratch":
        chapter_demo(device)
    train_set = FashionMNIST(args.data_dir, train=True, verify=not args.skip_checksum, progress=not args.no_progress)
    test_set = FashionMNIST(args.data_dir, train=False, verify=not args.skip_checksum, progress=not args.no_progress)
    outputs.metrics["data"] = {"folders": {"train": train_set.root, "test": test_set.root},
                               "sha256": {**train_set.files, **test_set.files}}
    train_loader = DataLoader(train_set, args.batch_size, shuffle=True, device=device, limit=args.limit,
                              seed=args.seed)
    test_loader = DataLoader(test_set, args.batch_size, device=device, limit=args.limit)
    outputs.train_loader = train_loader
    if args.impl == "scratch":
        outputs.model = ScratchMLP(args.hidden, args.dropout1, args.dropout2, device)
    else:
        outputs.model = concise_mlp(args.hidden, args.dropout1, args.dropout2, device)
        outputs.optimizer = mg.optim.SGD(outputs.model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        outputs.scheduler = make_scheduler(args.lr_schedule, outputs.optimizer, args.epochs)
    if resume_from is not None:
        arrays, meta = resume_from
        outputs.check_resumable(meta)
        outputs.restore(arrays, meta)

    def on_epoch_end(record):
        outputs.save_epoch(record)
        print(f"epoch {record['epoch']:3d}  train loss {record['train_loss']:.4f}  train acc {record['train_acc']:.4f}"
              f"  test acc {record['test_acc']:.4f}  {record['seconds']:.2f}s (+{record['eval_seconds']:.2f}s eval)",
              flush=True)

    outputs.metrics["status"] = "running"
    save_json(outputs.metrics, outputs.path["metrics.json"])
    done = len(outputs.metrics["epochs"])
    print(f"{args.impl} MLP {NUM_INPUTS}-{args.hidden[0]}-{args.hidden[1]}-{NUM_OUTPUTS}, dropout "
          f"{args.dropout1}/{args.dropout2}, lr {args.lr}, batch {args.batch_size}, {args.epochs} epochs"
          f"{f' (resuming after epoch {done})' if resume_from else ''}, {train_loader.num_examples} training "
          f"examples on {device}", flush=True)
    try:
        if args.impl == "scratch":
            stopwatch = fit_scratch(outputs.model, train_loader, test_loader, args, on_epoch_end,
                                    outputs.metrics["epochs"]).stopwatch
            outputs.metrics["capture"] = "off: --impl scratch runs its own loop, eagerly"
        else:
            trainer = Trainer(outputs.model, outputs.optimizer, progress=not args.no_progress, capture=args.capture,
                              scheduler=outputs.scheduler)
            trainer.history = outputs.metrics["epochs"]
            trainer.fit(train_loader, test_loader, args.epochs - done, on_epoch_end)
            stopwatch = trainer.stopwatch
            outputs.metrics["capture"] = "on" if trainer.captured is not None else f"off: {trainer.capture_off}"
    except TrainingDiverged as error:
        if error.record is not None:
            outputs.metrics["diverged_epoch"] = error.record  # not in "epochs": the checkpoint is the epoch before
        outputs.stop("diverged", str(error))
        raise
    except KeyboardInterrupt:
        outputs.stop("interrupted", "interrupted (Ctrl-C)")
        raise
    except Exception as error:
        outputs.stop("failed", f"{type(error).__name__}: {error}")
        raise
    outputs.finish(stopwatch)
    metrics = outputs.metrics
    for name, timing in metrics["timings"].items():
        unit, scale = ("ms", 1000) if name == "step" else ("s", 1)
        print(f"{name:8s} P50 {timing['p50'] * scale:8.3f} {unit}   P90 {timing['p90'] * scale:8.3f} {unit}")
    print(f"final test accuracy {metrics['final_test_acc']:.4f}; wrote {args.out}/metrics.json, model.npz"
          + ("" if args.no_plot else ", curves.png") + ", checkpoint.npz")
    return metrics


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        kept = _checkpoint_epoch(args.out)
        where = (f"kept epoch {kept} in {args.out}/checkpoint.npz; continue with --resume" if kept else
                 "no epoch had finished, so nothing was kept")
        print(f"interrupted: {where}", file=sys.stderr)
        return 130
    except (mg.DeviceError, DatasetError, IDXFormatError, TrainingDiverged, ValueError, OSError) as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _checkpoint_epoch(folder):
    try:
        return load_checkpoint(os.path.join(folder, "checkpoint.npz"))[1]["epoch"]
    except (OSError, ValueError, KeyError):
        return None


if __name__ == "__main__":
    sys.exit(main())
