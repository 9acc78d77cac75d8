"""Devices, generators, tensor creation."""

import types

import numpy as np
import pytest

import minigrad as mg
from minigrad import backend


@pytest.mark.parametrize("name, expected", [(None, "cpu"), ("cpu", "cpu"), ("CUDA", "cuda:0"), ("cuda:1", "cuda:1")])
def test_device_names_are_normalised(name, expected):
    assert backend.parse_device(name) == expected


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu:0", ""])
def test_unknown_device_says_what_is_valid(name):
    with pytest.raises(ValueError, match="use 'cpu', 'cuda' or 'cuda:N'"):
        backend.parse_device(name)


@pytest.mark.skipif(mg.cuda_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_clear_error():
    with pytest.raises(mg.DeviceError, match=r"cuda:0.*(CuPy|GPU)"):
        mg.zeros(3, device="cuda")


def test_tensor_defaults(device):
    assert mg.tensor([1.0, 2.0], device=device).dtype == np.float32
    # As in PyTorch (torch.tensor): Python floats become float32, an array keeps its dtype.
    assert mg.tensor(np.zeros(3), device=device).dtype == np.float64
    assert mg.tensor(np.zeros(3), dtype="float32", device=device).dtype == np.float32
    assert mg.tensor(np.zeros(3, np.float16), device=device).dtype == np.float16
    assert mg.tensor([1, 2], device=device).dtype == np.int64
    assert mg.tensor([1.0], dtype="float64", device=device).dtype == np.float64
    assert mg.tensor([1.0], device=device).device == backend.parse_device(device)
    assert mg.arange(16).dtype == np.int64 and mg.arange(16.0).dtype == np.float32
    assert mg.zeros(2, 3).shape == mg.ones((2, 3)).shape == mg.randn(2, 3).shape == (2, 3)


def test_tensor_copies_its_data():
    source = np.zeros(3, dtype=np.float32)
    t = mg.tensor(source)
    source[0] = 1
    assert t.numpy()[0] == 0


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(ValueError, match="floating-point"):
        mg.tensor([1, 2], requires_grad=True)


def test_manual_seed_makes_draws_repeat(device):
    mg.manual_seed(3)
    a = mg.randn(5, device=device).numpy()
    mg.manual_seed(3)
    np.testing.assert_array_equal(a, mg.randn(5, device=device).numpy())
    assert mg.randn(5, dtype="float32", device=device).dtype == np.float32


def test_mixing_devices_is_a_clear_error(monkeypatch):
    # A stand-in for CuPy whose ndarray is a NumPy subclass: b's array then reports itself as a GPU array.
    class FakeGpuArray(np.ndarray):
        device = types.SimpleNamespace(id=0)

    class FakeCupy:
        ndarray = FakeGpuArray

    monkeypatch.setattr(backend, "cupy", FakeCupy)
    a, b = mg.ones(2), mg.ones(2)
    b.data = b.data.view(FakeGpuArray)
    with pytest.raises(ValueError, match=r"different devices \(cpu, cuda:0\); move them with .to\(device\)"):
        a + b


@pytest.mark.skipif(not mg.cuda_available(), reason="no CUDA: CuPy is not installed or finds no GPU")
def test_cuda_the_gpus_name_is_text_for_the_reports():
    from minigrad import backend

    name = backend.gpu_name()
    assert isinstance(name, str) and name.strip()
