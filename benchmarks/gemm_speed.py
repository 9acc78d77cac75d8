"""The matrix products of one training step of the chapter's MLP, by the three kernels there are: CuPy's matmul
(cuBLAS through CuPy, which refuses capture), the project's tiled kernel (``fast.gemm.gemm``, what a recorded
step uses by default) and cuBLAS called through ctypes (``fast.cublas``, which capture allows).

    python -m benchmarks.gemm_speed [--batch 256] [--repeats 200] [--json PATH]

For each product of the step in the 784-256-256-10 MLP (forward x @ W^T; backward gy @ W and gy^T @ x, with
the transposed operands as views, as the step passes them; the first layer needs no gy @ W), the median time
of each alone on the GPU over ``--repeats`` runs, timed with CUDA events. Alone, each time is mostly the
launch's; so also the time per replay of a CUDA graph holding the step's eight products, by the tile kernel
in each of its shapes (``fast.gemm.TILE_NAMES``) and by cuBLAS: how a recorded step
pays for them. The planned step's ``products`` setting, and the tile's default shape, are chosen by this: the
last lines say what to set.
Needs a GPU.
"""

import functools
import statistics
import sys

import numpy

from minigrad import backend, cli
from minigrad.chapter.model import BATCH_SIZE, NUM_HIDDENS, NUM_INPUTS, NUM_OUTPUTS
from minigrad.fast.cublas import Cublas
from minigrad.fast.gemm import TILE_NAMES, gemm
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


COPIES = 10  # a product's copies in the graph that times it inside a graph


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


def product_kind(name):
    """The planned step's kind of a product of ``step_products`` (one of fast.plan.PRODUCT_KINDS)."""
    if " forward " in name:
        return "forward"
    return "weight gradient" if name.endswith("gy^T @ x") else "input gradient"


def summary(rows, kinds, in_graph, tolerance=1e-3):
    """(The report's lines, the fastest tile shape's name or None, the planned step's products setting for each
    product's fastest shape or None). The lines: each product, then a row per kind: each product's
    microseconds in a graph of copies of it, the eight in one graph, the eight launched alone (mostly the
    launches' cost; CuPy's products can only be timed so), and its largest difference from CuPy's product. Then
    the verdicts, among the kinds whose products agree with CuPy's within ``tolerance``: the fastest tile shape,
    each product's fastest (as a products setting, fast.plan.tile_shapes's: the fastest shape for the rest, and
    each product faster in another), and tile against cuBLAS."""
    lines = [
        f"product {index}: {row['product']} ({'x'.join(map(str, row['shape']))}, m x k x n)"
        for index, row in enumerate(rows, start=1)
    ]
    width = max(len(kind) for kind in kinds)
    numbers = [f"{index:>6}" for index in range(1, len(rows) + 1)]
    lines.append(f"{'us in a graph':{width}} " + " ".join(numbers) + f" {'graph':>7} {'alone':>7} {'max |diff|':>10}")
    wrong = set()
    for kind in kinds:
        alone = sum(row[f"{kind}_us"] for row in rows)
        if kind == "cupy":
            lines.append(f"{kind:{width}} " + " ".join(f"{'-':>6}" for _ in rows) + f" {'-':>7} {alone:7.1f}")
            continue
        difference = max(row[f"{kind}_max_abs_difference"] for row in rows)
        if not difference <= tolerance:
            wrong.add(kind)
        flag = "  WRONG: left out of the verdicts" if kind in wrong else ""
        times = " ".join(f"{row[kind + '_graph_us']:6.1f}" for row in rows)
        lines.append(f"{kind:{width}} {times} {in_graph[kind]:7.1f} {alone:7.1f} {difference:10.2e}{flag}")
    tiles = {kind: us for kind, us in in_graph.items() if kind.startswith("tile") and kind not in wrong}
    if not tiles:
        lines.append(f"no tile shape agrees with CuPy's products within {tolerance}: fast.gemm is wrong on this GPU")
        return lines, None, None
    fastest = min(tiles, key=tiles.get)
    shape = ", ".join(map(str, TILE_NAMES[fastest]))
    default = f"the default {tiles['tile']:.1f} us" if "tile" in tiles else "the default is wrong"
    lines.append(
        f"in a graph, the fastest tile shape is {fastest!r} ({tiles[fastest]:.1f} us; {default}): "
        f"fast.gemm's GROUPS, SLICE, PER_THREAD, SIDE = {shape}"
    )
    best = [min(tiles, key=lambda kind: row[f"{kind}_graph_us"]) for row in rows]
    each = sum(row[f"{kind}_graph_us"] for row, kind in zip(rows, best))
    alike = sum(row[f"{fastest}_graph_us"] for row in rows)
    lines.append(
        f"each product by its fastest tile shape: {each:.1f} us against {alike:.1f} us all by {fastest!r} "
        f"(copies in a graph): " + ", ".join(f"{index} {kind!r}" for index, kind in enumerate(best, start=1))
    )
    apart = [
        f"{product_kind(row['product'])} {'x'.join(map(str, row['shape']))}={kind}"
        for row, kind in zip(rows, best)
        if row[f"{kind}_graph_us"] < row[f"{fastest}_graph_us"]
    ]
    by_product = ", ".join([fastest, *apart])
    lines.append(
        f"as the planned step's products (train_speed --products, fast.plan's DEFAULT_PRODUCTS): {by_product!r}"
    )
    if "cublas" in in_graph and "cublas" not in wrong:
        ratio = tiles[fastest] / in_graph["cublas"]
        faster = "tile" if ratio < 1 else "cublas"
        lines.append(
            f"in a graph, the fastest tile takes {ratio:.2f}x cuBLAS's time ({faster} faster; the products alone: "
            f"train_speed's verdict, on the whole step, sets fast.plan's DEFAULT_PRODUCTS)"
        )
    return lines, fastest, by_product


def run(args):
    cupy = backend.cupy
    rng = numpy.random.default_rng(0)
    try:
        blas, unavailable = Cublas(), None
    except Exception as error:  # noqa: BLE001 - no cuBLAS library: the tile kernel is timed alone
        blas, unavailable = None, f"{type(error).__name__}: {error}"
        print(f"cuBLAS through ctypes is unavailable ({unavailable}); timing the other two")
    kernels = {
        kind: functools.partial(gemm, groups=g, slice_=s, per_thread=r, side=d)
        for kind, (g, s, r, d) in TILE_NAMES.items()
    }
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
            # in a graph of COPIES of it: what the product costs inside a recorded step, launch aside
            row[f"{kind}_graph_us"] = graph_us(cupy, [call] * COPIES, max(10, args.repeats // 10)) / COPIES
            row[f"{kind}_max_abs_difference"] = float(abs(call() - a @ b).max())
        rows.append(row)
    kinds = ["cupy", *(kind for kind in kernels if kernels[kind] is not None)]
    alone = {kind: sum(row[f"{kind}_us"] for row in rows) for kind in kinds}
    in_graph = {kind: graph_us(cupy, calls[kind], args.repeats) for kind in kinds if kind != "cupy"}
    lines, fastest_tile, by_product = summary(rows, kinds, in_graph)
    print("\n".join(lines))
    report = {
        "device": backend.gpu_name(),
        "batch": args.batch,
        "repeats": args.repeats,
        "products": rows,
        "step_us_alone": alone,
        "step_us_in_graph": in_graph,
        "cublas_unavailable": unavailable,
        "fastest_tile": fastest_tile,  # the products name for the planned step (train_speed --products)
        "fastest_by_product": by_product,  # the same, each product in its fastest shape (fast.plan.tile_shapes)
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
