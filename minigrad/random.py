"""Random numbers, one seed for all of them (``torch.random``'s role).

Two kinds of stream, both seeded by :func:`manual_seed`:

- **generators**, one per device (``numpy.random.Generator`` with PCG64 on the CPU,
  ``cupy.random.Generator`` with XORWOW on a GPU), for ``randn``, ``rand`` and the noise layers.
  Weight initialisation (``nn.init``) always draws on the CPU's and copies the values, so a model
  starts from the same weights on every device.
- **dropout streams**, one per device: NumPy's Philox4x64-10, a counter-based generator, keyed by
  the seed. Its words are a function of (key, counter) alone, so a CUDA kernel computes the very
  same ones as NumPy from a counter kept in GPU memory: the same seed gives the same dropout masks
  on the CPU and on a GPU, and a step captured as a CUDA graph can be replayed without the host.
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy

from .backend import Array, CudaKernel, check_device, cupy, on_device

_seed: int | None = None
_generators: dict[str, Any] = {}  # device -> NumPy or CuPy generator
_dropout_streams: dict[str, PhiloxStream] = {}
# per thread, .streams: {device: stream} that this thread's dropout draws from instead (lent_dropout_stream)
_lent = threading.local()


def _fresh_seed():
    return int.from_bytes(os.urandom(8), "little")


def manual_seed(seed: int) -> None:
    """Seed every generator and dropout stream, on every device, with ``seed``.

    As in PyTorch, ``seed`` is an integer in [-2**63, 2**64 - 1]; a negative seed s stands for
    0xffff_ffff_ffff_ffff + s.
    """
    global _seed
    try:
        seed = operator.index(seed)
    except TypeError:
        raise TypeError(f"manual_seed() takes an integer, got {type(seed).__name__}") from None
    if not -(2**63) <= seed < 2**64:
        raise ValueError(f"manual_seed(): the seed must lie in [-2**63, 2**64 - 1], got {seed}")
    _seed = seed if seed >= 0 else 0xFFFF_FFFF_FFFF_FFFF + seed
    _generators.clear()  # rebuilt lazily from _seed, so GPUs first used later are seeded too
    _dropout_streams.clear()


def _current_seed():
    global _seed
    if _seed is None:  # no manual_seed: one fresh seed for the whole process, as PyTorch draws one at start
        _seed = _fresh_seed()
    return _seed


def generator(device: str | None) -> Any:
    """The random generator of ``device`` (created on first use from the manual seed)."""
    if device in _generators:  # the hot path: one dict lookup per draw
        return _generators[device]
    device = check_device(device)
    if device not in _generators:
        seed = _current_seed()
        if device == "cpu":
            _generators[device] = numpy.random.Generator(numpy.random.PCG64(seed))
        else:
            with on_device(device):
                _generators[device] = cupy.random.Generator(cupy.random.XORWOW(seed))
    return _generators[device]


def dropout_stream(device: str | None) -> PhiloxStream:
    """The dropout stream of ``device`` (created on first use from the manual seed), or the one lent to this
    thread for it (``lent_dropout_stream``)."""
    lent = getattr(_lent, "streams", None)
    if lent and device in lent:
        return lent[device]
    if device in _dropout_streams:
        return _dropout_streams[device]
    device = check_device(device)
    if device not in _dropout_streams:
        _dropout_streams[device] = PhiloxStream(_current_seed(), device)
    return _dropout_streams[device]


@contextlib.contextmanager
def lent_dropout_stream(device: str, stream: PhiloxStream) -> Iterator[PhiloxStream]:
    """Inside the block, this thread's dropout on ``device`` draws from ``stream`` instead of the device's own
    stream, which neither moves nor serves anyone else differently (other threads draw from it as before)."""
    device = check_device(device)
    lent = getattr(_lent, "streams", None)
    if lent is None:
        lent = _lent.streams = {}
    before = lent.get(device)
    lent[device] = stream
    try:
        yield stream
    finally:
        if before is None:
            del lent[device]
        else:
            lent[device] = before


def get_rng_state() -> dict[str, Any]:
    """The state of minigrad's random streams, as JSON-able data (``torch.get_rng_state``'s role).

    The seed, the CPU generator's state, and each dropout stream's counter (read from the GPU where it
    lives there). CuPy's generators keep their state on the GPU and cannot export it, so a GPU
    generator in use is listed under ``"unsaved"``.
    """
    return {
        "seed": _seed,
        "cpu": _generators["cpu"].bit_generator.state if "cpu" in _generators else None,
        "dropout": {device: str(stream.counter) for device, stream in _dropout_streams.items()},
        "unsaved": sorted(device for device in _generators if device != "cpu"),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``get_rng_state`` returned: the seed, the CPU generator, the dropout streams' counters."""
    global _seed
    _seed = state["seed"]
    _generators.clear()
    _dropout_streams.clear()
    if state["cpu"] is not None:
        generator("cpu").bit_generator.state = state["cpu"]
    for device, counter in state.get("dropout", {}).items():
        dropout_stream(device).set_counter(int(counter))


# ---------------------------------------------------------------------------------------
# The dropout stream


class PhiloxStream:
    """32-bit random words from NumPy's Philox4x64-10 (key = ``SeedSequence(seed).generate_state(2)``), drawn
    in whole blocks so that a draw's words depend only on the key, the counter and the draw's size.

    A block is one Philox output of four 64-bit words, eight 32-bit words (each 64-bit word gives its low
    half, then its high half: NumPy's own order). ``words(n)`` returns the first n 32-bit words of the blocks
    numbered counter + 1, counter + 2, ... (NumPy increments the counter before it computes a block) and
    moves the counter on by ceil(n / 8), dropping the rest of the last block. On the CPU NumPy's C code
    computes the blocks; on a GPU the kernel ``PHILOX_CUDA`` computes the same ones from a counter kept in
    GPU memory, which a one-thread kernel advances, so no draw needs the host.
    """

    def __init__(self, seed: int, device: str = "cpu") -> None:
        # two 64-bit words (astype: NumPy's signature promises 32- or 64-bit words)
        self._begin(numpy.random.SeedSequence(seed).generate_state(2, numpy.uint64).astype(numpy.uint64), device)

    def replica(self, device: str) -> PhiloxStream:
        """A stream of its own on ``device`` that draws the words this one would draw next (the same key, at this
        counter): drawing from either moves only that one."""
        twin = object.__new__(PhiloxStream)
        twin._begin(self.key.copy(), check_device(device))
        twin.set_counter(self.counter)
        return twin

    def _begin(self, key: numpy.ndarray, device: str) -> None:
        """The stream of ``key`` on ``device``, at counter 0."""
        self.device, self.key = device, key
        if device == "cpu":
            self.philox = numpy.random.Philox(key=self.key)  # counter 0, no words buffered
        else:
            with on_device(device):
                self.key_on_device = cupy.asarray(self.key)
                self.counter_on_device = cupy.zeros(4, dtype=cupy.uint64)  # 256 bits, lowest word first

    def words(self, n: int) -> Array:
        """The next ``n`` 32-bit words, as a uint32 array on the stream's device; the counter moves ceil(n / 8)."""
        if self.device == "cpu":
            raw = self.philox.random_raw((n + 1) // 2)
            if (n + 1) // 2 % 4:
                self.philox.advance(0)  # drop the rest of the last block: the next draw starts a new one
            return raw.astype("<u8", copy=False).view("<u4")[:n]
        with on_device(self.device):
            out = cupy.empty(n, dtype=cupy.uint32)
            _philox_words_gpu(self.key_on_device, self.counter_on_device, out)
            self.advance_on_device(n)
            return out

    def advance_on_device(self, n: int) -> None:
        """After a GPU kernel drew ``n`` words from the counter: move it on by ceil(n / 8) blocks, on the GPU."""
        _philox_advance_gpu(numpy.uint64(blocks_for(n)), self.counter_on_device, size=1)

    @property
    def counter(self) -> int:
        """The number of blocks drawn so far (a Python int; on a GPU this reads the device, once)."""
        if self.device == "cpu":
            words = self.philox.state["state"]["counter"]
        else:
            words = cupy.asnumpy(self.counter_on_device)
        return sum(int(word) << (64 * k) for k, word in enumerate(words))

    def set_counter(self, counter: int) -> None:
        """Put the stream at Philox block ``counter`` (a 256-bit integer), on the CPU or in GPU memory."""
        words = numpy.array([(counter >> (64 * k)) & 0xFFFF_FFFF_FFFF_FFFF for k in range(4)], dtype=numpy.uint64)
        if self.device == "cpu":
            self.philox.state = {
                "bit_generator": "Philox",
                "state": {"counter": words, "key": self.key},
                "buffer": numpy.zeros(4, dtype=numpy.uint64),
                "buffer_pos": 4,
                "has_uint32": 0,
                "uinteger": 0,
            }
        else:
            with on_device(self.device):
                self.counter_on_device[...] = cupy.asarray(words)


def blocks_for(n: int) -> int:
    """Philox blocks a draw of ``n`` 32-bit words uses: ceil(n / 8)."""
    return math.ceil(n / 8)


# Philox4x64-10 exactly as numpy/random/src/philox/philox.h computes it: 10 rounds, the key bumped (Weyl
# increments) before rounds 2 to 10. minigrad_philox_u32(key, counter, j) is the j-th 32-bit word of the
# stream of blocks counter + 1, counter + 2, ... (block j / 8, 64-bit word (j / 2) % 4, low half first).
PHILOX_CUDA = r"""
struct minigrad_philox_block { unsigned long long v[4]; };

__device__ __forceinline__ minigrad_philox_block minigrad_philox4x64_10(
        minigrad_philox_block c, unsigned long long k0, unsigned long long k1) {
    #pragma unroll
    for (int r = 0; r < 10; ++r) {
        if (r > 0) { k0 += 0x9E3779B97F4A7C15ULL; k1 += 0xBB67AE8584CAA73BULL; }
        const unsigned long long M0 = 0xD2E7470EE14C6C93ULL, M1 = 0xCA5A826395121157ULL;
        unsigned long long lo0 = M0 * c.v[0], hi0 = __umul64hi(M0, c.v[0]);
        unsigned long long lo1 = M1 * c.v[2], hi1 = __umul64hi(M1, c.v[2]);
        minigrad_philox_block o;
        o.v[0] = hi1 ^ c.v[1] ^ k0; o.v[1] = lo1; o.v[2] = hi0 ^ c.v[3] ^ k1; o.v[3] = lo0;
        c = o;
    }
    return c;
}

// counter (256 bits, lowest word first) + d, with carry
__device__ __forceinline__ minigrad_philox_block minigrad_philox_add(const unsigned long long* counter,
                                                                     unsigned long long d) {
    minigrad_philox_block c;
    c.v[0] = counter[0] + d;
    unsigned long long carry = c.v[0] < d;
    c.v[1] = counter[1] + carry; carry = carry && c.v[1] == 0ULL;
    c.v[2] = counter[2] + carry; carry = carry && c.v[2] == 0ULL;
    c.v[3] = counter[3] + carry;
    return c;
}

// counter += blocks, in place (one thread: a kernel of the step after its last draw, so that a replayed graph moves
// on by itself)
__device__ __forceinline__ void minigrad_philox_advance(unsigned long long* counter, unsigned long long blocks) {
    minigrad_philox_block c = minigrad_philox_add(counter, blocks);
    counter[0] = c.v[0]; counter[1] = c.v[1]; counter[2] = c.v[2]; counter[3] = c.v[3];
}

__device__ __forceinline__ unsigned int minigrad_philox_u32(const unsigned long long* key,
                                                            const unsigned long long* counter,
                                                            unsigned long long j) {
    minigrad_philox_block o = minigrad_philox4x64_10(minigrad_philox_add(counter, (j >> 3) + 1ULL), key[0], key[1]);
    unsigned int lane = (unsigned int)((j >> 1) & 3ULL);
    unsigned long long w = lane == 0 ? o.v[0] : lane == 1 ? o.v[1] : lane == 2 ? o.v[2] : o.v[3];
    return (j & 1ULL) ? (unsigned int)(w >> 32) : (unsigned int)(w & 0xFFFFFFFFULL);
}
"""

_philox_words_gpu = CudaKernel(
    "raw uint64 key, raw uint64 counter",
    "uint32 word",
    "word = minigrad_philox_u32(&key[0], &counter[0], (unsigned long long)i)",
    "minigrad_philox_words",
    preamble=PHILOX_CUDA,
)
_philox_advance_gpu = CudaKernel(
    "uint64 blocks",
    "raw uint64 counter",
    "minigrad_philox_advance(&counter[0], blocks)",
    "minigrad_philox_advance_kernel",
    preamble=PHILOX_CUDA,
)
