"""Pictures: the graph behind a tensor (Graphviz), and the chapter's training curves (matplotlib).

The graph: tensors are boxes (their shape and dtype; parameters filled, other leaves outlined twice); ops are
ellipses named after their Function (MatMul, ReLU, Sum, ...). Edges follow the data: input -> op
-> output. A leaf's gradient is shown once backward has filled it. Draw the graph before
``backward()`` (which frees it) or call ``backward(retain_graph=True)``.

The curves: train loss, train accuracy and test accuracy against the epoch, as the chapter draws
them. matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .backend import to_numpy
from .files import PathLike, atomic_write
from .nn.module import Parameter

if TYPE_CHECKING:
    from ._tensor import Tensor


def _quote(*lines):
    """A DOT string literal; its lines are joined with DOT's own line break (backslash n)."""
    escaped = (str(line).replace("\\", "\\\\").replace('"', '\\"') for line in lines)
    return '"' + "\\n".join(escaped) + '"'


def _graph_nodes(root):
    """Every tensor and op reachable from ``root`` through the recorded inputs (iteratively)."""
    tensors, ops, stack, seen = [], [], [root], set()
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        tensors.append(tensor)
        fn = tensor.grad_fn
        if fn is not None:
            ops.append((fn, tensor))
            stack.extend(fn.inputs or ())
    return tensors, ops


def to_dot(root: Tensor, names: Mapping[Tensor, str] | None = None) -> str:
    """The DOT source of the graph that produced ``root``.

    Args:
        root: the tensor to start from (usually the loss).
        names: optional {tensor: label}, e.g. ``{p: n for n, p in model.named_parameters()}``.
    """
    labels = {id(t): label for t, label in (names or {}).items()}
    tensors, ops = _graph_nodes(root)
    tensor_id = {id(t): f"t{i}" for i, t in enumerate(tensors)}  # short, stable node names
    op_id = {id(fn): f"op{i}" for i, (fn, _) in enumerate(ops)}
    lines = ["digraph minigrad {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];']
    for tensor in tensors:
        label = [labels[id(tensor)]] if id(tensor) in labels else []
        label.append(f"{tuple(tensor.shape)} {tensor.dtype}")
        if tensor.grad_fn is None and tensor.grad is not None:
            grad = to_numpy(tensor.grad)
            label.append(f"grad: |g| = {float((grad.astype('float64') ** 2).sum()) ** 0.5:.4g}")
        if isinstance(tensor, Parameter):
            style = 'shape=box, style="filled", fillcolor="lightblue"'
        elif tensor.grad_fn is None:
            style = "shape=box, peripheries=2"  # a leaf: data, or a tensor made by the user
        else:
            style = "shape=box"
        lines.append(f"  {tensor_id[id(tensor)]} [label={_quote(*label)}, {style}];")
    for fn, output in ops:
        name = type(fn).__name__ + ("" if fn.inputs is not None else " (freed)")
        lines.append(f"  {op_id[id(fn)]} [label={_quote(name)}, shape=ellipse];")
        for tensor in fn.inputs or ():
            lines.append(f"  {tensor_id[id(tensor)]} -> {op_id[id(fn)]};")
        lines.append(f"  {op_id[id(fn)]} -> {tensor_id[id(output)]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(root: Tensor, path: PathLike, names: Mapping[Tensor, str] | None = None) -> None:
    """Draw the graph into ``path`` (.svg, .png or .pdf) with Graphviz's ``dot`` program."""
    fmt = str(path).rsplit(".", 1)[-1].lower()
    if fmt not in ("svg", "png", "pdf"):
        raise ValueError(f"render writes .svg, .png or .pdf files, got {path!r}")
    picture = draw(root, fmt, names)
    with atomic_write(path) as file:
        file.write(picture)


def draw(root: Tensor, fmt: str = "svg", names: Mapping[Tensor, str] | None = None) -> bytes:
    """The graph as the bytes of an .svg, .png or .pdf file, drawn by Graphviz's ``dot`` (for a notebook:
    ``IPython.display.SVG(draw(loss))``)."""
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError(
            "drawing the graph needs Graphviz's `dot` program: apt-get install graphviz "
            "(Debian/Ubuntu) or brew install graphviz (macOS); or save to_dot(tensor) to a .dot file"
        )
    result = subprocess.run([dot, f"-T{fmt}"], input=to_dot(root, names).encode(), capture_output=True, check=False)
    if result.returncode:
        raise RuntimeError(f"dot failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


# ---------------------------------------------------------------------------------------------------------
# The chapter's figure


def pyplot() -> Any:
    """matplotlib's pyplot, drawing off screen (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_bytes(figure: Any, fmt: str = "png", dpi: float | None = None) -> bytes:
    """A matplotlib figure as the bytes of a file in ``fmt``; the figure is closed (for a notebook:
    ``IPython.display.Image(figure_bytes(figure))``)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=dpi)
    pyplot().close(figure)
    return buffer.getvalue()


def save_figure(figure: Any, path: PathLike, dpi: float | None = None) -> None:
    """Write a matplotlib figure to ``path`` (its format from the suffix), atomically, and close it."""
    picture = figure_bytes(figure, str(path).rsplit(".", 1)[-1].lower(), dpi)
    with atomic_write(path) as file:
        file.write(picture)


def plot_curves(history: Sequence[Mapping[str, Any]], path: PathLike, title: str | None = None) -> None:
    """Draw the curves of ``history`` (a list of per-epoch dicts) into a PNG at ``path``, atomically."""
    save_figure(curves_figure(history, title), path)


def curves_figure(history: Sequence[Mapping[str, Any]], title: str | None = None) -> Any:
    """The chapter's figure for ``history``: train loss, train accuracy and test accuracy against the epoch."""
    epochs = [record["epoch"] for record in history]
    figure, axes = pyplot().subplots(figsize=(5, 3.5), dpi=100)
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
    return figure
