"""The other noise layers (exercises 6 and 7), learning-rate schedules and Monte-Carlo dropout.

Bounds: Gaussian noise gives a sample mean that is exactly normal, so |mean - h| <= z sigma / sqrt(n) with
z = 6.11 (two-sided 1e-9); bounded noise uses Hoeffding's inequality at 1e-9, as in test_dropout.py.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad as mg
from minigrad import nn
from minigrad.uncertainty import mc_dropout_probabilities, predictive_entropy

from .strategies import DEVICES, probabilities, seeds, small_shapes
from .test_dropout import hoeffding

Z_1E9 = 6.11  # P(|N(0, 1)| > 6.11) < 1e-9


@pytest.mark.parametrize(
    "layer", [nn.GaussianDropout(0.5), nn.GaussianNoise(0.3), nn.UniformNoise(0.5), nn.Dropout(0.5)]
)
@given(shape=small_shapes)
def test_eval_is_the_identity(layer, shape):
    x = mg.randn(*shape)
    assert layer.eval()(x) is x
    layer.train()


def test_dropconnect_eval_is_the_plain_linear_layer():
    layer = nn.DropConnect(5, 3, p=0.5)
    x = mg.randn(4, 5)
    plain = mg.nn.functional.linear(x, layer.weight, layer.bias).numpy()
    np.testing.assert_array_equal(layer.eval()(x).numpy(), plain)
    assert (layer.train()(x).numpy() != plain).any()


@given(p=probabilities, h=st.floats(0.1, 5.0), seed=seeds)
@settings(max_examples=25)
@pytest.mark.parametrize("device", DEVICES)
def test_gaussian_dropout_keeps_mean_and_dropouts_variance(device, p, h, seed):
    mg.manual_seed(seed)
    n = 200_000
    draws = nn.GaussianDropout(p)(mg.ones(n, device=device) * h).numpy().astype(np.float64)
    sigma = h * math.sqrt(p / (1 - p))
    assert abs(draws.mean() - h) <= Z_1E9 * sigma / math.sqrt(n)
    # The sample variance of n normals: (n - 1) s^2 / sigma^2 ~ chi2(n - 1), with sd sqrt(2 (n - 1)); at
    # n - 1 = 199,999 degrees of freedom its skewness is 0.006, so the normal quantile bounds it.
    assert abs(draws.var(ddof=1) / sigma**2 - 1) <= Z_1E9 * math.sqrt(2 / (n - 1))


@given(sigma=st.floats(0.01, 2.0), seed=seeds)
@settings(max_examples=25)
def test_gaussian_noise_keeps_the_mean(sigma, seed):
    mg.manual_seed(seed)
    n = 100_000
    draws = nn.GaussianNoise(sigma)(mg.ones(n) * 3.0).numpy().astype(np.float64)
    assert abs(draws.mean() - 3.0) <= Z_1E9 * sigma / math.sqrt(n)


@given(p=probabilities, seed=seeds)
@settings(max_examples=25)
def test_uniform_noise_keeps_the_mean_and_is_bounded(p, seed):
    mg.manual_seed(seed)
    n = 100_000
    a = math.sqrt(3 * p / (1 - p))
    draws = nn.UniformNoise(p)(mg.ones(n)).numpy().astype(np.float64)
    assert draws.min() >= 1 - a - 1e-6 and draws.max() <= 1 + a + 1e-6
    assert abs(draws.mean() - 1.0) <= hoeffding(n, 2 * a)


@given(p=probabilities, seed=seeds)
@settings(max_examples=20)
def test_dropconnect_keeps_the_expected_weight(p, seed):
    mg.manual_seed(seed)
    layer = nn.DropConnect(200, 100, p=p, init=nn.init.xavier_uniform_)
    n, total = 50, 0
    x = mg.tensor(np.eye(200, dtype=np.float32))  # x W'^T + b with x = I reads W' out
    for _ in range(n):
        total = total + (layer(x).numpy() - layer.bias.numpy()).T
    weight = layer.weight.numpy()
    top = np.abs(weight).max() / (1 - p)
    # 20,000 weights, each the mean of n draws in a range of size top: a union bound over all of them.
    assert np.abs(total / n - weight).max() <= hoeffding(n, top, 1e-9 / weight.size)


@pytest.mark.parametrize(
    "make", [lambda: nn.GaussianDropout(0.3), lambda: nn.GaussianNoise(0.2), lambda: nn.UniformNoise(0.3)]
)
def test_noise_layers_gradcheck_with_a_fixed_draw(make):
    layer = make()

    def f(x):
        mg.manual_seed(5)
        return layer(x)

    assert mg.gradcheck(f, [mg.randn(4, 3, dtype="float64", requires_grad=True)])


def test_dropconnect_gradcheck_with_a_fixed_mask():
    layer = nn.DropConnect(3, 2, p=0.5, dtype="float64")

    def f(x, w, b):
        mg.manual_seed(5)
        return mg.nn.functional.linear(x, mg.nn.functional.dropout(w, 0.5), b)

    inputs = [
        mg.randn(4, 3, dtype="float64", requires_grad=True),
        mg.tensor(layer.weight.data, requires_grad=True, dtype="float64"),
        mg.tensor(layer.bias.data, requires_grad=True, dtype="float64"),
    ]
    assert mg.gradcheck(f, inputs)


def test_softmax_is_a_distribution_and_gradchecks():
    probs = mg.nn.functional.softmax(mg.tensor([[1e4, 0.0, -1e4], [1.0, 2.0, 3.0]]), axis=1).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert np.isfinite(probs).all()
    assert mg.gradcheck(lambda o: mg.nn.functional.softmax(o), [mg.randn(3, 4, dtype="float64", requires_grad=True)])


@pytest.mark.parametrize("value", [-0.1, float("nan")])
def test_negative_noise_scale_is_rejected(value):
    with pytest.raises(ValueError, match="must be >= 0"):
        nn.GaussianNoise(value)


def test_step_and_cosine_schedules():
    w = nn.Parameter(np.zeros(1, np.float32))
    opt = mg.optim.SGD([w], lr=1.0)
    step = mg.optim.StepLR(opt, step_size=2, gamma=0.5)
    rates = []
    for _ in range(5):
        rates.append(opt.param_groups[0]["lr"])
        step.step()
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.25]
    opt = mg.optim.SGD([w], lr=0.5)
    cosine = mg.optim.CosineAnnealingLR(opt, T_max=4)
    rates = []
    for _ in range(5):
        rates.append(opt.param_groups[0]["lr"])
        cosine.step()
    np.testing.assert_allclose(
        rates,
        [0.5, 0.5 * (1 + math.cos(math.pi / 4)) / 2, 0.25, 0.5 * (1 + math.cos(3 * math.pi / 4)) / 2, 0.0],
        atol=1e-12,
    )


def test_mc_dropout_switches_only_noise_layers_on_and_restores_modes():
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    net.train()
    x = mg.randn(8, 6)
    first = mc_dropout_probabilities(net, x, passes=1)
    second = mc_dropout_probabilities(net, x, passes=1)
    assert (first != second).any(), "dropout is on during MC passes"
    assert all(m.training for m in net.modules()), "modes are restored"
    probs = mc_dropout_probabilities(net, x, passes=20)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    entropy = predictive_entropy(probs)
    assert (entropy >= 0).all() and (entropy <= math.log(3) + 1e-6).all()
    np.testing.assert_allclose(predictive_entropy(np.eye(3)), 0.0, atol=1e-9)
    np.testing.assert_allclose(predictive_entropy(np.full((1, 3), 1 / 3)), math.log(3), rtol=1e-9)
