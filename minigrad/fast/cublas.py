"""cuBLAS's sgemm called directly, so that a CUDA graph can record it.

CuPy refuses every cuBLAS call while a stream is being captured: its wrappers set cuBLAS's stream first and
that is what it forbids (cupy#6290). cuBLAS itself allows capture (NVIDIA's "CUDA Graphs Support"): set the
stream, then give the handle a workspace of its own (``cublasSetStream`` resets it, and without one cuBLAS may
allocate during capture), and keep that workspace as long as the graph. PyTorch's handle pool does the same.
``Cublas.gemm`` does this through ``ctypes`` on the cuBLAS library CuPy has loaded, with its own handle, the
default math mode (no TF32: its ~1e-3 relative error would break the CPU/GPU agreement of 1e-4) and host
pointer mode (alpha = 1 and beta = 0 are baked into a recorded graph).

cuBLAS is column-major and minigrad's arrays are row-major: a row-major C = A @ B is the column-major Cᵀ = Bᵀ Aᵀ,
and a row-major matrix read as column-major is its transpose, so no data moves (``column_major_arguments``).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy

from .. import backend
from ..backend import Array

OP_N, OP_T = 0, 1  # cublasOperation_t
WORKSPACE_BYTES = 4 * 1024 * 1024  # what cuBLAS may use per call (PyTorch gives 4 MiB or more)


def column_major_arguments(
    a_shape: tuple[int, int], a_strides: tuple[int, int], b_shape: tuple[int, int], b_strides: tuple[int, int]
) -> tuple[int, int, int, int, int, int, int, int]:
    """cublasSgemm's (transa, transb, m, n, k, lda, ldb, ldc) for the row-major, C-contiguous C = a @ b, with
    the operands' strides in elements (one of each pair must be 1: a matrix or a transposed view of one).
    cuBLAS's A is our b and its B our a: it computes Cᵀ = bᵀ aᵀ, column-major, which is C row-major."""
    (m, k), (k2, n) = a_shape, b_shape
    if k != k2:
        raise ValueError(f"cannot multiply a {a_shape} matrix by a {b_shape} one")

    def operand(rows_stride, columns_stride, rows, columns):
        # stored as column-major with leading dimension ld, the memory holds the operand's transpose (op N) or
        # the operand itself (op T); cuBLAS needs its transpose
        if columns_stride == 1 or columns == 1:
            return OP_N, max(rows_stride, columns, 1)
        if rows_stride == 1 or rows == 1:
            return OP_T, max(columns_stride, rows, 1)
        raise ValueError(f"cuBLAS needs a unit stride in one axis, got strides {(rows_stride, columns_stride)}")

    transa, lda = operand(*b_strides, k, n)  # cuBLAS's A is our b: bᵀ, n x k
    transb, ldb = operand(*a_strides, m, k)  # cuBLAS's B is our a: aᵀ, k x m
    return transa, transb, n, m, k, lda, ldb, max(n, 1)


def _library() -> Any:
    """The cuBLAS library CuPy uses. CuPy's handle is made first, so that the library is loaded; then dlopen by
    its soname finds that copy, or, where CuPy loaded it by a full path, the path from the process's maps."""
    backend.cupy.cuda.device.get_cublas_handle()
    for name in ("libcublas.so.12", "libcublas.so.13", "libcublas.so"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    with open("/proc/self/maps") as maps:
        paths = sorted({line.split()[-1] for line in maps if "libcublas.so" in line and "Lt" not in line})
    if paths:
        return ctypes.CDLL(paths[0])
    raise OSError("cannot find the cuBLAS library CuPy loaded (libcublas.so.12 or .13)")


class Cublas:
    """One cuBLAS handle and workspace on the current GPU; ``gemm(a, b, out)`` as ``fast.gemm.gemm`` is called."""

    def __init__(self) -> None:
        self.lib = lib = _library()
        self.handle = ctypes.c_void_p()
        self._check(lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate")
        # a workspace per stream, kept as long as the handle: two streams' products may run at once (the planned
        # step's weight gradients beside its chain), and must not share one (PyTorch keeps one per handle and
        # stream too). Made at a stream's first product, which comes before a capture (a warm-up runs first).
        self.workspaces: dict[int, Array] = {}
        self.alpha, self.beta = ctypes.c_float(1.0), ctypes.c_float(0.0)
        lib.cublasSgemm_v2.argtypes = (
            [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
            + [ctypes.c_int] * 3
            + [
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.c_int,
                ctypes.c_void_p,
                ctypes.c_int,
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.c_int,
            ]
        )

    @staticmethod
    def _check(status: int, call: str) -> None:
        if status != 0:
            raise RuntimeError(f"{call} failed with cuBLAS status {status}")

    def gemm(self, a: Array, b: Array, out: Array) -> Array:
        """out = a @ b for 2-D float32 CuPy arrays (plain or transposed views), on the current stream."""
        if a.dtype != numpy.float32 or b.dtype != numpy.float32 or out.dtype != numpy.float32:
            raise TypeError(f"Cublas.gemm multiplies float32 matrices, got {a.dtype} and {b.dtype}")
        if out.shape != (a.shape[0], b.shape[1]) or not out.flags.c_contiguous:
            raise ValueError(f"Cublas.gemm writes a C-contiguous {(a.shape[0], b.shape[1])} array, got {out.shape}")
        transa, transb, m, n, k, lda, ldb, ldc = column_major_arguments(
            a.shape, tuple(s // 4 for s in a.strides), b.shape, tuple(s // 4 for s in b.strides)
        )
        lib, handle, stream = self.lib, self.handle, backend.current_stream().ptr
        if stream not in self.workspaces:
            self.workspaces[stream] = backend.cupy.empty(WORKSPACE_BYTES, dtype=numpy.uint8)
        # the stream first, then the workspace (setting the stream forgets it), at every call: capture allows both
        self._check(lib.cublasSetStream_v2(handle, ctypes.c_void_p(stream)), "cublasSetStream")
        workspace, size = ctypes.c_void_p(backend.address(self.workspaces[stream])), ctypes.c_size_t(WORKSPACE_BYTES)
        self._check(lib.cublasSetWorkspace_v2(handle, workspace, size), "cublasSetWorkspace")
        status = lib.cublasSgemm_v2(
            handle,
            transa,
            transb,
            m,
            n,
            k,
            ctypes.byref(self.alpha),
            ctypes.c_void_p(backend.address(b)),
            lda,
            ctypes.c_void_p(backend.address(a)),
            ldb,
            ctypes.byref(self.beta),
            ctypes.c_void_p(backend.address(out)),
            ldc,
        )
        self._check(status, "cublasSgemm")
        return out
