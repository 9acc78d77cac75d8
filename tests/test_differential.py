"""The differential suite: every case of tests/op_table.py against central differences, and against PyTorch.

Run with ``--hypothesis-show-statistics`` to see how many examples each case ran.
"""

import inspect

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import minigrad as mg
from minigrad import ops
from minigrad._tensor import Function, MaxMin

from .op_table import CASES, VALUE_CASES, make_array, mlp_inputs
from .strategies import DEVICES
from .torch_oracle import needs_torch, torch

EXAMPLES = 25  # hypothesis examples per case and per check


def draw(case, data):
    """The case's inputs as float64/int64 NumPy arrays, its parameters, and a generator for upstream gradients."""
    specs, params = case.draw(data)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="values seed"))
    return specs, params, [make_array(rng, spec) for spec in specs], rng


def minigrad_inputs(specs, arrays, device="cpu"):
    return [
        mg.tensor(array, requires_grad=spec.grad and array.dtype.kind == "f", device=device)
        for spec, array in zip(specs, arrays)
    ]


def torch_inputs(specs, arrays):
    return [
        torch.tensor(array, requires_grad=bool(spec.grad and array.dtype.kind == "f"))
        for spec, array in zip(specs, arrays)
    ]


def values_of(result):
    """The differentiable output: max(dim) and min(dim) also return indices."""
    return result.values if isinstance(result, tuple) else result  # MaxMin, or PyTorch's return_types.max


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_gradient_matches_central_differences(case, device, data):
    specs, params, arrays, _ = draw(case, data)
    assume(case.away_from_kinks is None or case.away_from_kinks(*arrays))
    inputs = minigrad_inputs(specs, arrays, device)
    assert mg.gradcheck(lambda *tensors: values_of(case.minigrad(*tensors, **params)), inputs)


def test_the_mlp_cases_skip_inputs_on_a_relu_kink():
    """Hypothesis found these: the second layer's pre-activation is -8.7e-7, inside the step of the central
    difference, which then gives 0.0015 for a gradient that is 0."""
    case = next(case for case in CASES if case.name == "the chapter's MLP and loss, evaluation")
    specs = mlp_inputs(n=1, sizes=(3, 3, 3, 2))
    rng = np.random.default_rng(322326960)
    arrays = [make_array(rng, spec) for spec in specs]
    assert not case.away_from_kinks(*arrays)
    with pytest.raises(mg.GradcheckError, match="gradient of input 4"):
        mg.gradcheck(case.minigrad, minigrad_inputs(specs, arrays))


@needs_torch
@pytest.mark.parametrize("case", [case for case in CASES if case.torch], ids=lambda case: case.name)
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_values_and_gradients_match_pytorch(case, data):
    specs, params, arrays, rng = draw(case, data)
    ours, theirs = minigrad_inputs(specs, arrays), torch_inputs(specs, arrays)
    result, expected = case.minigrad(*ours, **params), case.torch(*theirs, **params)
    if isinstance(result, MaxMin):
        np.testing.assert_array_equal(result.indices.numpy(), expected.indices.numpy())
    result, expected = values_of(result), values_of(expected)
    assert result.shape == tuple(expected.shape) and result.dtype == np.float64
    np.testing.assert_allclose(result.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    upstream = rng.standard_normal(result.shape)  # random, never all-ones
    result.backward(upstream)
    expected.backward(torch.tensor(upstream))
    for position, (mine, reference) in enumerate(zip(ours, theirs)):
        if reference.requires_grad:
            assert mine.grad is not None and mine.grad.dtype == np.float64, f"input {position}"
            np.testing.assert_allclose(
                mine.grad, reference.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"gradient of input {position}"
            )


@needs_torch
@pytest.mark.parametrize("case", VALUE_CASES, ids=lambda case: case.name)
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_comparisons_and_arg_reductions_match_pytorch(case, data):
    specs, params, arrays, _ = draw(case, data)
    result = case.minigrad(*minigrad_inputs(specs, arrays), **params)
    expected = case.torch(*torch_inputs(specs, arrays), **params)
    assert result.shape == tuple(expected.shape)
    np.testing.assert_array_equal(result.numpy(), expected.numpy())


def test_the_table_covers_every_op_and_differentiable_method():
    """A new Function, or a new method of Tensor that returns a tensor, must get a case."""
    sources = " ".join(
        inspect.getsource(case.minigrad) if case.minigrad.__name__ == "<lambda>" else case.name for case in CASES
    )
    op_names = {
        name
        for name, obj in vars(ops).items()
        if isinstance(obj, type) and issubclass(obj, Function) and obj is not Function
    }
    # The functional entry points and Tensor methods that reach each op.
    reached_by = {
        "Add": "+",
        "Sub": "-",
        "Mul": "*",
        "Div": "/",
        "Neg": "-a",
        "Pow": "**",
        "Exp": ".exp()",
        "Log": ".log()",
        "ReLU": "relu",
        "MatMul": "@",
        "Linear": "F.linear",
        "Sum": ".sum(",
        "Mean": ".mean(",
        "Max": ".amax(",
        "Reshape": ".reshape(",
        "Permute": ".permute(",
        "Index": "a[",
        "Dropout": "dropout",
        "SoftmaxCrossEntropy": "cross_entropy",
        "Cast": "Cast.apply",
    }
    assert op_names <= set(reached_by), f"ops without a case in tests/op_table.py: {sorted(op_names - set(reached_by))}"
    names = " ".join(case.name for case in CASES) + " " + sources
    missing = [op for op, text in reached_by.items() if text not in names]
    assert not missing, f"ops without a case: {missing}"
    methods = [
        "sum",
        "mean",
        "amax",
        "amin",
        "max",
        "min",
        "reshape",
        "permute",
        "transpose",
        "swapaxes",
        ".T",
        ".mT",
        "exp",
        "log",
        "relu",
    ]
    assert all(method in names for method in methods)
