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
// SLICE-wide slices g, g + GROUPS, g + 2 GROUPS, ... of K through shared memory of its own, so that the block makes
// 1/GROUPS of the trips to memory that one group would (at the chapter's shapes the products are short of work
// per block, and each trip's latency is what they wait for), each thread reading SLICE / 16 elements of A and of
// B a trip; then group 0 adds the GROUPS partial sums in order (a fixed order: the same bits at every run).
extern "C" __global__ void minigrad_sgemm(const float* A, const float* B, float* C, int M, int N, int K,
                                          long long sAm, long long sAk, long long sBk, long long sBn) {
    constexpr int G = MINIGRAD_GEMM_GROUPS, S = MINIGRAD_GEMM_SLICE, L = S / 16;
    __shared__ float As[G][16][S + 1];
    __shared__ float Bs[G][S][17];
    __shared__ float partial[G][16][16];
    const int tx = threadIdx.x, ty = threadIdx.y, g = threadIdx.z;
    const int row = blockIdx.y * 16 + ty, col = blockIdx.x * 16 + tx;
    // each thread's elements of the next slice are read from memory before the current slice's products (below),
    // so that the reads' latency overlaps them
    auto a_at = [&](int k) { return (row < M && k < K) ? A[row * sAm + k * sAk] : 0.0f; };
    auto b_at = [&](int k) { return (k < K && col < N) ? B[k * sBk + col * sBn] : 0.0f; };
    float acc = 0.0f, a_next[L], b_next[L];
    #pragma unroll
    for (int u = 0; u < L; ++u) {
        a_next[u] = a_at(S * g + tx + 16 * u);
        b_next[u] = b_at(S * g + ty + 16 * u);
    }
    for (int base = 0; base < K; base += S * G) {  // the same trips for every group
        #pragma unroll
        for (int u = 0; u < L; ++u) {
            As[g][ty][tx + 16 * u] = a_next[u];
            Bs[g][ty + 16 * u][tx] = b_next[u];
        }
        // issued before the barrier, which no ordinary read crosses, so that they are in flight while the block
        // waits there and multiplies (A and B are not __restrict__: read-only loads may cross a barrier, and
        // sm_90's scheduler put them after most of the products, leaving little of their latency hidden)
        const int next = base + S * G + S * g;
        #pragma unroll
        for (int u = 0; u < L; ++u) {
            a_next[u] = a_at(next + tx + 16 * u);
            b_next[u] = b_at(next + ty + 16 * u);
        }
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < S; ++kk) acc = fmaf(As[g][ty][kk], Bs[g][kk][tx], acc);
        __syncthreads();
    }
    partial[g][ty][tx] = acc;
    __syncthreads();
    if (g == 0 && row < M && col < N) {
        float sum = partial[0][ty][tx];
        for (int h = 1; h < G; ++h) sum += partial[h][ty][tx];
        C[(long long)row * N + col] = sum;
    }
}
"""
# The tile's shape: a block's threads are 16 x 16 x GROUPS, and each group takes SLICE of K a trip to memory.
# Fewer trips (a wider slice) wait less for memory and need more registers and shared memory;
# benchmarks.gemm_speed times the shapes in TILE_SHAPES on a GPU, and the fastest should be the default.
GROUPS, SLICE = 4, 16
TILE_SHAPES = ((4, 16), (4, 32), (4, 64), (2, 32), (2, 64))
SHARED_BYTES_LIMIT = 48 * 1024  # a block's static shared memory


def gemm_source(groups: int = GROUPS, slice_: int = SLICE) -> str:
    """GEMM_CUDA for the tile shape (groups, slice_); ValueError for one a GPU cannot launch."""
    shared = 4 * (groups * 16 * (slice_ + 1) + groups * slice_ * 17 + groups * 16 * 16)
    if not 1 <= groups <= 4 or slice_ < 16 or slice_ % 16 or shared > SHARED_BYTES_LIMIT:
        raise ValueError(
            f"a tile of {groups} groups and slices of {slice_} cannot be launched: groups 1 to 4 (16 x 16 x "
            f"groups <= 1024 threads), slices a multiple of 16, at most {SHARED_BYTES_LIMIT} bytes of shared "
            f"memory (this needs {shared})"
        )
    return f"#define MINIGRAD_GEMM_GROUPS {groups}\n#define MINIGRAD_GEMM_SLICE {slice_}\n" + GEMM_CUDA


GEMM = CudaFunction(gemm_source(), "minigrad_sgemm")
_TILE_KERNELS = {(GROUPS, SLICE): GEMM}


def tile_kernel(groups: int = GROUPS, slice_: int = SLICE) -> CudaFunction:
    """The GEMM kernel for a tile shape (``GEMM`` for the default), made once."""
    if (groups, slice_) not in _TILE_KERNELS:
        _TILE_KERNELS[groups, slice_] = CudaFunction(gemm_source(groups, slice_), "minigrad_sgemm")
    return _TILE_KERNELS[groups, slice_]


def gemm(a: Array, b: Array, out: Array | None = None, groups: int = GROUPS, slice_: int = SLICE) -> Array:
    """``a @ b`` for 2-D float32 CuPy arrays, without cuBLAS, into ``out`` (C-contiguous) when given; by the
    tile shape (groups, slice_) (see ``GROUPS``)."""
    if a.dtype != numpy.float32 or b.dtype != numpy.float32:
        raise TypeError(f"gemm multiplies float32 matrices, got {a.dtype} and {b.dtype}")
    (m, k), n = a.shape, b.shape[1]
    if out is None:
        out = backend.cupy.empty((m, n), dtype=numpy.float32)
    elif out.shape != (m, n) or not out.flags.c_contiguous:
        raise ValueError(f"gemm writes a C-contiguous ({m}, {n}) array, got out of shape {out.shape}")
    tile_kernel(groups, slice_)(
        ((n + 15) // 16, (m + 15) // 16),
        (16, 16, groups),
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
