"""Fused GPU kernels for the hot elementwise steps, each beside the plain array code it must equal.

On the CPU (NumPy) every function here runs its plain version. On a GPU (CuPy) it runs one
``cupy.ElementwiseKernel``: a single pass over memory instead of one pass, and one temporary array,
per NumPy-style operation. ``tests/test_kernels.py`` checks that both versions agree on a GPU.
"""
import functools

from .backend import cupy, get_array_module, random_keep


@functools.lru_cache(maxsize=None)
def _cuda_kernels():
    """Compiled on first use (CuPy caches the binaries on disk)."""
    return {
        "relu_backward": cupy.ElementwiseKernel(
            "T y, T gy", "T gx", "gx = y > (T)0 ? gy : (T)0", "minigrad_relu_backward"),
        "dropout": cupy.ElementwiseKernel(
            "T x, T uniform, T p, T scale", "T y, T mask",
            "mask = uniform > p ? scale : (T)0; y = x * mask", "minigrad_dropout"),
        # One thread per row (C logits): max, sum of exponentials, probabilities, and the row's loss.
        # A label outside [0, C) gives a NaN loss rather than a read outside the row.
        "softmax_cross_entropy": cupy.ElementwiseKernel(
            "raw T logits, I label, int64 classes", "T loss, raw T probs",
            """
            const ptrdiff_t row = i * classes;
            T m = logits[row];
            for (ptrdiff_t k = 1; k < classes; ++k) { T o = logits[row + k]; m = o > m ? o : m; }
            T total = 0;
            for (ptrdiff_t k = 0; k < classes; ++k) { T e = exp(logits[row + k] - m); probs[row + k] = e; total += e; }
            for (ptrdiff_t k = 0; k < classes; ++k) probs[row + k] /= total;
            loss = (label >= 0 && label < classes) ? log(total) - (logits[row + label] - m)
                                                   : (T)__longlong_as_double(0x7ff8000000000000LL);
            """, "minigrad_softmax_cross_entropy"),
        "cross_entropy_backward": cupy.ElementwiseKernel(
            "T probs, raw I labels, int64 classes, T gy, T n", "T grad",
            "grad = (probs - (T)((i % classes) == labels[i / classes])) * (gy / n)", "minigrad_cross_entropy_backward"),
        "sgd": cupy.ElementwiseKernel(
            "T grad, T lr, T weight_decay", "T param",
            "param -= lr * (grad + weight_decay * param)", "minigrad_sgd"),
    }


def _on_gpu(array):
    return cupy is not None and get_array_module(array) is cupy


def relu_backward(y, gy):
    """dL/dx = dL/dy where y = relu(x) > 0, else 0."""
    if _on_gpu(y):
        return _cuda_kernels()["relu_backward"](y, gy)
    return gy * (y > 0)


def dropout(x, p, generator):
    """Eq. (4.6.1): keep = [U > p], U ~ Uniform[0, 1) per element; mask = keep / (1 - p), y = x * mask.

    Returns (y, mask). On a GPU one kernel compares, scales and multiplies (given the uniform
    draws); on the CPU the keep mask comes from ``backend.random_keep``, which draws random bits
    instead of floats. Either way the law is the same; the draws of the two devices differ.
    """
    scale = x.dtype.type(1.0 / (1.0 - p))  # in x's dtype: bool * Python float would be float64
    if _on_gpu(x):
        uniform = generator.random(x.shape, dtype=x.dtype)
        return _cuda_kernels()["dropout"](x, uniform, x.dtype.type(p), scale)
    mask = random_keep(generator, x.shape, p) * scale
    return x * mask, mask


def softmax_cross_entropy(logits, labels):
    """Per row: m = max(o), probs = exp(o - m) / sum exp(o - m), loss = log sum exp(o - m) - (o_y - m).

    Returns (mean loss over the rows, probs). Max-shifted, so logits of 1e4 give no inf or nan.
    On a GPU one kernel does it all, a thread per row; the mean is a second.
    """
    xp = get_array_module(logits)
    if _on_gpu(logits):
        probs = xp.empty_like(logits, order="C")
        row_losses = xp.empty(len(labels), dtype=logits.dtype)
        _cuda_kernels()["softmax_cross_entropy"](xp.ascontiguousarray(logits), labels, logits.shape[1],
                                                 row_losses, probs)
        return row_losses.mean(), probs
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = xp.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)
    picked = shifted[xp.arange(len(labels)), labels]  # o_y - m, row by row
    loss = (xp.log(sum_exp[:, 0]) - picked).mean()
    exp /= sum_exp
    return loss, exp


def cross_entropy_backward(probs, labels, gy):
    """dL/do = (softmax(o) - onehot(labels)) * gy / N, gy = dL/dloss, N the number of rows.

    ``gy`` is a number or a 0-d array on probs' device (backward's dL/dloss lives there: reading
    it on the host would wait for the GPU at every step).
    """
    xp = get_array_module(probs)
    gy = xp.asarray(gy, dtype=probs.dtype) if hasattr(gy, "dtype") else probs.dtype.type(gy)
    count = probs.dtype.type(len(labels))
    if _on_gpu(probs):
        return _cuda_kernels()["cross_entropy_backward"](probs, labels, probs.shape[1], gy, count)
    grad = probs.copy()
    grad[xp.arange(len(labels)), labels] -= 1
    grad *= gy / count
    return grad


def sgd_update(param, grad, lr, weight_decay):
    """In place: param <- param - lr * (grad + weight_decay * param)."""
    if _on_gpu(param):
        _cuda_kernels()["sgd"](grad, param.dtype.type(lr), param.dtype.type(weight_decay), param)
        return
    if weight_decay:
        grad = grad + param.dtype.type(weight_decay) * param
    param -= param.dtype.type(lr) * grad
