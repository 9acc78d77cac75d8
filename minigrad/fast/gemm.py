"""Matrix products a CUDA graph can record: a float32 GEMM kernel of this project's own.

CuPy refuses every cuBLAS call while a stream is being captured (its wrappers set cuBLAS's stream first, and
that is what it forbids), so the planned step multiplies its matrices on a GPU with ``gemm`` below, in the
warm-up, in the capture and in the eager runs the graph is checked against alike (or with cuBLAS called
directly, ``cublas``, which capture allows). It is the 16 x 16 shared-memory tile, with K split among four
groups of a block's threads, the next slice read while the current one is multiplied, and a warp's lanes
reading adjacent elements of each operand, C-ordered or a transposed view: simple and correct, far from cuBLAS's
speed. Its other shapes (``TILE_SHAPES``) take wider slices, or have each thread make 2 x 2
or 4 x 4 elements of C: of a 32 x 32 or 64 x 64 tile, or of the same 16 x 16 tile by fewer threads a side and
more groups. A GPU times them. The tile hands each element of C, once summed, to a store: ``minigrad_sgemm``'s
writes it; ``fast.plan``'s forward product also activates it there.
"""

from __future__ import annotations

from typing import Any

import numpy

from .. import backend
from ..backend import Array, CudaFunction

GEMM_CUDA = r"""
// C[M, N] = A[M, K] @ B[K, N], float32; A and B any strides (in elements), so transposed views cost nothing.
// A block makes a T x T tile of C (C-contiguous), T = SIDE R, with SIDE x SIDE x GROUPS threads, each thread R x R of
// the tile's elements (rows R ty to R ty + R - 1, columns R tx to R tx + R - 1): each value it reads from shared
// memory then serves R products, not one. Group g (threadIdx.z) takes the SLICE-wide slices g, g + GROUPS,
// g + 2 GROUPS, ... of K through shared memory of its own, so that the block makes 1/GROUPS of the trips to memory
// that one group would (at the chapter's shapes the products are short of work per block, and each trip's latency
// is what they wait for), each thread reading R SLICE / SIDE elements of A and of B a trip; then group 0 adds the
// other groups' partial sums to its own in order. Each element of C is the same sum, in the same order, whatever
// R and SIDE are (a fixed order: the same bits at every run, and for every R and SIDE); GROUPS and SLICE set it.
// The tile's element (row, col) of C, once summed, goes to store(row, col, sum): minigrad_sgemm below writes it
// to C; a kernel that does more with it (fast.plan's minigrad_sgemm_activate) passes a store of its own.
// With ROW_SUMS, the blocks of C's first column of tiles also sum A's rows, from the values of A they multiply,
// and hand row m's sum (over k of A[m, k]) to row_store(m, sum): each group its own slices in order, then the
// groups' sums in order, as C's elements are summed. (fast.plan's weight gradient dz^T a thus gives dz's column
// sums, the bias gradient, for no pass of its own.)
// A's element (row, k) is load_a(row, k), B's (k, col) load_b(k, col): operands (minigrad_strided below reads a
// matrix of any strides; fast.plan's first forward product gathers the batch's rows of images as it reads them),
// each element read once by each block that multiplies it. Which thread reads which element of a slice is chosen
// so that a warp's consecutive lanes (tx) read adjacent elements of memory: along an operand's rows where it is
// C-ordered (A's k, B's columns), down its columns where its down() says its first index is the adjacent one (a
// transposed view: W^T in the forward products, dz^T in the weight gradients). Lanes a row apart would each read
// a line of memory of their own, which takes a warp's read many trips through L1, not one or two. Which thread
// reads an element changes nothing of the sums (each goes through shared memory to the same place).
struct minigrad_no_row_store {
    __device__ void operator()(int, float) const {}
};
struct minigrad_strided {  // a matrix's elements where its strides (in elements) put them
    const float* p;
    long long s0, s1;
    __device__ float operator()(int i, int j) const { return p[i * s0 + j * s1]; }
    // consecutive first indices are adjacent in memory, and the second's are not (a transposed view)
    __device__ bool down() const { return s0 == 1 && s1 != 1; }
};
template <class LoadA, class LoadB, class Store, bool ROW_SUMS = false, class RowStore = minigrad_no_row_store>
__device__ __forceinline__ void minigrad_sgemm_tile_of(LoadA load_a, LoadB load_b, int M, int N, int K, Store store,
                                                       RowStore row_store = {}) {
    constexpr int G = MINIGRAD_GEMM_GROUPS, S = MINIGRAD_GEMM_SLICE, R = MINIGRAD_GEMM_PER_THREAD;
    constexpr int D = MINIGRAD_GEMM_SIDE;
    constexpr int L = S / D, T = D * R, PAD = R == 1 ? 1 : R;  // rows padded: fewer stores on one bank, and R
    // elements side by side read at once (R floats' alignment)
    __shared__ __align__(16) float As[G][S][T + PAD];  // A's slice transposed: As[g][k][row], so that a thread's
    __shared__ __align__(16) float Bs[G][S][T + PAD];  // R rows, like its R columns of Bs, lie side by side
    __shared__ float partial[G > 1 ? G - 1 : 1][T][T];
    const int tx = threadIdx.x, ty = threadIdx.y, g = threadIdx.z;
    const int row0 = blockIdx.y * T, col0 = blockIdx.x * T;
    // the thread reads the slice's rows a_row + D i of A (i < R) at its k's a_k + D u (u < L), and its k's b_k + D u
    // of B at the columns b_col + D j: tx runs along k, or down the operand where that is adjacent in memory
    const bool a_down = load_a.down(), b_down = load_b.down();
    const int a_row = a_down ? tx : ty, a_k = a_down ? ty : tx;
    const int b_k = b_down ? tx : ty, b_col = b_down ? ty : tx;
    // each thread's elements of the next slice are read from memory before the current slice's products (below),
    // so that the reads' latency overlaps them
    auto a_at = [&](int i, int k) {
        const int row = row0 + a_row + D * i;
        return (row < M && k < K) ? load_a(row, k) : 0.0f;
    };
    auto b_at = [&](int k, int j) {
        const int col = col0 + b_col + D * j;
        return (k < K && col < N) ? load_b(k, col) : 0.0f;
    };
    float acc[R][R] = {}, a_next[R][L], b_next[L][R], a_sums[R] = {};
    const bool sums_rows = ROW_SUMS && blockIdx.x == 0;
    #pragma unroll
    for (int u = 0; u < L; ++u) {
        #pragma unroll
        for (int i = 0; i < R; ++i) a_next[i][u] = a_at(i, S * g + a_k + D * u);
        #pragma unroll
        for (int j = 0; j < R; ++j) b_next[u][j] = b_at(S * g + b_k + D * u, j);
    }
    for (int base = 0; base < K; base += S * G) {  // the same trips for every group
        #pragma unroll
        for (int u = 0; u < L; ++u) {
            #pragma unroll
            for (int i = 0; i < R; ++i) As[g][a_k + D * u][a_row + D * i] = a_next[i][u];
            #pragma unroll
            for (int j = 0; j < R; ++j) Bs[g][b_k + D * u][b_col + D * j] = b_next[u][j];
        }
        // issued before the barrier, which no ordinary read crosses, so that they are in flight while the block
        // waits there and multiplies (A and B are not __restrict__: read-only loads may cross a barrier, and
        // sm_90's scheduler put them after most of the products, leaving little of their latency hidden)
        const int next = base + S * G + S * g;
        #pragma unroll
        for (int u = 0; u < L; ++u) {
            #pragma unroll
            for (int i = 0; i < R; ++i) a_next[i][u] = a_at(i, next + a_k + D * u);
            #pragma unroll
            for (int j = 0; j < R; ++j) b_next[u][j] = b_at(next + b_k + D * u, j);
        }
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < S; ++kk) {
            float a[R], b[R];
            #pragma unroll
            for (int i = 0; i < R; ++i) a[i] = As[g][kk][R * ty + i];
            #pragma unroll
            for (int j = 0; j < R; ++j) b[j] = Bs[g][kk][R * tx + j];
            if (sums_rows) {
                #pragma unroll
                for (int i = 0; i < R; ++i) a_sums[i] += a[i];
            }
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
    if constexpr (ROW_SUMS) {  // every thread of a row of the tile has its sums: those of column 0 hand them on
        __shared__ float row_partial[G > 1 ? G - 1 : 1][T];
        if (sums_rows && g > 0 && tx == 0) {
            #pragma unroll
            for (int i = 0; i < R; ++i) row_partial[g - 1][R * ty + i] = a_sums[i];
        }
        __syncthreads();
        if (sums_rows && g == 0 && tx == 0) {
            #pragma unroll
            for (int i = 0; i < R; ++i) {
                const int row = row0 + R * ty + i;
                float sum = a_sums[i];
                for (int h = 1; h < G; ++h) sum += row_partial[h - 1][R * ty + i];
                if (row < M) row_store(row, sum);
            }
        }
    }
}
template <class Store, bool ROW_SUMS = false, class RowStore = minigrad_no_row_store>
__device__ __forceinline__ void minigrad_sgemm_tile(const float* A, const float* B, int M, int N, int K,
                                                    long long sAm, long long sAk, long long sBk, long long sBn,
                                                    Store store, RowStore row_store = {}) {
    minigrad_sgemm_tile_of<minigrad_strided, minigrad_strided, Store, ROW_SUMS, RowStore>(
        minigrad_strided{A, sAm, sAk}, minigrad_strided{B, sBk, sBn}, M, N, K, store, row_store);
}
"""
GEMM_ENTRY_CUDA = r"""
extern "C" __global__ void minigrad_sgemm(const float* A, const float* B, float* C, int M, int N, int K,
                                          long long sAm, long long sAk, long long sBk, long long sBn) {
    minigrad_sgemm_tile(A, B, M, N, K, sAm, sAk, sBk, sBn,
                        [&](int row, int col, float sum) { C[(long long)row * N + col] = sum; });
}
"""
# The tile's shape: a block's threads are SIDE x SIDE x GROUPS, each group takes SLICE of K a trip to memory, and
# each thread makes PER_THREAD x PER_THREAD elements of C (of a tile of SIDE PER_THREAD a side). Fewer trips (a
# wider slice) wait less for memory; more elements a thread read shared memory less often per product (the
# default reads it twice per product, which bounds it near an eighth of FP32 peak), and on a tile as wide make
# fewer blocks, and fewer of the GPU's multiprocessors busy, at the chapter's shapes (a 256 x 256 C is 256 tiles
# of 16 x 16 for 132 multiprocessors, 64 of 32 x 32); fewer threads a side keep the tile 16 wide, and more groups
# keep the block's threads. All need more registers or shared memory. benchmarks.gemm_speed times the shapes in
# TILE_SHAPES on a GPU, and the fastest should be the default (each element of C is the same bits for every
# PER_THREAD and SIDE; GROUPS and SLICE change the order of its sum).
GROUPS, SLICE, PER_THREAD, SIDE = 4, 16, 1, 16
# fmt: off
TILE_SHAPES = (
    # 16 x 16 threads a group, each making one element of C: slices of 16 to 64 by 4 or 2 groups
    (4, 16, 1, 16), (4, 32, 1, 16), (4, 64, 1, 16), (2, 32, 1, 16), (2, 64, 1, 16),
    # 2 x 2 or 4 x 4 elements a thread, on tiles of 32 x 32 or 64 x 64
    (4, 16, 2, 16), (4, 32, 2, 16), (2, 32, 2, 16), (2, 16, 4, 16),
    # 2 x 2 or 4 x 4 elements a thread on tiles of 16 x 16, by 8 x 8 or 4 x 4 threads a group and more groups
    (4, 16, 2, 8), (8, 16, 2, 8), (8, 32, 2, 8), (8, 16, 4, 4),
)
# fmt: on
SIDES = (4, 8, 16)  # threads a side of a block's face: divisors of 16, so that a slice splits evenly among them
SHARED_BYTES_LIMIT = 48 * 1024  # a block's static shared memory
THREADS_LIMIT = 1024  # a block's threads


def shape_name(shape: tuple[int, int, int, int]) -> str:
    """A tile shape's name, as the planned step's ``products`` and ``benchmarks.gemm_speed`` take it: "tile" for
    the default shape, else "tile 4x64" (groups x slice), "tile 4x16 2x2" where a thread makes 2 x 2, and "tile
    8x16 2x2 side 8" where a block's threads are 8 x 8 x 8 (16 x 16 x groups unless named)."""
    groups, slice_, per_thread, side = shape
    if shape == (GROUPS, SLICE, PER_THREAD, SIDE):
        return "tile"
    name = f"tile {groups}x{slice_}" + (f" {per_thread}x{per_thread}" if per_thread > 1 else "")
    return name + (f" side {side}" if side != 16 else "")


TILE_NAMES = {shape_name(shape): shape for shape in ((GROUPS, SLICE, PER_THREAD, SIDE), *TILE_SHAPES)}


def shared_bytes(groups: int, slice_: int, per_thread: int, side: int = SIDE, row_sums: bool = False) -> int:
    """The static shared memory of GEMM_CUDA's block for a tile shape: As and Bs, then the partial sums of all
    groups but the first (of C's elements, and with ``row_sums`` of A's rows: the ROW_SUMS kernels')."""
    tile = side * per_thread
    padded = tile + (1 if per_thread == 1 else per_thread)
    partials = max(groups - 1, 1) * (tile * tile + (tile if row_sums else 0))
    return 4 * (2 * groups * slice_ * padded + partials)


def gemm_source(
    groups: int = GROUPS, slice_: int = SLICE, per_thread: int = PER_THREAD, side: int = SIDE, entry: bool = True
) -> str:
    """GEMM_CUDA for the tile shape (groups, slice_, per_thread, side), with its kernel ``minigrad_sgemm`` (or,
    without ``entry``, only the tile, for a kernel of another's); ValueError for a shape a GPU cannot launch."""
    shared = shared_bytes(groups, slice_, per_thread, side, row_sums=True)  # the most of the tile's kernels
    threads = side * side * groups
    if (
        side not in SIDES
        or not 1 <= groups
        or threads > THREADS_LIMIT
        or slice_ < 16
        or slice_ % 16
        or per_thread not in (1, 2, 4)
        or shared > SHARED_BYTES_LIMIT
    ):
        raise ValueError(
            f"a tile of {groups} groups of {side} x {side} threads, slices of {slice_} and {per_thread} x {per_thread} "
            f"elements a thread cannot be launched: {' or '.join(map(str, SIDES))} threads a side, at least one group "
            f"and at most {THREADS_LIMIT} threads a block (this has {threads}), slices a multiple of 16, 1, 2 or 4 "
            f"elements a side a thread, at most {SHARED_BYTES_LIMIT} bytes of shared memory (this needs {shared})"
        )
    defines = {"GROUPS": groups, "SLICE": slice_, "PER_THREAD": per_thread, "SIDE": side}
    prefix = "".join(f"#define MINIGRAD_GEMM_{name} {value}\n" for name, value in defines.items())
    return prefix + GEMM_CUDA + (GEMM_ENTRY_CUDA if entry else "")


GEMM = CudaFunction(gemm_source(), "minigrad_sgemm")
_TILE_KERNELS = {(GROUPS, SLICE, PER_THREAD, SIDE): GEMM}


def tile_kernel(
    groups: int = GROUPS, slice_: int = SLICE, per_thread: int = PER_THREAD, side: int = SIDE
) -> CudaFunction:
    """The GEMM kernel for a tile shape (``GEMM`` for the default), made once."""
    shape = (groups, slice_, per_thread, side)
    if shape not in _TILE_KERNELS:
        _TILE_KERNELS[shape] = CudaFunction(gemm_source(*shape), "minigrad_sgemm")
    return _TILE_KERNELS[shape]


def tile_grid(m: int, n: int, per_thread: int = PER_THREAD, side: int = SIDE) -> tuple[int, int]:
    """The blocks that cover an (m, n) C: one per side per_thread x side per_thread tile."""
    tile = side * per_thread
    return (n + tile - 1) // tile, (m + tile - 1) // tile


def gemm(
    a: Array,
    b: Array,
    out: Array | None = None,
    groups: int = GROUPS,
    slice_: int = SLICE,
    per_thread: int = PER_THREAD,
    side: int = SIDE,
    kernel: CudaFunction | None = None,
    epilogue: tuple[Any, ...] = (),
) -> Array:
    """``a @ b`` for 2-D float32 CuPy arrays, without cuBLAS, into ``out`` (C-contiguous) when given; by the
    tile shape (groups, slice_, per_thread, side) (see ``GROUPS``). ``kernel``, a kernel built on this one's tile in
    that shape (``fast.plan.fused_product``), takes its place, given the ``epilogue`` arguments after the
    product's."""
    if a.dtype != numpy.float32 or b.dtype != numpy.float32:
        raise TypeError(f"gemm multiplies float32 matrices, got {a.dtype} and {b.dtype}")
    (m, k), n = a.shape, b.shape[1]
    if out is None:
        out = backend.cupy.empty((m, n), dtype=numpy.float32)
    elif out.shape != (m, n) or not out.flags.c_contiguous:
        raise ValueError(f"gemm writes a C-contiguous ({m}, {n}) array, got out of shape {out.shape}")
    (kernel or tile_kernel(groups, slice_, per_thread, side))(
        tile_grid(m, n, per_thread, side),
        (side, side, groups),
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
