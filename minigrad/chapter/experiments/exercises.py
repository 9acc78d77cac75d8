"""The chapter's exercises, one function each: ``experiment(runs, args, out, log) -> (results, report lines, plots)``.

``results`` goes into results.json, the lines into report.md (after the docstring's first line, the question),
the plots are the PNG files written into ``out``.
"""

import os

import numpy

import minigrad as mg
from minigrad import nn
from minigrad.chapter.model import NUM_EPOCHS
from minigrad.train import Trainer, evaluate, evaluate_predictions
from minigrad.uncertainty import calibration, mc_dropout_probabilities, predictive_entropy

from . import figures
from .runs import to_json, train_run
from .settings import CHAPTER, NO_DROPOUT, Setting, build_model, dropout, optimizer_for
from .summaries import best, compare, entropy_sentence, summary_table

DEFAULT_EPOCHS = {"with-without": 50}  # the others: the chapter's NUM_EPOCHS


def epochs_for(name, args):
    """The epochs experiment ``name`` trains for: ``--epochs`` if given, else its default."""
    return args.epochs or DEFAULT_EPOCHS.get(name, NUM_EPOCHS)


def swap(runs, args, out, log):
    """Exercise 1: what if the dropout probabilities of layers 1 and 2 change, or swap?"""
    ticks = [0.0, 0.2, 0.5, 0.8]
    results = runs.of([dropout(p1, p2) for p1 in ticks for p2 in ticks], epochs_for("swap", args))
    figures.grid(
        [[results[dropout(p1, p2)]["summary"]["last3_test_acc"]["mean"] for p2 in ticks] for p1 in ticks],
        ticks,
        os.path.join(out, "grid.png"),
    )
    top, none = best(results), dropout(0.0, 0.0)
    lines = summary_table(results) + [
        "",
        "Swapped: " + compare(results, dropout(0.2, 0.5), dropout(0.5, 0.2)),
        "",
        f"Best on the grid (last-3-epoch test accuracy): {top.label}.",
        "Against no dropout: " + compare(results, top, none),
        "Heaviest: " + compare(results, dropout(0.8, 0.8), none),
    ]
    return to_json(results), lines, ["grid.png"]


def with_without(runs, args, out, log):
    """Exercise 2: over a longer run, how do training with and without dropout compare?"""
    results = runs.of([NO_DROPOUT, CHAPTER], epochs_for("with-without", args))
    figures.curves(
        results,
        ["train_eval_acc", "test_acc", "gap"],
        os.path.join(out, "curves.png"),
        "with and without dropout (train acc measured with dropout off)",
    )
    lines = summary_table(results) + [
        "",
        compare(results, CHAPTER, NO_DROPOUT),
        "",
        compare(results, CHAPTER, NO_DROPOUT, key="gap"),
    ]
    return to_json(results), lines, ["curves.png"]


def variance(runs, args, out, log):
    """Exercise 3: the variance of each hidden layer's activations over training, with and without dropout."""
    records = {}
    for setting in (NO_DROPOUT, CHAPTER):
        sums, per_epoch = {}, []

        def accumulate(name):
            def hook(module, inputs, output):
                if module.training:  # only training passes: evaluation would mix in dropout-free numbers
                    values = output.data
                    total = sums.setdefault(name, [0.0, 0.0, 0])
                    total[0] = total[0] + values.sum()
                    total[1] = total[1] + (values * values).sum()
                    total[2] += values.size

            return hook

        def close_epoch(entry):
            per_epoch.append({name: float(sq) / n - (float(s) / n) ** 2 for name, (s, sq, n) in sums.items()})
            sums.clear()

        mg.manual_seed(args.seeds[0])
        model = build_model(setting, args.hidden, args.device)
        layers = list(model)
        relus = [i for i, layer in enumerate(layers) if isinstance(layer, nn.ReLU)]
        for k, i in enumerate(relus, start=1):  # before dropout: the ReLU's output; after: the Dropout's, if any
            layers[i].register_forward_hook(accumulate(f"layer {k} before dropout"))
            after = layers[i + 1] if isinstance(layers[i + 1], nn.Dropout) else layers[i]
            after.register_forward_hook(accumulate(f"layer {k} after dropout"))
        trainer = Trainer(model, optimizer_for(model, setting, args.lr), progress=False)
        trainer.fit(
            runs.data.train_loader(args.seeds[0]),
            runs.data.test,
            epochs_for("variance", args),
            on_epoch_end=close_epoch,
        )
        records[setting.label] = {
            "variance": per_epoch,
            "test_acc": [e["test_acc"] for e in trainer.history],
            "has_dropout": any(isinstance(layer, nn.Dropout) for layer in layers),
        }
        log(f"  {setting.label}: {per_epoch[-1]}")
    figures.variances(records, os.path.join(out, "variance.png"))
    columns = [(layer, when) for layer in ("layer 1", "layer 2") for when in ("before", "after")]
    lines = [
        "| epoch | " + " | ".join(f"{label}: {layer} {when}" for label in records for layer, when in columns) + " |",
        "| --- |" + " --- |" * (len(records) * len(columns)),
    ]
    for epoch in range(len(records[NO_DROPOUT.label]["variance"])):
        cells = [
            f"{records[label]['variance'][epoch][f'{layer} {when} dropout']:.4f}"
            for label in records
            for layer, when in columns
        ]
        lines.append(f"| {epoch + 1} | " + " | ".join(cells) + " |")
    with_dropout, without = records[CHAPTER.label]["variance"][-1], records[NO_DROPOUT.label]["variance"][-1]
    before, after = with_dropout["layer 2 before dropout"], with_dropout["layer 2 after dropout"]
    lines += [
        "",
        f"In the last epoch, hidden layer 2's activations (before dropout) have variance {before:.4f} with "
        f"dropout and {without['layer 2 before dropout']:.4f} without; after dropout (p = {CHAPTER.p2}) the "
        f"variance is {after:.4f}, "
        + (
            f"{after / before:.2f} times the variance before it: the noise dropout adds, as "
            "Var[h'] = E[h^2] / (1 - p) - E[h]^2 > Var[h] predicts."
            if after > before
            else "no more than before it, against the prediction Var[h'] = E[h^2] / (1 - p) - E[h]^2 > Var[h] "
            "(look at the table: a short or degenerate run?)."
        ),
    ]
    return records, lines, ["variance.png"]


def test_time(runs, args, out, log):
    """Exercise 4: why is dropout not used at test time? Accuracy with it left on, against off."""
    rows, test = [], runs.data.test
    for seed in args.seeds:
        model, _ = train_run(CHAPTER, seed, runs.data, args, epochs_for("test-time", args))
        off = evaluate(model, test)["acc"]
        model.train()  # dropout left on: one stochastic pass per example
        on = evaluate_predictions(model, test)["acc"]
        mc_correct = count_mc = 0
        for x, y in test:
            probs = mc_dropout_probabilities(model, x, passes=20)
            mc_correct = mc_correct + (probs.argmax(axis=1) == y.data).sum()
            count_mc += len(y)
        rows.append(
            {
                "seed": seed,
                "dropout_off": off,
                "dropout_on_one_pass": on,
                "dropout_on_mean_of_20_passes": float(mc_correct) / count_mc,
            }
        )
        log(f"  seed {seed}: {rows[-1]}")
    keys = ["dropout_off", "dropout_on_one_pass", "dropout_on_mean_of_20_passes"]
    means = {k: float(numpy.mean([r[k] for r in rows])) for k in keys}
    lines = [
        "| seed | dropout off (standard) | dropout on, one pass | dropout on, mean of 20 passes |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['seed']} | {r['dropout_off']:.4f} | {r['dropout_on_one_pass']:.4f} | "
        f"{r['dropout_on_mean_of_20_passes']:.4f} |"
        for r in rows
    ]
    off, one, twenty = means["dropout_off"], means["dropout_on_one_pass"], means["dropout_on_mean_of_20_passes"]
    sentence = (
        f"Mean over seeds: off {off:.4f}, on (one pass) {one:.4f} ({one - off:+.4f}), "
        f"on (20 passes averaged) {twenty:.4f} ({twenty - off:+.4f})."
    )
    if one < off:
        sentence += (
            " A single pass with dropout on is a random thinned network, and here it scored lower than the "
            "network with dropout off."
        )
    else:
        sentence += " Here a single pass with dropout on scored no lower than the network with dropout off."
    sentence += (
        f" Averaging 20 passes came within {abs(twenty - off):.4f} of dropout off, at 20 times the cost."
        if abs(twenty - off) <= abs(one - off)
        else " Averaging 20 passes did not bring the accuracy closer to dropout off than one pass did."
    )
    if len(rows) < 2:
        sentence += " (One seed: these differences carry no estimate of their noise.)"
    return {"rows": rows, "means": means}, lines + ["", sentence], []


def weight_decay(runs, args, out, log):
    """Exercise 5: dropout, weight decay, both: additive, diminishing or cancelling?"""
    decays = [1e-4, 1e-3, 3e-3]
    decay_alone = {wd: Setting(f"weight decay {wd:g}", weight_decay=wd) for wd in decays}
    decay_and_dropout = {
        wd: Setting(f"dropout + weight decay {wd:g}", p1=CHAPTER.p1, p2=CHAPTER.p2, weight_decay=wd) for wd in decays
    }
    results = runs.of(
        [NO_DROPOUT, CHAPTER, *decay_alone.values(), *decay_and_dropout.values()], epochs_for("weight-decay", args)
    )
    base = results[NO_DROPOUT]["summary"]["last3_test_acc"]["mean"]
    gain = {setting: r["summary"]["last3_test_acc"]["mean"] - base for setting, r in results.items()}
    lines = summary_table(results) + [
        "",
        "| weight decay | gain from dropout alone | from weight decay alone | from both | both minus the sum |",
        "| --- | --- | --- | --- | --- |",
    ]
    for wd in decays:
        d, w, b = gain[CHAPTER], gain[decay_alone[wd]], gain[decay_and_dropout[wd]]
        lines.append(f"| {wd:g} | {d:+.4f} | {w:+.4f} | {b:+.4f} | {b - (d + w):+.4f} |")
    lines += [
        "",
        "Gains are in last-3-epoch test accuracy over no regularisation; 'both minus the sum' < 0 means "
        "diminishing returns, about 0 additive, and a 'both' below either alone, cancelling.",
    ]
    return to_json(results), lines, []


def dropconnect(runs, args, out, log):
    """Exercise 6: dropout on the weights (DropConnect) instead of on the activations."""
    chapter_like = Setting(
        f"DropConnect ({CHAPTER.p1}, {CHAPTER.p2})", noise="dropconnect", p1=CHAPTER.p1, p2=CHAPTER.p2
    )
    heavier = Setting("DropConnect (0.5, 0.5)", noise="dropconnect", p1=0.5, p2=0.5)
    results = runs.of([NO_DROPOUT, CHAPTER, chapter_like, heavier], epochs_for("dropconnect", args))
    figures.curves(results, ["test_acc", "gap"], os.path.join(out, "curves.png"), "DropConnect against dropout")
    lines = summary_table(results) + [
        "",
        compare(results, chapter_like, CHAPTER),
        "",
        compare(results, chapter_like, NO_DROPOUT, key="gap"),
    ]
    return to_json(results), lines, ["curves.png"]


def noise(runs, args, out, log):
    """Exercise 7: other noise injections for the same architecture, against standard dropout."""
    settings = [
        NO_DROPOUT,
        CHAPTER,
        Setting("Gaussian dropout (0.2, 0.5)", noise="gaussian-dropout", p1=0.2, p2=0.5),
        Setting("Gaussian noise on inputs, sigma 0.2", noise="input-noise", sigma=0.2),
        Setting("Gaussian noise on hidden units, sigma 0.5", noise="hidden-noise", sigma=0.5),
        Setting("uniform multiplicative (0.2, 0.5)", noise="uniform-noise", p1=0.2, p2=0.5),
    ]
    results = runs.of(settings, epochs_for("noise", args))
    figures.curves(results, ["test_acc", "gap"], os.path.join(out, "curves.png"), "noise injections")
    lines = summary_table(results) + ["", f"Best last-3-epoch test accuracy: {best(results).label}."]
    for setting in results:
        if setting != CHAPTER:
            lines += ["", compare(results, setting, CHAPTER)]
    lines += [
        "",
        "Uniform multiplicative noise is this project's own idea: h' = h u, u ~ U[1 - a, 1 + a] with "
        "a = sqrt(3p / (1 - p)), the same mean and variance as dropout's but bounded and never a hard zero.",
    ]
    return to_json(results), lines, ["curves.png"]


def mc_dropout(runs, args, out, log, passes=30):
    """Monte-Carlo dropout: averaged stochastic predictions, their entropy, and their calibration."""
    model, _ = train_run(CHAPTER, args.seeds[0], runs.data, args, epochs_for("mc-dropout", args))
    deterministic, averaged, labels = [], [], []
    model.eval()
    with mg.no_grad():
        for x, y in runs.data.test:
            deterministic.append(mg.backend.to_numpy(nn.functional.softmax(model(x), axis=1).data))
            averaged.append(mg.backend.to_numpy(mc_dropout_probabilities(model, x, passes)))
            labels.append(y.numpy())
    deterministic, averaged, labels = map(numpy.concatenate, (deterministic, averaged, labels))
    report = {}
    for name, probs in (("deterministic", deterministic), (f"MC dropout, {passes} passes", averaged)):
        accuracy, calibrated = float((probs.argmax(axis=1) == labels).mean()), calibration(probs, labels)
        report[name] = {
            "accuracy": accuracy,
            "mean_entropy": float(predictive_entropy(probs).mean()),
            "expected_calibration_error": calibrated["ece"],
            "reliability": calibrated["reliability"],
        }
        log(
            f"  {name}: accuracy {accuracy:.4f}, mean entropy {report[name]['mean_entropy']:.4f}, "
            f"ECE {calibrated['ece']:.4f}"
        )
    figures.reliability(report, os.path.join(out, "reliability.png"))
    entropy = predictive_entropy(averaged)
    figures.most_and_least_certain(
        runs.data.test_set.images,
        runs.data.test_set.classes,
        averaged,
        entropy,
        os.path.join(out, "certain_uncertain.png"),
    )
    names = list(report)
    lines = [
        "| prediction | test accuracy | mean predictive entropy (nats) | expected calibration error |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {n} | {report[n]['accuracy']:.4f} | {report[n]['mean_entropy']:.4f} | "
        f"{report[n]['expected_calibration_error']:.4f} |"
        for n in names
    ]
    wrong = averaged.argmax(axis=1) != labels
    lines += [
        "",
        f"Accuracy: {names[1]} {report[names[1]]['accuracy']:.4f} against {report[names[0]]['accuracy']:.4f} "
        "deterministic. " + entropy_sentence(entropy[wrong], entropy[~wrong]),
    ]
    return report, lines, ["reliability.png", "certain_uncertain.png"]


EXPERIMENTS = {
    "swap": swap,
    "with-without": with_without,
    "variance": variance,
    "test-time": test_time,
    "weight-decay": weight_decay,
    "dropconnect": dropconnect,
    "noise": noise,
    "mc-dropout": mc_dropout,
}
