"""The sanitized host build (``python -m tests.cuda_host address|thread``, which CI runs) can fail: a kernel that
writes past its array, and one whose threads race on shared memory, are each stopped with the sanitizer's report."""

import subprocess
import sys

import pytest

from .cuda_host import sanitized_environment

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
