"""The laws of dropout, eq. (4.6.1), checked as properties.

Statistical bounds come from Hoeffding's inequality with a false-failure probability of 1e-9 per
check: for n independent draws in [0, c], P(|mean - E| >= t) <= 2 exp(-2 n t^2 / c^2), so
t = c * sqrt(ln(2 / 1e-9) / (2 n)). Nothing here is tuned to pass.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad as mg
import minigrad.nn.functional as F

from .strategies import DEVICES, probabilities, seeds, small_shapes

FALSE_FAILURE = 1e-9


def hoeffding(n, value_range=1.0, delta=FALSE_FAILURE):
    """Half-width t with P(|sample mean - expectation| >= t) <= delta for n draws in a range of this size."""
    return value_range * math.sqrt(math.log(2 / delta) / (2 * n))


@given(shape=small_shapes, p=probabilities, seed=seeds)
def test_every_element_is_zero_or_scaled_input(shape, p, seed):
    mg.manual_seed(seed)
    x = mg.randn(*shape)
    y = F.dropout(x, p).numpy()
    # The survivors are x times the float32 scale 1/(1-p), bit for bit; that is x/(1-p) up to float32 rounding.
    scaled = x.numpy() * np.float32(1 / (1 - p))
    assert np.all((y == 0) | (y == scaled))
    np.testing.assert_allclose(scaled, x.numpy() / (1 - p), rtol=2e-7)


@given(p=probabilities, seed=seeds)
@settings(max_examples=30)
@pytest.mark.parametrize("device", DEVICES)
def test_dropped_fraction_is_within_a_binomial_bound(device, p, seed):
    mg.manual_seed(seed)
    n = 100_000
    y = F.dropout(mg.ones(n, device=device), p).numpy()
    dropped = np.mean(y == 0)
    assert abs(dropped - p) <= hoeffding(n)


@given(p=probabilities, h=st.floats(0.1, 10.0), seed=seeds)
@settings(max_examples=30)
@pytest.mark.parametrize("device", DEVICES)
def test_expectation_and_variance_are_preserved(device, p, h, seed):
    """E[h'] = h and Var[h'] = h^2 p / (1 - p), each h' in [0, h / (1 - p)]."""
    mg.manual_seed(seed)
    n = 200_000
    draws = F.dropout(mg.ones(n, device=device) * h, p).numpy().astype(np.float64)
    top = h / (1 - p)
    assert abs(draws.mean() - h) <= hoeffding(n, top)
    # h' = top * B with B ~ Bernoulli(1 - p): its variance top^2 q(1 - q) moves by at most top^2 |q^ - q|.
    assert abs(draws.var() - h * h * p / (1 - p)) <= top * top * hoeffding(n)


def test_mean_of_one_element_over_many_draws_is_the_element():
    p, draws = 0.5, 20_000
    x = mg.tensor([[0.5, -2.0, 3.0]])
    total = np.zeros(3)
    for _ in range(draws):
        total += F.dropout(x, p).numpy()[0]
    bound = hoeffding(draws, abs(x.numpy()).max() / (1 - p), FALSE_FAILURE / 3)
    np.testing.assert_allclose(total / draws, x.numpy()[0], atol=bound)


def test_p_zero_is_the_identity_and_p_one_gives_zeros(device):
    x = mg.randn(4, 5, device=device, requires_grad=True)
    assert F.dropout(x, 0.0) is x
    y = F.dropout(x, 1.0)
    assert not y.numpy().any() and y.dtype == np.float32
    y.sum().backward()
    assert not mg.tensor(x.grad).numpy().any()


@given(shape=small_shapes, p=probabilities)
def test_eval_is_the_identity(shape, p):
    x = mg.randn(*shape)
    assert F.dropout(x, p, training=False) is x
    layer = mg.nn.Dropout(p).eval()
    assert layer(x) is x


@given(shape=small_shapes, p=probabilities, seed=seeds)
def test_gradient_is_upstream_times_forward_mask(shape, p, seed):
    mg.manual_seed(seed)
    x = mg.randn(*shape, requires_grad=True)
    y = F.dropout(x, p)
    upstream = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    y.backward(upstream)
    mask = (y.numpy() != 0) / np.float32(1 - p)
    np.testing.assert_allclose(x.grad, upstream * mask, rtol=1e-6)


def test_same_seed_same_mask_different_seed_different_mask(device):
    x = mg.ones(1000, device=device)
    mg.manual_seed(7)
    first = F.dropout(x, 0.5).numpy()
    mg.manual_seed(7)
    again = F.dropout(x, 0.5).numpy()
    mg.manual_seed(8)
    other = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()


def test_successive_calls_draw_fresh_masks():
    x = mg.ones(1000)
    assert (F.dropout(x, 0.5).numpy() != F.dropout(x, 0.5).numpy()).any()


def test_mask_is_drawn_in_the_input_dtype_on_its_device(device):
    from minigrad import ops

    x = mg.randn(10, 10, device=device, requires_grad=True)
    op = ops.Dropout.apply(x, p=0.5).grad_fn
    assert op.mask.dtype == np.float32 and mg.backend.device_of(op.mask) == x.device


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "half"])
def test_invalid_probability_is_a_value_error(p):
    with pytest.raises(ValueError, match=r"dropout probability must be"):
        F.dropout(mg.ones(3), p)
    with pytest.raises(ValueError, match=r"dropout probability must be"):
        mg.nn.Dropout(p)


def test_chapter_demo_arange_16():
    X = mg.arange(16.0).reshape(2, 8)
    np.testing.assert_array_equal(F.dropout(X, 0.0).numpy(), X.numpy())
    half = F.dropout(X, 0.5).numpy()
    assert set(np.unique(half / 2)) <= set(np.arange(16.0))
    assert not F.dropout(X, 1.0).numpy().any()


def test_dropout_module_follows_its_training_flag():
    net = mg.nn.Sequential(mg.nn.Linear(4, 4), mg.nn.Dropout(0.5))
    x = mg.randn(8, 4)
    net.eval()
    np.testing.assert_array_equal(net(x).numpy(), net(x).numpy())
    net.train()
    assert (net(x).numpy() != net(x).numpy()).any()
