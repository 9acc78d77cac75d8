"""The experiments' plots, drawn through minigrad.viz (matplotlib off screen, files written atomically)."""

import numpy

from minigrad.viz import pyplot, save_figure

DPI = 80


def curves(results, keys, path, title):
    """One panel per key (test_acc, gap, ...): each setting's curve, averaged over its seeds, against the epoch."""
    figure, axes = pyplot().subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2))
    axes = numpy.atleast_1d(axes)
    for axis, key in zip(axes, keys):
        for setting, result in results.items():
            curve = numpy.mean([[e[key] for e in h] for h in result["histories"]], axis=0)
            axis.plot(range(1, len(curve) + 1), curve, label=setting.label)
        axis.set_xlabel("epoch")
        axis.set_title(key.replace("_", " "), fontsize=9)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    save_figure(figure, path, dpi=DPI)


def grid(table, ticks, path):
    """A heat map of ``table[i][j]``, the accuracy for (p1 = ticks[i], p2 = ticks[j]), with its numbers written in."""
    figure, axis = pyplot().subplots(figsize=(4.4, 3.6))
    image = axis.imshow(table, cmap="viridis")
    for i in range(len(ticks)):
        for j in range(len(ticks)):
            axis.text(j, i, f"{table[i][j]:.3f}", ha="center", va="center", fontsize=8, color="w")
    axis.set_xticks(range(len(ticks)), ticks)
    axis.set_yticks(range(len(ticks)), ticks)
    axis.set_xlabel("p2 (after hidden layer 2)")
    axis.set_ylabel("p1 (after hidden layer 1)")
    axis.set_title("final test accuracy", fontsize=10)
    figure.colorbar(image)
    figure.tight_layout()
    save_figure(figure, path, dpi=DPI)


def variances(records, path):
    """Each hidden layer's activation variance per epoch, before and after dropout, for each setting."""
    figure, axes = pyplot().subplots(1, 2, figsize=(8.4, 3.2))
    for axis, layer in zip(axes, ("layer 1", "layer 2")):
        for label, record in records.items():
            for when, style in (("before", "-"), ("after", "--")):
                if not record["has_dropout"] and when == "after":
                    continue  # no dropout layer: after is before
                curve = [row[f"{layer} {when} dropout"] for row in record["variance"]]
                axis.plot(range(1, len(curve) + 1), curve, style, label=f"{label}, {when} dropout")
        axis.set_title(f"hidden {layer}: activation variance", fontsize=9)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path, dpi=DPI)


def reliability(report, path):
    """The reliability diagram: accuracy against confidence per bin, for each way of predicting."""
    figure, axis = pyplot().subplots(figsize=(4.2, 3.6))
    axis.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
    for name, entry in report.items():
        axis.plot([c for c, _, _ in entry["reliability"]], [a for _, a, _ in entry["reliability"]], "o-", label=name)
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path, dpi=DPI)


def most_and_least_certain(images, classes, probabilities, entropy, path, count=8):
    """The ``count`` test images with the lowest and the highest predictive entropy, with the predicted class."""
    order = numpy.argsort(entropy)
    figure, axes = pyplot().subplots(2, count, figsize=(9, 2.8))
    for row, (title, picks) in enumerate((("most certain", order[:count]), ("least certain", order[-count:]))):
        for axis, index in zip(axes[row], picks):
            axis.imshow(images[index], cmap="gray_r")
            axis.set_title(f"{classes[int(probabilities[index].argmax())][:9]}\nH={entropy[index]:.2f}", fontsize=7)
            axis.axis("off")
        axes[row][0].text(-8, 14, title, rotation=90, va="center", fontsize=8)
    figure.tight_layout()
    save_figure(figure, path, dpi=DPI)
