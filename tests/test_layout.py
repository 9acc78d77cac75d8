"""The package's shape: the file map names every module, the engine/ops import cycle holds whichever is imported
first, and the ops skip gradients nobody asked for."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest

import minigrad as mg
import minigrad.nn.functional as F
from minigrad import ops

PACKAGE = os.path.dirname(mg.__file__)


def test_the_package_docstring_maps_every_module():
    modules = {name[:-3] for name in os.listdir(PACKAGE) if name.endswith(".py") and name != "__init__.py"}
    modules |= {name for name in os.listdir(PACKAGE) if os.path.isfile(os.path.join(PACKAGE, name, "__init__.py"))}
    missing = sorted(name for name in modules if f"``{name}``" not in mg.__doc__)
    assert not missing, f"modules missing from minigrad/__init__.py's file map: {missing}"


@pytest.mark.parametrize("first", ["minigrad.ops", "minigrad._tensor", "minigrad.autograd", "minigrad.nn.functional"])
def test_any_module_can_be_imported_first(first):
    """tensor <-> ops is a cycle owned the tinygrad way; importing either first must leave both complete."""
    code = (
        f"import {first}; import minigrad as mg; x = mg.tensor([1.0, 2.0], requires_grad=True); "
        f"(x * x).sum().backward(); print(x.grad.tolist())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[2.0,", "4.0]"]


def test_pyflakes_finds_nothing():
    """Undefined names, unused imports, shadowed imports, anywhere in the code. The GPU-only paths (the CUDA
    tests, the GPU benchmarks) never run on a machine without one, so a misspelt name there would otherwise
    first fail on a GPU."""
    api = pytest.importorskip("pyflakes.api", reason="pyflakes is not installed (the dev extra installs it)")
    from pyflakes.reporter import Reporter

    messages = io.StringIO()
    root = os.path.dirname(PACKAGE)
    paths = [os.path.join(root, folder) for folder in ("minigrad", "tests", "benchmarks", "examples")]
    api.checkRecursive(paths, Reporter(messages, messages))
    found = [line for line in messages.getvalue().splitlines() if not _marked_noqa(line)]
    assert not found, "\n".join(found)


def _marked_noqa(message):
    """Whether the line a pyflakes message ("path:line:column: text") points at says ``# noqa`` (as flake8 reads)."""
    path, line = message.split(":")[:2]
    with open(path, encoding="utf-8") as source:
        return "# noqa" in source.read().splitlines()[int(line) - 1]


def test_no_module_shadows_the_standard_library():
    shadowing = sorted(
        name[:-3]
        for name in os.listdir(PACKAGE)
        if name.endswith(".py") and name[:-3] in sys.stdlib_module_names and name[:-3] != "random"
    )
    assert not shadowing, shadowing  # random.py is torch.random's counterpart, named so on purpose


@pytest.mark.parametrize(
    "op, wanted",
    [
        (ops.Mul, (True, False)),
        (ops.Mul, (False, True)),
        (ops.Div, (True, False)),
        (ops.Div, (False, True)),
        (ops.Sub, (True, False)),
    ],
)
def test_backward_computes_only_the_gradients_asked_for(op, wanted):
    """The scratch dropout layer's X * mask / (1 - p) used to compute a full-size gradient for the mask and the
    constant too."""
    rng = np.random.default_rng(0)
    a, b = (mg.Tensor(rng.uniform(1, 2, (4, 5)), requires_grad=flag) for flag in wanted)
    y = op.apply(a, b)
    grads = y.grad_fn.backward(rng.standard_normal((4, 5)))
    assert [g is not None for g in grads] == list(wanted)


def test_value_checks_can_be_turned_off_and_on():
    logits, labels = mg.zeros(2, 3), mg.tensor(np.array([0, 3]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        F.cross_entropy(logits, labels)
    assert mg.value_checks_enabled()
    previous = mg.set_value_checks(False)
    try:
        assert previous is True and not mg.value_checks_enabled()
        with pytest.raises(IndexError):  # NumPy's own error: nothing read the labels before the op
            F.cross_entropy(logits, labels)
    finally:
        mg.set_value_checks(previous)
    assert mg.value_checks_enabled()


def test_shape_checks_live_at_the_entry_points_and_say_what_fits():
    with pytest.raises(ValueError, match=r"linear: input of shape \(2, 5\) does not fit a weight of shape \(3, 4\)"):
        F.linear(mg.zeros(2, 5), mg.zeros(3, 4))
    with pytest.raises(ValueError, match=r"matmul shape mismatch: \(2, 5\) @ \(4, 3\)"):
        mg.zeros(2, 5) @ mg.zeros(4, 3)
    with pytest.raises(ValueError, match=r"labels must be integer class indices"):
        F.cross_entropy(mg.zeros(2, 3), mg.zeros(2))
