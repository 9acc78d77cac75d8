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
        "cross_entropy_backward": cupy.ElementwiseKernel(
            "T probs, raw I labels, int64 classes, T scale", "T grad",
            "grad = (probs - (T)((i % classes) == labels[i / classes])) * scale", "minigrad_cross_entropy_backward"),
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


def cross_entropy_backward(probs, labels, scale):
    """dL/do = (softmax(o) - onehot(labels)) * scale, scale = dL/dloss / N."""
    if _on_gpu(probs):
        return _cuda_kernels()["cross_entropy_backward"](probs, labels, probs.shape[1], probs.dtype.type(scale))
    xp = get_array_module(probs)
    grad = probs.copy()
    grad[xp.arange(len(labels)), labels] -= 1
    grad *= probs.dtype.type(scale)
    return grad


def sgd_update(param, grad, lr, weight_decay):
    """In place: param <- param - lr * (grad + weight_decay * param)."""
    if _on_gpu(param):
        _cuda_kernels()["sgd"](grad, param.dtype.type(lr), param.dtype.type(weight_decay), param)
        return
    if weight_decay:
        grad = grad + param.dtype.type(weight_decay) * param
    param -= param.dtype.type(lr) * grad
