"""The chapter's exercises (section 4.6.7) as experiments anyone can rerun.

    python -m examples.dropout_experiments NAME [--epochs N] [--seeds 0 1 2] [--device cpu] [--limit N]
                                                [--out DIR] [--quick]

NAME is one of swap, with-without, variance, test-time, weight-decay, dropconnect, noise, mc-dropout, or
all. Each experiment writes ``DIR/NAME/results.json``, ``report.md`` (the numbers, a conclusion computed
from them, and the exact command) and PNG plots. ``--quick`` trains on a small synthetic dataset for a
few epochs: for tests, not for conclusions.
"""
import json
import math
import os
import shlex
import sys
import time

import numpy

import minigrad as mg
from minigrad import cli, nn
from minigrad.data import DataLoader, DatasetError, FashionMNIST, IDXFormatError
from minigrad.data.synthetic import synthetic_fashion
from minigrad.checkpoint import atomic_write, save_json
from minigrad.monitor import TrainingDiverged
from minigrad.train import Trainer, evaluate, evaluate_predictions
from minigrad.uncertainty import calibration, mc_dropout_probabilities, predictive_entropy
from minigrad.viz import pyplot, save_figure

CHAPTER = {"noise": "dropout", "p1": 0.2, "p2": 0.5, "weight_decay": 0.0, "label": "dropout (0.2, 0.5)"}
NONE = {"noise": "dropout", "p1": 0.0, "p2": 0.0, "weight_decay": 0.0, "label": "no dropout"}


# --- the model and one training run ------------------------------------------------------------------

def build_model(config, hidden, device):
    """The chapter's MLP with the noise of ``config`` after each hidden layer (or on the weights)."""
    noise, p1, p2 = config["noise"], config.get("p1", 0.0), config.get("p2", 0.0)

    def linear(fan_in, fan_out, p=0.0):
        if noise == "dropconnect":
            return nn.DropConnect(fan_in, fan_out, p=p, device=device)
        return nn.Linear(fan_in, fan_out, device=device)

    def after_hidden(p):
        return {"dropout": lambda: nn.Dropout(p), "dropconnect": lambda: nn.Dropout(0.0),
                "gaussian-dropout": lambda: nn.GaussianDropout(p), "uniform-noise": lambda: nn.UniformNoise(p),
                "hidden-noise": lambda: nn.GaussianNoise(config["sigma"]),
                "input-noise": lambda: nn.Dropout(0.0)}[noise]()

    first = [nn.GaussianNoise(config["sigma"])] if noise == "input-noise" else []
    return nn.Sequential(*first,
                         linear(784, hidden[0]), nn.ReLU(), after_hidden(p1),
                         linear(hidden[0], hidden[1], p1), nn.ReLU(), after_hidden(p2),
                         linear(hidden[1], 10, p2))


def optimizer_for(model, config, lr):
    """SGD; weight decay (when asked) on the weight matrices only, not on the biases."""
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in model.named_parameters() if not name.endswith("weight")]
    return mg.optim.SGD([{"params": weights, "weight_decay": config.get("weight_decay", 0.0)},
                         {"params": biases, "weight_decay": 0.0}], lr=lr)


class Data:
    """Loaders shared by every run of an experiment (the dataset is placed on the device once)."""

    def __init__(self, args):
        if args.quick:
            train, test = synthetic_fashion(3000, seed=0), synthetic_fashion(500, seed=1)
        else:
            train = FashionMNIST(args.data_dir, train=True, progress=False)
            test = FashionMNIST(args.data_dir, train=False, progress=False)
        self.train_set, self.test_set, self.args = train, test, args
        self.histories = {}  # finished runs, by configuration, seed and epochs
        self.test = DataLoader(test, 1000, device=args.device, limit=args.limit)
        # Accuracy on training data in eval mode (dropout off), on a fixed 10,000 examples, for the gap.
        self.train_eval = DataLoader(train, 1000, device=args.device, limit=min(args.limit or 10_000, 10_000))

    def train_loader(self, seed):
        return DataLoader(self.train_set, 256, shuffle=True, device=self.args.device, limit=self.args.limit,
                          seed=seed)


def train_run(config, seed, data, args, epochs, on_epoch_end=None):
    """Train one model; return (model, history). Each history entry also has train_eval_acc and the gap."""
    mg.manual_seed(seed)
    model = build_model(config, args.hidden, args.device)
    optimizer = optimizer_for(model, config, args.lr)
    scheduler = mg.optim.CosineAnnealingLR(optimizer, T_max=epochs) if config.get("schedule") == "cosine" else None
    trainer = Trainer(model, optimizer, progress=False, scheduler=scheduler)

    def record(entry):
        entry["train_eval_acc"] = evaluate(model, data.train_eval)["acc"]
        entry["gap"] = entry["train_eval_acc"] - entry["test_acc"]
        if on_epoch_end:
            on_epoch_end(entry)
    trainer.fit(data.train_loader(seed), data.test, epochs, on_epoch_end=record)
    return model, trainer.history


def summarise(histories):
    """Mean and standard deviation over seeds of: the test accuracy averaged over the last three epochs
    (with lr 0.5 held constant the accuracy swings by about 0.02 from epoch to epoch, so this is the steadier
    measure), the final and the best test accuracy, and the final train-test gap. With one seed there is no
    standard deviation (None, null in results.json), and so no claim of significance."""
    def stats(values):
        values = numpy.asarray(values, dtype=float)
        return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else None,
                "n": len(values)}
    return {"last3_test_acc": stats([numpy.mean([e["test_acc"] for e in h[-3:]]) for h in histories]),
            "final_test_acc": stats([h[-1]["test_acc"] for h in histories]),
            "best_test_acc": stats([max(e["test_acc"] for e in h) for h in histories]),
            "gap": stats([h[-1]["gap"] for h in histories])}


def run_configs(configs, data, args, epochs, log):
    """Every config on every seed: {label: {"histories": [...], "summary": {...}}}."""
    results = {}
    for config in configs:
        histories = []
        for seed in args.seeds:
            started = time.perf_counter()
            # `all` meets the same run (e.g. the chapter's dropout, seed 0) in several experiments: train it once.
            key = json.dumps({k: v for k, v in config.items() if k != "label"}, sort_keys=True) + f" {seed} {epochs}"
            if key not in data.histories:
                data.histories[key] = train_run(config, seed, data, args, epochs)[1]
            history = data.histories[key]
            histories.append(history)
            log(f"  {config['label']:34s} seed {seed}: final test acc {history[-1]['test_acc']:.4f}, "
                f"best {max(e['test_acc'] for e in history):.4f}, gap {history[-1]['gap']:+.4f} "
                f"({time.perf_counter() - started:.0f}s)")
        results[config["label"]] = {"config": config, "histories": histories, "summary": summarise(histories)}
    return results


def fmt(stat):
    return f"{stat['mean']:.4f} ± {stat['sd']:.4f}" if stat["sd"] is not None else f"{stat['mean']:.4f} (one seed)"


def summary_table(results):
    rows = ["| setting | test acc, mean of last 3 epochs | final test acc | best test acc | train-test gap (final) |",
            "| --- | --- | --- | --- | --- |"]
    for label, result in results.items():
        s = result["summary"]
        rows.append(f"| {label} | {fmt(s['last3_test_acc'])} | {fmt(s['final_test_acc'])} | {fmt(s['best_test_acc'])} "
                    f"| {fmt(s['gap'])} |")
    rows += ["", "Each cell: mean ± standard deviation over the seeds."]
    return rows


def compare(results, a, b, key="last3_test_acc"):
    """A sentence comparing two settings, and whether the difference exceeds two standard errors over seeds.

    With fewer than two seeds on either side there is no standard error, and the sentence says so
    instead of judging the difference.
    """
    sa, sb = results[a]["summary"][key], results[b]["summary"][key]
    diff = sa["mean"] - sb["mean"]
    what = key.replace("_", " ").replace("last3", "last-3-epoch")
    numbers = f"{what}: {a} {sa['mean']:.4f}, {b} {sb['mean']:.4f}; difference {diff:+.4f}"
    if sa["sd"] is None or sb["sd"] is None:
        return f"{numbers}; with one seed there is no standard error, so no claim either way (run --seeds 0 1 2)"
    standard_error = math.sqrt(sa["sd"] ** 2 / sa["n"] + sb["sd"] ** 2 / sb["n"])
    verdict = ("more than two standard errors: a real difference" if abs(diff) > 2 * standard_error else
               "within two standard errors: not distinguishable with these seeds")
    return f"{numbers}, {verdict} (standard error {standard_error:.4f})"


# --- plots ------------------------------------------------------------------------------------------

def plot_curves(results, keys, path, title):
    plt = pyplot()
    figure, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2))
    axes = numpy.atleast_1d(axes)
    for axis, key in zip(axes, keys):
        for label, result in results.items():
            curve = numpy.mean([[e[key] for e in h] for h in result["histories"]], axis=0)
            axis.plot(range(1, len(curve) + 1), curve, label=label)
        axis.set_xlabel("epoch")
        axis.set_title(key.replace("_", " "), fontsize=9)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    save_figure(figure, path, dpi=80)


# --- the experiments ----------------------------------------------------------------------------------
# Each returns (results for results.json, report lines, plot file names); its first line is the question.

def swap(data, args, out, log):
    """Exercise 1: what if the dropout probabilities of layers 1 and 2 change, or swap?"""
    grid = [0.0, 0.2, 0.5, 0.8]
    configs = [{"noise": "dropout", "p1": p1, "p2": p2, "label": f"dropout ({p1}, {p2})"} for p1 in grid for p2 in grid]
    results = run_configs(configs, data, args, epochs_for("swap", args), log)
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(4.4, 3.6))
    table = numpy.array([[results[f"dropout ({p1}, {p2})"]["summary"]["last3_test_acc"]["mean"] for p2 in grid]
                         for p1 in grid])
    image = axis.imshow(table, cmap="viridis")
    for i in range(len(grid)):
        for j in range(len(grid)):
            axis.text(j, i, f"{table[i, j]:.3f}", ha="center", va="center", fontsize=8, color="w")
    axis.set_xticks(range(len(grid)), grid)
    axis.set_yticks(range(len(grid)), grid)
    axis.set_xlabel("p2 (after hidden layer 2)")
    axis.set_ylabel("p1 (after hidden layer 1)")
    axis.set_title("final test accuracy", fontsize=10)
    figure.colorbar(image)
    figure.tight_layout()
    save_figure(figure, os.path.join(out, "grid.png"), dpi=80)
    best = max(results, key=lambda k: results[k]["summary"]["last3_test_acc"]["mean"])
    lines = summary_table(results) + ["", "Swapped: " + compare(results, "dropout (0.2, 0.5)", "dropout (0.5, 0.2)"),
                                      "", f"Best on the grid (last-3-epoch test accuracy): {best}.",
                                      "Against no dropout: " + compare(results, best, "dropout (0.0, 0.0)"),
                                      "Heaviest: " + compare(results, "dropout (0.8, 0.8)", "dropout (0.0, 0.0)")]
    return strip(results), lines, ["grid.png"]


def with_without(data, args, out, log):
    """Exercise 2: over a longer run, how do training with and without dropout compare?"""
    results = run_configs([NONE, CHAPTER], data, args, epochs_for("with-without", args), log)
    plot_curves(results, ["train_eval_acc", "test_acc", "gap"], os.path.join(out, "curves.png"),
                "with and without dropout (train acc measured with dropout off)")
    lines = summary_table(results) + [
        "", compare(results, "dropout (0.2, 0.5)", "no dropout"),
        "", compare(results, "dropout (0.2, 0.5)", "no dropout", key="gap")]
    return strip(results), lines, ["curves.png"]


def variance(data, args, out, log):
    """Exercise 3: the variance of each hidden layer's activations over training, with and without dropout."""
    records = {}
    for config in (NONE, CHAPTER):
        sums = {}

        def accumulate(name):
            def hook(module, inputs, output):
                if module.training:  # only training passes: evaluation would mix in dropout-free numbers
                    values = output.data
                    total = sums.setdefault(name, [0.0, 0.0, 0])
                    total[0] = total[0] + values.sum()
                    total[1] = total[1] + (values * values).sum()
                    total[2] += values.size
            return hook

        per_epoch = []

        def close_epoch(entry):
            row = {}
            for name, (s, sq, n) in sums.items():
                mean = float(s) / n
                row[name] = float(sq) / n - mean * mean
            per_epoch.append(row)
            sums.clear()

        mg.manual_seed(args.seeds[0])
        model = build_model(config, args.hidden, args.device)
        for index, label in ((1, "layer 1 before dropout"), (2, "layer 1 after dropout"),
                             (4, "layer 2 before dropout"), (5, "layer 2 after dropout")):
            model[index].register_forward_hook(accumulate(label))
        trainer = Trainer(model, optimizer_for(model, config, args.lr), progress=False)
        trainer.fit(data.train_loader(args.seeds[0]), data.test, epochs_for("variance", args), on_epoch_end=close_epoch)
        records[config["label"]] = {"variance": per_epoch, "test_acc": [e["test_acc"] for e in trainer.history]}
        log(f"  {config['label']}: {per_epoch[-1]}")
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
    for axis, layer in zip(axes, ("layer 1", "layer 2")):
        for label, record in records.items():
            for when, style in (("before", "-"), ("after", "--")):
                if label == "no dropout" and when == "after":
                    continue  # p = 0: after is before
                curve = [row[f"{layer} {when} dropout"] for row in record["variance"]]
                axis.plot(range(1, len(curve) + 1), curve, style, label=f"{label}, {when} dropout")
        axis.set_title(f"hidden {layer}: activation variance", fontsize=9)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, os.path.join(out, "variance.png"), dpi=80)
    lines = ["| epoch | " + " | ".join(f"{label}: {name}" for label in records for name in
                                         ("layer 1 before", "layer 1 after", "layer 2 before", "layer 2 after")) + " |",
             "| --- |" + " --- |" * 8]
    epochs = len(records["no dropout"]["variance"])
    for epoch in range(epochs):
        cells = [f"{records[label]['variance'][epoch][f'{layer} {when} dropout']:.4f}" for label in records
                 for layer in ("layer 1", "layer 2") for when in ("before", "after")]
        lines.append(f"| {epoch + 1} | " + " | ".join(cells) + " |")
    last = {label: records[label]["variance"][-1] for label in records}
    before, without = last[CHAPTER["label"]]["layer 2 before dropout"], last[NONE["label"]]["layer 2 before dropout"]
    after = last[CHAPTER["label"]]["layer 2 after dropout"]
    lines += ["", f"In the last epoch, hidden layer 2's activations (before dropout) have variance {before:.4f} with "
              f"dropout and {without:.4f} without; after dropout (p = {CHAPTER['p2']}) the variance is {after:.4f}, "
              + (f"{after / before:.2f} times the variance before it: the noise dropout adds, as "
                 "Var[h'] = E[h^2] / (1 - p) - E[h]^2 > Var[h] predicts." if after > before else
                 "no more than before it, against the prediction Var[h'] = E[h^2] / (1 - p) - E[h]^2 > Var[h] "
                 "(look at the table: a short or degenerate run?).")]
    return records, lines, ["variance.png"]


def test_time(data, args, out, log):
    """Exercise 4: why is dropout not used at test time? Accuracy with it left on, against off."""
    rows = []
    for seed in args.seeds:
        model, history = train_run(CHAPTER, seed, data, args, epochs_for("test-time", args))
        off = evaluate(model, data.test)["acc"]
        model.train()  # dropout left on: one stochastic pass per example
        on = evaluate_predictions(model, data.test)["acc"]
        mc_correct = count_mc = 0
        for x, y in data.test:
            probs = mc_dropout_probabilities(model, x, passes=20)
            mc_correct = mc_correct + (probs.argmax(axis=1) == y.data).sum()
            count_mc += len(y)
        rows.append({"seed": seed, "dropout_off": off, "dropout_on_one_pass": on,
                     "dropout_on_mean_of_20_passes": float(mc_correct) / count_mc})
        log(f"  seed {seed}: {rows[-1]}")
    keys = ["dropout_off", "dropout_on_one_pass", "dropout_on_mean_of_20_passes"]
    means = {k: float(numpy.mean([r[k] for r in rows])) for k in keys}
    lines = ["| seed | dropout off (standard) | dropout on, one pass | dropout on, mean of 20 passes |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {r['seed']} | {r['dropout_off']:.4f} | {r['dropout_on_one_pass']:.4f} | "
              f"{r['dropout_on_mean_of_20_passes']:.4f} |" for r in rows]
    off, one, twenty = means["dropout_off"], means["dropout_on_one_pass"], means["dropout_on_mean_of_20_passes"]
    lines += ["", f"Mean over seeds: off {off:.4f}, on (one pass) {one:.4f} ({one - off:+.4f}), "
              f"on (20 passes averaged) {twenty:.4f} ({twenty - off:+.4f})."]
    if one < off:
        lines[-1] += (" A single pass with dropout on is a random thinned network, and here it scored lower than the "
                      "network with dropout off.")
    else:
        lines[-1] += " Here a single pass with dropout on scored no lower than the network with dropout off."
    lines[-1] += (f" Averaging 20 passes came within {abs(twenty - off):.4f} of dropout off, at 20 times the cost."
                  if abs(twenty - off) <= abs(one - off) else
                  " Averaging 20 passes did not bring the accuracy closer to dropout off than one pass did.")
    if len(rows) < 2:
        lines[-1] += " (One seed: these differences carry no estimate of their noise.)"
    return {"rows": rows, "means": means}, lines, []


def weight_decay(data, args, out, log):
    """Exercise 5: dropout, weight decay, both: additive, diminishing or cancelling?"""
    decays = [1e-4, 1e-3, 3e-3]
    configs = [dict(NONE), dict(CHAPTER)]
    configs += [dict(NONE, weight_decay=wd, label=f"weight decay {wd:g}") for wd in decays]
    configs += [dict(CHAPTER, weight_decay=wd, label=f"dropout + weight decay {wd:g}") for wd in decays]
    results = run_configs(configs, data, args, epochs_for("weight-decay", args), log)
    base = results["no dropout"]["summary"]["last3_test_acc"]["mean"]
    gain = {label: r["summary"]["last3_test_acc"]["mean"] - base for label, r in results.items()}
    lines = summary_table(results) + ["", "| weight decay | gain from dropout alone | from weight decay alone | "
                                          "from both | both minus the sum |", "| --- | --- | --- | --- | --- |"]
    for wd in decays:
        d, w, b = gain["dropout (0.2, 0.5)"], gain[f"weight decay {wd:g}"], gain[f"dropout + weight decay {wd:g}"]
        lines.append(f"| {wd:g} | {d:+.4f} | {w:+.4f} | {b:+.4f} | {b - (d + w):+.4f} |")
    lines += ["", "Gains are in last-3-epoch test accuracy over no regularisation; 'both minus the sum' < 0 means "
              "diminishing returns, about 0 additive, and a 'both' below either alone, cancelling."]
    return strip(results), lines, []


def dropconnect(data, args, out, log):
    """Exercise 6: dropout on the weights (DropConnect) instead of on the activations."""
    configs = [NONE, CHAPTER, {"noise": "dropconnect", "p1": 0.2, "p2": 0.5, "label": "DropConnect (0.2, 0.5)"},
               {"noise": "dropconnect", "p1": 0.5, "p2": 0.5, "label": "DropConnect (0.5, 0.5)"}]
    results = run_configs(configs, data, args, epochs_for("dropconnect", args), log)
    plot_curves(results, ["test_acc", "gap"], os.path.join(out, "curves.png"), "DropConnect against dropout")
    lines = summary_table(results) + ["", compare(results, "DropConnect (0.2, 0.5)", "dropout (0.2, 0.5)"),
                                      "", compare(results, "DropConnect (0.2, 0.5)", "no dropout", key="gap")]
    return strip(results), lines, ["curves.png"]


def noise(data, args, out, log):
    """Exercise 7: other noise injections for the same architecture, against standard dropout."""
    configs = [NONE, CHAPTER,
               {"noise": "gaussian-dropout", "p1": 0.2, "p2": 0.5, "label": "Gaussian dropout (0.2, 0.5)"},
               {"noise": "input-noise", "sigma": 0.2, "label": "Gaussian noise on inputs, sigma 0.2"},
               {"noise": "hidden-noise", "sigma": 0.5, "label": "Gaussian noise on hidden units, sigma 0.5"},
               {"noise": "uniform-noise", "p1": 0.2, "p2": 0.5, "label": "uniform multiplicative (0.2, 0.5)"}]
    results = run_configs(configs, data, args, epochs_for("noise", args), log)
    plot_curves(results, ["test_acc", "gap"], os.path.join(out, "curves.png"), "noise injections")
    best = max(results, key=lambda k: results[k]["summary"]["last3_test_acc"]["mean"])
    lines = summary_table(results) + ["", f"Best last-3-epoch test accuracy: {best}."]
    for label in results:
        if label != "dropout (0.2, 0.5)":
            lines += ["", compare(results, label, "dropout (0.2, 0.5)")]
    lines += ["", "Uniform multiplicative noise is this project's own idea: h' = h u, u ~ U[1 - a, 1 + a] with "
              "a = sqrt(3p / (1 - p)), the same mean and variance as dropout's but bounded and never a hard zero."]
    return strip(results), lines, ["curves.png"]


def mc_dropout(data, args, out, log, passes=30):
    """Monte-Carlo dropout: averaged stochastic predictions, their entropy, and their calibration."""
    model, history = train_run(CHAPTER, args.seeds[0], data, args, epochs_for("mc-dropout", args))
    deterministic, averaged, labels = [], [], []
    model.eval()
    with mg.no_grad():
        for x, y in data.test:
            deterministic.append(mg.backend.to_numpy(nn.functional.softmax(model(x), axis=1).data))
            averaged.append(mg.backend.to_numpy(mc_dropout_probabilities(model, x, passes)))
            labels.append(y.numpy())
    deterministic, averaged, labels = map(numpy.concatenate, (deterministic, averaged, labels))
    report = {}
    for name, probs in (("deterministic", deterministic), (f"MC dropout, {passes} passes", averaged)):
        accuracy, calibrated = float((probs.argmax(axis=1) == labels).mean()), calibration(probs, labels)
        report[name] = {"accuracy": accuracy, "mean_entropy": float(predictive_entropy(probs).mean()),
                        "expected_calibration_error": calibrated["ece"], "reliability": calibrated["reliability"]}
        log(f"  {name}: accuracy {accuracy:.4f}, mean entropy {report[name]['mean_entropy']:.4f}, "
            f"ECE {calibrated['ece']:.4f}")
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(4.2, 3.6))
    axis.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
    for name, entry in report.items():
        axis.plot([c for c, _, _ in entry["reliability"]], [a for _, a, _ in entry["reliability"]], "o-", label=name)
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, os.path.join(out, "reliability.png"), dpi=80)
    entropy = predictive_entropy(averaged)
    order = numpy.argsort(entropy)
    images = data.test_set.images
    figure, axes = plt.subplots(2, 8, figsize=(9, 2.8))
    for row, (title, picks) in enumerate((("most certain", order[:8]), ("least certain", order[-8:]))):
        for axis, index in zip(axes[row], picks):
            axis.imshow(images[index], cmap="gray_r")
            axis.set_title(f"{data.test_set.classes[int(averaged[index].argmax())][:9]}\nH={entropy[index]:.2f}",
                           fontsize=7)
            axis.axis("off")
        axes[row][0].text(-8, 14, title, rotation=90, va="center", fontsize=8)
    figure.tight_layout()
    save_figure(figure, os.path.join(out, "certain_uncertain.png"), dpi=80)
    names = list(report)
    lines = ["| prediction | test accuracy | mean predictive entropy (nats) | expected calibration error |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {n} | {report[n]['accuracy']:.4f} | {report[n]['mean_entropy']:.4f} | "
              f"{report[n]['expected_calibration_error']:.4f} |" for n in names]
    wrong = averaged.argmax(axis=1) != labels
    lines += ["", f"Accuracy: {names[1]} {report[names[1]]['accuracy']:.4f} against {report[names[0]]['accuracy']:.4f} "
              "deterministic. " + entropy_sentence(entropy[wrong], entropy[~wrong])]
    return report, lines, ["reliability.png", "certain_uncertain.png"]


def entropy_sentence(wrong, right):
    """What the MC entropy says about mistakes, from the numbers: a claim only where the numbers make one."""
    if not len(wrong) or not len(right):
        return (f"Every test image was classified {'correctly' if not len(wrong) else 'wrongly'}, so the entropy "
                "cannot be compared between mistakes and correct predictions.")
    text = f"The MC entropy is {wrong.mean():.3f} on the misclassified test images and {right.mean():.3f} on the " \
           "correctly classified ones"
    if abs(wrong.mean() - right.mean()) < 1e-3:
        return text + ": the same, so here the entropy does not tell mistakes from correct predictions."
    if wrong.mean() > right.mean():
        return text + f": on average the model is less certain where it is wrong (by " \
                      f"{wrong.mean() - right.mean():.3f} nats), so higher uncertainty goes with likelier mistakes."
    return text + ": the mistakes are not the less certain predictions here, so the entropy does not flag them."


DEFAULT_EPOCHS = {"with-without": 50}  # the others: 10, the chapter's


def epochs_for(name, args):
    return args.epochs or DEFAULT_EPOCHS.get(name, 10)


EXPERIMENTS = {"swap": swap, "with-without": with_without, "variance": variance, "test-time": test_time,
               "weight-decay": weight_decay, "dropconnect": dropconnect, "noise": noise, "mc-dropout": mc_dropout}


def strip(results):
    """results.json keeps each run's per-epoch history and the summary."""
    return {label: {"config": r["config"], "summary": r["summary"], "histories": r["histories"]}
            for label, r in results.items()}


# --- the command line -----------------------------------------------------------------------------------

def parse_args(argv=None):
    """The flags, every one checked (folders, device, memory, seeds) before any work starts."""
    parser = cli.OneLineParser(prog="python -m examples.dropout_experiments", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=[*EXPERIMENTS, "all"])
    parser.add_argument("--epochs", type=cli.positive_int, default=None, help="default: 10 (50 for with-without)")
    parser.add_argument("--seeds", type=cli.seed, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", type=cli.device_name, default="cpu")
    parser.add_argument("--limit", type=cli.positive_int, default=None, help="use the first N examples of each split")
    parser.add_argument("--data-dir", default=None,
                        help="the folder with the four IDX files (the only place looked in)")
    parser.add_argument("--lr", type=cli.positive_float, default=0.5)
    parser.add_argument("--hidden", type=cli.positive_int, nargs=2, default=[256, 256], metavar=("H1", "H2"))
    parser.add_argument("--out", default=os.path.join("runs", "dropout_experiments"))
    parser.add_argument("--quick", action="store_true", help="a small synthetic dataset and 3 epochs: for tests")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"argument --seeds: each seed once, got {' '.join(map(str, args.seeds))} (a repeated seed "
                     f"would count one run twice in the means and standard errors)")
    args.device = cli.check_device(parser, args.device)
    cli.check_data_dir(parser, args.data_dir)
    cli.check_mlp_fits(parser, [784, *args.hidden, 10], 1000, args.device)
    cli.check_writable_folder(parser, args.out)
    if args.quick:
        args.epochs = args.epochs or 3
    return args


def main(argv=None):
    args = parse_args(argv)
    words = sys.argv[1:] if argv is None else argv
    command = "python -m examples.dropout_experiments " + " ".join(shlex.quote(word) for word in words)
    try:
        data = Data(args)
        for name in EXPERIMENTS if args.name == "all" else [args.name]:
            run_experiment(name, data, args, command)
    except KeyboardInterrupt:
        print("interrupted: the experiments finished before it kept their reports; the one running was lost",
              file=sys.stderr)
        return 130
    except (mg.DeviceError, DatasetError, IDXFormatError, TrainingDiverged, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def run_experiment(name, data, args, command):
    """Run one experiment and write its results.json, report.md and plots into --out/NAME."""
    out = os.path.join(args.out, name)
    os.makedirs(out, exist_ok=True)
    experiment = EXPERIMENTS[name]
    question = experiment.__doc__.strip()
    print(f"{name}: {question}", flush=True)
    started = time.perf_counter()
    results, lines, plots = experiment(data, args, out, lambda text: print(text, flush=True))
    minutes = (time.perf_counter() - started) / 60
    save_json({"name": name, "question": question, "command": command, "minutes": minutes,
               "settings": {k: v for k, v in vars(args).items()}, "results": results},
              os.path.join(out, "results.json"))
    report = [f"# {name}", "", question, "", *lines, ""]
    report += [f"![{plot}]({plot})" for plot in plots]
    settings = "synthetic data (--quick)" if args.quick else "Fashion-MNIST"
    report += ["", f"Settings: {settings}, {epochs_for(name, args)} epochs, seeds {args.seeds}, lr {args.lr}, "
                   f"batch 256, device {args.device}; {minutes:.1f} minutes.", "", f"Command: `{command}`", ""]
    with atomic_write(os.path.join(out, "report.md"), "w") as file:
        file.write("\n".join(report))
    print(f"  wrote {out}/report.md", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
