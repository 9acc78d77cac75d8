"""minigrad.uncertainty: calibration's reliability points and expected calibration error, and MC dropout finding
the stochastic layers by their class attribute."""

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn
from minigrad.uncertainty import calibration, mc_dropout_probabilities


def test_calibration_of_a_hand_worked_example():
    # Two bins are used: confidence 0.95 (bin 9) with 1 of 2 right, and 0.55 (bin 5) with 2 of 2 right.
    probabilities = np.array([[0.95, 0.05], [0.05, 0.95], [0.55, 0.45], [0.45, 0.55]])
    labels = np.array([0, 0, 0, 1])
    result = calibration(probabilities, labels, bins=10)
    assert result["reliability"] == [pytest.approx((0.55, 1.0, 2)), pytest.approx((0.95, 0.5, 2))]
    # ECE = (2/4) |1.0 - 0.55| + (2/4) |0.5 - 0.95| = 0.225 + 0.225
    assert result["ece"] == pytest.approx(0.45)


def test_a_calibrated_predictor_has_no_calibration_error():
    """Rows whose confidence is 0.8 and which are right 8 times in 10."""
    probabilities = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert calibration(probabilities, labels)["ece"] == pytest.approx(0.0, abs=1e-12)


def test_confidence_one_falls_in_the_last_bin():
    result = calibration(np.array([[1.0, 0.0]]), np.array([0]), bins=4)
    assert result["reliability"] == [(1.0, 1.0, 1)] and result["ece"] == 0.0


@pytest.mark.parametrize(
    "probabilities, labels",
    [(np.zeros((3,)), np.zeros(3)), (np.zeros((3, 2)), np.zeros(2)), (np.zeros((0, 2)), np.zeros(0))],
)
def test_calibration_refuses_shapes_that_do_not_fit(probabilities, labels):
    with pytest.raises(ValueError, match="calibration needs probabilities"):
        calibration(probabilities, labels)


class Jitter(nn.Module):
    """A stochastic layer of the user's own: MC dropout must switch it on by its class attribute alone."""

    stochastic = True

    def forward(self, x):
        return x + mg.randn(*x.shape) if self.training else x


def test_mc_dropout_finds_stochastic_layers_by_their_class_attribute():
    net = nn.Sequential(nn.Linear(4, 3), Jitter())
    net.eval()
    x = mg.randn(5, 4)
    first = mc_dropout_probabilities(net, x, passes=1)
    second = mc_dropout_probabilities(net, x, passes=1)
    assert not np.allclose(first, second), "the user's stochastic layer was left off"
    assert not any(module.training for module in net.modules()), "every module's own mode is restored"
