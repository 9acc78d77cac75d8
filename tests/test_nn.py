"""Modules, losses and SGD: the PyTorch-like conventions and a model that learns."""

import numpy as np
import pytest

import minigrad as mg
import minigrad.nn.functional as F
from minigrad import nn
from minigrad.checkpoint import load_state_dict, save_state_dict


def chapter_mlp(hidden=(16, 16), inputs=8, outputs=3, p=(0.2, 0.5), device=None):
    return nn.Sequential(
        nn.Linear(inputs, hidden[0], device=device),
        nn.ReLU(),
        nn.Dropout(p[0]),
        nn.Linear(hidden[0], hidden[1], device=device),
        nn.ReLU(),
        nn.Dropout(p[1]),
        nn.Linear(hidden[1], outputs, device=device),
    )


def test_cross_entropy_matches_float64_reference_on_extreme_logits(device):
    logits = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 3.0], [5.0, 5.0, 5.0], [0.0, -3.0, 2.0]], dtype=np.float32)
    labels = np.array([0, 2, 1, 2])
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -log_probs[np.arange(4), labels].mean()
    x = mg.tensor(logits, requires_grad=True, device=device)
    loss = F.cross_entropy(x, mg.tensor(labels, device=device))
    assert np.isfinite(loss.item()) and loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    probs = np.exp(log_probs)
    probs[np.arange(4), labels] -= 1
    grad = mg.tensor(x.grad).numpy()
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, probs / 4, atol=1e-7)


@pytest.mark.parametrize("logits_shape, labels_shape", [((4, 3), (5,)), ((4,), (4,)), ((4, 3), (4, 1))])
def test_cross_entropy_shape_errors_name_both_shapes(logits_shape, labels_shape):
    with pytest.raises(ValueError, match=r"logits of shape .* and labels of shape"):
        F.cross_entropy(mg.randn(*logits_shape), mg.tensor(np.zeros(labels_shape, dtype=np.int64)))


def test_cross_entropy_rejects_float_and_out_of_range_labels():
    with pytest.raises(ValueError, match="integer class indices"):
        F.cross_entropy(mg.randn(2, 3), mg.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        F.cross_entropy(mg.randn(2, 3), mg.tensor([0, 3]))


def test_linear_shape_error_names_both_shapes():
    with pytest.raises(ValueError, match=r"input of shape \(2, 5\) .* weight of shape \(3, 4\)"):
        nn.Linear(4, 3)(mg.randn(2, 5))


def test_linear_uses_the_chapters_initialisation():
    layer = nn.Linear(784, 256)
    assert layer.weight.shape == (256, 784) and layer.weight.dtype == np.float32
    assert not layer.bias.numpy().any()
    # The sample std of 200,704 N(0, 0.01^2) draws lies within 1% of 0.01 (its relative sd is 0.16%).
    assert layer.weight.numpy().std() == pytest.approx(0.01, rel=0.01)
    assert abs(layer.weight.numpy().mean()) < 0.01 * 6 / np.sqrt(layer.weight.numel())


def test_linear_takes_another_initialiser():
    layer = nn.Linear(10, 20, init=nn.init.xavier_uniform_)
    bound = np.sqrt(6 / 30)
    assert np.abs(layer.weight.numpy()).max() <= bound and layer.weight.numpy().std() > 0.1


def test_parameters_are_named_like_pytorch():
    names = [name for name, _ in chapter_mlp().named_parameters()]
    assert names == ["0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias"]


def test_train_and_eval_are_recursive_and_per_module():
    net = chapter_mlp()
    other = chapter_mlp()
    net.eval()
    assert not any(m.training for m in net.modules())
    assert all(m.training for m in other.modules()), "no global flag: another model stays in training"
    net.train()
    assert all(m.training for m in net.modules())


def test_state_dict_round_trip_and_errors():
    net, copy = chapter_mlp(), chapter_mlp()
    copy.load_state_dict(net.state_dict())
    x = mg.randn(4, 8)
    np.testing.assert_array_equal(net.eval()(x).numpy(), copy.eval()(x).numpy())
    state = net.state_dict()
    with pytest.raises(ValueError, match=r"missing \['6.bias'\]"):
        copy.load_state_dict({k: v for k, v in state.items() if k != "6.bias"})
    before = copy.state_dict()["0.weight"].copy()
    bad = dict(state, **{"0.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(3, 3\) in the state but \(16, 8\)"):
        copy.load_state_dict(bad)
    np.testing.assert_array_equal(copy.state_dict()["0.weight"], before)  # nothing half-loaded


def test_checkpoint_file_round_trip(device, tmp_path):
    """save_state_dict takes a model's arrays on any device (a CuPy array's .data is a pointer, not values)."""
    net, copy = chapter_mlp(device=device), chapter_mlp()
    save_state_dict(net.state_dict(), tmp_path / "model.npz")
    copy.load_state_dict(load_state_dict(tmp_path / "model.npz"))
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(copy.state_dict()[name], mg.backend.to_numpy(value))


def test_sgd_step_is_in_place_and_follows_the_formula():
    w = nn.Parameter(np.array([1.0, -2.0], dtype=np.float32))
    storage = w.data
    w.grad = np.array([0.5, 0.5], dtype=np.float32)
    mg.optim.SGD([w], lr=0.1, weight_decay=0.2).step()
    np.testing.assert_allclose(w.data, [1.0 - 0.1 * (0.5 + 0.2), -2.0 - 0.1 * (0.5 - 0.4)], rtol=1e-6)
    assert w.data is storage and w.data.dtype == np.float32


def test_sgd_param_groups_and_zero_grad():
    a, b = nn.Parameter(np.ones(2, np.float32)), nn.Parameter(np.ones(2, np.float32))
    opt = mg.optim.SGD([{"params": [a], "weight_decay": 1.0}, {"params": [b]}], lr=0.5)
    a.grad = b.grad = np.zeros(2, np.float32)
    opt.step()
    np.testing.assert_allclose(a.data, 0.5)
    np.testing.assert_allclose(b.data, 1.0)
    opt.zero_grad()
    assert a.grad is None and b.grad is None


@pytest.mark.parametrize("lr", [0, -1.0])
def test_sgd_rejects_bad_learning_rates(lr):
    with pytest.raises(ValueError, match="learning rate must be > 0"):
        mg.optim.SGD(chapter_mlp().parameters(), lr=lr)


def test_small_mlp_learns_a_fixed_synthetic_problem(device):
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 8)) * 2
    labels = rng.integers(0, 3, size=300)
    features = (centers[labels] + rng.standard_normal((300, 8)) * 0.5).astype(np.float32)
    x, y = mg.tensor(features, device=device), mg.tensor(labels, device=device)
    net = chapter_mlp(device=device)
    opt = mg.optim.SGD(net.parameters(), lr=0.5)
    losses = []
    for _ in range(150):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]
    net.eval()
    with mg.no_grad():
        accuracy = (net(x).argmax(axis=1).numpy() == labels).mean()
    assert accuracy > 0.9
    np.testing.assert_array_equal(net(x).numpy(), net(x).numpy())  # eval: deterministic


def test_module_to_device_and_flatten():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).to("cpu")
    assert net(mg.randn(3, 2, 2)).shape == (3, 2)
    assert "Linear(in_features=4, out_features=2, bias=True)" in repr(net)


def test_forward_hook_sees_outputs_and_can_be_removed():
    net = chapter_mlp()
    seen = []
    remove = net[1].register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    net(mg.randn(5, 8))
    remove()
    net(mg.randn(5, 8))
    assert seen == [(5, 16)]
