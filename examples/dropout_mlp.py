"""Section 4.6 end to end: the chapter's MLP with dropout, trained on Fashion-MNIST.

    python -m examples.dropout_mlp [--device cpu|cuda|cuda:N] [--impl concise|scratch] [--epochs 10] ...

``--impl scratch`` follows section 4.6.4 (explicit parameters, a hand-written ``dropout_layer``,
``net(X, is_training)``, a plain loop with a manual SGD update); ``--impl concise`` (the default)
follows section 4.6.5 (``nn.Sequential``, ``optim.SGD`` and the library's ``Trainer``).
Writes ``metrics.json``, ``curves.png`` and ``model.npz`` into ``--out``.
"""
import argparse
import math
import os
import sys

import minigrad as mg
import minigrad.nn.functional as F
from minigrad import nn
from minigrad.data import DataLoader, DatasetError, FashionMNIST, IDXFormatError
from minigrad.io import save_json, save_state_dict
from minigrad.train import EpochProgress, Stopwatch, Trainer, TrainingDiverged, correct_count, evaluate_predictions

NUM_INPUTS, NUM_OUTPUTS = 784, 10


# --- section 4.6.4: dropout from scratch --------------------------------------------------------

def dropout_layer(X, dropout):
    """Eq. (4.6.1) with Tensor operations only: keep where U[0, 1) > p, scale survivors by 1 / (1 - p)."""
    if dropout == 1.0:  # every element is dropped
        return X * 0.0
    if dropout == 0.0:  # every element is kept
        return X
    mask = mg.rand(*X.shape, device=X.device) > dropout
    return X * mask / (1.0 - dropout)


class ScratchMLP:
    """The chapter's parameters W1, b1, W2, b2, W3, b3 and its ``net(X, is_training)``."""

    def __init__(self, hidden, dropout1, dropout2, device):
        sizes = [NUM_INPUTS, *hidden, NUM_OUTPUTS]
        self.params = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            W = mg.randn(fan_in, fan_out, device=device) * 0.01  # N(0, 0.01^2)
            W.requires_grad = True
            self.params += [W, mg.zeros(fan_out, device=device, requires_grad=True)]
        self.dropout1, self.dropout2 = dropout1, dropout2

    def net(self, X, is_training):
        W1, b1, W2, b2, W3, b3 = self.params
        X = X.reshape(-1, NUM_INPUTS)
        H1 = (X @ W1 + b1).relu()
        if is_training:
            H1 = dropout_layer(H1, self.dropout1)
        H2 = (H1 @ W2 + b2).relu()
        if is_training:
            H2 = dropout_layer(H2, self.dropout2)
        return H2 @ W3 + b3

    def sgd(self, lr):
        """The update w <- w - lr * dL/dw (the loss is a batch mean, so no division by the batch size)."""
        for param in self.params:
            param.data -= lr * param.grad
            param.grad = None

    def state_dict(self):
        return {name: p.data for name, p in zip(["W1", "b1", "W2", "b2", "W3", "b3"], self.params)}


def chapter_demo(device):
    X = mg.arange(16.0, device=device).reshape(2, 8)
    for p in (0.0, 0.5, 1.0):
        print(f"dropout_layer(X, {p}):\n{dropout_layer(X, p).numpy()}")


def fit_scratch(model, train_loader, test_loader, args, on_epoch_end):
    """The chapter's plain training loop."""
    clock, history = Stopwatch(args.device), []

    for epoch in range(1, args.epochs + 1):
        bar = EpochProgress(len(train_loader), epoch, args.device, not args.no_progress)
        epoch_start = clock.now()
        for X, y in train_loader:
            t0 = clock.mark()
            y_hat = model.net(X, is_training=True)
            loss = F.cross_entropy(y_hat, y)
            t1 = clock.mark()
            loss.backward()
            t2 = clock.mark()
            model.sgd(args.lr)
            t3 = clock.mark()
            clock.record_step(t0, t1, t2, t3)
            bar.update(loss.data, correct_count(y_hat, y), len(y))
        seconds = clock.end_epoch(epoch_start)
        train_loss, train_acc = bar.close()
        eval_start = clock.now()
        test = evaluate_predictions(lambda X: model.net(X, is_training=False), test_loader)
        record = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "seconds": seconds,
                  "test_loss": test["loss"], "test_acc": test["acc"], "eval_seconds": clock.now() - eval_start}
        history.append(record)
        on_epoch_end(record)
    return history, clock


# --- section 4.6.5: the concise implementation ----------------------------------------------------

def concise_mlp(hidden, dropout1, dropout2, device):
    return nn.Sequential(
        nn.Linear(NUM_INPUTS, hidden[0], device=device), nn.ReLU(), nn.Dropout(dropout1),
        nn.Linear(hidden[0], hidden[1], device=device), nn.ReLU(), nn.Dropout(dropout2),
        nn.Linear(hidden[1], NUM_OUTPUTS, device=device))


# --- the command line -------------------------------------------------------------------------------

class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag prints one line (what is wrong) and exits 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(kind, check, requirement):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__ if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value
    return parse


probability = _number(float, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
positive_float = _number(float, lambda v: v > 0 and math.isfinite(v), "> 0")
non_negative_float = _number(float, lambda v: v >= 0 and math.isfinite(v), ">= 0")
positive_int = _number(int, lambda v: v >= 1, "at least 1")


def device_name(text):
    try:
        return mg.backend.parse_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser():
    parser = OneLineParser(prog="python -m examples.dropout_mlp", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    add("--impl", choices=["concise", "scratch"], default="concise", help="section 4.6.5 or 4.6.4 (default: concise)")
    add("--epochs", type=positive_int, default=None, help="default: $MAX_EPOCH or 10")
    add("--lr", type=positive_float, default=0.5, help="SGD learning rate (default: 0.5)")
    add("--batch-size", type=positive_int, default=256)
    add("--dropout1", type=probability, default=0.2, help="dropout after the first hidden layer (default: 0.2)")
    add("--dropout2", type=probability, default=0.5, help="dropout after the second hidden layer (default: 0.5)")
    add("--hidden", type=positive_int, nargs=2, default=[256, 256], metavar=("H1", "H2"))
    add("--weight-decay", type=non_negative_float, default=0.0)
    add("--lr-schedule", choices=["constant", "step", "cosine"], default="constant",
        help="constant (the chapter), step (x0.1 after each third of the epochs) or cosine (to 0 at the last "
             "epoch); concise only")
    add("--limit", type=positive_int, default=None, help="use the first N examples of each split "
                                                         "(default: $DATASET_LIMIT or all)")
    add("--seed", type=int, default=0)
    add("--data-dir", default=None, help="folder with the four Fashion-MNIST IDX files (gzip'd or not)")
    add("--skip-checksum", action="store_true", help="accept IDX files that are not the official ones")
    add("--out", default=os.path.join("runs", "dropout_mlp"), help="output folder (default: runs/dropout_mlp)")
    add("--no-progress", action="store_true", help="no progress bars")
    add("--no-plot", action="store_true", help="do not draw curves.png")
    add("--debug", action="store_true", help="show tracebacks")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.impl == "scratch" and (args.lr_schedule != "constant" or args.weight_decay):
        parser.error("--lr-schedule and --weight-decay are implemented for --impl concise only")
    for flag, variable, default in (("epochs", "MAX_EPOCH", 10), ("limit", "DATASET_LIMIT", None)):
        if getattr(args, flag) is None:
            text = os.environ.get(variable)
            if text is None:
                setattr(args, flag, default)
                continue
            try:
                setattr(args, flag, positive_int(text))
            except argparse.ArgumentTypeError as error:
                parser.error(f"environment variable {variable}: {error}")
    return args


def make_scheduler(name, optimizer, epochs):
    if name == "step":
        return mg.optim.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    if name == "cosine":
        return mg.optim.CosineAnnealingLR(optimizer, T_max=epochs)
    return None


def run(args):
    device = mg.backend.check_device(args.device)  # a clear DeviceError before any work
    mg.manual_seed(args.seed)
    if args.impl == "scratch":
        chapter_demo(device)
    train_set = FashionMNIST(args.data_dir, train=True, verify=not args.skip_checksum, progress=not args.no_progress)
    test_set = FashionMNIST(args.data_dir, train=False, verify=not args.skip_checksum, progress=not args.no_progress)
    train_loader = DataLoader(train_set, args.batch_size, shuffle=True, device=device, limit=args.limit,
                              seed=args.seed)
    test_loader = DataLoader(test_set, args.batch_size, device=device, limit=args.limit)
    config = {key: value for key, value in vars(args).items() if key not in ("no_progress", "no_plot", "debug")}
    metrics = {"impl": args.impl, "device": device, "config": config, "epochs": [], "final_test_acc": None,
               "timings": {}}
    metrics_path = os.path.join(args.out, "metrics.json")

    def on_epoch_end(record):
        metrics["epochs"].append(record)
        metrics["final_test_acc"] = record["test_acc"]
        save_json(metrics, metrics_path)  # after every epoch, atomically: a crash leaves the last good state
        print(f"epoch {record['epoch']:3d}  train loss {record['train_loss']:.4f}  train acc {record['train_acc']:.4f}"
              f"  test acc {record['test_acc']:.4f}  {record['seconds']:.2f}s (+{record['eval_seconds']:.2f}s eval)",
              flush=True)

    print(f"{args.impl} MLP {NUM_INPUTS}-{args.hidden[0]}-{args.hidden[1]}-{NUM_OUTPUTS}, dropout "
          f"{args.dropout1}/{args.dropout2}, lr {args.lr}, batch {args.batch_size}, {args.epochs} epochs, "
          f"{train_loader.num_examples} training examples on {device}", flush=True)
    try:
        if args.impl == "scratch":
            model = ScratchMLP(args.hidden, args.dropout1, args.dropout2, device)
            _, stopwatch = fit_scratch(model, train_loader, test_loader, args, on_epoch_end)
        else:
            model = concise_mlp(args.hidden, args.dropout1, args.dropout2, device)
            optimizer = mg.optim.SGD(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
            trainer = Trainer(model, optimizer, device=device, progress=not args.no_progress,
                              scheduler=make_scheduler(args.lr_schedule, optimizer, args.epochs))
            trainer.fit(train_loader, test_loader, args.epochs, on_epoch_end)
            stopwatch = trainer.stopwatch
    except TrainingDiverged as error:
        metrics["stopped"] = str(error)
        save_json(metrics, metrics_path)
        raise
    metrics["timings"] = stopwatch.summary()
    save_json(metrics, metrics_path)
    save_state_dict(model.state_dict(), os.path.join(args.out, "model.npz"))
    if not args.no_plot:
        from minigrad.plot import plot_curves
        plot_curves(metrics["epochs"], os.path.join(args.out, "curves.png"),
                    title=f"{args.impl}, dropout {args.dropout1}/{args.dropout2}, lr {args.lr}")
    for name, timing in metrics["timings"].items():
        unit, scale = ("s", 1) if name == "epoch" else ("ms", 1000)
        print(f"{name:8s} P50 {timing['p50'] * scale:8.3f} {unit}   P90 {timing['p90'] * scale:8.3f} {unit}")
    print(f"final test accuracy {metrics['final_test_acc']:.4f}; wrote {args.out}/metrics.json, model.npz"
          + ("" if args.no_plot else ", curves.png"))
    return metrics


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except (mg.DeviceError, DatasetError, IDXFormatError, TrainingDiverged, ValueError, OSError) as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
