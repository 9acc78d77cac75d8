"""Every differentiable op, one Function each, with forward and backward side by side.

Conventions: ``forward`` receives raw arrays (NumPy or CuPy; ``xp`` is whichever holds them)
and saves what ``backward`` needs on ``self``. ``backward(gy)`` receives gy = dL/dy and returns
one gradient per input, dL/dx = gy * dy/dx (the chain rule). A gradient may have the
broadcast shape of the output; the engine sums it down to the input's shape
(``autograd.unbroadcast``), so no op repeats that logic.
"""
from . import kernels
from .autograd import Function
from .backend import generator, device_of, get_array_module


# --- arithmetic ------------------------------------------------------------------------

class Add(Function):
    """y = a + b.   dy/da = 1, dy/db = 1."""

    def forward(self, a, b):
        return a + b

    def backward(self, gy):
        return gy, gy


class Sub(Function):
    """y = a - b.   dy/da = 1, dy/db = -1."""

    def forward(self, a, b):
        return a - b

    def backward(self, gy):
        return gy, -gy


class Mul(Function):
    """y = a * b (elementwise).   dy/da = b, dy/db = a."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        return gy * self.b, gy * self.a


class Div(Function):
    """y = a / b.   dy/da = 1 / b, dy/db = -a / b^2."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, gy):
        ga = gy / self.b
        return ga, -ga * self.a / self.b


class Neg(Function):
    """y = -x.   dy/dx = -1."""

    def forward(self, x):
        return -x

    def backward(self, gy):
        return (-gy,)


class Pow(Function):
    """y = x^n for a constant number n.   dy/dx = n x^(n-1)."""

    def __init__(self, exponent):
        self.exponent = exponent

    def forward(self, x):
        self.x = x
        return x ** self.exponent

    def backward(self, gy):
        n = self.exponent
        if n == 0:  # y = 1: the derivative is 0 everywhere, also at x = 0 (where 0 * 0^-1 would be nan)
            return (gy * 0,)
        return (gy * n * self.x ** (n - 1),)


class Exp(Function):
    """y = e^x.   dy/dx = e^x = y (so the output is saved, not the input)."""

    def forward(self, x):
        xp = get_array_module(x)
        self.y = xp.exp(x)
        return self.y

    def backward(self, gy):
        return (gy * self.y,)


class Log(Function):
    """y = ln x.   dy/dx = 1 / x."""

    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        return xp.log(x)

    def backward(self, gy):
        return (gy / self.x,)


class ReLU(Function):
    """y = max(x, 0).   dy/dx = 1 where y > 0, else 0 (read from the saved output)."""

    def forward(self, x):
        xp = get_array_module(x)
        self.y = xp.maximum(x, 0)
        return self.y

    def backward(self, gy):
        return (kernels.relu_backward(self.y, gy),)


# --- matrix products ---------------------------------------------------------------------

class MatMul(Function):
    """Y = A @ B.   dL/dA = dL/dY @ B^T,  dL/dB = A^T @ dL/dY.

    Stacks of matrices broadcast as in NumPy (the engine sums the gradient over broadcast batch
    axes); a 1-D operand is a row vector (left) or a column vector (right) whose axis is dropped
    from the result, so 1-D @ 1-D is the dot product, a 0-d tensor.
    """

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul needs arrays with at least one axis, got shapes {a.shape} and {b.shape}")
        inner_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
        if a.shape[-1] != inner_b:
            raise ValueError(f"matmul shape mismatch: {a.shape} @ {b.shape} "
                             f"({a.shape[-1]} columns against {inner_b} rows)")
        self.a, self.b = a, b
        return a @ b

    def backward(self, gy):
        xp = get_array_module(gy)
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

    def forward(self, x, weight, bias=None):
        if x.ndim < 1 or weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
            raise ValueError(f"linear: input of shape {x.shape} does not fit a weight of shape {weight.shape} "
                             f"(out_features, in_features): the input's last axis must be {weight.shape[1]}")
        if bias is not None and bias.shape != (weight.shape[0],):
            raise ValueError(f"linear: bias of shape {bias.shape} does not fit a weight of shape {weight.shape}")
        self.x, self.weight, self.has_bias = x, weight, bias is not None
        y = x @ weight.T
        if bias is not None:
            y += bias  # y is a fresh array, so adding in place saves a temporary
        return y

    def backward(self, gy):
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

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape = x.shape
        return x.sum(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        xp = get_array_module(gy)
        return (_grad_to_input_shape(xp, gy, self.shape, self.axis, self.keepdims),)


class Mean(Function):
    """y = (1/n) sum of x over ``axis``, n the number of summed values.   dy/dx_i = 1/n."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape = x.shape
        y = x.mean(axis=self.axis, keepdims=self.keepdims)
        self.count = x.size // max(y.size, 1) if x.size else 1
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        return (_grad_to_input_shape(xp, gy / self.count, self.shape, self.axis, self.keepdims),)


class Max(Function):
    """y = max of x over ``axis``.   dy/dx_i = 1/k at the k positions holding the maximum, else 0.

    A NaN is the maximum (NumPy and PyTorch propagate it), so the positions holding NaN share the
    gradient when the maximum is NaN.
    """

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.x = x
        self.y_kept = x.max(axis=self.axis, keepdims=True)
        if self.keepdims:
            return self.y_kept
        return self.y_kept.squeeze(axis=self.axis)

    def backward(self, gy):
        xp = get_array_module(gy)
        is_max = (self.x == self.y_kept) | (xp.isnan(self.x) & xp.isnan(self.y_kept))
        share = is_max / is_max.sum(axis=self.axis, keepdims=True)  # ties split the gradient
        gy = gy if self.keepdims or self.axis is None else xp.expand_dims(gy, self.axis)
        return ((gy * share).astype(self.x.dtype, copy=False),)


# --- shape ---------------------------------------------------------------------------------

class Reshape(Function):
    """y = x with a new shape (same values, row-major order).   dL/dx = dL/dy reshaped back."""

    def __init__(self, shape):
        self.new_shape = shape

    def forward(self, x):
        self.shape = x.shape
        try:
            return x.reshape(self.new_shape)
        except ValueError:
            raise ValueError(f"cannot reshape a tensor of shape {x.shape} ({x.size} values) "
                             f"into shape {self.new_shape}") from None

    def backward(self, gy):
        return (gy.reshape(self.shape),)


class Permute(Function):
    """y = x with its axes reordered: axis i of y is axis ``axes[i]`` of x.   dL/dx = dL/dy reordered back.

    ``Tensor.permute``, ``transpose(dim0, dim1)``, ``.T`` and ``.mT`` are all this op; ``axes`` arrive
    checked and non-negative. The inverse permutation sends axis ``axes[i]`` back to place i.
    """

    def __init__(self, axes):
        self.axes = axes

    def forward(self, x):
        return x.transpose(self.axes)

    def backward(self, gy):
        inverse = [0] * len(self.axes)
        for position, axis in enumerate(self.axes):
            inverse[axis] = position
        return (gy.transpose(inverse),)


class Index(Function):
    """y = x[index] (integers, slices or integer arrays).

    dL/dx = zeros with dL/dy added at the selected positions; an index picked twice gets both.
    """

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.shape, self.dtype = x.shape, x.dtype
        self.index = _index_for(get_array_module(x), self.index)
        return x[self.index]

    def backward(self, gy):
        xp = get_array_module(gy)
        gx = xp.zeros(self.shape, dtype=self.dtype)
        xp.add.at(gx, self.index, gy)  # gx[index] += gy, where a repeated index adds up
        return (gx,)


def _index_for(xp, index):
    """The index with its NumPy integer arrays moved to xp's device (a GPU array takes GPU index arrays)."""
    if xp.__name__ == "numpy":
        return index
    if isinstance(index, tuple):
        return tuple(_index_for(xp, part) for part in index)
    return xp.asarray(index) if hasattr(index, "__array__") and not isinstance(index, xp.ndarray) else index


# --- the chapter's two special ops -----------------------------------------------------------

class Dropout(Function):
    """Eq. (4.6.1): y = x * keep / (1 - p), keep = [U > p], U ~ Uniform[0, 1) drawn per element.

    dy/dx = keep / (1 - p): backward multiplies by the very mask forward used. The mask is
    stored already scaled (``mask = keep / (1 - p)``, in x's dtype) so both directions are one
    multiply, as in Chainer. U is drawn on x's device (``kernels.dropout``). 0 <= p < 1 here;
    ``nn.functional.dropout`` handles p = 0 and p = 1 without drawing.
    """

    def __init__(self, p):
        self.p = p

    def forward(self, x):
        y, self.mask = kernels.dropout(x, self.p, generator(device_of(x)))  # mask = [U > p] / (1 - p); y = x * mask
        return y

    def backward(self, gy):
        return (gy * self.mask,)


class SoftmaxCrossEntropy(Function):
    """L = mean over the batch of -log softmax(o)_y = mean(logsumexp(o) - o_y).

    dL/do = (softmax(o) - onehot(y)) / N.   Fused and max-shifted: logsumexp(o) =
    m + log sum exp(o - m) with m = max(o), so logits of 1e4 give no inf or nan. Inputs: logits
    (N, C) and integer labels (N,); the labels get no gradient. Labels outside [0, C) are an error
    on the CPU; on a GPU, where checking would wait for the GPU at every step, they give a NaN loss.
    """

    def forward(self, logits, labels):
        xp = get_array_module(logits)
        if logits.ndim != 2 or labels.shape != logits.shape[:1]:
            raise ValueError(f"cross_entropy: logits of shape {logits.shape} and labels of shape {labels.shape} "
                             f"do not fit: expected logits (N, C) and labels (N,)")
        if labels.dtype.kind not in "iu":
            raise ValueError(f"cross_entropy: labels must be integer class indices, got dtype {labels.dtype}")
        if xp is not get_array_module(labels):
            raise ValueError("cross_entropy: logits and labels are on different devices")
        if xp.__name__ == "numpy" and labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
            raise ValueError(f"cross_entropy: labels must lie in [0, {logits.shape[1] - 1}], "
                             f"got values from {labels.min()} to {labels.max()}")
        loss, self.probs = kernels.softmax_cross_entropy(logits, labels)  # the loss, and softmax(o) for backward
        self.labels = labels
        return loss

    def backward(self, gy):
        return kernels.cross_entropy_backward(self.probs, self.labels, gy), None  # (softmax(o) - onehot(y)) gy / N
