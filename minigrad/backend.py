"""The array backend: which array library (NumPy or CuPy) holds a tensor, and on which device.

Generic code never imports NumPy or CuPy to do math. It asks the array for its module,
``xp = get_array_module(array)``, as Chainer does, so one implementation of an op runs on
both libraries. Devices are named as in PyTorch: ``"cpu"``, ``"cuda"`` (the first GPU) and
``"cuda:N"``. CuPy is optional; asking for a GPU without it raises :class:`DeviceError`
with the command that installs it.

Each device has its own random generator (``numpy.random.Generator`` on the CPU,
``cupy.random.Generator`` on a GPU) so random draws happen where the array lives, in its
dtype. :func:`manual_seed` reseeds all of them. The CPU and a GPU use different bit
generators, so the same seed gives different dropout masks on the two.
"""
import contextlib
import math
import operator
import os

import numpy

try:  # CuPy is the optional GPU backend: `pip install "minigrad[cuda]"`.
    import cupy
except ImportError:  # pragma: no cover - depends on the machine
    cupy = None

# The raw arrays a Tensor can hold.
ARRAY_TYPES = (numpy.ndarray,) if cupy is None else (numpy.ndarray, cupy.ndarray)


class DeviceError(RuntimeError):
    """A device was asked for that this machine cannot provide."""


CUPY_INSTALL_HINT = (
    'install CuPy for your CUDA version: pip install "minigrad[cuda]" (CUDA 13, cupy-cuda13x), '
    "or pip install cupy-cuda12x for CUDA 12; or use device='cpu'"
)


def parse_device(device):
    """Normalise a device name: None or "cpu" -> "cpu", "cuda" -> "cuda:0", "cuda:N" -> "cuda:N".

    Raises ValueError for a name that is not a device at all.
    """
    if device is None:
        return "cpu"
    name = str(device).strip().lower()
    if name == "cpu":
        return "cpu"
    if name == "cuda":
        return "cuda:0"
    if name.startswith("cuda:") and name[5:].isdigit():
        return f"cuda:{int(name[5:])}"
    raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N' (N a GPU index such as 0)")


def cuda_available():
    """True when CuPy imports and sees at least one GPU."""
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # CUDA driver missing or broken: no GPU for us.
        return False


def check_device(device):
    """Return the normalised device name, or raise DeviceError if this machine lacks it."""
    device = parse_device(device)
    if device == "cpu":
        return device
    if cupy is None:
        raise DeviceError(f"device {device!r} needs CuPy, which is not installed: {CUPY_INSTALL_HINT}")
    if not cuda_available():
        raise DeviceError(f"device {device!r} asked for, but CuPy finds no usable GPU (no CUDA driver or device)")
    index = int(device.split(":")[1])
    count = cupy.cuda.runtime.getDeviceCount()
    if index >= count:
        raise DeviceError(f"device {device!r} asked for, but this machine has {count} GPU(s): "
                          f"use cuda:0 .. cuda:{count - 1}")
    return device


def get_array_module(array):
    """The module (numpy or cupy) that holds ``array``: write ``xp = get_array_module(x)``."""
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy
    return numpy


def module_for(device):
    """The array module for a device name."""
    return numpy if check_device(device) == "cpu" else cupy


def device_of(array):
    """The device name of a raw array ("cpu" or "cuda:N")."""
    if cupy is not None and isinstance(array, cupy.ndarray):
        return f"cuda:{array.device.id}"
    return "cpu"


@contextlib.contextmanager
def on_device(device):
    """Make ``device`` CuPy's current GPU for the block (a no-op for the CPU)."""
    device = check_device(device)
    if device == "cpu":
        yield
    else:
        with cupy.cuda.Device(int(device.split(":")[1])):
            yield


def to_device(array, device):
    """Return ``array`` on ``device``; the same object when it is already there."""
    device = check_device(device)
    if device_of(array) == device:
        return array
    if device == "cpu":
        return cupy.asnumpy(array)
    with on_device(device):
        return cupy.asarray(array)


def to_numpy(array):
    """A NumPy array with the values of ``array`` (a copy from the GPU when it lives there)."""
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy.asnumpy(array)
    return numpy.asarray(array)


def synchronize(device):
    """Wait for the GPU's queued work (for honest timings); nothing to do on the CPU."""
    device = parse_device(device)
    if device != "cpu" and cupy is not None:
        with on_device(device):
            cupy.cuda.get_current_stream().synchronize()


# ---------------------------------------------------------------------------------------
# Random generators, one per device.

_seed = None
_generators = {}


def _fresh_seed():
    return int.from_bytes(os.urandom(8), "little")


def manual_seed(seed):
    """Seed every device's generator (NumPy's, and CuPy's on each GPU used) with ``seed``.

    As in PyTorch, ``seed`` is an integer in [-2**63, 2**64 - 1]; a negative seed s stands for
    0xffff_ffff_ffff_ffff + s.
    """
    global _seed
    try:
        seed = operator.index(seed)
    except TypeError:
        raise TypeError(f"manual_seed() takes an integer, got {type(seed).__name__}") from None
    if not -2**63 <= seed < 2**64:
        raise ValueError(f"manual_seed(): the seed must lie in [-2**63, 2**64 - 1], got {seed}")
    _seed = seed if seed >= 0 else 0xffff_ffff_ffff_ffff + seed
    _generators.clear()  # rebuilt lazily from _seed, so GPUs first used later are seeded too


def generator(device):
    """The random generator of ``device`` (created on first use from the manual seed)."""
    if device in _generators:  # the hot path: one dict lookup per draw
        return _generators[device]
    device = check_device(device)
    if device not in _generators:
        seed = _fresh_seed() if _seed is None else _seed
        if device == "cpu":
            _generators[device] = numpy.random.Generator(numpy.random.PCG64(seed))
        else:
            with on_device(device):
                _generators[device] = cupy.random.Generator(cupy.random.XORWOW(seed))
    return _generators[device]


def get_rng_state():
    """The state of minigrad's random generators, as JSON-able data (``torch.get_rng_state``'s role).

    Only the CPU's generator can be saved: CuPy's generators keep their state on the GPU and cannot
    export it, so a GPU generator in use is listed under ``"unsaved"``.
    """
    return {"seed": _seed,
            "cpu": _generators["cpu"].bit_generator.state if "cpu" in _generators else None,
            "unsaved": sorted(device for device in _generators if device != "cpu")}


def set_rng_state(state):
    """Restore what ``get_rng_state`` returned (the seed, and the CPU generator's position in its stream)."""
    global _seed
    _seed = state["seed"]
    _generators.clear()
    if state["cpu"] is not None:
        generator("cpu").bit_generator.state = state["cpu"]


def random_keep(generator, shape, p):
    """Boolean array of ``shape``: [U > p] for U ~ Uniform[0, 1) drawn per element (dropout's keep mask).

    On a GPU: ``generator.random(shape) > p``. On the CPU the same law from 32 random bits per
    element, without making floats: U = k / 2**32 with k uniform on {0, ..., 2**32 - 1}, and for
    an integer k, k / 2**32 > p exactly when k > floor(p * 2**32). That skips the int-to-float
    conversion of ``generator.random`` and takes two draws from each 64-bit output: a third of a
    dropout layer's time on the CPU. 0 <= p < 1, so the threshold fits in 32 bits.
    """
    if not 0 <= p < 1:
        raise ValueError(f"random_keep needs 0 <= p < 1, got {p} (p = 1 keeps nothing: no draws are needed)")
    if not isinstance(generator, numpy.random.Generator):
        return generator.random(shape, dtype=numpy.float32) > p
    size = math.prod(shape)
    bits = generator.bit_generator.random_raw((size + 1) // 2).view(numpy.uint32)[:size].reshape(shape)
    return bits > numpy.uint32(math.floor(p * 2 ** 32))

