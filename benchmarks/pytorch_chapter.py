"""The chapter's run as a plain PyTorch script: what a user of PyTorch would write and wait for.

    python benchmarks/pytorch_chapter.py --data-dir DIR [--device cpu|cuda] [--epochs 10] [--marks PATH]

The chapter's MLP (784-256-256-10, ReLU, dropout 0.2 and 0.5, weights N(0, 0.01), SGD lr 0.5, batch 256) on
Fashion-MNIST read straight from its four IDX .gz files with NumPy, held on the device; each epoch shuffles,
trains and evaluates on the test set, and prints one line. Run as a script (``python -m`` would import the
benchmarks package, which imports minigrad), it imports nothing of minigrad, so that its start is PyTorch's
alone, and no torchvision. ``--marks`` writes, as JSON, the wall clock (``time.time()``) at its first line and
at the end of each phase: imports, data, training and evaluation (summed over the epochs), for
``benchmarks.run_time``.
"""

import time

STARTED = time.time()  # noqa: E402 - before the imports, which are a phase of their own

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import numpy  # noqa: E402
import torch  # noqa: E402

# The chapter's settings (minigrad.chapter.model has the same; tests/test_benchmarks.py checks they agree)
NUM_INPUTS, NUM_HIDDENS, NUM_OUTPUTS = 784, (256, 256), 10
DROPOUT1, DROPOUT2, LR, BATCH_SIZE = 0.2, 0.5, 0.5, 256
FILES = {
    True: ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    False: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def torch_mlp(device):
    """The chapter's model in PyTorch, seeded, on ``device``, and its SGD."""
    torch.manual_seed(0)
    layers = [
        torch.nn.Linear(NUM_INPUTS, NUM_HIDDENS[0]),
        torch.nn.ReLU(),
        torch.nn.Dropout(DROPOUT1),
        torch.nn.Linear(*NUM_HIDDENS),
        torch.nn.ReLU(),
        torch.nn.Dropout(DROPOUT2),
        torch.nn.Linear(NUM_HIDDENS[1], NUM_OUTPUTS),
    ]
    for layer in layers:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=0.01)
            torch.nn.init.zeros_(layer.bias)
    model = torch.nn.Sequential(*layers).to(device)
    return model, torch.optim.SGD(model.parameters(), lr=LR)


def read_idx(folder, train, device):
    """(images as uint8 (N, 784), labels as int64 (N,)) on ``device``: the IDX headers are 16 and 8 bytes."""
    images, labels = (gzip.open(os.path.join(folder, name)).read() for name in FILES[train])
    pixels = numpy.frombuffer(images, numpy.uint8, offset=16).reshape(-1, NUM_INPUTS)
    classes = numpy.frombuffer(labels, numpy.uint8, offset=8).astype(numpy.int64)
    return torch.from_numpy(pixels.copy()).to(device), torch.from_numpy(classes).to(device)


def run(args):
    marks = {"script": STARTED, "imports": time.time()}
    device = torch.device(args.device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    train_x, train_y = read_idx(args.data_dir, True, device)
    test_x, test_y = read_idx(args.data_dir, False, device)
    model, optimizer = torch_mlp(device)
    synchronize()
    marks["data"] = time.time()
    seconds = {"training": 0.0, "evaluation": 0.0}
    for epoch in range(1, args.epochs + 1):
        began = time.time()
        model.train()
        order = torch.randperm(len(train_y), device=device)
        for start in range(0, len(train_y), BATCH_SIZE):
            rows = order[start : start + BATCH_SIZE]
            loss = torch.nn.functional.cross_entropy(model(train_x[rows].float() / 255), train_y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize()
        evaluated = time.time()
        model.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(test_y), BATCH_SIZE):
                logits = model(test_x[start : start + BATCH_SIZE].float() / 255)
                correct += int((logits.argmax(1) == test_y[start : start + BATCH_SIZE]).sum())
        seconds["training"] += evaluated - began
        seconds["evaluation"] += time.time() - evaluated
        print(f"epoch {epoch:3d}  test acc {correct / len(test_y):.4f}  {evaluated - began:.2f}s", flush=True)
    marks["training"] = marks["data"] + seconds["training"]
    marks["evaluation"] = marks["training"] + seconds["evaluation"]
    marks["finished"] = time.time()
    if args.marks:
        with open(args.marks, "w") as file:
            json.dump(marks, file)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="benchmarks/pytorch_chapter.py", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="the folder with Fashion-MNIST's four .gz files")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--marks", default=None, help="write the phases' end times here (JSON)")
    args = parser.parse_args(argv)
    missing = [name for names in FILES.values() for name in names if not os.path.exists(f"{args.data_dir}/{name}")]
    if missing:
        parser.error(f"{args.data_dir} lacks {', '.join(missing)}")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
