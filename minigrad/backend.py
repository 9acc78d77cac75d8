"""The array backend: which array library (NumPy or CuPy) holds a tensor, and on which device.

Generic code never imports NumPy or CuPy to do math. It asks the array for its module,
``xp = get_array_module(array)``, as Chainer does, so one implementation of an op runs on
both libraries. Devices are named as in PyTorch: ``"cpu"``, ``"cuda"`` (the first GPU) and
``"cuda:N"``. CuPy is optional; asking for a GPU without it raises :class:`DeviceError`
with the command that installs it.

GPU code inside an op is a :class:`CudaKernel` (an elementwise expression) or a :class:`CudaFunction` (a
CUDA C function) declared beside the op's NumPy code and run only on CuPy arrays (one idiom for "on the
GPU?": ``xp is cupy``, with ``xp`` the op's array module).
The random generators live in ``random.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy

try:  # CuPy is the optional GPU backend: `pip install "minigrad-d2l[cuda]"`.
    import cupy
except ImportError:  # pragma: no cover - depends on the machine
    cupy = None

Array = Any
"""A raw array: a ``numpy.ndarray`` on the CPU, a ``cupy.ndarray`` on a GPU (``Any`` to type checkers: CuPy ships
no type information)."""

# The raw arrays a Tensor can hold.
ARRAY_TYPES = (numpy.ndarray,) if cupy is None else (numpy.ndarray, cupy.ndarray)


class DeviceError(RuntimeError):
    """A device was asked for that this machine cannot provide."""


DISTRIBUTION = "minigrad-d2l"  # the name on the package index (the import name is minigrad)
CUPY_INSTALL_HINT = (
    f'install CuPy for your CUDA version: pip install "{DISTRIBUTION}[cuda]" (CUDA 12, cupy-cuda12x), '
    "or pip install cupy-cuda13x for CUDA 13; or use device='cpu'"
)


def parse_device(device: str | None) -> str:
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


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # CUDA driver missing or broken: no GPU for us.
        return False


def gpu_name() -> str:
    """The current GPU's name as CUDA reports it (e.g. 'NVIDIA H100 80GB HBM3'), for benchmark reports."""
    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    return name.decode() if isinstance(name, bytes) else name


def check_device(device: str | None) -> str:
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
        raise DeviceError(
            f"device {device!r} asked for, but this machine has {count} GPU(s): use cuda:0 .. cuda:{count - 1}"
        )
    return device


def get_array_module(array: Any) -> ModuleType:
    """The module (numpy or cupy) that holds ``array``: write ``xp = get_array_module(x)``."""
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy
    return numpy


def module_for(device: str | None) -> ModuleType:
    """The array module for a device name."""
    return numpy if check_device(device) == "cpu" else cupy


def device_of(array: Array) -> str:
    """The device name of a raw array ("cpu" or "cuda:N")."""
    if cupy is not None and isinstance(array, cupy.ndarray):
        return f"cuda:{array.device.id}"
    return "cpu"


@contextlib.contextmanager
def on_device(device: str | None) -> Iterator[None]:
    """Make ``device`` CuPy's current GPU for the block (a no-op for the CPU)."""
    device = check_device(device)
    if device == "cpu":
        yield
    else:
        with cupy.cuda.Device(int(device.split(":")[1])):
            yield


def to_device(array: Any, device: str | None) -> Array:
    """Return ``array`` on ``device``; the same object when it is already there."""
    device = check_device(device)
    if device_of(array) == device:
        return array
    if device == "cpu":
        return cupy.asnumpy(array)
    with on_device(device):
        return cupy.asarray(array)


def to_numpy(array: Array) -> numpy.ndarray:
    """A NumPy array with the values of ``array`` (a copy from the GPU when it lives there)."""
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy.asnumpy(array)
    return numpy.asarray(array)


def current_stream() -> Any:
    """CuPy's current CUDA stream (for ordering work between streams on the GPU)."""
    return cupy.cuda.get_current_stream()


def synchronize(device: str | None) -> None:
    """Wait for the GPU's queued work (for honest timings); nothing to do on the CPU."""
    device = parse_device(device)
    if device != "cpu" and cupy is not None:
        with on_device(device):
            cupy.cuda.get_current_stream().synchronize()


class CudaKernel:
    """A CuPy ``ElementwiseKernel``, compiled on its first call (so declaring one costs nothing without a GPU).

    Ops declare theirs beside the NumPy code it must equal (``Dropout.forward_gpu``) and call it only
    when their arrays live on a GPU. CuPy caches the compiled binaries on disk.
    """

    def __init__(self, in_params: str, out_params: str, operation: str, name: str, preamble: str = "") -> None:
        self.source = (in_params, out_params, operation, name)
        self.preamble = preamble
        self.kernel = None

    def __call__(self, *args, **kwargs):
        if self.kernel is None:
            self.kernel = cupy.ElementwiseKernel(*self.source, preamble=self.preamble)
        return self.kernel(*args, **kwargs)


class CudaFunction:
    """A CUDA C function (``extern "C" __global__``) as a CuPy ``RawKernel``, compiled on its first call.

    For the kernels an elementwise expression cannot say (a block of threads that sums in shared memory, a
    table of arrays). Its source is plain CUDA C++, so the tests also build it for the host and check it
    against the NumPy code it stands for. Call it as ``function(grid, block, args)``: ``args`` are CuPy arrays
    (passed as pointers) and NumPy scalars of the parameters' exact C types.
    """

    def __init__(self, source: str, name: str) -> None:
        self.source, self.name = source, name
        self.kernel: Any = None

    def __call__(self, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...]) -> None:
        if self.kernel is None:
            self.kernel = cupy.RawKernel(self.source, self.name)
        self.kernel(grid, block, args)


def declared_cuda(kind: type, modules: list[ModuleType]) -> dict[str, Any]:
    """Every ``kind`` (``CudaKernel`` or ``CudaFunction``) declared in ``modules``, at module level or in a class
    of the module, as {'module.Name': kernel} or {'module.Class.Name': kernel} (module: the last part of its
    name). For the tools that compile or inspect every kernel."""
    found = {}
    for module in modules:
        short = module.__name__.rsplit(".", 1)[1]
        for name, value in vars(module).items():
            if isinstance(value, kind):
                found[f"{short}.{name}"] = value
            elif isinstance(value, type) and value.__module__ == module.__name__:
                found.update(
                    {
                        f"{short}.{name}.{attr}": kernel
                        for attr, kernel in vars(value).items()
                        if isinstance(kernel, kind)
                    }
                )
    return found


def address(array: Array) -> int:
    """Where an array's first element lives (for a kernel that reads a table of arrays): a device address on a
    GPU, a host one for a NumPy array."""
    return array.ctypes.data if isinstance(array, numpy.ndarray) else array.data.ptr
