"""What drawing dropout's bits from Philox (the same masks on every device) costs against PCG64 (the old generator).

    python -m benchmarks.dropout_bits [--rounds 20] [--limit N] [--data-dir DIR] [--json PATH]

Two copies of the chapter's concise model train in one process, epoch by epoch in alternating order, one
drawing its dropout bits from ``random.PhiloxStream``, the other from NumPy's PCG64 (the same rule on the
words: U > p on 32 bits). Reported: the median epoch of each and the median over rounds of the ratio of
the two epochs of a round; and the same for one 256x256 mask alone.
"""

import statistics
import sys
import time
import timeit

import numpy

import minigrad as mg
from minigrad import cli, ops
from minigrad.chapter.model import BATCH_SIZE, LR, concise_mlp
from minigrad.data import DataLoader, DatasetError, FashionMNIST, IDXFormatError
from minigrad.files import save_json
from minigrad.random import PhiloxStream
from minigrad.train import Trainer


class PCG64Words:
    """The words ``PhiloxStream.words`` gives, from PCG64 instead: what minigrad drew before the Philox stream."""

    def __init__(self, seed):
        self.bits = numpy.random.PCG64(seed)

    def words(self, n):
        return self.bits.random_raw((n + 1) // 2).view(numpy.uint32)[:n]


def run(args):
    mg.manual_seed(0)
    data = FashionMNIST(args.data_dir, train=True, verify=not args.skip_checksum, progress=False)
    loader = DataLoader(data, BATCH_SIZE, shuffle=True, limit=args.limit, seed=0)
    streams = {"philox": PhiloxStream(0), "pcg64": PCG64Words(0)}
    trainers = {}
    for name in streams:
        model = concise_mlp()
        trainers[name] = Trainer(model, mg.optim.SGD(model.parameters(), lr=LR), progress=False)
    original = ops.dropout_stream
    epochs = {name: [] for name in streams}
    try:
        for turn in range(args.rounds):
            for name in sorted(streams, reverse=bool(turn % 2)):
                ops.dropout_stream = lambda device, stream=streams[name]: stream
                time.sleep(0.25)  # let idle BLAS threads go to sleep, as train_speed does
                start = time.perf_counter()
                trainers[name].train_epoch(loader, turn + 1)
                trainers[name].monitor.end_epoch()
                epochs[name].append(time.perf_counter() - start)
    finally:
        ops.dropout_stream = original
    mask_us = {
        name: min(timeit.repeat(lambda stream=stream: ops.keep_mask(stream, (256, 256), 0.5), number=200, repeat=5))
        / 200
        * 1e6
        for name, stream in streams.items()
    }
    report = {
        "rounds": args.rounds,
        "examples_per_epoch": loader.num_examples,
        "median_epoch_s": {name: statistics.median(times) for name, times in epochs.items()},
        "paired_ratio": statistics.median(a / b for a, b in zip(epochs["philox"], epochs["pcg64"])),
        "epochs_s": epochs,
        "mask_256x256_us": mask_us,
    }
    print(
        f"epoch: philox {report['median_epoch_s']['philox']:.3f} s, pcg64 {report['median_epoch_s']['pcg64']:.3f} s"
        f" (medians of {args.rounds}); philox / pcg64, paired median: {report['paired_ratio']:.3f}"
    )
    print(f"one 256x256 keep mask: philox {mask_us['philox']:.0f} us, pcg64 {mask_us['pcg64']:.0f} us")
    if args.json:
        save_json(report, args.json)
    return report


def main(argv=None):
    parser = cli.OneLineParser(prog="python -m benchmarks.dropout_bits", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=cli.positive_int, default=20, help="epochs per generator")
    parser.add_argument("--limit", type=cli.positive_int, default=None, help="train on the first N examples")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--skip-checksum", action="store_true", help="accept IDX files that are not the official ones")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    cli.check_data_dir(parser, args.data_dir)
    if args.json:
        cli.check_writable_file(parser, args.json)
    return cli.exit_status(lambda: run(args), (DatasetError, IDXFormatError, OSError))


if __name__ == "__main__":
    sys.exit(main())
