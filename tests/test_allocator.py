"""minigrad.allocator: freed CPU memory is kept for the next batch when a program asks, never on import."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Allocate and free the arrays of a dropout layer's forward, as a training step does, and count page faults.
FAULTS_PER_STEP = """
import resource, sys, numpy, minigrad
applied = minigrad.allocator.keep_freed_memory() if sys.argv[1] == "keep" else None
from minigrad.ops import keep_mask
from minigrad.random import dropout_stream
generator, x = dropout_stream("cpu"), numpy.ones((256, 1024), numpy.float32)
def step():
    mask = keep_mask(generator, x.shape, 0.5) * numpy.float32(2)
    return (x * mask).sum()
for _ in range(20):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    step()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 200)
"""


def run_python(code, mode, **env):
    result = subprocess.run(
        [sys.executable, "-c", code, mode],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_freed_memory_is_reused_without_page_faults():
    applied, faults = run_python(FAULTS_PER_STEP, "keep")
    if applied != "True":
        pytest.skip("this C library has no mallopt (not glibc)")
    # Without the setting each step faults in its 1 MiB temporaries afresh: 256 faults at the least (measured: 544).
    assert float(faults) < 5


def test_the_environment_variable_leaves_the_allocator_alone():
    applied, _ = run_python(FAULTS_PER_STEP, "keep", MINIGRAD_KEEP_FREED_MEMORY="0")
    assert applied == "False"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's default is what is checked")
def test_importing_minigrad_leaves_malloc_alone():
    # A library must not change the process's allocator: without the call, glibc's defaults give each step its
    # 1 MiB of temporaries afresh (256 page faults at the least), as in any NumPy program.
    _, faults = run_python(FAULTS_PER_STEP, "import-only")
    assert float(faults) > 100
