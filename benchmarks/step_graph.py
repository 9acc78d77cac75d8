"""The planned training step of the chapter's MLP recorded as a CUDA graph: what it holds, what one replay costs.

    python -m benchmarks.step_graph [--products NAME] [--passes 5] [--dot PATH] [--json PATH] [--data-dir DIR]

Records the step as ``Trainer`` does on a GPU (``fast.PlannedTraining`` on the training loader), then prints
the graph's nodes and its kernels by name (from CUDA's DOT dump of the graph, written to ``--dot``) and its
longest chain of nodes that wait for one another (the weight gradients run beside it), and times ``--passes``
passes over the epoch's full batches: the host's seconds to launch a pass's replays, and the GPU's (CUDA events
around the pass). A GPU time per replay near the host's says the step is still host-bound; far under it, the
GPU waits for launches. Needs a GPU and Fashion-MNIST.
"""

import collections
import functools
import re
import statistics
import sys
import time

import minigrad as mg
from minigrad import backend, cli
from minigrad.chapter.model import BATCH_SIZE, LR, concise_mlp
from minigrad.data import DataLoader, DatasetError, FashionMNIST, IDXFormatError
from minigrad.fast import PlannedTraining, PlanProblem
from minigrad.fast.plan import DEFAULT_PRODUCTS, PRODUCTS
from minigrad.files import save_json

KERNEL_TARGET = 15  # kernels per recorded training step (issue 25)


def graph_contents(dot):
    """(number of nodes, {kernel name: count}) read from a graph's DOT dump (CUDA's default dump labels each
    kernel node with its number and its kernel's name)."""
    nodes = set(re.findall(r'"(graph_\d+_node_\d+)"\s*\[', dot))
    # CuPy's and minigrad's kernels by name; C++ ones (CUB's, cuBLAS's) appear mangled, _Z..., or by a name
    # with gemm in it; cut to 60 characters
    pattern = r"\b((?:cupy|minigrad)_\w+|_Z\w+|\w*(?:gemm|xmma)\w*)"
    kernels = collections.Counter(name[:60] for name in re.findall(pattern, dot))
    return len(nodes), dict(kernels.most_common())


def longest_chain(dot):
    """The most nodes on one path of a graph's DOT dump (its edges say which node waits for which): the kernels
    a replay runs one after another at the least. The rest run beside them."""
    nodes = set(re.findall(r'"(graph_\d+_node_\d+)"\s*\[', dot))
    after = collections.defaultdict(list)
    for first, then in re.findall(r'"(graph_\d+_node_\d+)"\s*->\s*"(graph_\d+_node_\d+)"', dot):
        after[first].append(then)

    @functools.cache
    def chain_from(node):
        return 1 + max((chain_from(then) for then in after[node]), default=0)

    return max((chain_from(node) for node in nodes), default=0)


def run(args):
    cupy = backend.cupy
    mg.manual_seed(0)
    data = FashionMNIST(args.data_dir, train=True, verify=not args.skip_checksum, progress=False)
    loader = DataLoader(data, BATCH_SIZE, shuffle=True, device="cuda", seed=0)
    model = concise_mlp(device="cuda")
    training = PlannedTraining(model, mg.optim.SGD(model.parameters(), lr=LR), products=args.products)
    planned = training.start(loader)
    planned.end()
    recorded, full_batches = planned.recorded, planned.cursor.full_batches
    dot = recorded.graph.debug_dot_str()
    if args.dot:
        with open(args.dot, "w") as file:
            file.write(dot)
    nodes, kernels = graph_contents(dot)
    chain = longest_chain(dot)
    host, gpu = [], []
    for _ in range(args.passes + 1):  # the first pass warms up
        planned = training.start(loader)
        with planned.on_stream():
            cupy.cuda.get_current_stream().synchronize()
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            began = time.perf_counter()
            start.record()
            for _ in range(full_batches):
                recorded.replay()
            host.append(time.perf_counter() - began)
            end.record()
            end.synchronize()
            gpu.append(cupy.cuda.get_elapsed_time(start, end) / 1000)
        planned.end()
    host, gpu = host[1:], gpu[1:]
    per_replay = {
        "host_us": statistics.median(host) / full_batches * 1e6,
        "gpu_us": statistics.median(gpu) / full_batches * 1e6,
    }
    verdict = "met" if nodes <= KERNEL_TARGET else "NOT met"
    print(
        f"the recorded training step ({args.products} products): {nodes} nodes, {sum(kernels.values())} of them "
        f"these kernels (the target is at most {KERNEL_TARGET} nodes: {verdict}):"
    )
    for name, count in kernels.items():
        print(f"  {count:3d} x {name}")
    print(
        f"its longest chain of nodes, each waiting for the one before: {chain} of the {nodes} (the rest run beside it)"
    )
    print(
        f"{full_batches} replays per pass, median of {args.passes} passes: host "
        f"{per_replay['host_us']:.1f} us to launch one, GPU {per_replay['gpu_us']:.1f} us per replay "
        f"({statistics.median(gpu):.4f} s per pass of full batches)"
    )
    report = {
        "device": backend.gpu_name(),
        "products": args.products,
        "nodes": nodes,
        "longest_chain": chain,
        "kernels": kernels,
        "replays_per_pass": full_batches,
        "passes_host_s": host,
        "passes_gpu_s": gpu,
        "per_replay": per_replay,
    }
    if args.json:
        save_json(report, args.json)
    return report


def main(argv=None):
    parser = cli.OneLineParser(prog="python -m benchmarks.step_graph", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--products",
        type=cli.products_setting,
        default=DEFAULT_PRODUCTS,
        metavar="NAME",
        help=f"whose matrix products: {', '.join(map(repr, PRODUCTS))}, or a tile shape by product (as "
        f"benchmarks.gemm_speed prints it; default: {DEFAULT_PRODUCTS!r}, the planned step's)",
    )
    parser.add_argument("--passes", type=cli.positive_int, default=5)
    parser.add_argument("--dot", default=None, help="write the graph's DOT dump here")
    parser.add_argument("--json", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--skip-checksum", action="store_true", help="accept IDX files that are not the official ones")
    args = parser.parse_args(argv)
    if not backend.cuda_available():
        parser.error("this benchmark needs a GPU (CuPy finds none): it records a CUDA graph")
    cli.check_data_dir(parser, args.data_dir)
    for path in (args.dot, args.json):
        if path:
            cli.check_writable_file(parser, path)
    return cli.exit_status(lambda: run(args), (DatasetError, IDXFormatError, OSError, PlanProblem))


if __name__ == "__main__":
    sys.exit(main())
