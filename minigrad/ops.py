"""Every differentiable op, one Function each, with forward and backward side by side.

Conventions: ``forward`` receives raw arrays and saves what ``backward`` needs on ``self``;
``self.xp`` is the module (``numpy`` or ``cupy``) that holds them. ``backward(gy)`` receives
gy = dL/dy and returns one gradient per input, dL/dx = gy * dy/dx (the chain rule), or None for
an input that needs none (``self.needs_input_grad``). A gradient may have the broadcast shape of
the output; the engine sums it down to the input's shape (``autograd.unbroadcast``), so no op
repeats that logic. Arguments are checked at the public entry points (``nn.functional``).

The chapter's ops (ReLU, Dropout, SoftmaxCrossEntropy) keep their NumPy code and, beside it, the
CUDA kernel that replaces it on a GPU (``backend.CudaKernel``): one pass over memory instead of
one per NumPy operation. ``tests/test_op_kernels.py`` checks that the two agree.
"""

from __future__ import annotations

import math
from typing import Any

import numpy
from numpy.typing import DTypeLike

from ._tensor import Function
from .backend import Array, CudaKernel, cupy, device_of
from .random import PHILOX_CUDA, PhiloxStream, dropout_stream

# --- arithmetic ------------------------------------------------------------------------


class Add(Function):
    """y = a + b.   dy/da = 1, dy/db = 1."""

    def forward(self, a: Array, b: Array) -> Array:
        return a + b

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        return gy, gy


class Sub(Function):
    """y = a - b.   dy/da = 1, dy/db = -1."""

    def forward(self, a: Array, b: Array) -> Array:
        return a - b

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        return gy, (-gy if self.needs_input_grad[1] else None)


class Mul(Function):
    """y = a * b (elementwise).   dy/da = b, dy/db = a."""

    def forward(self, a: Array, b: Array) -> Array:
        self.a, self.b = a, b
        return a * b

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        ga = gy * self.b if self.needs_input_grad[0] else None
        gb = gy * self.a if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    """y = a / b.   dy/da = 1 / b, dy/db = -a / b^2."""

    def forward(self, a: Array, b: Array) -> Array:
        self.a, self.b = a, b
        return a / b

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        ga = gy / self.b
        gb = -ga * self.a / self.b if self.needs_input_grad[1] else None
        return (ga if self.needs_input_grad[0] else None), gb


class Neg(Function):
    """y = -x.   dy/dx = -1."""

    def forward(self, x: Array) -> Array:
        return -x

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        return (-gy,)


class Pow(Function):
    """y = x^n for a constant number n.   dy/dx = n x^(n-1)."""

    def __init__(self, exponent: float) -> None:
        self.exponent = exponent

    def forward(self, x: Array) -> Array:
        self.x = x
        return x**self.exponent

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        n = self.exponent
        if n == 0:  # y = 1: the derivative is 0 everywhere, also at x = 0 (where 0 * 0^-1 would be nan)
            return (gy * 0,)
        return (gy * n * self.x ** (n - 1),)


class Exp(Function):
    """y = e^x.   dy/dx = e^x = y (so the output is saved, not the input)."""

    saves_output = True

    def forward(self, x: Array) -> Array:
        self.y = self.xp.exp(x)
        return self.y

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        return (gy * self.y,)


class Log(Function):
    """y = ln x.   dy/dx = 1 / x."""

    def forward(self, x: Array) -> Array:
        self.x = x
        return self.xp.log(x)

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        return (gy / self.x,)


class ReLU(Function):
    """y = max(x, 0).   dy/dx = 1 where y > 0, else 0 (read from the saved output)."""

    saves_output = True

    backward_gpu = CudaKernel("T y, T gy", "T gx", "gx = y > (T)0 ? gy : (T)0", "minigrad_relu_backward")

    def forward(self, x: Array) -> Array:
        self.y = self.xp.maximum(x, 0)
        return self.y

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        if self.xp is cupy:
            return (self.backward_gpu(self.y, gy),)
        return (gy * (self.y > 0),)


# --- matrix products ---------------------------------------------------------------------


class MatMul(Function):
    """Y = A @ B.   dL/dA = dL/dY @ B^T,  dL/dB = A^T @ dL/dY.

    Stacks of matrices broadcast as in NumPy (the engine sums the gradient over broadcast batch
    axes); a 1-D operand is a row vector (left) or a column vector (right) whose axis is dropped
    from the result, so 1-D @ 1-D is the dot product, a 0-d tensor.
    """

    def forward(self, a: Array, b: Array) -> Array:
        self.a, self.b = a, b
        return a @ b

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        xp = self.xp
        # View 1-D operands as matrices, and put back into gy the axes forward dropped for them,
        # so that one pair of formulas serves every case.
        a = self.a[None, :] if self.a.ndim == 1 else self.a
        b = self.b[:, None] if self.b.ndim == 1 else self.b
        if self.b.ndim == 1:
            gy = gy[..., None]  # the column axis of b
        if self.a.ndim == 1:
            gy = gy[..., None, :]  # the row axis of a
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = gy @ xp.swapaxes(b, -1, -2)
            if self.a.ndim == 1:
                ga = ga[..., 0, :]  # drop the row axis added above
        if self.needs_input_grad[1]:
            gb = xp.swapaxes(a, -1, -2) @ gy
            if self.b.ndim == 1:
                gb = gb[..., 0]  # drop the column axis added above
        return ga, gb


class Linear(Function):
    """y = x W^T + b, a fully connected layer as one op (W has shape (out, in), as in PyTorch).

    dL/dx = gy W,  dL/dW = gy^T x,  dL/db = sum of gy over the batch.
    One op instead of MatMul + Permute + Add: fewer temporaries, and the bias is added in place.
    """

    def forward(self, x: Array, weight: Array, bias: Array | None = None) -> Array:
        self.x, self.weight, self.has_bias = x, weight, bias is not None
        y = x @ weight.T
        if bias is not None:
            y += bias  # y is a fresh array, so adding in place saves a temporary
        return y

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        gy2d = gy.reshape(-1, gy.shape[-1])
        # The first layer's input is the data: its gradient would cost a third of the MLP's FLOPs for nothing.
        gx = gy @ self.weight if self.needs_input_grad[0] else None
        gw = gy2d.T @ self.x.reshape(-1, self.x.shape[-1]) if self.needs_input_grad[1] else None
        if not self.has_bias:
            return gx, gw
        return gx, gw, gy2d.sum(axis=0)


# --- reductions ---------------------------------------------------------------------------


def _grad_to_input_shape(xp, gy, shape, axis, keepdims):
    """Spread the gradient of a reduction back over the axes it reduced (a fresh, writable array)."""
    if axis is not None and not keepdims:
        gy = xp.expand_dims(gy, axis)
    return xp.broadcast_to(gy, shape).copy()


class Sum(Function):
    """y = sum of x over ``axis`` (all axes when None).   dy/dx_i = 1 for every summed x_i."""

    def __init__(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> None:
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x: Array) -> Array:
        self.shape = x.shape
        return x.sum(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        return (_grad_to_input_shape(self.xp, gy, self.shape, self.axis, self.keepdims),)


class Mean(Function):
    """y = (1/n) sum of x over ``axis``, n the number of summed values.   dy/dx_i = 1/n."""

    def __init__(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> None:
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x: Array) -> Array:
        self.shape = x.shape
        y = x.mean(axis=self.axis, keepdims=self.keepdims)
        self.count = x.size // max(y.size, 1) if x.size else 1
        return y

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        return (_grad_to_input_shape(self.xp, gy / self.count, self.shape, self.axis, self.keepdims),)


class Max(Function):
    """y = max of x over ``axis``.   dy/dx_i = 1/k at the k positions holding the maximum, else 0.

    A NaN is the maximum (NumPy and PyTorch propagate it), so the positions holding NaN share the
    gradient when the maximum is NaN.
    """

    saves_output = True

    def __init__(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> None:
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x: Array) -> Array:
        self.x = x
        self.y_kept = x.max(axis=self.axis, keepdims=True)
        if self.keepdims:
            return self.y_kept
        return self.y_kept.squeeze(axis=self.axis)

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        xp = self.xp
        is_max = (self.x == self.y_kept) | (xp.isnan(self.x) & xp.isnan(self.y_kept))
        share = is_max / is_max.sum(axis=self.axis, keepdims=True)  # ties split the gradient
        gy = gy if self.keepdims or self.axis is None else xp.expand_dims(gy, self.axis)
        return ((gy * share).astype(self.x.dtype, copy=False),)


class Cast(Function):
    """y = x in another dtype (same values, rounded to it).   dL/dx = dL/dy in x's dtype (the engine casts it)."""

    def __init__(self, dtype: DTypeLike) -> None:
        self.dtype = dtype

    def forward(self, x: Array) -> Array:
        return x.astype(self.dtype)

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        return (gy,)


# --- shape ---------------------------------------------------------------------------------


class Reshape(Function):
    """y = x with a new shape (same values, row-major order).   dL/dx = dL/dy reshaped back."""

    makes_view = True

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.new_shape = shape

    def forward(self, x: Array) -> Array:
        self.shape = x.shape
        try:
            return x.reshape(self.new_shape)
        except ValueError:
            raise ValueError(
                f"cannot reshape a tensor of shape {x.shape} ({x.size} values) into shape {self.new_shape}"
            ) from None

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        return (gy.reshape(self.shape),)


class Permute(Function):
    """y = x with its axes reordered: axis i of y is axis ``axes[i]`` of x.   dL/dx = dL/dy reordered back.

    ``Tensor.permute``, ``transpose(dim0, dim1)``, ``.T`` and ``.mT`` are all this op; ``axes`` arrive
    checked and non-negative. The inverse permutation sends axis ``axes[i]`` back to place i.
    """

    makes_view = True

    def __init__(self, axes: tuple[int, ...]) -> None:
        self.axes = axes

    def forward(self, x: Array) -> Array:
        return x.transpose(self.axes)

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        inverse = [0] * len(self.axes)
        for position, axis in enumerate(self.axes):
            inverse[axis] = position
        return (gy.transpose(inverse),)


class Index(Function):
    """y = x[index] (integers, slices or integer arrays).

    dL/dx = zeros with dL/dy added at the selected positions; an index picked twice gets both.
    """

    makes_view = True

    def __init__(self, index: Any) -> None:
        self.index = index

    def forward(self, x: Array) -> Array:
        self.shape, self.dtype = x.shape, x.dtype
        self.index = _index_for(self.xp, self.index)
        return x[self.index]

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        gx = self.xp.zeros(self.shape, dtype=self.dtype)
        self.xp.add.at(gx, self.index, gy)  # gx[index] += gy, where a repeated index adds up
        return (gx,)


def _index_for(xp, index):
    """The index with its NumPy integer arrays moved to xp's device (a GPU array takes GPU index arrays)."""
    if xp is numpy:
        return index
    if isinstance(index, tuple):
        return tuple(_index_for(xp, part) for part in index)
    return xp.asarray(index) if hasattr(index, "__array__") and not isinstance(index, xp.ndarray) else index


# --- the chapter's two special ops -----------------------------------------------------------


class Dropout(Function):
    """Eq. (4.6.1): y = x * mask, mask = keep / (1 - p), keep = [U > p], U uniform on [0, 1) per element.

    dy/dx = mask: backward multiplies by the very mask forward used. The mask is stored already
    scaled, in x's dtype, so both directions are one multiply, as in Chainer. U comes from the
    device's dropout stream (``random.dropout_stream``) as 32-bit words, so the same seed gives the
    same masks on the CPU and on a GPU (``keep_mask``). 0 <= p < 1 here; ``nn.functional.dropout``
    handles p = 0 and p = 1 without drawing. On a GPU one kernel draws, compares, scales and multiplies.
    """

    forward_gpu = CudaKernel(
        "T x, raw uint64 key, raw uint64 counter, uint32 threshold, T scale",
        "T y, T mask",
        """
                             unsigned int u = minigrad_philox_u32(&key[0], &counter[0], (unsigned long long)i);
                             mask = u > threshold ? scale : (T)0;
                             y = x * mask;
                             """,
        "minigrad_dropout",
        preamble=PHILOX_CUDA,
    )

    def __init__(self, p: float) -> None:
        self.p = p

    def forward(self, x: Array) -> Array:
        scale = x.dtype.type(1.0 / (1.0 - self.p))  # in x's dtype: bool * Python float would be float64
        stream = dropout_stream(device_of(x))
        if self.xp is cupy:  # i is the flat C-order index, as in keep_mask's reshape
            x = self.xp.ascontiguousarray(x)
            y, self.mask = self.forward_gpu(
                x, stream.key_on_device, stream.counter_on_device, keep_threshold(self.p), scale
            )
            stream.advance_on_device(x.size)
            return y
        self.mask = keep_mask(stream, x.shape, self.p) * scale
        return x * self.mask

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        return (gy * self.mask,)


def keep_threshold(p: float) -> int:
    """The 32-bit form of U > p: for U = k / 2**32 with k a uniform 32-bit word, k / 2**32 > p exactly when
    k > floor(p * 2**32). 0 <= p < 1, so it fits in 32 bits."""
    if not 0 <= p < 1:
        raise ValueError(f"keep_mask needs 0 <= p < 1, got {p} (p = 1 keeps nothing: no draws are needed)")
    return numpy.uint32(math.floor(p * 2**32))


def keep_mask(stream: PhiloxStream, shape: tuple[int, ...], p: float) -> Array:
    """Dropout's keep = [U > p] per element, a boolean array: U = k / 2**32 from the stream's next 32-bit words.

    Comparing the words themselves with ``keep_threshold(p)`` skips making floats. Element j (in C order)
    takes word j of the draw, on every device.
    """
    threshold = keep_threshold(p)
    return stream.words(math.prod(shape)).reshape(shape) > threshold


class SoftmaxCrossEntropy(Function):
    """L = mean over the batch of -log softmax(o)_y = mean(logsumexp(o) - o_y).

    dL/do = (softmax(o) - onehot(y)) / N.   Fused and max-shifted: logsumexp(o) =
    m + log sum exp(o - m) with m = max(o), so logits of 1e4 give no inf or nan. Inputs: logits
    (N, C) and integer labels (N,) in [0, C) (checked by ``F.cross_entropy``); the labels get no
    gradient. On a GPU one kernel does a row per thread: max, exponentials, probabilities and the
    row's loss; a second computes the gradient.
    """

    forward_gpu = CudaKernel(
        "raw T logits, I label, int64 classes",
        "T loss, raw T probs",
        """
        const ptrdiff_t row = i * classes;
        T m = logits[row];
        for (ptrdiff_t k = 1; k < classes; ++k) { T o = logits[row + k]; m = o > m ? o : m; }
        T total = 0;
        for (ptrdiff_t k = 0; k < classes; ++k) { T e = exp(logits[row + k] - m); probs[row + k] = e; total += e; }
        for (ptrdiff_t k = 0; k < classes; ++k) probs[row + k] /= total;
        // A label outside [0, C) (possible only with value checks off) gives NaN, never a read outside the row.
        loss = (label >= 0 && label < classes) ? log(total) - (logits[row + label] - m)
                                               : (T)__longlong_as_double(0x7ff8000000000000LL);
        """,
        "minigrad_softmax_cross_entropy",
    )
    backward_gpu = CudaKernel(
        "T probs, raw I labels, int64 classes, T gy, T n",
        "T grad",
        "grad = (probs - (T)((i % classes) == labels[i / classes])) * (gy / n)",
        "minigrad_cross_entropy_backward",
    )

    def forward(self, logits: Array, labels: Array) -> Array:
        xp, self.labels = self.xp, labels
        if xp is cupy:
            self.probs = xp.empty_like(logits, order="C")
            row_losses = xp.empty(len(labels), dtype=logits.dtype)
            self.forward_gpu(xp.ascontiguousarray(logits), labels, logits.shape[1], row_losses, self.probs)
            return row_losses.mean()
        shifted = logits - logits.max(axis=1, keepdims=True)  # o - m, row by row
        exp = xp.exp(shifted)
        sum_exp = exp.sum(axis=1, keepdims=True)
        loss = (xp.log(sum_exp[:, 0]) - shifted[xp.arange(len(labels)), labels]).mean()
        exp /= sum_exp
        self.probs = exp  # softmax(o), for backward
        return loss

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        # gy = dL/dloss is a 0-d array on the device (reading it on the host would wait for a GPU)
        xp, labels = self.xp, self.labels
        gy = xp.asarray(gy, dtype=self.probs.dtype)
        count = self.probs.dtype.type(len(labels))
        if xp is cupy:
            return self.backward_gpu(self.probs, labels, self.probs.shape[1], gy, count), None
        grad = self.probs.copy()
        grad[xp.arange(len(labels)), labels] -= 1
        grad *= gy / count
        return grad, None
