"""The chapter's figure: train loss, train accuracy and test accuracy against the epoch."""
import io as _io

import matplotlib

matplotlib.use("Agg")  # headless: no display needed
import matplotlib.pyplot as plt  # noqa: E402

from .io import atomic_write  # noqa: E402


def plot_curves(history, path, title=None):
    """Draw the curves of ``history`` (a list of per-epoch dicts) into a PNG at ``path``, atomically."""
    epochs = [record["epoch"] for record in history]
    figure, axes = plt.subplots(figsize=(5, 3.5), dpi=100)
    axes.plot(epochs, [r["train_loss"] for r in history], label="train loss")
    axes.plot(epochs, [r["train_acc"] for r in history], linestyle="--", label="train acc")
    axes.plot(epochs, [r["test_acc"] for r in history], linestyle="-.", label="test acc")
    axes.set_xlabel("epoch")
    axes.set_xlim(min(epochs) - 0.1, max(epochs) + 0.1)
    axes.grid(alpha=0.3)
    axes.legend()
    if title:
        axes.set_title(title, fontsize=9)
    figure.tight_layout()
    buffer = _io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    with atomic_write(path) as file:
        file.write(buffer.getvalue())
