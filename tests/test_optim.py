"""SGD and the schedules against PyTorch's definitions: misuse refused, momentum and the cosine as PyTorch computes
them (against PyTorch itself when it is installed), and their state saved and restored exactly."""

import math

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn

from . import torch_oracle


def parameter(*values):
    return nn.Parameter(np.array(values, dtype=np.float64))


# --- misuse is refused --------------------------------------------------------------------------------


def test_a_bare_tensor_is_refused_not_iterated():
    w = parameter(1.0, 2.0)
    with pytest.raises(TypeError, match="iterable of Tensors or dicts, but got a Tensor"):
        mg.optim.SGD(w, lr=0.1)


def test_a_tensor_made_by_an_op_is_refused():
    w = parameter(1.0, 2.0)
    with pytest.raises(ValueError, match="non-leaf"):
        mg.optim.SGD([w * 2], lr=0.1)


@pytest.mark.parametrize("groups", ["one list", "two groups"])
def test_a_parameter_listed_twice_is_refused(groups):
    w = parameter(1.0)
    params = [w, w] if groups == "one list" else [{"params": [w]}, {"params": [w], "lr": 0.2}]
    with pytest.raises(ValueError, match="listed twice"):
        mg.optim.SGD(params, lr=0.1)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"momentum_": 0.9}, "has no setting 'momentum_'"),
        ({"maximize": True}, "has no setting 'maximize'"),
        ({"lr": math.inf}, "lr must be a finite number"),
        ({"lr": -1.0}, "learning rate must be > 0"),
        ({"momentum": -0.5}, "momentum and weight_decay must be >= 0"),
        ({"nesterov": True}, "Nesterov momentum requires a momentum"),
        ({"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "zero dampening"),
    ],
)
def test_unknown_or_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        mg.optim.SGD([{"params": [parameter(1.0)], **settings}], lr=0.1)


def test_non_tensors_in_params_are_refused():
    with pytest.raises(TypeError, match="can only optimize Tensors"):
        mg.optim.SGD([np.zeros(2)], lr=0.1)


# --- momentum, dampening, Nesterov ----------------------------------------------------------------------


def reference_sgd(w, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    """PyTorch's documented algorithm (torch.optim.SGD), written out in float64."""
    w, buffer = np.array(w, dtype=np.float64), None
    for grad in grads:
        g = grad + weight_decay * w
        if momentum:
            buffer = g.copy() if buffer is None else momentum * buffer + (1 - dampening) * g
            g = g + momentum * buffer if nesterov else buffer
        w = w - lr * g
    return w


SETTINGS = [
    dict(),
    dict(weight_decay=0.1),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.3),
    dict(momentum=0.8, nesterov=True, weight_decay=0.05),
]


def run_minigrad(settings, grads, start):
    w = nn.Parameter(np.array(start, dtype=np.float64))
    optimizer = mg.optim.SGD([w], lr=0.1, **settings)
    for grad in grads:
        w.grad = grad.copy()
        optimizer.step()
    return w.data, optimizer


@pytest.mark.parametrize("settings", SETTINGS, ids=str)
def test_sgd_matches_pytorchs_algorithm(settings):
    rng = np.random.default_rng(0)
    start, grads = rng.standard_normal(5), [rng.standard_normal(5) for _ in range(4)]
    got, _ = run_minigrad(settings, grads, start)
    np.testing.assert_allclose(got, reference_sgd(start, grads, 0.1, **settings), rtol=1e-12)


@pytest.mark.parametrize("settings", SETTINGS, ids=str)
def test_sgd_matches_pytorch_itself(settings):
    torch = pytest.importorskip("torch", reason=torch_oracle.MISSING)
    rng = np.random.default_rng(1)
    start, grads = rng.standard_normal(5), [rng.standard_normal(5) for _ in range(4)]
    w = torch.nn.Parameter(torch.tensor(start))
    optimizer = torch.optim.SGD([w], lr=0.1, **settings)
    for grad in grads:
        w.grad = torch.tensor(grad)
        optimizer.step()
    got, _ = run_minigrad(settings, grads, start)
    np.testing.assert_allclose(got, w.detach().numpy(), rtol=1e-12)


def test_momentum_state_saved_and_restored_continues_exactly():
    rng = np.random.default_rng(2)
    start, grads = rng.standard_normal(4), [rng.standard_normal(4) for _ in range(6)]
    settings = dict(momentum=0.9, nesterov=True)
    straight, _ = run_minigrad(settings, grads, start)
    halfway, first = run_minigrad(settings, grads[:3], start)
    w = nn.Parameter(halfway.copy())
    second = mg.optim.SGD([w], lr=0.5)  # other settings: load_state_dict restores the saved ones
    second.load_state_dict(first.state_dict())
    assert second.param_groups[0]["lr"] == 0.1 and second.param_groups[0]["nesterov"] is True
    for grad in grads[3:]:
        w.grad = grad.copy()
        second.step()
    np.testing.assert_array_equal(w.data, straight)


# --- the schedules ------------------------------------------------------------------------------------


def pytorch_cosine(epoch, base_lr, T_max, eta_min):  # noqa: N803
    """PyTorch's closed form for CosineAnnealingLR (torch/optim/lr_scheduler.py, _get_closed_form_lr)."""
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * epoch / T_max)) / 2


def test_cosine_follows_pytorch_past_T_max():  # noqa: N802
    optimizer = mg.optim.SGD([parameter(1.0)], lr=0.5)
    schedule = mg.optim.CosineAnnealingLR(optimizer, T_max=4, eta_min=0.01)
    rates = [schedule.get_last_lr()[0]]
    for _ in range(13):
        schedule.step()
        rates.append(schedule.get_last_lr()[0])
    expected = [pytorch_cosine(epoch, 0.5, 4, 0.01) for epoch in range(14)]
    np.testing.assert_allclose(rates, expected, rtol=1e-12)
    assert rates[4] == pytest.approx(0.01) and rates[8] == pytest.approx(0.5), "down at T_max, back up at 2 T_max"


@pytest.mark.parametrize("kind", ["cosine", "step"])
def test_schedules_match_pytorch_itself(kind):
    torch = pytest.importorskip("torch", reason=torch_oracle.MISSING)
    ours = mg.optim.SGD([parameter(1.0)], lr=0.5)
    theirs = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    if kind == "cosine":
        ours_schedule = mg.optim.CosineAnnealingLR(ours, T_max=3, eta_min=0.02)
        theirs_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=3, eta_min=0.02)
    else:
        ours_schedule = mg.optim.StepLR(ours, step_size=2, gamma=0.5)
        theirs_schedule = torch.optim.lr_scheduler.StepLR(theirs, step_size=2, gamma=0.5)
    for _ in range(10):
        np.testing.assert_allclose(ours_schedule.get_last_lr(), theirs_schedule.get_last_lr(), rtol=1e-12)
        theirs.step()
        ours_schedule.step()
        theirs_schedule.step()


def test_a_schedule_resumes_from_its_state():
    first = mg.optim.CosineAnnealingLR(mg.optim.SGD([parameter(1.0)], lr=0.5), T_max=10)
    for _ in range(3):
        first.step()
    resumed = mg.optim.CosineAnnealingLR(mg.optim.SGD([parameter(1.0)], lr=0.5), T_max=10)
    resumed.load_state_dict(first.state_dict())
    first.step()
    resumed.step()
    assert resumed.get_last_lr() == first.get_last_lr() and resumed.last_epoch == 4
