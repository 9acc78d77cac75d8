"""Matrix products a CUDA graph can record: a float32 GEMM kernel of this project's own.

CuPy refuses every cuBLAS call while a stream is being captured (its wrappers set cuBLAS's stream first, and
that is what it forbids), so the planned step multiplies its matrices on a GPU with ``gemm`` below, in the
warm-up, in the capture and in the eager runs the graph is checked against alike (or with cuBLAS called
directly, ``cublas``, which capture allows). It is the 16 x 16 shared-memory tile, with K split among four
groups of a block's threads and the next slice read while the current one is multiplied: simple and correct,
far from cuBLAS's speed. Its other shapes (``TILE_SHAPES``) take wider slices, or have each thread make 2 x 2
or 4 x 4 elements of C (a 32 x 32 or 64 x 64 tile), for a GPU to time. The tile hands each element of C, once
summed, to a store: ``minigrad_sgemm``'s writes it; ``fast.plan``'s forward product also activates it there.
"""

from __future__ import annotations

from typing import Any

import numpy

from .. import backend
from ..backend import Array, CudaFunction

GEMM_CUDA = r"""
// C[M, N] = A[M, K] @ B[K, N], float32; A and B any strides (in elements), so transposed views cost nothing.
// A block makes a T x T tile of C (C-contiguous), T = 16 R, with 16 x 16 x GROUPS threads, each thread R x R of the
// tile's elements (rows R ty to R ty + R - 1, columns R tx to R tx + R - 1): each value it reads from shared memory
// then serves R products, not one. Group g (threadIdx.z) takes the SLICE-wide slices g, g + GROUPS,
// g + 2 GROUPS, ... of K through shared memory of its own, so that the block makes 1/GROUPS of the trips to memory
// that one group would (at the chapter's shapes the products are short of work per block, and each trip's latency
// is what they wait for), each thread reading R SLICE / 16 elements of A and of B a trip; then group 0 adds the
// other groups' partial sums to its own in order. Each element of C is the same sum, in the same order, whatever
// R is (a fixed order: the same bits at every run, and for every R).
// The tile's element (row, col) of C, once summed, goes to store(row, col, sum): minigrad_sgemm below writes it
// to C; a kernel that does more with it (fast.plan's minigrad_sgemm_activate) passes a store of its own.
template <class Store>
__device__ __forceinline__ void minigrad_sgemm_tile(const float* A, const float* B, int M, int N, int K,
                                                    long long sAm, long long sAk, long long sBk, long long sBn,
                                                    Store store) {
    constexpr int G = MINIGRAD_GEMM_GROUPS, S = MINIGRAD_GEMM_SLICE, R = MINIGRAD_GEMM_PER_THREAD;
    constexpr int L = S / 16, T = 16 * R, PAD = R == 1 ? 1 : R;  // rows padded: fewer stores on one bank, and R
    // elements side by side read at once (R floats' alignment)
    __shared__ __align__(16) float As[G][S][T + PAD];  // A's slice transposed: As[g][k][row], so that a thread's
    __shared__ __align__(16) float Bs[G][S][T + PAD];  // R rows, like its R columns of Bs, lie side by side
    __shared__ float partial[G > 1 ? G - 1 : 1][T][T];
    const int tx = threadIdx.x, ty = threadIdx.y, g = threadIdx.z;
    const int row0 = blockIdx.y * T, col0 = blockIdx.x * T;
    // each thread's elements of the next slice are read from memory before the current slice's products (below),
    // so that the reads' latency overlaps them
    auto a_at = [&](int i, int k) {
        const int row = row0 + ty + 16 * i;
        return (row < M && k < K) ? A[row * sAm + k * sAk] : 0.0f;
    };
    auto b_at = [&](int k, int j) {
        const int col = col0 + tx + 16 * j;
        return (k < K && col < N) ? B[k * sBk + col * sBn] : 0.0f;
    };
    float acc[R][R] = {}, a_next[R][L], b_next[L][R];
    #pragma unroll
    for (int u = 0; u < L; ++u) {
        #pragma unroll
        for (int i = 0; i < R; ++i) a_next[i][u] = a_at(i, S * g + tx + 16 * u);
        #pragma unroll
        for (int j = 0; j < R; ++j) b_next[u][j] = b_at(S * g + ty + 16 * u, j);
    }
    for (int base = 0; base < K; base += S * G) {  // the same trips for every group
        #pragma unroll
        for (int u = 0; u < L; ++u) {
            #pragma unroll
            for (int i = 0; i < R; ++i) As[g][tx + 16 * u][ty + 16 * i] = a_next[i][u];
            #pragma unroll
            for (int j = 0; j < R; ++j) Bs[g][ty + 16 * u][tx + 16 * j] = b_next[u][j];
        }
        // issued before the barrier, which no ordinary read crosses, so that they are in flight while the block
        // waits there and multiplies (A and B are not __restrict__: read-only loads may cross a barrier, and
        // sm_90's scheduler put them after most of the products, leaving little of their latency hidden)
        const int next = base + S * G + S * g;
        #pragma unroll
        for (int u = 0; u < L; ++u) {
            #pragma unroll
            for (int i = 0; i < R; ++i) a_next[i][u] = a_at(i, next + tx + 16 * u);
            #pragma unroll
            for (int j = 0; j < R; ++j) b_next[u][j] = b_at(next + ty + 16 * u, j);
        }
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < S; ++kk) {
            float a[R], b[R];
            #pragma unroll
            for (int i = 0; i < R; ++i) a[i] = As[g][kk][R * ty + i];
            #pragma unroll
            for (int j = 0; j < R; ++j) b[j] = Bs[g][kk][R * tx + j];
            #pragma unroll
            for (int i = 0; i < R; ++i)
                #pragma unroll
                for (int j = 0; j < R; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
    if (g > 0) {
        #pragma unroll
        for (int i = 0; i < R; ++i)
            #pragma unroll
            for (int j = 0; j < R; ++j) partial[g - 1][R * ty + i][R * tx + j] = acc[i][j];
    }
    __syncthreads();
    if (g == 0) {
        #pragma unroll
        for (int i = 0; i < R; ++i)
            #pragma unroll
            for (int j = 0; j < R; ++j) {
                const int row = row0 + R * ty + i, col = col0 + R * tx + j;
                float sum = acc[i][j];
                for (int h = 1; h < G; ++h) sum += partial[h - 1][R * ty + i][R * tx + j];
                if (row < M && col < N) store(row, col, sum);
            }
    }
}
"""
GEMM_ENTRY_CUDA = r"""
extern "C" __global__ void minigrad_sgemm(const float* A, const float* B, float* C, int M, int N, int K,
                                          long long sAm, long long sAk, long long sBk, long long sBn) {
    minigrad_sgemm_tile(A, B, M, N, K, sAm, sAk, sBk, sBn,
                        [&](int row, int col, float sum) { C[(long long)row * N + col] = sum; });
}
"""
# The tile's shape: a block's threads are 16 x 16 x GROUPS, each group takes SLICE of K a trip to memory, and each
# thread makes PER_THREAD x PER_THREAD elements of C. Fewer trips (a wider slice) wait less for memory; more
# elements a thread read shared memory less often per product (the default reads it twice per product, which
# bounds it near an eighth of FP32 peak) but make fewer blocks, and fewer of the GPU's multiprocessors busy, at
# the chapter's shapes; both need more registers and shared memory. benchmarks.gemm_speed times the shapes in
# TILE_SHAPES on a GPU, and the fastest should be the default (each element of C is the same bits for every
# PER_THREAD; GROUPS and SLICE change the order of its sum).
GROUPS, SLICE, PER_THREAD = 4, 16, 1
TILE_SHAPES = (
    (4, 16, 1),
    (4, 32, 1),
    (4, 64, 1),
    (2, 32, 1),
    (2, 64, 1),
    (4, 16, 2),
    (4, 32, 2),
    (2, 32, 2),
    (2, 16, 4),
)
SHARED_BYTES_LIMIT = 48 * 1024  # a block's static shared memory


def shape_name(groups: int, slice_: int, per_thread: int) -> str:
    """A tile shape's name, as the planned step's ``products`` and ``benchmarks.gemm_speed`` take it: "tile" for
    the default shape, else "tile 4x64" (groups x slice), and "tile 4x16 2x2" where a thread makes 2 x 2."""
    if (groups, slice_, per_thread) == (GROUPS, SLICE, PER_THREAD):
        return "tile"
    return f"tile {groups}x{slice_}" + (f" {per_thread}x{per_thread}" if per_thread > 1 else "")


TILE_NAMES = {shape_name(*shape): shape for shape in ((GROUPS, SLICE, PER_THREAD), *TILE_SHAPES)}


def shared_bytes(groups: int, slice_: int, per_thread: int) -> int:
    """The static shared memory of GEMM_CUDA's block for a tile shape: As and Bs, then the partial sums of all
    groups but the first."""
    side = 16 * per_thread
    padded = side + (1 if per_thread == 1 else per_thread)
    return 4 * (2 * groups * slice_ * padded + max(groups - 1, 1) * side * side)


def gemm_source(groups: int = GROUPS, slice_: int = SLICE, per_thread: int = PER_THREAD, entry: bool = True) -> str:
    """GEMM_CUDA for the tile shape (groups, slice_, per_thread), with its kernel ``minigrad_sgemm`` (or, without
    ``entry``, only the tile, for a kernel of another's); ValueError for a shape a GPU cannot launch."""
    shared = shared_bytes(groups, slice_, per_thread)
    if not 1 <= groups <= 4 or slice_ < 16 or slice_ % 16 or per_thread not in (1, 2, 4) or shared > SHARED_BYTES_LIMIT:
        raise ValueError(
            f"a tile of {groups} groups, slices of {slice_} and {per_thread} x {per_thread} elements a thread cannot "
            f"be launched: groups 1 to 4 (16 x 16 x groups <= 1024 threads), slices a multiple of 16, 1, 2 or 4 "
            f"elements a side a thread, at most {SHARED_BYTES_LIMIT} bytes of shared memory (this needs {shared})"
        )
    defines = {"GROUPS": groups, "SLICE": slice_, "PER_THREAD": per_thread}
    prefix = "".join(f"#define MINIGRAD_GEMM_{name} {value}\n" for name, value in defines.items())
    return prefix + GEMM_CUDA + (GEMM_ENTRY_CUDA if entry else "")


GEMM = CudaFunction(gemm_source(), "minigrad_sgemm")
_TILE_KERNELS = {(GROUPS, SLICE, PER_THREAD): GEMM}


def tile_kernel(groups: int = GROUPS, slice_: int = SLICE, per_thread: int = PER_THREAD) -> CudaFunction:
    """The GEMM kernel for a tile shape (``GEMM`` for the default), made once."""
    shape = (groups, slice_, per_thread)
    if shape not in _TILE_KERNELS:
        _TILE_KERNELS[shape] = CudaFunction(gemm_source(*shape), "minigrad_sgemm")
    return _TILE_KERNELS[shape]


def tile_grid(m: int, n: int, per_thread: int = PER_THREAD) -> tuple[int, int]:
    """The blocks that cover an (m, n) C: one per 16 per_thread x 16 per_thread tile."""
    side = 16 * per_thread
    return (n + side - 1) // side, (m + side - 1) // side


def gemm(
    a: Array,
    b: Array,
    out: Array | None = None,
    groups: int = GROUPS,
    slice_: int = SLICE,
    per_thread: int = PER_THREAD,
    kernel: CudaFunction | None = None,
    epilogue: tuple[Any, ...] = (),
) -> Array:
    """``a @ b`` for 2-D float32 CuPy arrays, without cuBLAS, into ``out`` (C-contiguous) when given; by the
    tile shape (groups, slice_, per_thread) (see ``GROUPS``). ``kernel``, a kernel built on this one's tile in
    that shape (``fast.plan.activated_product``), takes its place, given the ``epilogue`` arguments after the
    product's."""
    if a.dtype != numpy.float32 or b.dtype != numpy.float32:
        raise TypeError(f"gemm multiplies float32 matrices, got {a.dtype} and {b.dtype}")
    (m, k), n = a.shape, b.shape[1]
    if out is None:
        out = backend.cupy.empty((m, n), dtype=numpy.float32)
    elif out.shape != (m, n) or not out.flags.c_contiguous:
        raise ValueError(f"gemm writes a C-contiguous ({m}, {n}) array, got out of shape {out.shape}")
    (kernel or tile_kernel(groups, slice_, per_thread))(
        tile_grid(m, n, per_thread),
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
            *epilogue,
        ),
    )
    return out
