"""The chapter's ops and SGD compute the same numbers on both devices: the NumPy code on the CPU, the CUDA
kernel declared beside it on a GPU.

The references here are written out in NumPy, independently of minigrad.ops.
"""

import numpy as np
import pytest

import minigrad as mg
import minigrad.nn.functional as F
from minigrad import backend, ops
from minigrad.ops import keep_mask
from minigrad.random import PhiloxStream


def on(device, array):
    return backend.to_device(np.array(array, copy=True), device)  # a copy: in-place kernels leave the reference


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward(device, rng, dtype):
    y = np.maximum(rng.standard_normal((64, 33)), 0).astype(dtype)
    gy = rng.standard_normal((64, 33)).astype(dtype)
    x = mg.Tensor(on(device, y), requires_grad=True)  # y >= 0, so relu(x) = y
    x.relu().backward(on(device, gy))
    got = backend.to_numpy(x.grad)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, np.where(y > 0, gy, 0))


def philox_words(seed, n, skip_blocks=0):
    """32-bit words n of NumPy's own Philox for ``seed``, after ``skip_blocks`` blocks: the reference stream."""
    bit_generator = np.random.Philox(seed)
    bit_generator.advance(skip_blocks)
    return bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n]


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout(device, rng, p):
    """The op's mask on every device is eq. (4.6.1) on the words of NumPy's Philox for the seed."""
    x = rng.standard_normal((128, 41)).astype(np.float32)  # an odd size: the last 64-bit word is split
    mg.manual_seed(0)
    y = ops.Dropout.apply(mg.Tensor(on(device, x), requires_grad=True), p=p)
    y, mask = y.data, y.grad_fn.mask
    keep = philox_words(0, x.size).reshape(x.shape) / 2.0**32 > p  # U = k / 2^32, compared in float64
    scale = np.float32(1 / (1 - p))
    expected_mask = np.where(keep, scale, np.float32(0))
    np.testing.assert_array_equal(backend.to_numpy(mask), expected_mask)
    np.testing.assert_array_equal(backend.to_numpy(y), x * expected_mask)
    assert mask.dtype == y.dtype == np.float32


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 0.9999])
def test_keep_mask_follows_the_uniform_law(p):
    """[U > p] from 32-bit draws: the kept fraction is 1 - p (Hoeffding: off by more than 0.005 with prob. < 1e-9)."""
    keep = keep_mask(PhiloxStream(1), (1000, 1001), p)
    assert keep.shape == (1000, 1001) and keep.dtype == bool
    assert abs(keep.mean() - (1 - p)) < 0.005


@pytest.mark.parametrize("p", [1.0, -0.1, 2.0])
def test_keep_mask_rejects_a_probability_outside_0_1(p):
    with pytest.raises(ValueError, match="0 <= p < 1"):
        keep_mask(PhiloxStream(0), (3,), p)


def test_keep_mask_threshold_is_exact():
    """k / 2^32 > p exactly when k > floor(p * 2^32): checked against float64 on the draws themselves."""
    stream, skipped = PhiloxStream(2), 0
    for p in (0.1, 0.2, 0.5, 1 / 3, 0.75):
        keep = keep_mask(stream, (999,), p)
        bits = philox_words(2, 999, skip_blocks=skipped)
        skipped += 125  # ceil(999 / 8) blocks per draw
        np.testing.assert_array_equal(keep, bits / 2.0**32 > p)


def softmax_reference(logits):
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    return np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True), shifted


def test_softmax_cross_entropy(device, rng):
    logits = (rng.standard_normal((300, 10)) * 5).astype(np.float32)
    logits[0, 3] = 1e4  # max-shifted: no overflow
    labels = rng.integers(0, 10, 300)
    loss = F.cross_entropy(mg.Tensor(on(device, logits), requires_grad=True), mg.Tensor(on(device, labels)))
    loss, probs = loss.data, loss.grad_fn.probs
    expected_probs, shifted = softmax_reference(logits)
    expected_loss = (np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(300), labels]).mean()
    assert loss.dtype == probs.dtype == np.float32 and loss.shape == ()
    np.testing.assert_allclose(float(loss), expected_loss, rtol=1e-6)
    np.testing.assert_allclose(backend.to_numpy(probs), expected_probs, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(not backend.cuda_available(), reason="no CUDA: CuPy is not installed or finds no GPU")
@pytest.mark.parametrize("bad_label", [-1, 10])
def test_softmax_cross_entropy_on_cuda_gives_nan_for_a_label_out_of_range(bad_label):
    """With value checks off nothing stops a bad label reaching the kernel: it gives NaN, never a read outside a row."""
    logits = mg.Tensor(on("cuda", np.zeros((4, 10), dtype=np.float32)))
    labels = mg.Tensor(on("cuda", np.array([0, bad_label, 2, 3])))
    previous = mg.set_value_checks(False)
    try:
        loss = F.cross_entropy(logits, labels)
    finally:
        mg.set_value_checks(previous)
    assert np.isnan(float(loss))


@pytest.mark.parametrize("bad_label", [-1, 10])
def test_cross_entropy_refuses_a_label_out_of_range_on_every_device(device, bad_label):
    logits = mg.Tensor(on(device, np.zeros((4, 10), dtype=np.float32)))
    labels = mg.Tensor(on(device, np.array([0, bad_label, 2, 3])))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\], got values from"):
        F.cross_entropy(logits, labels)


def test_cross_entropy_backward(device, rng):
    """dL/dloss comes (as in backward) as a 0-d array on the device, never read by the host."""
    logits = rng.standard_normal((50, 10)).astype(np.float32)
    probs = softmax_reference(logits)[0].astype(np.float32)
    labels = rng.integers(0, 10, 50)
    x = mg.Tensor(on(device, logits), requires_grad=True)
    F.cross_entropy(x, mg.Tensor(on(device, labels))).backward(on(device, np.float32(1.5)))
    got = x.grad
    assert got.dtype == np.float32
    expected = (probs - np.eye(10, dtype=np.float32)[labels]) * np.float32(1.5 / 50)
    np.testing.assert_allclose(backend.to_numpy(got), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_sgd_update_is_in_place(device, rng, weight_decay):
    param = rng.standard_normal((30, 7)).astype(np.float32)
    grad = rng.standard_normal((30, 7)).astype(np.float32)
    weight = mg.nn.Parameter(on(device, param))
    storage = on_device = weight.data
    weight.grad = on(device, grad)
    mg.optim.SGD([weight], lr=0.5, weight_decay=weight_decay).step()
    assert weight.data is storage
    expected = param - np.float32(0.5) * (grad + np.float32(weight_decay) * param)
    np.testing.assert_allclose(backend.to_numpy(on_device), expected, rtol=1e-6, atol=1e-7)
