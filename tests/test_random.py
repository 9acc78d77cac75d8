"""The dropout stream: NumPy's Philox4x64-10 keyed by the seed, drawn in whole blocks, the same on every device.

Known-answer vectors are NumPy's own (numpy/random/tests/data/philox-testset-1.csv and -2.csv), written out
here so that the test does not depend on the installed NumPy. ``philox4x64_10`` below is the algorithm that
``random.PHILOX_CUDA`` implements on a GPU, in Python integers.
"""

import math

import numpy as np
import pytest

import minigrad as mg
import minigrad.nn.functional as F
from minigrad import backend
from minigrad.chapter.model import BATCH_SIZE, concise_mlp
from minigrad.random import PhiloxStream, blocks_for, dropout_stream

MASK64 = 2**64 - 1
# SeedSequence(0xdeadbeaf).generate_state(2, uint64), and random_raw words 0, 1, 2 and 999 of Philox(0xdeadbeaf)
KAT_KEY = (0x50312A63D516E24A, 0x4063BC8BCA44DC77)
KAT_DEADBEAF = {0: 0xEDC95200E2BD66A5, 1: 0x581D4E43B7682352, 2: 0x4BE7278F5E373EAB, 999: 0x1F83A32D4ADFD2ED}
KAT_ZERO = {0: 0x0399E5B222B82FA9, 1: 0x41FD08C1F00F3BC5, 999: 0x57C05F47FF62380D}  # Philox(0)


def philox4x64_10(counter, key):
    """One Philox block: 10 rounds, the key bumped (Weyl increments) before rounds 2 to 10, as philox.h does."""
    c, (k0, k1) = list(counter), key
    for round_ in range(10):
        if round_:
            k0, k1 = (k0 + 0x9E3779B97F4A7C15) & MASK64, (k1 + 0xBB67AE8584CAA73B) & MASK64
        p0, p1 = 0xD2E7470EE14C6C93 * c[0], 0xCA5A826395121157 * c[2]
        c = [(p1 >> 64) ^ c[1] ^ k0, p1 & MASK64, (p0 >> 64) ^ c[3] ^ k1, p0 & MASK64]
    return c


def as_u64(words32, k):
    """64-bit word k of a stream of 32-bit words (low half first)."""
    return int(words32[2 * k]) | int(words32[2 * k + 1]) << 32


@pytest.mark.parametrize("seed, expected", [(0xDEADBEAF, KAT_DEADBEAF), (0, KAT_ZERO)], ids=["deadbeaf", "zero"])
def test_the_stream_gives_numpys_known_answers(seed, expected):
    words = PhiloxStream(seed).words(2000)
    assert words.dtype == np.uint32
    assert {k: as_u64(words, k) for k in expected} == expected


def test_the_round_function_gives_the_known_block():
    """The first block of Philox(0xdeadbeaf) is block(counter = 1): NumPy increments the counter before computing."""
    assert tuple(np.random.SeedSequence(0xDEADBEAF).generate_state(2, np.uint64).tolist()) == KAT_KEY
    assert philox4x64_10([1, 0, 0, 0], KAT_KEY) == [KAT_DEADBEAF[k] for k in range(3)] + [0xEE47F17991A9E7EA]


def test_each_draw_takes_whole_blocks_from_the_counter():
    """Draw k starts at the block after the previous draw's last one; the counter counts blocks."""
    sizes = [1, 3, 8, 9, 17, 1000, 5]
    stream, reference = PhiloxStream(42), np.random.Philox(42).random_raw(4 * 200).view(np.uint32)
    block = 0
    for n in sizes:
        np.testing.assert_array_equal(stream.words(n), reference[8 * block : 8 * block + n])
        block += blocks_for(n)
        assert stream.counter == block
    key = np.random.SeedSequence(42).generate_state(2, np.uint64).tolist()
    last = philox4x64_10([block, 0, 0, 0], key)  # the block the last draw used: counter value `block`
    assert as_u64(reference, 4 * (block - 1)) == last[0]


def test_the_counter_carries_across_64_bits():
    stream = PhiloxStream(7)
    stream.set_counter(2**64 - 2)
    words = stream.words(24)  # blocks 2**64 - 1, 2**64 and 2**64 + 1
    assert stream.counter == 2**64 + 1
    key = np.random.SeedSequence(7).generate_state(2, np.uint64).tolist()
    expected = [philox4x64_10([(c & MASK64), c >> 64, 0, 0], key) for c in (2**64 - 1, 2**64, 2**64 + 1)]
    assert [as_u64(words, k) for k in range(12)] == [w for block in expected for w in block]


def test_a_training_step_advances_the_stream_by_exactly_its_draws():
    """The chapter's model on a batch of 256: two dropout layers of 256 x 256, 8192 blocks each; evaluation none."""
    mg.manual_seed(0)
    model = concise_mlp()
    x, y = mg.rand(BATCH_SIZE, 784), mg.tensor(np.arange(BATCH_SIZE) % 10)
    stream = dropout_stream("cpu")
    before = stream.counter
    F.cross_entropy(model(x), y).backward()
    assert stream.counter - before == 2 * blocks_for(BATCH_SIZE * 256) == 16384
    model.eval()
    with mg.no_grad():
        model(x)
    assert stream.counter - before == 16384


def test_the_rng_state_round_trip_continues_the_dropout_stream():
    mg.manual_seed(3)
    F.dropout(mg.ones(100), 0.5)
    state = mg.get_rng_state()
    expected = F.dropout(mg.ones(1000), 0.5).numpy()
    mg.manual_seed(99)
    F.dropout(mg.ones(10), 0.5)
    mg.set_rng_state(state)
    np.testing.assert_array_equal(F.dropout(mg.ones(1000), 0.5).numpy(), expected)
    assert state["dropout"] == {"cpu": str(blocks_for(100))}


def test_manual_seed_restarts_the_stream():
    mg.manual_seed(11)
    first = F.dropout(mg.ones(64), 0.5).numpy()
    mg.manual_seed(11)
    np.testing.assert_array_equal(F.dropout(mg.ones(64), 0.5).numpy(), first)


def test_a_replica_draws_the_streams_next_words_without_moving_it():
    mg.manual_seed(5)
    stream = dropout_stream("cpu")
    stream.words(100)
    replica = stream.replica("cpu")
    counter = stream.counter
    ahead = replica.words(300)
    assert stream.counter == counter and replica.counter == counter + blocks_for(300)
    np.testing.assert_array_equal(stream.words(300), ahead)


def test_a_lent_stream_serves_this_threads_dropout_only_and_only_inside_the_block():
    import threading

    from minigrad.random import lent_dropout_stream

    mg.manual_seed(6)
    own = dropout_stream("cpu")
    lent = own.replica("cpu")
    seen = []
    with lent_dropout_stream("cpu", lent):
        assert dropout_stream("cpu") is lent
        F.dropout(mg.ones(64), 0.5)
        worker = threading.Thread(target=lambda: seen.append(dropout_stream("cpu")))
        worker.start()
        worker.join()
    assert seen == [own] and dropout_stream("cpu") is own
    assert own.counter == 0 and lent.counter == blocks_for(64)


PHILOX_WORDS = r"""
extern "C" __global__ void minigrad_test_philox(const unsigned long long* key, unsigned long long* counter,
                                                unsigned long long n, unsigned long long blocks, unsigned int* words) {
    for (unsigned long long j = 0; j < n; ++j) words[j] = minigrad_philox_u32(key, counter, j);
    minigrad_philox_advance(counter, blocks);
}
"""


def test_the_cuda_source_computes_numpys_words_when_compiled_for_the_host(tmp_path):
    """PHILOX_CUDA is plain C++ but for __umul64hi: built for the CPU, it must give NumPy's words and carries."""
    from minigrad.backend import CudaFunction
    from minigrad.random import PHILOX_CUDA

    from .cuda_host import HostFunction

    draw = HostFunction(CudaFunction(PHILOX_CUDA + PHILOX_WORDS, "minigrad_test_philox"), tmp_path)
    key = np.random.SeedSequence(0xDEADBEAF).generate_state(2, np.uint64)
    for counter, n, blocks in ((0, 20, 3), (5, 37, 2**64 - 3), (2**40, 16, 1)):  # 5 + 2**64 - 3 carries
        words, state = np.zeros(n, np.uint32), np.array([counter, 0, 0, 0], np.uint64)
        draw((1,), (1,), (key, state, np.uint64(n), np.uint64(blocks), words))
        expected = np.random.Philox(key=key, counter=counter).random_raw((n + 1) // 2).view(np.uint32)[:n]
        np.testing.assert_array_equal(words, expected)
        total = counter + blocks
        assert [int(part) for part in state[:2]] == [total & MASK64, total >> 64]


@pytest.mark.skipif(not mg.cuda_available(), reason="no CUDA: CuPy is not installed or finds no GPU")
@pytest.mark.parametrize("n", [1, 7, 8, 9, 65536 + 3])
def test_cuda_stream_draws_the_cpus_words(n):
    mg.manual_seed(5)
    cpu, gpu = PhiloxStream(5), PhiloxStream(5, "cuda:0")
    for _ in range(3):
        np.testing.assert_array_equal(backend.to_numpy(gpu.words(n)), cpu.words(n))
    assert gpu.counter == cpu.counter == 3 * math.ceil(n / 8)


@pytest.mark.skipif(not mg.cuda_available(), reason="no CUDA: CuPy is not installed or finds no GPU")
def test_cuda_counter_carries_across_64_bits():
    cpu, gpu = PhiloxStream(7), PhiloxStream(7, "cuda:0")
    cpu.set_counter(2**64 - 2)
    gpu.set_counter(2**64 - 2)
    np.testing.assert_array_equal(backend.to_numpy(gpu.words(24)), cpu.words(24))
    assert gpu.counter == 2**64 + 1


@pytest.mark.skipif(not mg.cuda_available(), reason="no CUDA: CuPy is not installed or finds no GPU")
def test_the_chapters_model_draws_the_same_masks_on_cpu_and_cuda():
    """Same seed: the same weights and, layer by layer and step by step, the same dropout masks."""
    masks = {}
    for device in ("cpu", "cuda:0"):
        mg.manual_seed(0)
        model = concise_mlp(device=device)
        optimizer = mg.optim.SGD(model.parameters(), lr=0.5)
        rng = np.random.default_rng(0)
        masks[device] = []
        for _ in range(5):
            x = mg.Tensor(backend.to_device(rng.random((BATCH_SIZE, 784), dtype=np.float32), device))
            y = mg.Tensor(backend.to_device(rng.integers(0, 10, BATCH_SIZE), device))
            loss = F.cross_entropy(model(x), y)
            masks[device] += [backend.to_numpy(fn.mask) for fn in _dropout_ops(loss)]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert dropout_stream(device).counter == 5 * 16384
    assert len(masks["cpu"]) == 10
    for on_cpu, on_gpu in zip(masks["cpu"], masks["cuda:0"]):
        np.testing.assert_array_equal(on_cpu, on_gpu)


def _dropout_ops(root):
    from minigrad.autograd import topological_order

    return [t.grad_fn for t in topological_order(root) if type(t.grad_fn).__name__ == "Dropout"]
