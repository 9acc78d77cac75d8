"""The matrix products of one training step of the chapter's MLP: cuBLAS (CuPy's matmul) against the kernel a
recorded step must use (``fast.gemm.gemm``: CuPy refuses cuBLAS while a stream is being captured).

    python -m benchmarks.gemm_speed [--batch 256] [--repeats 200] [--json PATH]

For each product of ``ops.Linear`` in the 784-256-256-10 MLP (forward x @ W^T; backward gy @ W and gy^T @ x,
with the transposed operands as views, as the op passes them; the first layer needs no gy @ W), the median
time of each on the GPU over ``--repeats`` runs, timed with CUDA events, and the sum over a step. This is the
measurement the choice between the two waits on (cuBLAS through a binding of one's own is the alternative).
Needs a GPU.
"""

import statistics
import sys

import numpy

from minigrad import backend, cli
from minigrad.chapter.model import BATCH_SIZE, NUM_HIDDENS, NUM_INPUTS, NUM_OUTPUTS
from minigrad.fast.gemm import gemm
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


def run(args):
    cupy = backend.cupy
    rng = numpy.random.default_rng(0)
    rows = []
    for name, a_spec, b_spec in step_products(args.batch):
        a, b = operand(cupy, rng, a_spec), operand(cupy, rng, b_spec)
        difference = float(abs(gemm(a, b) - a @ b).max())
        rows.append(
            {
                "product": name,
                "shape": [a.shape[0], a.shape[1], b.shape[1]],
                "cublas_us": median_us(cupy, lambda: a @ b, args.repeats),
                "capturable_us": median_us(cupy, lambda: gemm(a, b), args.repeats),
                "max_abs_difference": difference,
            }
        )
    totals = {key: sum(row[key] for row in rows) for key in ("cublas_us", "capturable_us")}
    print(f"{'product (m x k x n)':44} {'cuBLAS us':>10} {'capturable us':>14} {'ratio':>6}")
    for row in rows:
        m, k, n = row["shape"]
        print(
            f"{row['product'] + f' ({m}x{k}x{n})':44} {row['cublas_us']:10.1f} {row['capturable_us']:14.1f} "
            f"{row['capturable_us'] / row['cublas_us']:6.2f}"
        )
    print(
        f"{'one step':44} {totals['cublas_us']:10.1f} {totals['capturable_us']:14.1f} "
        f"{totals['capturable_us'] / totals['cublas_us']:6.2f}"
    )
    report = {
        "device": backend.gpu_name(),
        "batch": args.batch,
        "repeats": args.repeats,
        "products": rows,
        "step_us": totals,
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
        parser.error("this benchmark needs a GPU (CuPy finds none): it compares two GPU matrix products")
    if args.json:
        cli.check_writable_file(parser, args.json)
    return cli.exit_status(lambda: run(args), (OSError,))


if __name__ == "__main__":
    sys.exit(main())
