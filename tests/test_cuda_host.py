"""The host build of CUDA kernels (tests/cuda_host.py) itself: sanitized (``python -m tests.cuda_host
address|thread``, which CI runs) it can fail, a kernel that writes past its array, and one whose threads race on
shared memory, each stopped with the sanitizer's report; a launch runs each thread of each block once, the blocks
in turn; and a source is compiled once a process."""

import subprocess
import sys

import numpy as np
import pytest

from minigrad.backend import CudaFunction

from .cuda_host import HostFunction, sanitized_environment

OVERRUN = r"""
extern "C" __global__ void minigrad_overrun(float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = 1.0f;  // one past the end
}
"""
RACE = r"""
extern "C" __global__ void minigrad_race(float* out) {
    __shared__ float s[64];
    s[threadIdx.x] = threadIdx.x;
    __syncthreads();
    const float right = s[(threadIdx.x + 1) % 64];
    s[threadIdx.x] = right;  // the neighbour may not have read its value yet: a __syncthreads is missing
    __syncthreads();
    out[threadIdx.x] = s[threadIdx.x];
}
"""
RUN = """
import pathlib, sys, tempfile
import numpy as np
from minigrad.backend import CudaFunction
from tests.cuda_host import HostFunction
source, name, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
kernel = HostFunction(CudaFunction(source, name), pathlib.Path(tempfile.mkdtemp()))
out = np.zeros(size, np.float32)
kernel((1,), (64,), [out, np.int32(size)] if "n)" in source else [out])
print("the kernel ran to its end")
"""


@pytest.mark.parametrize(
    "sanitizer, source, name, size, report",
    [
        ("address", OVERRUN, "minigrad_overrun", 63, "heap-buffer-overflow"),
        ("thread", RACE, "minigrad_race", 64, "data race"),
    ],
)
def test_the_sanitized_host_build_stops_a_broken_kernel(sanitizer, source, name, size, report):
    env = sanitized_environment(sanitizer)
    if isinstance(env, str):
        pytest.skip(f"cannot sanitize here: {env}")
    ran = subprocess.run([sys.executable, "-c", RUN, source, name, str(size)], env=env, capture_output=True, text=True)
    assert ran.returncode != 0, ran.stdout
    assert report in ran.stderr, ran.stderr[-2000:]
    assert "the kernel ran to its end" not in ran.stdout


# Every thread of every block counts itself in (atomicAdd) and writes which count it got where its block and
# thread put it. Where the source synchronises (the host build then runs a block's threads as std::threads, else
# one after another), block 0 alone does, first: the other blocks' threads are held by nothing of their own
ORDER = r"""
extern "C" __global__ void minigrad_order(unsigned int* seen, unsigned int* count) {
    const unsigned int threads = blockDim.x * blockDim.y * blockDim.z;
    const unsigned int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    if (b == 0) SYNC;
    seen[b * threads + t] = atomicAdd(count, 1u);
}
"""


@pytest.mark.parametrize("synchronises", [True, False], ids=["threads", "in turn"])
def test_the_host_build_runs_each_thread_of_each_block_once_and_the_blocks_in_turn(tmp_path, synchronises):
    """A launch on a grid and blocks of three dimensions: each (block, thread) runs once, at the place its
    blockIdx and threadIdx give it, and a block's threads all run before any of the next block's (blocks along x,
    then y, then z), as the kernels that count their blocks in (fast.plan's loss product) need of the host build."""
    source = ORDER.replace("SYNC", "__syncthreads()" if synchronises else "(void)0")
    kernel = HostFunction(CudaFunction(source, "minigrad_order"), tmp_path)
    blocks, threads = 3 * 2 * 2, 4 * 2 * 2
    seen, count = np.full(blocks * threads, 10**9, dtype=np.uint32), np.zeros(1, dtype=np.uint32)
    kernel((3, 2, 2), (4, 2, 2), (seen, count))
    assert count[0] == blocks * threads
    assert sorted(seen) == list(range(blocks * threads))  # each (block, thread) once
    assert np.all(seen.reshape(blocks, threads) // threads == np.arange(blocks)[:, None])  # block b's turn was b


def test_a_kernel_built_twice_in_a_process_is_compiled_once(tmp_path):
    """HostFunction compiles a source once a process (the host tests build many kernels in the same shape more than
    once); another source is compiled, and each runs its own code."""
    source = ORDER.replace("SYNC", "(void)0") + f"// {tmp_path}\n"  # (a source no other test has built)
    other = source.replace("atomicAdd(count, 1u)", "atomicAdd(count, 2u)")
    folders = [tmp_path / name for name in ("first", "again", "other")]
    for folder in folders:
        folder.mkdir()
    kernels = [
        HostFunction(CudaFunction(text, "minigrad_order"), folder)
        for text, folder in zip([source, source, other], folders)
    ]
    assert [sorted(path.name for path in folder.iterdir()) for folder in folders] == [
        ["libminigrad_order.so", "minigrad_order.cpp"],
        [],
        ["libminigrad_order.so", "minigrad_order.cpp"],
    ]
    for kernel, step in zip(kernels, (1, 1, 2)):
        seen, count = np.zeros(8, dtype=np.uint32), np.zeros(1, dtype=np.uint32)
        kernel((2,), (4,), (seen, count))
        assert sorted(seen) == list(range(0, 8 * step, step))
