"""Matrix products a CUDA graph can record: a float32 GEMM kernel of this project's own.

CuPy refuses every cuBLAS call while a stream is being captured (its wrappers set cuBLAS's stream first, and
that is what it forbids), so the planned step multiplies its matrices on a GPU with ``gemm`` below, in the
warm-up, in the capture and in the eager runs the graph is checked against alike (or with cuBLAS called
directly, ``cublas``, which capture allows). It is the 16 x 16 shared-memory tile, with K split among four
groups of a block's threads and the next slice read while the current one is multiplied: simple and correct,
far from cuBLAS's speed.
"""

from __future__ import annotations

import numpy

from .. import backend
from ..backend import Array, CudaFunction

GEMM_CUDA = r"""
// C[M, N] = A[M, K] @ B[K, N], float32; A and B any strides (in elements), so transposed views cost nothing.
// A block makes a 16 x 16 tile of C (C-contiguous) with 16 x 16 x GROUPS threads: group g (threadIdx.z) takes the
// 16-wide slices g, g + GROUPS, g + 2 GROUPS, ... of K through shared memory of its own, so that the block makes
// 1/GROUPS of the trips to memory that one group would (at the chapter's shapes the products are short of work
// per block, and each trip's latency is what they wait for); then group 0 adds the GROUPS partial sums in order
// (a fixed order: the same bits at every run).
#define MINIGRAD_GEMM_GROUPS 4
extern "C" __global__ void minigrad_sgemm(const float* A, const float* B,
                                          float* C, int M, int N, int K,
                                          long long sAm, long long sAk, long long sBk, long long sBn) {
    __shared__ float As[MINIGRAD_GEMM_GROUPS][16][17];
    __shared__ float Bs[MINIGRAD_GEMM_GROUPS][16][17];
    __shared__ float partial[MINIGRAD_GEMM_GROUPS][16][16];
    const int tx = threadIdx.x, ty = threadIdx.y, g = threadIdx.z;
    const int row = blockIdx.y * 16 + ty, col = blockIdx.x * 16 + tx;
    // each thread's element of the next slice is read from memory before the current slice's products (below),
    // so that the read's latency overlaps them
    auto a_at = [&](int k0) { return (row < M && k0 + tx < K) ? A[row * sAm + (k0 + tx) * sAk] : 0.0f; };
    auto b_at = [&](int k0) { return (k0 + ty < K && col < N) ? B[(k0 + ty) * sBk + col * sBn] : 0.0f; };
    float acc = 0.0f, a_next = a_at(16 * g), b_next = b_at(16 * g);
    for (int base = 0; base < K; base += 16 * MINIGRAD_GEMM_GROUPS) {  // the same trips for every group
        As[g][ty][tx] = a_next;
        Bs[g][ty][tx] = b_next;
        // issued before the barrier, which no ordinary read crosses, so that they are in flight while the block
        // waits there and multiplies (A and B are not __restrict__: read-only loads may cross a barrier, and
        // sm_90's scheduler put them after most of the products, leaving little of their latency hidden)
        const int next = base + 16 * MINIGRAD_GEMM_GROUPS + 16 * g;
        a_next = a_at(next);
        b_next = b_at(next);
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < 16; ++kk) acc = fmaf(As[g][ty][kk], Bs[g][kk][tx], acc);
        __syncthreads();
    }
    partial[g][ty][tx] = acc;
    __syncthreads();
    if (g == 0 && row < M && col < N) {
        float sum = partial[0][ty][tx];
        for (int h = 1; h < MINIGRAD_GEMM_GROUPS; ++h) sum += partial[h][ty][tx];
        C[(long long)row * N + col] = sum;
    }
}
"""
GROUPS = 4  # MINIGRAD_GEMM_GROUPS: a block's threads are 16 x 16 x GROUPS


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
        (16, 16, GROUPS),
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
