"""Statistics over seeds, and the sentences that report them: a claim only where the numbers make one."""

import math

import numpy


def summarise(histories):
    """Mean and standard deviation over seeds of: the test accuracy averaged over the last three epochs
    (with lr 0.5 held constant the accuracy swings by about 0.02 from epoch to epoch, so this is the steadier
    measure), the final and the best test accuracy, and the final train-test gap. With one seed there is no
    standard deviation (None, null in results.json), and so no claim of significance."""

    def stats(values):
        values = numpy.asarray(values, dtype=float)
        return {
            "mean": float(values.mean()),
            "sd": float(values.std(ddof=1)) if len(values) > 1 else None,
            "n": len(values),
        }

    return {
        "last3_test_acc": stats([numpy.mean([e["test_acc"] for e in h[-3:]]) for h in histories]),
        "final_test_acc": stats([h[-1]["test_acc"] for h in histories]),
        "best_test_acc": stats([max(e["test_acc"] for e in h) for h in histories]),
        "gap": stats([h[-1]["gap"] for h in histories]),
    }


def fmt(stat):
    """``mean ± sd`` to 4 places, or the mean alone for one seed."""
    return f"{stat['mean']:.4f} ± {stat['sd']:.4f}" if stat["sd"] is not None else f"{stat['mean']:.4f} (one seed)"


def summary_table(results):
    """A Markdown table of ``Runs.of``'s results, one row per setting."""
    rows = [
        "| setting | test acc, mean of last 3 epochs | final test acc | best test acc | train-test gap (final) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for setting, result in results.items():
        s = result["summary"]
        rows.append(
            f"| {setting.label} | {fmt(s['last3_test_acc'])} | {fmt(s['final_test_acc'])} | "
            f"{fmt(s['best_test_acc'])} | {fmt(s['gap'])} |"
        )
    rows += ["", "Each cell: mean ± standard deviation over the seeds."]
    return rows


def best(results, key="last3_test_acc"):
    """The setting with the highest mean ``key``."""
    return max(results, key=lambda setting: results[setting]["summary"][key]["mean"])


def compare(results, a, b, key="last3_test_acc"):
    """A sentence comparing two settings, and whether the difference exceeds two standard errors over seeds.

    With fewer than two seeds on either side there is no standard error, and the sentence says so
    instead of judging the difference.
    """
    sa, sb = results[a]["summary"][key], results[b]["summary"][key]
    diff = sa["mean"] - sb["mean"]
    what = key.replace("_", " ").replace("last3", "last-3-epoch")
    numbers = f"{what}: {a.label} {sa['mean']:.4f}, {b.label} {sb['mean']:.4f}; difference {diff:+.4f}"
    if sa["sd"] is None or sb["sd"] is None:
        return f"{numbers}; with one seed there is no standard error, so no claim either way (run --seeds 0 1 2)"
    standard_error = math.sqrt(sa["sd"] ** 2 / sa["n"] + sb["sd"] ** 2 / sb["n"])
    verdict = (
        "more than two standard errors: a real difference"
        if abs(diff) > 2 * standard_error
        else "within two standard errors: not distinguishable with these seeds"
    )
    return f"{numbers}, {verdict} (standard error {standard_error:.4f})"


def entropy_sentence(wrong, right):
    """What the MC entropy says about mistakes, from the numbers: a claim only where the numbers make one."""
    if not len(wrong) or not len(right):
        return (
            f"Every test image was classified {'correctly' if not len(wrong) else 'wrongly'}, so the entropy "
            "cannot be compared between mistakes and correct predictions."
        )
    text = (
        f"The MC entropy is {wrong.mean():.3f} on the misclassified test images and {right.mean():.3f} on the "
        "correctly classified ones"
    )
    if abs(wrong.mean() - right.mean()) < 1e-3:
        return text + ": the same, so here the entropy does not tell mistakes from correct predictions."
    if wrong.mean() > right.mean():
        return (
            text + f": on average the model is less certain where it is wrong (by "
            f"{wrong.mean() - right.mean():.3f} nats), so higher uncertainty goes with likelier mistakes."
        )
    return text + ": the mistakes are not the less certain predictions here, so the entropy does not flag them."
