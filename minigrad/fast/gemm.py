"""Matrix products a CUDA graph can record: a float32 GEMM kernel of this project's own.

CuPy refuses every cuBLAS call while a stream is being captured (its wrappers set cuBLAS's stream first, and
that is what it forbids), so the planned step multiplies its matrices on a GPU with ``gemm`` below, in the
warm-up, in the capture and in the eager runs the graph is checked against alike. It is the plain 16 x 16
shared-memory tile: simple and correct, far from cuBLAS's speed.
"""

from __future__ import annotations

import numpy

from .. import backend
from ..backend import Array, CudaFunction

GEMM_CUDA = r"""
// C[M, N] = A[M, K] @ B[K, N], float32; A and B any strides (in elements), so transposed views cost nothing.
// 16 x 16 tiles through shared memory; one thread per element of C, which is C-contiguous.
extern "C" __global__ void minigrad_sgemm(const float* __restrict__ A, const float* __restrict__ B,
                                          float* __restrict__ C, int M, int N, int K,
                                          long long sAm, long long sAk, long long sBk, long long sBn) {
    __shared__ float As[16][17];
    __shared__ float Bs[16][17];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int row = blockIdx.y * 16 + ty, col = blockIdx.x * 16 + tx;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += 16) {
        const int ka = k0 + tx, kb = k0 + ty;
        As[ty][tx] = (row < M && ka < K) ? A[row * sAm + ka * sAk] : 0.0f;
        Bs[ty][tx] = (kb < K && col < N) ? B[kb * sBk + col * sBn] : 0.0f;
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < 16; ++kk) acc = fmaf(As[ty][kk], Bs[kk][tx], acc);
        __syncthreads();
    }
    if (row < M && col < N) C[(long long)row * N + col] = acc;
}
"""


GEMM = CudaFunction(GEMM_CUDA, "minigrad_sgemm")


def gemm(a: Array, b: Array, out: Array | None = None) -> Array:
    """``a @ b`` for 2-D float32 CuPy arrays, without cuBLAS, into ``out`` (C-contiguous) when given."""
    if a.dtype != numpy.float32 or b.dtype != numpy.float32:
        raise TypeError(f"gemm multiplies float32 matrices, got {a.dtype} and {b.dtype}")
    (m, k), n = a.shape, b.shape[1]
    if out is None:
        out = backend.cupy.empty((m, n), dtype=numpy.float32)
    elif out.shape != (m, n) or not out.flags.c_contiguous:
        raise ValueError(f"gemm writes a C-contiguous ({m}, {n}) array, got out of shape {out.shape}")
    GEMM(
        ((n + 15) // 16, (m + 15) // 16),
        (16, 16),
        (
            a,
            b,
            out,
            numpy.int32(m),
            numpy.int32(n),
            numpy.int32(k),
            numpy.int64(a.strides[0] // 4),
            numpy.int64(a.strides[1] // 4),
            numpy.int64(b.strides[0] // 4),
            numpy.int64(b.strides[1] // 4),
        ),
    )
    return out
