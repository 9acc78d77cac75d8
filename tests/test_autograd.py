"""The engine: graph building, backward order, accumulation, freeing, dtypes, and its errors."""

import gc
import weakref

import numpy as np
import pytest

import minigrad as mg


def test_reused_node_accumulates(device):
    a = mg.tensor([1.0, 2.0, 3.0], requires_grad=True, device=device)
    b = a + a  # db/da = 2
    c = (b * b).sum()  # dc/da = 2 b * 2 = 8 a
    c.backward()
    np.testing.assert_allclose(mg.tensor(a.grad).numpy(), 8 * a.numpy())


def test_diamond_graph(device):
    x = mg.tensor(3.0, requires_grad=True, device=device)
    left, right = x * 2, x.exp()
    (left * right).backward()  # d/dx 2x e^x = 2 e^x + 2x e^x
    assert float(x.grad) == pytest.approx(2 * np.exp(3) + 6 * np.exp(3), rel=1e-6)


def test_leaf_gradients_add_up_over_two_backwards():
    w = mg.tensor([1.0, -1.0], requires_grad=True)
    (w * 3).sum().backward()
    (w * 4).sum().backward()
    np.testing.assert_allclose(w.grad, [7.0, 7.0])


def test_deep_chain_of_10000_ops_has_no_recursion_limit():
    x = mg.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    assert float(x.grad) == pytest.approx(1.0001**10_000, rel=1e-3)


def test_graph_is_freed_after_backward():
    x = mg.randn(4, requires_grad=True)
    hidden = (x * 2).exp()
    ref = weakref.ref(hidden)
    loss = hidden.sum()
    del hidden
    gc.collect()
    assert ref() is not None, "before backward the graph keeps the intermediate alive"
    loss.backward()
    gc.collect()
    assert ref() is None, "backward must free the graph"
    assert x.grad is not None


@pytest.mark.filterwarnings("ignore::FutureWarning")  # gc.get_objects() also meets PyTorch's deprecated names
def test_no_tensor_outlives_backward_of_an_mlp():
    net = mg.nn.Sequential(mg.nn.Linear(6, 5), mg.nn.ReLU(), mg.nn.Dropout(0.5), mg.nn.Linear(5, 3))
    gc.collect()
    before = sum(isinstance(o, mg.Tensor) for o in gc.get_objects())
    x, y = mg.randn(4, 6), mg.tensor([0, 1, 2, 0])
    loss = mg.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    del x, y
    gc.collect()
    after = sum(isinstance(o, mg.Tensor) for o in gc.get_objects())
    assert after == before + 1, "only the loss itself may remain"


def test_second_backward_through_freed_graph_is_an_error_and_retain_graph_allows_it():
    x = mg.tensor(2.0, requires_grad=True)
    y = (x * x) * 1.0
    y.backward(retain_graph=True)
    y.backward()
    assert float(x.grad) == pytest.approx(8.0)
    with pytest.raises(RuntimeError, match="already freed"):
        y.backward()


def test_no_grad_records_nothing():
    w = mg.tensor([1.0], requires_grad=True)
    with mg.no_grad():
        y = w * 2
    assert y.grad_fn is None and not y.requires_grad
    assert mg.is_grad_enabled()


def test_backward_on_non_scalar_without_grad_says_so():
    x = mg.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="single-value"):
        (x * 2).backward()
    (x * 2).backward(np.ones(3, dtype=np.float32))
    np.testing.assert_allclose(x.grad, 2.0)


def test_backward_without_requires_grad_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        mg.tensor(1.0).backward()


@pytest.mark.parametrize(
    "op",
    [
        lambda a, b: a + b,
        lambda a, b: a - b,
        lambda a, b: a * b,
        lambda a, b: a / (b * b + 1.0),
        lambda a, b: a @ b.T,
        lambda a, b: (a**2).sum(axis=1),
        lambda a, b: a.mean(axis=0),
        lambda a, b: a.exp(),
        lambda a, b: (a * a + 1.0).log(),
        lambda a, b: a.relu(),
        lambda a, b: -a,
        lambda a, b: a.amax(axis=1),
        lambda a, b: a.reshape(-1),
        lambda a, b: a.T,
        lambda a, b: a[np.array([0, 0])],
        lambda a, b: 2.0 * a - 1 + a / 3,
        lambda a, b: mg.nn.functional.dropout(a, 0.3),
        lambda a, b: mg.nn.functional.linear(a, b, mg.zeros(3, device=a.device)),
    ],
)
def test_float32_in_float32_out_forward_and_backward(op, device):
    a = mg.randn(3, 4, requires_grad=True, device=device)
    b = mg.randn(3, 4, requires_grad=True, device=device)
    out = op(a, b)
    assert out.dtype == np.float32
    out.backward(mg.ones(out.shape, device=device))
    assert any(leaf.grad is not None for leaf in (a, b))
    for leaf in (a, b):
        assert leaf.grad is None or leaf.grad.dtype == np.float32


def test_model_stays_float32_end_to_end():
    net = mg.nn.Sequential(mg.nn.Linear(8, 4), mg.nn.ReLU(), mg.nn.Dropout(0.2), mg.nn.Linear(4, 3))
    loss = mg.nn.CrossEntropyLoss()(net(mg.randn(5, 8)), mg.tensor([0, 1, 2, 0, 1]))
    assert loss.dtype == np.float32
    loss.backward()
    assert all(p.grad.dtype == np.float32 for p in net.parameters())


def test_matmul_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\) @ \(4, 5\)"):
        mg.randn(2, 3) @ mg.randn(4, 5)


def test_broadcast_bias_gradient_sums_over_batch():
    bias = mg.zeros(256, requires_grad=True)
    (mg.ones(7, 256) + bias).sum().backward()
    np.testing.assert_allclose(bias.grad, np.full(256, 7.0))


def test_scalar_operand_keeps_float32():
    x = mg.tensor([1.0, 2.0])
    assert (x * 0.5).dtype == np.float32 and (1 / x).dtype == np.float32 and (x**2).dtype == np.float32


def test_pow_rejects_tensor_exponent():
    with pytest.raises(TypeError, match="exponent"):
        mg.tensor([1.0]) ** mg.tensor([2.0])


def test_repr_shows_the_op_that_made_the_tensor():
    a = mg.tensor([1.0, 2.0], requires_grad=True)
    text = repr(a * a)
    assert "grad_fn=Mul" in text and "shape=(2,)" in text and "float32" in text and "device='cpu'" in text
    assert "requires_grad=True" in repr(a)


def test_argmax_and_item_and_numpy():
    x = mg.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 1.0]])
    np.testing.assert_array_equal(x.argmax(axis=1).numpy(), [1, 0])
    assert x.sum().item() == pytest.approx(16.0)


def test_detach_cuts_the_graph():
    x = mg.tensor([1.0], requires_grad=True)
    y = (x * 2).detach()
    assert y.grad_fn is None and not y.requires_grad


# --- the trust pass (issue 13): each of these gave a wrong number, or a crash, before -------------------------


def random_grad(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def test_every_leaf_gradient_is_its_own_array():
    a = mg.randn(3, requires_grad=True)
    b = mg.randn(3, requires_grad=True)
    (a + b).sum().backward()  # Add hands the same dL/dy to both inputs
    assert a.grad is not b.grad and not np.shares_memory(a.grad, b.grad)
    a.grad *= 0.5
    np.testing.assert_array_equal(b.grad, np.ones(3, np.float32))


def test_backward_keeps_a_copy_of_the_callers_gradient():
    x = mg.randn(2, 3, requires_grad=True)
    g = random_grad((2, 3))
    x.backward(g)
    assert x.grad is not g and not np.shares_memory(x.grad, g)
    g[:] = 0
    assert x.grad.any()
    y = mg.randn(2, 3, requires_grad=True)
    y.reshape(6).backward(g.reshape(6) + 1)  # a view of dL/dy reaches the leaf: copied too
    assert y.grad.base is None


def test_unbroadcast_refuses_a_gradient_of_the_wrong_shape():
    class WrongShape(mg.Function):
        """y = x; backward deliberately returns the gradient transposed."""

        def forward(self, x):
            return x.copy()

        def backward(self, gy):
            return (gy.T,)

    x = mg.randn(2, 3, requires_grad=True)
    with pytest.raises(
        RuntimeError,
        match=r"WrongShape.backward returned a gradient of shape \(3, 2\) for an input "
        r"of shape \(2, 3\)",
    ):
        WrongShape.apply(x).backward(random_grad((2, 3)))


def test_a_gradient_has_its_leafs_dtype():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    (x * np.array([3.0, 4.0])).sum().backward()  # float32 leaf, float64 computation
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [
        ((4,), (4,)),
        ((4,), (4, 3)),
        ((2, 4), (4,)),
        ((2, 4), (4, 3)),
        ((5, 2, 4), (4, 3)),
        ((2, 4), (5, 4, 3)),
        ((5, 2, 4), (5, 4, 3)),
        ((5, 1, 2, 4), (3, 4, 6)),
        ((4,), (5, 4, 3)),
        ((5, 2, 4), (4,)),
    ],
)
def test_matmul_every_rank_combination_against_central_differences(a_shape, b_shape):
    a = mg.randn(*a_shape, dtype="float64", requires_grad=True)
    b = mg.randn(*b_shape, dtype="float64", requires_grad=True)
    assert (a @ b).shape == np.matmul(a.numpy(), b.numpy()).shape
    assert mg.gradcheck(lambda a, b: a @ b, [a, b])


def test_pow_zero_has_zero_gradient_even_at_zero():
    x = mg.tensor([0.0, 2.0, -1.0], requires_grad=True)
    (x**0).backward(random_grad(3))
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 0.0])


def test_max_of_values_with_a_nan_sends_the_gradient_to_the_nan():
    x = mg.tensor([1.0, np.nan, 2.0], requires_grad=True)
    x.max().backward(np.float32(3.0))
    np.testing.assert_array_equal(x.grad, [0.0, 3.0, 0.0])  # PyTorch's answer
    y = mg.tensor([[1.0, np.nan], [4.0, 2.0]], requires_grad=True)
    y.amax(dim=1).backward(np.array([5.0, 7.0], np.float32))
    np.testing.assert_array_equal(y.grad, [[0.0, 5.0], [7.0, 0.0]])


def test_the_engine_never_compares_tensors_with_eq():
    """== is elementwise now: the engine and the graph tools key tensors by identity."""
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = mg.tensor([1.0, 2.0], requires_grad=True)  # equal values, another tensor
    (x * y + x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 3.0])
    np.testing.assert_array_equal(y.grad, [1.0, 2.0])
