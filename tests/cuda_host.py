"""CUDA C functions built and run on the host, so that a machine without a GPU checks what they compute.

``HostFunction(function, folder)`` builds a ``backend.CudaFunction``'s source as a C++20 shared library with a
prelude that stands in for CUDA: the blocks one after another; a block's threads in turn on one CPU thread, or,
where the source synchronises, a ``std::thread`` each (made once a launch, each running its thread of every block
in turn) with a barrier for ``__syncthreads`` and ``static`` for ``__shared__`` (so a block's threads share it);
and the device intrinsics the sources use, with the CPU's IEEE arithmetic (``__fmul_rn`` and the like round each
operation, as on the GPU). It is called as the CudaFunction is, ``host(grid, block, args)``, with NumPy arrays
where the GPU gets CuPy arrays (passed as pointers, changed in place) and NumPy scalars; each argument's type is
checked against the kernel's parameter, as a GPU cannot (CuPy passes a scalar's bytes as they are).

What this cannot see: the GPU's own ``expf``/``logf`` (a few ulp from the C library's), memory ordering
between blocks, and speed. The CUDA tests check those on a GPU.

Built with a sanitizer, the same tests also catch what a GPU would do silently: ``python -m tests.cuda_host
address`` runs the tests that use this module with every kernel built under AddressSanitizer and
UndefinedBehaviorSanitizer (a read or write outside an array, or outside a ``__shared__`` one, stops the run
with the kernel's line), and ``python -m tests.cuda_host thread`` under ThreadSanitizer (a block's threads
that touch the same memory with no ``__syncthreads`` between them: a race on the GPU). CI runs both.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PRELUDE = r"""
#include <barrier>
#include <cmath>
#include <math.h>
#include <thread>
#include <vector>
struct minigrad_dim { unsigned int x = 1, y = 1, z = 1; };
static thread_local minigrad_dim threadIdx, blockIdx;
static minigrad_dim blockDim, gridDim;
static std::barrier<>* minigrad_block_barrier;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __align__(bytes) __attribute__((aligned(bytes)))
#define __shared__ static
#define __syncthreads() minigrad_block_barrier->arrive_and_wait()
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
static inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
static inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
static inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
// the blocks run one after another: a block's atomic and fences order it after those before it, as on a GPU
static inline unsigned int atomicAdd(unsigned int* p, unsigned int v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
static inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
template <class T> static inline T __ldcg(const T* p) { return *p; }
template <class... Parameters, class... Args>
static void minigrad_launch(bool synchronises, void (*kernel)(Parameters...), minigrad_dim grid, minigrad_dim block,
                            Args... args) {
    gridDim = grid;
    blockDim = block;
    const unsigned int threads = block.x * block.y * block.z, blocks = grid.x * grid.y * grid.z;
    auto run = [&](unsigned int b, unsigned int t) {  // block b's thread t (b runs along x, then y, then z)
        threadIdx = {t % block.x, t / block.x % block.y, t / (block.x * block.y)};
        blockIdx = {b % grid.x, b / grid.x % grid.y, b / (grid.x * grid.y)};
        kernel(args...);
    };
    if (!synchronises) {
        for (unsigned int b = 0; b < blocks; ++b)
            for (unsigned int t = 0; t < threads; ++t) run(b, t);
        return;
    }
    // a std::thread for each of a block's threads, made once for the launch (not once a block: a 256 x 256 product
    // by blocks of 1024 threads would make 262144 of them, which cost most of the host tests' time): thread t runs
    // its part of every block in turn, and a barrier of its own (not __syncthreads's, so that a thread returning
    // early still leaves the others' __syncthreads waiting, as before) holds each block's threads until all of
    // them have finished the block, so that the blocks run one after another, as they do above
    std::barrier<> sync(threads), block_done(threads);
    minigrad_block_barrier = &sync;
    std::vector<std::thread> team;
    for (unsigned int t = 0; t < threads; ++t)
        team.emplace_back([&, t] {
            for (unsigned int b = 0; b < blocks; ++b) {
                run(b, t);
                block_done.arrive_and_wait();
            }
        });
    for (auto& thread : team) thread.join();
}
"""

# MINIGRAD_HOST_SANITIZE=address or thread (set by ``python -m tests.cuda_host``): the compiler's flags for it
SANITIZER_FLAGS = {
    "": [],
    "address": ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g", "-fno-omit-frame-pointer"],
    "thread": ["-fsanitize=thread", "-g"],
}
# The tests that build kernels with this module
HOST_TESTS = ("tests/test_step_kernels.py", "tests/test_graphs.py", "tests/test_random.py")

SCALARS = {  # C type -> (ctypes type, the NumPy dtype an argument must have)
    "float": (ctypes.c_float, "float32"),
    "double": (ctypes.c_double, "float64"),
    "int": (ctypes.c_int, "int32"),
    "long long": (ctypes.c_longlong, "int64"),
    "unsigned int": (ctypes.c_uint, "uint32"),
    "unsigned long long": (ctypes.c_ulonglong, "uint64"),
}
POINTEES = {
    "float": "float32",
    "double": "float64",
    "int": "int32",
    "long long": "int64",
    "unsigned int": "uint32",
    "unsigned long long": "uint64",
    "unsigned char": "uint8",
}


def compiler_or_skip() -> str:
    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler (g++ or clang++) to build the CUDA source for the host")
    return compiler


def parameters(source: str, name: str) -> list[tuple[str, str, bool]]:
    """(C type without const, name, whether a pointer) for each parameter of the kernel ``name``."""
    match = re.search(rf'extern "C" __global__ void {name}\((.*?)\)\s*\{{', source, re.DOTALL)
    assert match, f'no extern "C" __global__ void {name}(...) in the source'
    found = []
    for parameter in match.group(1).split(","):
        words = parameter.replace("*", " * ").replace("__restrict__", " ").split()
        pointer = "*" in words
        ctype = " ".join(word for word in words[:-1] if word not in ("const", "*"))
        found.append((ctype, words[-1], pointer))
    return found


def sanitizer() -> str:
    """The sanitizer the kernels are built under ("address", "thread"), or "" for none."""
    name = os.environ.get("MINIGRAD_HOST_SANITIZE", "")
    if name not in SANITIZER_FLAGS:
        raise ValueError(f"MINIGRAD_HOST_SANITIZE={name!r}: use one of {sorted(SANITIZER_FLAGS)[1:]} or unset it")
    return name


def sanitizer_flags() -> list[str]:
    return SANITIZER_FLAGS[sanitizer()]


# The libraries built and loaded so far in this process, by their source and compiler command: a kernel that several
# tests build in the same shape is compiled once
BUILT: dict[tuple[str, ...], ctypes.CDLL] = {}


class HostFunction:
    """A CudaFunction built for the host (see the module's docstring), once a process for each source."""

    def __init__(self, function, folder: Path) -> None:
        compiler = compiler_or_skip()
        self.name = function.name
        self.parameters = parameters(function.source, self.name)
        declared = ", ".join(f"{c}{'*' if p else ''} {n}" for c, n, p in self.parameters)
        passed = ", ".join(n for _, n, _ in self.parameters)
        synchronises = "true" if "__syncthreads" in function.source else "false"
        wrapper = (
            f'extern "C" void minigrad_host_launch(unsigned int minigrad_g[3], unsigned int minigrad_b[3], {declared})'
            f" {{\n    minigrad_launch({synchronises}, {self.name}, minigrad_dim{{minigrad_g[0], minigrad_g[1], "
            f"minigrad_g[2]}}, minigrad_dim{{minigrad_b[0], minigrad_b[1], minigrad_b[2]}}, {passed});\n}}\n"
        )
        # the kernel's code in a namespace of its own: local to its library, as a CUDA module's is to the module (a
        # template's static, __shared__, arrays would otherwise be one object in every library that instantiates
        # it by the same name, whatever size each library gives it)
        text = PRELUDE + "namespace {\n" + function.source + "\n}  // namespace\n" + wrapper
        command = [compiler, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", *sanitizer_flags()]
        key = (text, *command)
        if key not in BUILT:
            source, library = folder / f"{self.name}.cpp", folder / f"lib{self.name}.so"
            source.write_text(text)
            built = subprocess.run(command + ["-o", str(library), str(source)], capture_output=True, text=True)
            if built.returncode and "barrier" in built.stderr and "No such file" in built.stderr:
                pytest.skip(f"this compiler cannot build the C++20 emulation: {built.stderr.strip()[:200]}")
            assert built.returncode == 0, f"{self.name} does not build for the host:\n{built.stderr}"
            BUILT[key] = ctypes.CDLL(str(library))
        self.launch = BUILT[key].minigrad_host_launch
        self.launch.restype = None
        self.calls = 0

    def __call__(self, grid, block, args) -> None:
        assert len(args) == len(self.parameters), f"{self.name} takes {len(self.parameters)} arguments"
        converted = []
        for (ctype, name, pointer), arg in zip(self.parameters, args):
            if pointer:
                assert isinstance(arg, np.ndarray) and arg.flags.c_contiguous, f"{name}: a C-contiguous array"
                if ctype != "void":
                    assert arg.dtype == POINTEES[ctype], f"{self.name}: {name} is {ctype}*, given {arg.dtype}"
                converted.append(ctypes.c_void_p(arg.ctypes.data))
            else:
                kind, dtype = SCALARS[ctype]
                given = np.asarray(arg).dtype
                assert given == dtype, f"{self.name}: {name} is {ctype}, given {given} (CuPy passes its bytes)"
                converted.append(kind(arg.item()))
        dims = [(ctypes.c_uint * 3)(*(tuple(shape) + (1, 1))[:3]) for shape in (grid, block)]
        self.launch(*dims, *converted)
        self.calls += 1


def sanitized_environment(sanitizer: str) -> dict[str, str] | str:
    """The environment in which a Python's kernels are built under ``sanitizer`` ("address" or "thread") with its
    runtime preloaded (as a sanitized library loaded into an unsanitized program needs), or why there is none."""
    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        return "no C++ compiler (g++ or clang++)"
    runtime = {"address": "libasan.so", "thread": "libtsan.so"}[sanitizer]
    preload = subprocess.run([compiler, f"-print-file-name={runtime}"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(preload):
        return f"{compiler} has no {runtime} (install its sanitizer runtime)"
    env = dict(os.environ, MINIGRAD_HOST_SANITIZE=sanitizer, LD_PRELOAD=preload)
    env.update(ASAN_OPTIONS="detect_leaks=0", UBSAN_OPTIONS="print_stacktrace=1", TSAN_OPTIONS="halt_on_error=1")
    # one BLAS thread: OpenBLAS's own threads synchronise in code the sanitizer cannot see, so it would report them
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def run_sanitized(sanitizer: str, pytest_args: list[str]) -> int:
    """The tests that build kernels for the host, under ``sanitizer``; a report stops the run, non-zero. Where this
    machine cannot sanitize, it says why and skips (0), as the tests skip without their tools."""
    env = sanitized_environment(sanitizer)
    if isinstance(env, str):
        print(f"skipped: cannot build the kernels under the {sanitizer} sanitizer here: {env}", file=sys.stderr)
        return 0
    # -s: a report goes straight to the terminal (pytest's capture would lose it when the sanitizer stops Python)
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *HOST_TESTS, *pytest_args]
    return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("address", "thread"):
        print("usage: python -m tests.cuda_host address|thread [pytest arguments]", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_sanitized(sys.argv[1], sys.argv[2:]))
