"""The fused GPU kernels equal their plain array versions (on a GPU; on the CPU the plain version runs).

The references here are written out in NumPy, independently of minigrad.kernels.
"""
import numpy as np
import pytest

from minigrad import backend, kernels


def on(device, array):
    return backend.to_device(np.array(array, copy=True), device)  # a copy: in-place kernels leave the reference


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward(device, rng, dtype):
    y = np.maximum(rng.standard_normal((64, 33)), 0).astype(dtype)
    gy = rng.standard_normal((64, 33)).astype(dtype)
    got = backend.to_numpy(kernels.relu_backward(on(device, y), on(device, gy)))
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, np.where(y > 0, gy, 0))


def twin_generators(device, seed=0):
    """Two generators of ``device`` in the same state: one for the code under test, one for the reference."""
    backend.manual_seed(seed)
    first = backend.generator(device)
    backend.manual_seed(seed)
    return first, backend.generator(device)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout(device, rng, p):
    x = rng.standard_normal((128, 41)).astype(np.float32)  # an odd size: the last 64-bit draw is split
    generator, twin = twin_generators(device)
    y, mask = kernels.dropout(on(device, x), p, generator)
    if device == "cpu":  # U = k / 2^32 from 32 random bits per element, compared in float64
        bits = twin.bit_generator.random_raw(128 * 41 // 2 + 1).view(np.uint32)[:128 * 41].reshape(x.shape)
        keep = bits / 2.0 ** 32 > p
    else:  # the GPU kernel is fed U from the generator in x's dtype
        keep = backend.to_numpy(twin.random(x.shape, dtype=np.float32)) > np.float32(p)
    scale = np.float32(1 / (1 - p))
    expected_mask = np.where(keep, scale, np.float32(0))
    np.testing.assert_array_equal(backend.to_numpy(mask), expected_mask)
    np.testing.assert_array_equal(backend.to_numpy(y), x * expected_mask)
    assert mask.dtype == y.dtype == np.float32


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 0.9999])
def test_random_keep_follows_the_uniform_law(p):
    """[U > p] from 32-bit draws: the kept fraction is 1 - p (Hoeffding: off by more than 0.005 with prob. < 1e-9)."""
    generator = np.random.Generator(np.random.PCG64(1))
    keep = backend.random_keep(generator, (1000, 1001), p)
    assert keep.shape == (1000, 1001) and keep.dtype == bool
    assert abs(keep.mean() - (1 - p)) < 0.005


@pytest.mark.parametrize("p", [1.0, -0.1, 2.0])
def test_random_keep_rejects_a_probability_outside_0_1(p):
    with pytest.raises(ValueError, match="0 <= p < 1"):
        backend.random_keep(np.random.default_rng(0), (3,), p)


def test_random_keep_threshold_is_exact():
    """k / 2^32 > p exactly when k > floor(p * 2^32): checked against float64 on the draws themselves."""
    generator, twin = np.random.Generator(np.random.PCG64(2)), np.random.Generator(np.random.PCG64(2))
    for p in (0.1, 0.2, 0.5, 1 / 3, 0.75):
        keep = backend.random_keep(generator, (999,), p)
        bits = twin.bit_generator.random_raw(500).view(np.uint32)[:999]
        np.testing.assert_array_equal(keep, bits / 2.0 ** 32 > p)


def softmax_reference(logits):
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    return np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True), shifted


def test_softmax_cross_entropy(device, rng):
    logits = (rng.standard_normal((300, 10)) * 5).astype(np.float32)
    logits[0, 3] = 1e4  # max-shifted: no overflow
    labels = rng.integers(0, 10, 300)
    loss, probs = kernels.softmax_cross_entropy(on(device, logits), on(device, labels))
    expected_probs, shifted = softmax_reference(logits)
    expected_loss = (np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(300), labels]).mean()
    assert loss.dtype == probs.dtype == np.float32 and loss.shape == ()
    np.testing.assert_allclose(float(loss), expected_loss, rtol=1e-6)
    np.testing.assert_allclose(backend.to_numpy(probs), expected_probs, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(not backend.cuda_available(), reason="no CUDA: CuPy is not installed or finds no GPU")
@pytest.mark.parametrize("bad_label", [-1, 10])
def test_softmax_cross_entropy_on_cuda_gives_nan_for_a_label_out_of_range(bad_label):
    logits = np.zeros((4, 10), dtype=np.float32)
    labels = np.array([0, bad_label, 2, 3])
    loss, _ = kernels.softmax_cross_entropy(on("cuda", logits), on("cuda", labels))
    assert np.isnan(float(loss))


@pytest.mark.parametrize("gy_on_device", [False, True], ids=["number", "device-scalar"])
def test_cross_entropy_backward(device, rng, gy_on_device):
    """dL/dloss comes as a number, or (as in backward) as a 0-d array on the device, never read by the host."""
    logits = rng.standard_normal((50, 10))
    probs = softmax_reference(logits)[0].astype(np.float32)
    labels = rng.integers(0, 10, 50)
    gy = on(device, np.float32(1.5)) if gy_on_device else 1.5
    got = kernels.cross_entropy_backward(on(device, probs), on(device, labels), gy)
    assert got.dtype == np.float32
    expected = (probs - np.eye(10, dtype=np.float32)[labels]) * np.float32(1.5 / 50)
    np.testing.assert_allclose(backend.to_numpy(got), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_sgd_update_is_in_place(device, rng, weight_decay):
    param = rng.standard_normal((30, 7)).astype(np.float32)
    grad = rng.standard_normal((30, 7)).astype(np.float32)
    on_device = on(device, param)
    storage = on_device
    kernels.sgd_update(on_device, on(device, grad), 0.5, weight_decay)
    assert on_device is storage
    expected = param - np.float32(0.5) * (grad + np.float32(weight_decay) * param)
    np.testing.assert_allclose(backend.to_numpy(on_device), expected, rtol=1e-6, atol=1e-7)
