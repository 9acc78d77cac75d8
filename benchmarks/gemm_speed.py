"""The matrix products of one training step of the chapter's MLP, by the three kernels there are: CuPy's matmul
(cuBLAS through CuPy, which refuses capture), the project's tiled kernel (``fast.gemm.gemm``, what a recorded
step uses by default) and cuBLAS called through ctypes (``fast.cublas``, which capture allows).

    python -m benchmarks.gemm_speed [--batch 256] [--repeats 200] [--json PATH]

For each product of the step in the 784-256-256-10 MLP (forward x @ W^T; backward gy @ W and gy^T @ x, with
the transposed operands as views, as the step passes them; the first layer needs no gy @ W), the median time
of each alone on the GPU over ``--repeats`` runs, timed with CUDA events. Alone, each time is mostly the
launch's; so also the time per replay of a CUDA graph holding the step's eight products, by the tile kernel
in each of its shapes (``fast.gemm.TILE_SHAPES``: "tile" is the default, "tile 4x64" four groups of a block's
threads taking 64 of K a trip) and by cuBLAS: how a recorded step pays for them. The planned step's
``products`` setting, and the tile's default shape, are chosen by this.
Needs a GPU.
"""

import functools
import statistics
import sys

import numpy

from minigrad import backend, cli
from minigrad.chapter.model import BATCH_SIZE, NUM_HIDDENS, NUM_INPUTS, NUM_OUTPUTS
from minigrad.fast.cublas import Cublas
from minigrad.fast.gemm import GROUPS, SLICE, TILE_SHAPES, gemm
from minigrad.files import save_json


def step_products(batch):
    """(name, (m, k), (k, n) as the op makes them: transposed operands are views) for one training step."""
    sizes = (NUM_INPUTS, *NUM_HIDDENS, NUM_OUTPUTS)
    products = []
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        products.append((f"layer {layer} forward x @ W^T", (batch, fan_in), ("T", fan_out, fan_in)))
        if layer > 1:
            products.append((f"layer {layer} backward gy @ W", (batch, fan_out), (fan_out, fan_in)))
        products.append((f"layer {layer} backward gy^T @ x", ("T", batch, fan_out), (batch, fan_in)))
    return products


def operand(cupy, rng, spec):
    """A float32 operand; ("T", r, c) is the transpose (a view) of an (r, c) array."""
    if spec[0] == "T":
        return cupy.asarray(rng.standard_normal(spec[1:], dtype=numpy.float32)).T
    return cupy.asarray(rng.standard_normal(spec, dtype=numpy.float32))


def median_us(cupy, product, repeats):
    """Median microseconds of ``product()`` on the GPU, timed with CUDA events around each call."""
    for _ in range(3):
        product()  # compiles, warms up
    times = []
    for _ in range(repeats):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        product()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end) * 1000)
    return statistics.median(times)


def graph_us(cupy, products, repeats, replays=20):
    """Microseconds per replay of a CUDA graph holding the calls ``products``, captured on a stream of its own:
    the median over ``repeats`` timings (CUDA events) of ``replays`` replays."""
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        for product in products:  # compiles, warms up, on the capture stream
            product()
        stream.begin_capture()
        for product in products:
            product()
        graph = stream.end_capture()
        times = []
        for _ in range(repeats):
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            for _ in range(replays):
                graph.launch()
            end.record()
            end.synchronize()
            times.append(cupy.cuda.get_elapsed_time(start, end) * 1000 / replays)
    return statistics.median(times)


def run(args):
    cupy = backend.cupy
    rng = numpy.random.default_rng(0)
    try:
        blas, unavailable = Cublas(), None
    except Exception as error:  # noqa: BLE001 - no cuBLAS library: the tile kernel is timed alone
        blas, unavailable = None, f"{type(error).__name__}: {error}"
        print(f"cuBLAS through ctypes is unavailable ({unavailable}); timing the other two")
    kernels = {"tile": gemm}  # the default tile shape, then the others gemm can make
    for groups, slice_ in TILE_SHAPES:
        if (groups, slice_) != (GROUPS, SLICE):
            kernels[f"tile {groups}x{slice_}"] = functools.partial(gemm, groups=groups, slice_=slice_)
    kernels["cublas"] = blas.gemm if blas else None
    rows, calls = [], {kind: [] for kind in kernels}
    for name, a_spec, b_spec in step_products(args.batch):
        a, b = operand(cupy, rng, a_spec), operand(cupy, rng, b_spec)
        out = {kind: cupy.empty((a.shape[0], b.shape[1]), dtype=numpy.float32) for kind in kernels}
        row = {"product": name, "shape": [a.shape[0], a.shape[1], b.shape[1]]}
        row["cupy_us"] = median_us(cupy, lambda: a @ b, args.repeats)
        for kind, kernel in kernels.items():
            if kernel is None:
                continue
            call = functools.partial(kernel, a, b, out[kind])
            calls[kind].append(call)
            row[f"{kind}_us"] = median_us(cupy, call, args.repeats)
            row[f"{kind}_max_abs_difference"] = float(abs(call() - a @ b).max())
        rows.append(row)
    kinds = ["cupy", *(kind for kind in kernels if kernels[kind] is not None)]
    alone = {kind: sum(row[f"{kind}_us"] for row in rows) for kind in kinds}
    in_graph = {kind: graph_us(cupy, calls[kind], args.repeats) for kind in kinds if kind != "cupy"}
    print(f"{'product (m x k x n)':44} " + " ".join(f"{kind + ' us':>10}" for kind in kinds))
    for row in rows:
        m, k, n = row["shape"]
        print(f"{row['product'] + f' ({m}x{k}x{n})':44} " + " ".join(f"{row[kind + '_us']:10.1f}" for kind in kinds))
    print(f"{'one step, each product alone':44} " + " ".join(f"{alone[kind]:10.1f}" for kind in kinds))
    print(
        f"{'one step, the eight in a CUDA graph':44} {'-':>10} "
        + " ".join(f"{in_graph[kind]:10.1f}" for kind in kinds if kind != "cupy")
    )
    tiles = {kind: us for kind, us in in_graph.items() if kind.startswith("tile")}
    fastest = min(tiles, key=tiles.get)
    print(
        f"in a graph, the fastest tile shape is {fastest} ({tiles[fastest]:.1f} us; the default, "
        f"{GROUPS}x{SLICE} groups x slice, {tiles['tile']:.1f} us)"
    )
    if "cublas" in in_graph:
        print(f"in a graph, the fastest tile takes {tiles[fastest] / in_graph['cublas']:.2f}x cuBLAS's time")
    report = {
        "device": backend.gpu_name(),
        "batch": args.batch,
        "repeats": args.repeats,
        "products": rows,
        "step_us_alone": alone,
        "step_us_in_graph": in_graph,
        "cublas_unavailable": unavailable,
    }
    if args.json:
        save_json(report, args.json)
    return report


def main(argv=None):
    parser = cli.OneLineParser(prog="python -m benchmarks.gemm_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=cli.positive_int, default=BATCH_SIZE)
    parser.add_argument("--repeats", type=cli.positive_int, default=200)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if not backend.cuda_available():
        parser.error("this benchmark needs a GPU (CuPy finds none): it compares GPU matrix products")
    if args.json:
        cli.check_writable_file(parser, args.json)
    return cli.exit_status(lambda: run(args), (OSError,))


if __name__ == "__main__":
    sys.exit(main())
