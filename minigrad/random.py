"""Random generators, one per device, and the seed they share (``torch.random``'s role).

Each device has its own generator (``numpy.random.Generator`` with PCG64 on the CPU,
``cupy.random.Generator`` with XORWOW on a GPU), so random draws happen where the array lives, in
its dtype. :func:`manual_seed` reseeds all of them. The CPU and a GPU use different bit generators,
so the same seed gives different dropout masks on the two.
"""
import operator
import os

import numpy

from .backend import check_device, cupy, on_device

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
