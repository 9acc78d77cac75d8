"""Every Function's backward against float64 central differences."""

import numpy as np
import pytest

import minigrad as mg
import minigrad.nn.functional as F
from minigrad import ops
from minigrad._tensor import Function


def leaf(*shape, device="cpu", positive=False):
    x = mg.randn(*shape, device=device, dtype="float64")
    if positive:
        x.data = abs(x.data) + 0.5
    x.requires_grad = True
    return x


def with_fixed_seed(fn):
    """Dropout draws a mask: reseed before each call so finite differences see the same mask."""

    def seeded(*args):
        mg.manual_seed(1234)
        return fn(*args)

    return seeded


CASES = {
    "Add": (lambda a, b: a + b, [(3, 4), (3, 4)]),
    "Add broadcast (N, 256) + (256,)": (lambda a, b: a + b, [(2, 256), (256,)]),
    "Sub": (lambda a, b: a - b, [(3, 4), (4,)]),
    "Mul": (lambda a, b: a * b, [(3, 4), (3, 1)]),
    "Div": (lambda a, b: a / b, [(3, 4), "positive(3, 4)"]),
    "Neg": (lambda a: -a, [(5,)]),
    "Cast": (lambda a: ops.Cast.apply(a, dtype=np.float64) * a, [(2, 3)]),
    "Pow": (lambda a: a**3, [(2, 3)]),
    "Pow fractional": (lambda a: a**0.5, ["positive(2, 3)"]),
    "Exp": (lambda a: a.exp(), [(2, 3)]),
    "Log": (lambda a: a.log(), ["positive(2, 3)"]),
    "ReLU": (lambda a: a.relu(), [(3, 4)]),
    "MatMul": (lambda a, b: a @ b, [(3, 4), (4, 2)]),
    "MatMul batched": (lambda a, b: a @ b, [(2, 3, 4), (4, 2)]),
    "MatMul vector @ matrix": (lambda a, b: a @ b, [(4,), (4, 2)]),
    "MatMul matrix @ vector": (lambda a, b: a @ b, [(3, 4), (4,)]),
    "Linear": (lambda x, w, b: F.linear(x, w, b), [(5, 4), (3, 4), (3,)]),
    "Linear without bias, 3-D input": (lambda x, w: F.linear(x, w), [(2, 5, 4), (3, 4)]),
    "Sum all": (lambda a: a.sum(), [(3, 4)]),
    "Sum axis keepdims": (lambda a: a.sum(axis=1, keepdims=True), [(3, 4)]),
    "Sum axis tuple": (lambda a: a.sum(axis=(0, 2)), [(2, 3, 4)]),
    "Mean": (lambda a: a.mean(axis=0), [(3, 4)]),
    "Max axis": (lambda a: a.amax(axis=1), [(3, 4)]),
    "Max all": (lambda a: a.max(), [(3, 4)]),
    "Reshape": (lambda a: a.reshape(4, 3) * mg.arange(12.0, dtype="float64", device=a.device).reshape(4, 3), [(3, 4)]),
    "Permute": (lambda a: a.permute(2, 0, 1), [(2, 3, 4)]),
    "T": (lambda a, b: a.T @ b, [(3, 4), (3, 2)]),
    "Index by integer array, repeated": (lambda a: a[np.array([0, 2, 0])], [(3, 4)]),
    "Index rows and columns": (lambda a: a[np.arange(3), np.array([1, 0, 3])], [(3, 4)]),
    "Dropout": (with_fixed_seed(lambda a: F.dropout(a, 0.4)), [(6, 5)]),
    "Dropout p=1": (lambda a: F.dropout(a, 1.0), [(3,)]),
    "SoftmaxCrossEntropy": (lambda o: F.cross_entropy(o, mg.tensor([0, 3, 1, 1], device=o.device)), [(4, 5)]),
    "reuse: b = a + a; c = b * b": (lambda a: (lambda b: b * b)(a + a), [(3,)]),
    "two-layer MLP with loss": (
        with_fixed_seed(
            lambda x, w1, b1, w2, b2: F.cross_entropy(
                F.linear(F.dropout(F.relu(F.linear(x, w1, b1)), 0.5), w2, b2), mg.tensor([0, 2, 1], device=x.device)
            )
        ),
        [(3, 5), (4, 5), (4,), (3, 4), (3,)],
    ),
}


def make_inputs(specs, device):
    inputs = []
    for spec in specs:
        if isinstance(spec, str):
            shape = tuple(int(n) for n in spec[len("positive(") : -1].split(","))
            inputs.append(leaf(*shape, device=device, positive=True))
        else:
            inputs.append(leaf(*spec, device=device))
    return inputs


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name, device):
    fn, specs = CASES[name]
    inputs = make_inputs(specs, device)
    assert mg.gradcheck(fn, inputs)


def test_gradcheck_catches_a_wrong_backward():
    class WrongSquare(Function):
        """y = x^2; dy/dx deliberately wrong (x instead of 2x) to prove gradcheck can fail."""

        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, gy):
            return (gy * self.x,)

    with pytest.raises(mg.GradcheckError, match="finite differences"):
        mg.gradcheck(lambda a: WrongSquare.apply(a), [leaf(3)])


def test_every_op_is_gradchecked():
    """A new Function must get a case above."""
    checked = {
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Neg",
        "Pow",
        "Exp",
        "Log",
        "ReLU",
        "MatMul",
        "Linear",
        "Sum",
        "Mean",
        "Max",
        "Reshape",
        "Permute",
        "Index",
        "Dropout",
        "SoftmaxCrossEntropy",
        "Cast",
    }
    op_names = {
        name
        for name, obj in vars(ops).items()
        if isinstance(obj, type) and issubclass(obj, Function) and obj is not Function
    }
    assert op_names <= checked, f"ops without a gradcheck case: {sorted(op_names - checked)}"
    assert all(any(case.startswith(op) for case in CASES) for op in checked)
