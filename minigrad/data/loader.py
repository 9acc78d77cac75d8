"""DataLoader: minibatches of (images, labels) as Tensors on a device.

The whole uint8 dataset is copied to the device once, when the loader is made; each batch
is gathered there and converted to float32 in [0, 1] there, so a CUDA epoch makes no
host-to-device copy per batch (one small copy of the shuffled order per epoch).
"""

from __future__ import annotations

import math
from typing import Any

import numpy

from .. import backend
from .._tensor import Tensor
from ..backend import Array, CudaFunction, CudaKernel
from ..random import generator

PIXEL_SCALE = numpy.float32(1.0 / 255.0)  # uint8 pixels times this: float32 in [0, 1]
GATHER_THREADS = 256  # threads per block of the batch cursor's gather on a GPU


def scaled_pixels(images: Array, out: Array | None = None) -> Array:
    """uint8 pixels as float32 in [0, 1]: images * (1/255) in float32 (into ``out`` when given).

    On a GPU one kernel does it. On the CPU a cast (exact: every uint8 is a float32) and then an in-place
    multiply give the same values about three times faster than NumPy's mixed-type loop (``dtype=``).
    """
    xp = backend.get_array_module(images)
    if xp is backend.cupy:
        return xp.multiply(images, PIXEL_SCALE, out=out, dtype=xp.float32)
    if out is None:
        out = numpy.empty(images.shape, dtype=numpy.float32)
    out[...] = images
    out *= PIXEL_SCALE
    return out


class ArrayDataset:
    """A dataset made of two arrays: ``images`` (N, ...) and integer ``labels`` (N,)."""

    classes: tuple[str, ...] | None = None  # the class names, when known (Fashion-MNIST's for the synthetic data)

    def __init__(self, images: numpy.ndarray, labels: numpy.ndarray) -> None:
        if len(images) != len(labels):
            raise ValueError(f"images and labels differ in length: {len(images)} and {len(labels)}")
        self.images, self.labels = numpy.asarray(images), numpy.asarray(labels)

    def __len__(self):
        return len(self.labels)


def checked_count(value: Any, name: str, allow_none: bool = False) -> int | None:
    """``value`` as a count >= 1: an int (a NumPy integer too), never a bool or a float (2.5 is refused, not
    rounded), as PyTorch's DataLoader does."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, (int, numpy.integer)):
        raise TypeError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


class DataLoader:
    """Iterate over a dataset in minibatches ``(x, y)``.

    x: the images of the batch, shape (B, 784) (or (B, 28, 28) with ``flatten=False``): uint8 pixels
    become float32 in [0, 1] (divided by 255); floating-point images are used as they are (never
    divided again); other dtypes are refused. y: int64 class indices, shape (B,).

    Args:
        dataset: anything with ``images`` (N, ...) uint8 and ``labels`` (N,) arrays.
        batch_size: examples per batch (the last one may be smaller unless ``drop_last``).
        shuffle: a fresh random order every epoch, reproducible from ``seed``.
        device: where the data lives and the batches are made.
        limit: use only the first ``limit`` examples (the chapter's DATASET_LIMIT).
        seed: seed of the shuffling; by default drawn from minigrad's CPU generator.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        device: str | None = "cpu",
        limit: int | None = None,
        seed: int | None = None,
        flatten: bool = True,
    ) -> None:
        batch_size = checked_count(batch_size, "batch_size")  # type: ignore[assignment]  # never None here
        limit = checked_count(limit, "limit", allow_none=True)
        images, labels = numpy.asarray(dataset.images), numpy.asarray(dataset.labels)
        if images.dtype != numpy.uint8 and images.dtype.kind != "f":
            raise TypeError(
                f"the dataset's images are {images.dtype}: give uint8 pixels (scaled to [0, 1] here) "
                f"or floating-point values (used as they are)"
            )
        if labels.dtype.kind not in "iu":
            raise TypeError(f"the dataset's labels are {labels.dtype}: give integer class indices")
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        if flatten:
            images = images.reshape(len(images), -1)
        self.device = backend.check_device(device)
        self.images = backend.to_device(numpy.ascontiguousarray(images), self.device)  # copied once
        self.labels = backend.to_device(labels.astype(numpy.int64), self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, bool(shuffle), bool(drop_last)
        if seed is None:
            seed = int(generator("cpu").integers(2**63))
        self.order_generator = numpy.random.default_rng(seed)

    def state_dict(self) -> dict[str, Any]:
        """The shuffling generator's state (JSON-able), so that a resumed run draws the same orders."""
        return {"order_generator": self.order_generator.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the shuffling generator saved by ``state_dict``, so a resumed run draws the same orders."""
        self.order_generator.bit_generator.state = state["order_generator"]

    def __len__(self):
        count = len(self.labels) / self.batch_size
        return math.floor(count) if self.drop_last else math.ceil(count)

    @property
    def num_examples(self) -> int:
        """Examples per epoch (fewer than the dataset's when ``drop_last`` cuts the tail)."""
        return len(self) * self.batch_size if self.drop_last else len(self.labels)

    def __iter__(self):
        order = self.epoch_order()
        for index in range(len(self)):
            yield self.batch(order, index)

    def epoch_order(self) -> Array | None:
        """The order of one epoch's examples on the loader's device (one upload), or None when not shuffling.

        Each call draws a fresh permutation from the shuffling generator, as each ``iter(loader)`` does.
        """
        if not self.shuffle:
            return None
        return backend.to_device(self.order_generator.permutation(len(self.labels)), self.device)

    def batch(self, order: Array | None, index: int, device: str | None = None) -> tuple[Tensor, Tensor]:
        """Batch number ``index`` of the epoch whose ``epoch_order()`` is ``order``: Tensors (x, y), on the
        loader's device or on ``device`` (the batch's rows copied there, then scaled there)."""
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        rows = rows if order is None else order[rows]
        images, labels = self.images[rows], self.labels[rows]
        if device is not None and backend.check_device(device) != self.device:
            images, labels = backend.to_device(images, device), backend.to_device(labels, device)
        elif isinstance(rows, slice) and images.dtype != numpy.uint8:
            images = images.copy()  # a batch of its own: changing it in place never changes the dataset
        return Tensor(scaled_pixels(images) if images.dtype == numpy.uint8 else images), Tensor(labels)


class BatchCursor:
    """A loader's batches gathered into buffers of the caller's, by the epoch's order and a position that live on
    the loader's device: a step that begins with ``gather`` takes the next batch by itself, so a GPU can replay
    it from a recorded graph with no host work per batch.

    ``start_epoch(order)`` (between steps) writes the epoch's order (``DataLoader.epoch_order()``; None for 0,
    1, ..., N - 1) and puts the position at 0. ``gather(x, y)`` writes the examples ``order[position : position
    + B]`` into x (B, features) and y (B,), exactly as ``DataLoader.batch`` makes them, and moves the position on
    by B. An epoch has ``full_batches`` gathers of ``batch_size``, then a smaller last one when the loader has it.
    """

    def __init__(self, loader: DataLoader) -> None:
        xp = backend.get_array_module(loader.images)
        self.on_gpu = xp is backend.cupy
        self.images = loader.images.reshape(len(loader.images), -1)  # (N, features), resident on the device
        self.labels = loader.labels
        self.batch_size = loader.batch_size
        self.full_batches = len(self.labels) // loader.batch_size
        self._scratch: dict[int, Array] = {}  # batch size -> the gathered images before scaling (CPU, uint8)
        with backend.on_device(loader.device):
            self.in_turn = xp.arange(len(self.labels), dtype=xp.int64)
            self.order = self.in_turn.copy()
            self.position = xp.zeros(1, dtype=xp.int64)  # 1-D: a kernel reads position[0]

    def start_epoch(self, order: Array | None = None) -> None:
        """Write the epoch's batch order (None: the examples in turn) and put the position back at 0."""
        self.order[...] = self.in_turn if order is None else order
        self.position.fill(0)

    def gather(self, x: Array, y: Array, advance: bool = True) -> None:
        """Fill ``x`` and ``y`` with the next batch in the order; then advance the position (unless ``advance`` is
        False: a planned step on a GPU moves it in its loss's kernel, one launch fewer)."""
        if self.on_gpu:
            rows, features = x.shape
            size = numpy.int64(rows * features)
            blocks = (int(size) + GATHER_THREADS - 1) // GATHER_THREADS
            args = (self.images, self.labels, self.order, self.position, size, numpy.int64(features), PIXEL_SCALE, x, y)
            self.gather_gpu((blocks,), (GATHER_THREADS,), args)
            if advance:
                self.advance(len(y))
            return
        start = int(self.position[0])
        rows = self.order[start : start + len(y)]
        if self.images.dtype == numpy.uint8:
            if len(y) not in self._scratch:
                self._scratch[len(y)] = numpy.empty((len(y), self.images.shape[1]), dtype=numpy.uint8)
            # mode="clip" skips the bounds check ("raise" is 2x slower): the rows are a permutation's
            scaled_pixels(numpy.take(self.images, rows, axis=0, out=self._scratch[len(y)], mode="clip"), out=x)
        else:
            numpy.take(self.images, rows, axis=0, out=x, mode="clip")  # floating-point images, used as they are
        numpy.take(self.labels, rows, out=y, mode="clip")
        if advance:
            self.advance(len(y))

    def advance(self, rows: int) -> None:
        """Move the position on by ``rows`` (on a GPU a kernel, so that a recorded graph moves it at replay)."""
        if self.on_gpu:
            self.advance_gpu(numpy.int64(rows), self.position, size=1)
        else:
            self.position += rows

    # The same on a GPU (uint8 images), one thread per pixel of the batch: x[r, f] = pixels[order[position + r],
    # f] * scale, the cast and multiply of scaled_pixels, and y[r] = labels[order[position + r]] by each row's
    # first thread. x is (rows, features) in C order.
    gather_gpu = CudaFunction(
        r"""
extern "C" __global__ void minigrad_gather_batch(const unsigned char* pixels, const long long* labels,
                                                 const long long* order, const long long* position,
                                                 long long size, long long features, float scale,
                                                 float* x, long long* y) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= size) return;
    const long long row = i / features, column = i - row * features;
    const long long example = order[position[0] + row];
    x[i] = (float)pixels[example * features + column] * scale;
    if (column == 0) y[row] = labels[example];
}
""",
        "minigrad_gather_batch",
    )
    advance_gpu = CudaKernel("int64 count", "raw int64 position", "position[0] += count", "minigrad_advance_position")
