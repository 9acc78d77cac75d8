"""The edges of the API a PyTorch user reaches past the ops for: PyTorch's meaning, or an error that says why.

Each class of defect has its cases here (each failed before its fix): in-place changes through views, chained
schedules, ``nn.init``, the loader's pixels, grad mode in threads, ``requires_grad`` on integers, 0-d type
promotion, reductions over ``dim=()`` and 0-d tensors, tied modules, and the PyTorch names that were missing.
Where PyTorch is installed the expected values are also taken from it.
"""

import inspect
import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad as mg
import minigrad.nn.functional as F
from minigrad import nn
from minigrad.data import DataLoader
from minigrad.data.loader import ArrayDataset

from .torch_oracle import needs_torch, torch  # the hard-coded expectations run without it

# --- in-place changes through a view -------------------------------------------------------------------------

VIEWS = {
    "x[:1]": lambda x: x[:1],
    "x[0] (integer index)": lambda x: x[0],
    "x.reshape(-1)": lambda x: x.reshape(-1),
    "x.T": lambda x: x.T,
    "x.detach()": lambda x: x.detach(),
    "x[1:].reshape(-1)[::2] (a view of a view)": lambda x: x[1:].reshape(-1)[::2],
}


@pytest.mark.parametrize("make_view", list(VIEWS.values()), ids=list(VIEWS))
def test_a_change_of_the_base_after_a_view_was_used_is_refused(make_view):
    x = mg.randn(3, 4)
    view = make_view(x)
    w = mg.randn(*view.shape, requires_grad=True)
    z = (view * w).sum()
    x += 1  # changes the values z's Mul saved (through the view)
    with pytest.raises(RuntimeError, match="modified in place"):
        z.backward()


@pytest.mark.parametrize("make_view", list(VIEWS.values()), ids=list(VIEWS))
def test_a_change_through_a_view_after_the_base_was_used_is_refused(make_view):
    x = mg.randn(3, 4)
    w = mg.randn(3, 4, requires_grad=True)
    z = (x * w).sum()
    view = make_view(x)
    view *= 2
    with pytest.raises(RuntimeError, match="modified in place"):
        z.backward()


def test_an_optimizer_step_after_a_detached_weight_was_used_is_refused():
    """The worst case of the issue: v.grad came from the updated weights."""
    w = nn.Parameter(mg.randn(5))
    v = mg.randn(5, requires_grad=True)
    optimizer = mg.optim.SGD([w], lr=0.1)
    w.grad = np.ones(5, dtype=np.float32)
    z = (w.detach() * v).sum()
    optimizer.step()
    with pytest.raises(RuntimeError, match="modified in place"):
        z.backward()


def test_a_saved_output_changed_in_place_is_refused():
    """Exp saves its output; PyTorch refuses this too."""
    x = mg.randn(4, requires_grad=True)
    y = x.exp()
    with mg.no_grad():
        y += 1
    with pytest.raises(RuntimeError, match="modified in place"):
        y.sum().backward()


def test_a_copy_is_not_a_view_and_changing_it_is_fine():
    x = mg.randn(3, 4)
    w = mg.randn(2, 4, requires_grad=True)
    rows = x[np.array([0, 2])]  # advanced indexing copies, in NumPy as in PyTorch
    z = rows * w
    x += 1
    upstream = mg.randn(2, 4)  # random, never all-ones
    z.backward(upstream)
    np.testing.assert_array_equal(w.grad, upstream.data * rows.data)


VIEW_STEPS = {
    "slice": lambda t: t[1:] if t.ndim and t.shape[0] > 1 else t[:],
    "integer index": lambda t: t[0] if t.ndim > 1 else t[:],
    "reshape(-1)": lambda t: t.reshape(-1),
    "transpose": lambda t: t.transpose(0, -1) if t.ndim > 1 else t,
    "detach": lambda t: t.detach(),
    "strided slice": lambda t: t[::2] if t.ndim else t,
}


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(st.sampled_from(sorted(VIEW_STEPS)), min_size=1, max_size=4),
    change=st.sampled_from(["base", "view", "a second view", "an unrelated tensor"]),
    op=st.sampled_from(["+=", "-=", "*=", "/="]),
)
def test_any_chain_of_views_shares_one_version(steps, change, op):
    """Random chains of views: a change anywhere in the family is refused at backward; elsewhere it is not."""
    x = mg.randn(4, 3, 2)
    view = x
    for step in steps:
        view = VIEW_STEPS[step](view)
    w = mg.randn(*view.shape, requires_grad=True)
    z = view * w
    upstream = mg.randn(*view.shape)  # random, never all-ones
    target = {"base": x, "view": view, "a second view": x.reshape(-1)[:5], "an unrelated tensor": mg.randn(3)}[change]
    {"+=": target.__iadd__, "-=": target.__isub__, "*=": target.__imul__, "/=": target.__itruediv__}[op](2.0)
    # A reshape of a strided view copies (in NumPy as in PyTorch): then only a change of the copy itself counts.
    shares_x = np.shares_memory(view.data, x.data)
    if change == "an unrelated tensor" or (change != "view" and not shares_x):
        saved = view.data.copy()
        z.backward(upstream)
        np.testing.assert_array_equal(w.grad, upstream.data * saved)
    else:
        with pytest.raises(RuntimeError, match="modified in place"):
            z.backward(upstream)


# --- learning-rate schedules ------------------------------------------------------------------------------------

# PyTorch 2.13's values for StepLR(opt, 2, 0.5) then CosineAnnealingLR(opt, 4), both stepped every epoch, lr 1.
CHAINED = [
    1.0,
    0.8535533905932737,
    0.25,
    0.07322330470336313,
    0.0,
    0.1464466094067262,
    0.25000000000000006,
    0.4267766952966371,
    0.2500000000000001,
    0.21338834764831854,
]


def lrs(optimizer, schedulers, epochs):
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        for scheduler in schedulers:
            scheduler.step()
    return out


def test_chained_schedules_compose_as_pytorchs():
    optimizer = mg.optim.SGD([nn.Parameter(mg.zeros(1))], lr=1.0)
    schedules = [mg.optim.StepLR(optimizer, 2, 0.5), mg.optim.CosineAnnealingLR(optimizer, 4)]
    np.testing.assert_allclose(lrs(optimizer, schedules, 10), CHAINED, rtol=1e-12, atol=1e-15)


@needs_torch
@pytest.mark.parametrize(
    "make",
    [
        lambda o, lib: [lib.StepLR(o, 2, 0.5), lib.CosineAnnealingLR(o, 4)],
        lambda o, lib: [lib.CosineAnnealingLR(o, 3, eta_min=0.01), lib.StepLR(o, 3, 0.3)],
        lambda o, lib: [lib.CosineAnnealingLR(o, 5)],
        lambda o, lib: [lib.StepLR(o, 1, 0.9)],
    ],
    ids=["step+cosine", "cosine+step", "cosine alone", "step alone"],
)
def test_schedules_match_pytorch(make):
    ours = mg.optim.SGD([nn.Parameter(mg.zeros(1))], lr=0.7)
    theirs = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.7)
    expected = []
    schedules = make(theirs, torch.optim.lr_scheduler)
    for _ in range(23):
        expected.append(theirs.param_groups[0]["lr"])
        theirs.step()
        for scheduler in schedules:
            scheduler.step()
    np.testing.assert_allclose(lrs(ours, make(ours, mg.optim), 23), expected, rtol=1e-12, atol=1e-15)


def test_a_schedule_alone_follows_its_closed_form():
    optimizer = mg.optim.SGD([nn.Parameter(mg.zeros(1))], lr=0.3)
    got = lrs(optimizer, [mg.optim.CosineAnnealingLR(optimizer, 7, eta_min=0.01)], 30)
    closed = [0.01 + (0.3 - 0.01) * (1 + math.cos(math.pi * t / 7)) / 2 for t in range(30)]
    np.testing.assert_allclose(got, closed, rtol=1e-9, atol=1e-12)


def test_chained_schedules_resume_from_their_state_dicts():
    def make():
        optimizer = mg.optim.SGD([nn.Parameter(mg.zeros(1))], lr=1.0)
        return optimizer, [mg.optim.StepLR(optimizer, 2, 0.5), mg.optim.CosineAnnealingLR(optimizer, 4)]

    first, first_schedules = make()
    lrs(first, first_schedules, 3)
    resumed, resumed_schedules = make()
    resumed.load_state_dict(first.state_dict())
    for mine, saved in zip(resumed_schedules, first_schedules):
        mine.load_state_dict(saved.state_dict())
    np.testing.assert_allclose(lrs(resumed, resumed_schedules, 7), CHAINED[3:], rtol=1e-12, atol=1e-15)


# --- nn.init ----------------------------------------------------------------------------------------------------

INIT_FUNCTIONS = [
    "uniform_",
    "normal_",
    "constant_",
    "zeros_",
    "ones_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "calculate_gain",
]


def test_normal_defaults_to_pytorchs_std_of_one():
    w = mg.zeros(200, 200)
    nn.init.normal_(w)
    # 40,000 draws: the sample std's standard error is 1/sqrt(2 * 40000) = 0.0035; 0.02 is over 5 of them.
    assert abs(float(w.data.std()) - 1.0) < 0.02 and abs(float(w.data.mean())) < 0.02


@needs_torch
@pytest.mark.parametrize("name", INIT_FUNCTIONS)
def test_init_signatures_and_defaults_are_pytorchs(name):
    ours = inspect.signature(getattr(nn.init, name)).parameters
    theirs = inspect.signature(getattr(torch.nn.init, name)).parameters
    assert list(ours) == list(theirs)
    assert {k: p.default for k, p in ours.items()} == {k: p.default for k, p in theirs.items()}


@pytest.mark.parametrize(
    "fill",
    [
        lambda w: nn.init.normal_(w),
        lambda w: nn.init.uniform_(w, -2, 2),
        lambda w: nn.init.constant_(w, 0.3),
        lambda w: nn.init.ones_(w),
        lambda w: nn.init.zeros_(w),
        lambda w: nn.init.xavier_uniform_(w),
        lambda w: nn.init.xavier_normal_(w),
        lambda w: nn.init.kaiming_uniform_(w),
        lambda w: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"),
    ],
    ids=[
        "normal_",
        "uniform_",
        "constant_",
        "ones_",
        "zeros_",
        "xavier_uniform_",
        "xavier_normal_",
        "kaiming_uniform_",
        "kaiming_normal_",
    ],
)
def test_init_fills_in_place_so_an_earlier_state_dict_sees_it(fill):
    layer = nn.Linear(6, 5)
    nn.init.constant_(layer.weight, 7.0)
    array, state = layer.weight.data, layer.state_dict()
    assert fill(layer.weight) is layer.weight
    assert layer.weight.data is array and layer.weight.dtype == np.float32
    np.testing.assert_array_equal(state["weight"], layer.weight.data)
    assert not (layer.weight.data == 7.0).all()


def test_init_after_a_forward_makes_backward_refuse():
    layer = nn.Linear(3, 2)
    loss = layer(mg.randn(4, 3)).sum()
    nn.init.xavier_uniform_(layer.weight)
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()


def test_init_bounds_and_gains():
    w = mg.zeros(300, 100)
    nn.init.kaiming_uniform_(w, nonlinearity="relu")
    bound = math.sqrt(2.0) * math.sqrt(3.0 / 100)
    assert float(abs(w.data).max()) <= bound and float(abs(w.data).max()) > 0.99 * bound
    assert nn.init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn.init.xavier_uniform_(mg.zeros(5))
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        nn.init.calculate_gain("swish")


def test_linear_keeps_the_chapters_default():
    layer = nn.Linear(400, 300)
    assert abs(float(layer.weight.data.std()) - 0.01) < 0.0005


# --- the loader's pixels, and counts ----------------------------------------------------------------------------


def test_the_loader_scales_uint8_pixels_only():
    pixels = np.random.default_rng(0).integers(0, 256, size=(8, 4), dtype=np.uint8)
    x, _ = next(iter(DataLoader(ArrayDataset(pixels, np.arange(8)), batch_size=8)))
    np.testing.assert_allclose(x.data, pixels / 255.0, rtol=1e-6)
    already = (pixels / 255.0).astype(np.float32)
    x, _ = next(iter(DataLoader(ArrayDataset(already, np.arange(8)), batch_size=8)))
    np.testing.assert_array_equal(x.data, already)  # not divided by 255 again
    x.data[...] = 0  # a batch of its own: the dataset is unchanged
    assert already.any()
    with pytest.raises(TypeError, match="int16"):
        DataLoader(ArrayDataset(pixels.astype(np.int16), np.arange(8)), batch_size=8)


@pytest.mark.parametrize("batch_size", [2.5, True, "4", 0, -1])
def test_the_loader_refuses_a_batch_size_pytorch_refuses(batch_size):
    with pytest.raises((TypeError, ValueError), match="batch_size"):
        DataLoader(ArrayDataset(np.zeros((8, 4), np.uint8), np.arange(8)), batch_size=batch_size)


def test_the_loader_takes_a_numpy_integer_batch_size():
    assert len(DataLoader(ArrayDataset(np.zeros((8, 4), np.uint8), np.arange(8)), batch_size=np.int64(3))) == 3


# --- grad mode ---------------------------------------------------------------------------------------------------


def test_grad_mode_is_per_thread():
    seen = {}
    inside, outside = threading.Event(), threading.Event()

    def other_thread():
        inside.wait(5)
        a = mg.ones(2, requires_grad=True)
        seen["recorded"] = (a * 2).requires_grad
        seen["enabled"] = mg.is_grad_enabled()
        outside.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with mg.no_grad():
        inside.set()
        outside.wait(5)
    thread.join()
    assert seen == {"recorded": True, "enabled": True}


def test_grad_mode_forms():
    a = mg.ones(2, requires_grad=True)

    @mg.no_grad
    def bare(t):
        return (t * 2).requires_grad

    @mg.no_grad()
    def called(t):
        return (t * 2).requires_grad

    @mg.set_grad_enabled(False)
    def decorated(t):
        return (t * 2).requires_grad

    assert not bare(a) and not called(a) and not decorated(a) and mg.is_grad_enabled()
    with mg.no_grad():
        with mg.enable_grad():
            assert (a * 2).requires_grad
        assert not (a * 2).requires_grad
    with mg.set_grad_enabled(False):
        assert not mg.is_grad_enabled()
    assert mg.is_grad_enabled()
    mg.set_grad_enabled(False)
    try:
        assert not (a * 2).requires_grad
    finally:
        mg.set_grad_enabled(True)
    with pytest.raises(TypeError):
        mg.set_grad_enabled("no")


# --- requires_grad ---------------------------------------------------------------------------------------------


def test_requires_grad_attribute_refuses_an_integer_tensor():
    t = mg.tensor([1, 2, 3])
    with pytest.raises(ValueError, match="floating-point"):
        t.requires_grad = True
    assert not t.requires_grad


def test_requires_grad_cannot_be_switched_off_on_a_result():
    y = mg.ones(2, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="detach"):
        y.requires_grad = False


# --- type promotion with 0-d tensors ----------------------------------------------------------------------------

PROMOTIONS = [  # (dimensioned dtype, 0-d dtype or Python number, PyTorch's result)
    ("float32", "float64", "float32"),
    ("float64", "float32", "float64"),
    ("int64", "float64", "float64"),
    ("int64", "float32", "float32"),
    ("int32", "int64", "int32"),
    ("bool", "float32", "float32"),
    ("int64", 2.5, "float32"),
    ("bool", 1, "int64"),
    ("float32", 3, "float32"),
]


@pytest.mark.parametrize("dimensioned, scalar, expected", PROMOTIONS)
def test_a_0d_tensor_promotes_like_a_number(dimensioned, scalar, expected):
    a = mg.tensor(np.ones(3, dtype=dimensioned))
    b = scalar if not isinstance(scalar, str) else mg.tensor(np.array(2, dtype=scalar))
    assert (a * b).dtype == np.dtype(expected) and (b * a).dtype == np.dtype(expected)
    assert (a + b).dtype == np.dtype(expected) and (b - a).dtype == np.dtype(expected)
    if torch is not None:
        ta = torch.ones(3, dtype=getattr(torch, dimensioned))
        tb = scalar if not isinstance(scalar, str) else torch.tensor(2, dtype=getattr(torch, scalar))
        assert str((ta * tb).dtype) == f"torch.{expected}"


def test_a_0d_float64_weight_still_gets_its_gradient():
    w = mg.tensor(2.0, dtype="float64", requires_grad=True)
    x = mg.tensor([1.0, 3.0], requires_grad=True)
    y = x * w
    assert y.dtype == np.float32
    y.backward(mg.tensor([0.5, -2.0]))
    assert w.grad.dtype == np.float64 and w.grad == pytest.approx(0.5 - 6.0)
    np.testing.assert_array_equal(x.grad, [1.0, -4.0])


# --- reductions over dim=() and the dims of 0-d tensors ---------------------------------------------------------


@pytest.mark.parametrize("method", ["sum", "mean", "amax", "amin"])
def test_an_empty_dim_reduces_everything_as_in_pytorch(method):
    x = mg.arange(6.0).reshape(2, 3)
    assert getattr(x, method)(dim=()).shape == () and float(getattr(x, method)(dim=())) == float(getattr(x, method)())


@pytest.mark.parametrize("method", ["sum", "mean", "amax", "amin", "argmax", "argmin"])
def test_a_0d_tensor_takes_dim_0_and_minus_1(method):
    s = mg.tensor(3.0)
    for dim in (0, -1):
        assert getattr(s, method)(dim).shape == ()
    with pytest.raises(IndexError, match="out of range"):
        getattr(s, method)(1)


def test_max_of_a_0d_tensor_along_dim_0():
    s = mg.tensor(3.0, requires_grad=True)
    values, indices = s.max(0)
    assert float(values) == 3.0 and int(indices) == 0
    values.backward()
    assert s.grad == 1.0


# --- tied modules -------------------------------------------------------------------------------------------------


def test_a_tied_module_is_listed_once_and_saved_under_each_name():
    shared = nn.Linear(3, 3)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    assert [name for name, _ in net.named_modules()] == ["", "0", "1"]
    assert len(list(net.parameters())) == 2
    state = net.state_dict()
    assert sorted(state) == ["0.bias", "0.weight", "2.bias", "2.weight"]  # as PyTorch's state_dict
    other = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3))
    other.load_state_dict(state)
    np.testing.assert_array_equal(other[2].weight.data, shared.weight.data)


# --- API a PyTorch user reaches for -------------------------------------------------------------------------------


def test_module_apply_visits_children_first_and_returns_the_module():
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU(), nn.Linear(2, 1)))
    visited = []
    assert net.apply(lambda m: visited.append(type(m).__name__)) is net
    assert visited == ["Linear", "ReLU", "Linear", "Sequential", "Sequential"]


def test_module_requires_grad_freezes_its_parameters():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    assert net[0].requires_grad_(False) is net[0]
    net(mg.randn(3, 2)).sum().backward()
    assert net[0].weight.grad is None and net[1].weight.grad is not None


def test_sequential_slices_are_sequentials_with_their_names():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    head = net[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[0] is net[0]
    assert [name for name, _ in net[1:].named_children()] == ["1", "2"]
    x = mg.randn(5, 4)
    np.testing.assert_array_equal(net[1:](head[:1](x)).data, net(x).data)


def test_load_state_dict_strict_false_returns_the_keys():
    net = nn.Sequential(nn.Linear(2, 2))
    state = {"0.weight": np.ones((2, 2), np.float32), "9.weight": np.zeros(1)}
    result = net.load_state_dict(state, strict=False)
    assert result.missing_keys == ["0.bias"] and result.unexpected_keys == ["9.weight"]
    np.testing.assert_array_equal(net[0].weight.data, 1.0)
    assert net.load_state_dict(net.state_dict()) == ([], [])


def test_tolist_and_retain_grad():
    assert mg.tensor([[1.0, 2.0]]).tolist() == [[1.0, 2.0]] and mg.tensor(3).tolist() == 3
    x = mg.tensor([1.0, -2.0, 3.0], requires_grad=True)
    h = x * 3
    h.retain_grad()
    upstream = mg.tensor([0.5, -1.5, 2.0])  # not all-ones
    (h * h).backward(upstream)
    np.testing.assert_array_equal(h.grad, 2 * h.data * upstream.data)
    np.testing.assert_array_equal(x.grad, 3 * 2 * h.data * upstream.data)
    with pytest.raises(RuntimeError, match="does not require grad"):
        mg.tensor([1.0]).retain_grad()


def test_sgd_takes_numpy_scalars_and_refuses_bools():
    w = nn.Parameter(mg.ones(2))
    optimizer = mg.optim.SGD([w], lr=np.float32(0.5), momentum=np.float64(0.0))
    w.grad = np.ones(2, dtype=np.float32)
    optimizer.step()
    np.testing.assert_array_equal(w.data, [0.5, 0.5])
    with pytest.raises(TypeError, match="lr must be a number"):
        mg.optim.SGD([w], lr=True)


@pytest.mark.parametrize(
    "call",
    [
        lambda a: F.relu(a),
        lambda a: F.linear(a, mg.ones(2, 3)),
        lambda a: F.cross_entropy(a, mg.tensor([0, 1])),
        lambda a: nn.Linear(3, 2)(a),
        lambda a: nn.ReLU()(a),
        lambda a: F.softmax(a),
        lambda a: F.dropout(a, 0.5),
    ],
    ids=["F.relu", "F.linear", "F.cross_entropy", "nn.Linear", "nn.ReLU", "F.softmax", "F.dropout"],
)
def test_a_numpy_array_given_to_a_function_is_a_clear_type_error(call):
    with pytest.raises(TypeError, match=r"must be a minigrad Tensor, got numpy.ndarray; wrap it"):
        call(np.ones((2, 3), dtype=np.float32))


@pytest.mark.parametrize("name", ["view", "clone", "cpu", "zero_", "unsqueeze"])
def test_a_pytorch_method_left_out_says_what_to_use_instead(name):
    with pytest.raises(AttributeError, match=f"no {name}\\(\\).*use "):
        getattr(mg.ones(2), name)
    with pytest.raises(AttributeError):
        _ = mg.ones(2).no_such_method


def test_zero_grad_set_to_none_false_fills_zeros_in_place():
    net = nn.Linear(2, 2)
    net(mg.randn(3, 2)).sum().backward()
    grad = net.weight.grad
    net.zero_grad(set_to_none=False)
    assert net.weight.grad is grad and not grad.any()
    optimizer = mg.optim.SGD(net.parameters(), lr=0.1)
    optimizer.zero_grad()
    assert net.weight.grad is None


def test_a_forward_hook_can_replace_the_output_and_its_handle_removes_it():
    layer = nn.ReLU()
    handle = layer.register_forward_hook(lambda module, inputs, output: output * 2)
    np.testing.assert_array_equal(layer(mg.tensor([1.0, -1.0])).data, [2.0, 0.0])
    handle.remove()
    handle.remove()  # twice is harmless, as in PyTorch
    np.testing.assert_array_equal(layer(mg.tensor([1.0, -1.0])).data, [1.0, 0.0])
