"""The data every run shares, one training run, and the runs of several settings over several seeds."""

import time

import minigrad as mg
from minigrad.chapter.model import BATCH_SIZE
from minigrad.data import DataLoader, FashionMNIST
from minigrad.data.synthetic import synthetic_fashion
from minigrad.train import Trainer, evaluate

from .settings import build_model, optimizer_for
from .summaries import summarise


class Data:
    """The datasets and loaders shared by every run of an experiment (each dataset is placed on the device once)."""

    def __init__(self, args):
        if args.quick:
            train, test = synthetic_fashion(3000, seed=0), synthetic_fashion(500, seed=1)
        else:
            train = FashionMNIST(args.data_dir, train=True, progress=False)
            test = FashionMNIST(args.data_dir, train=False, progress=False)
        self.train_set, self.test_set, self.device, self.limit = train, test, args.device, args.limit
        self.test = DataLoader(test, 1000, device=args.device, limit=args.limit)
        # Accuracy on training data in eval mode (dropout off), on a fixed 10,000 examples, for the gap.
        self.train_eval = DataLoader(train, 1000, device=args.device, limit=min(args.limit or 10_000, 10_000))

    def train_loader(self, seed):
        """A shuffling loader over the training set, its order drawn from ``seed``."""
        return DataLoader(self.train_set, BATCH_SIZE, shuffle=True, device=self.device, limit=self.limit, seed=seed)


def train_run(setting, seed, data, args, epochs, on_epoch_end=None):
    """Train one model; return (model, history). Each history entry also has train_eval_acc and the gap."""
    mg.manual_seed(seed)
    model = build_model(setting, args.hidden, args.device)
    trainer = Trainer(model, optimizer_for(model, setting, args.lr), progress=False)

    def record(entry):
        entry["train_eval_acc"] = evaluate(model, data.train_eval)["acc"]
        entry["gap"] = entry["train_eval_acc"] - entry["test_acc"]
        if on_epoch_end:
            on_epoch_end(entry)

    trainer.fit(data.train_loader(seed), data.test, epochs, on_epoch_end=record)
    return model, trainer.history


class Runs:
    """Every setting on every seed, each (setting, seed, epochs) trained once: ``all`` meets the same run (the
    chapter's dropout, seed 0) in several experiments."""

    def __init__(self, data, args, log):
        self.data, self.args, self.log = data, args, log
        self.histories = {}  # (setting, seed, epochs) -> history

    def history(self, setting, seed, epochs):
        """The per-epoch records of ``setting`` trained from ``seed`` for ``epochs`` (trained once, then cached)."""
        key = (setting, seed, epochs)
        if key not in self.histories:
            self.histories[key] = train_run(setting, seed, self.data, self.args, epochs)[1]
        return self.histories[key]

    def of(self, settings, epochs):
        """{setting: {"histories": [one per seed], "summary": summarise(histories)}}, in the order given."""
        results = {}
        for setting in settings:
            histories = []
            for seed in self.args.seeds:
                started = time.perf_counter()
                history = self.history(setting, seed, epochs)
                histories.append(history)
                self.log(
                    f"  {setting.label:34s} seed {seed}: final test acc {history[-1]['test_acc']:.4f}, "
                    f"best {max(e['test_acc'] for e in history):.4f}, gap {history[-1]['gap']:+.4f} "
                    f"({time.perf_counter() - started:.0f}s)"
                )
            results[setting] = {"histories": histories, "summary": summarise(histories)}
        return results


def to_json(results):
    """results.json's form of ``Runs.of``'s results: keyed by label, each with its setting, summary and histories."""
    return {
        setting.label: {"config": setting.as_dict(), "summary": result["summary"], "histories": result["histories"]}
        for setting, result in results.items()
    }
