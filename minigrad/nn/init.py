"""Weight initialisers: each fills a Parameter's data in its dtype on its device, and returns it.

The values are drawn on the CPU's generator and copied to the parameter's device, so a seeded model
starts from the same weights on the CPU and on a GPU.
"""
import math

from ..backend import get_array_module, to_device
from ..random import generator


def _host_draw(tensor, draw):
    """``draw(cpu_generator, shape, dtype)``, moved to the tensor's device."""
    return to_device(draw(generator("cpu"), tensor.shape, tensor.dtype), tensor.device)


def normal_(tensor, mean=0.0, std=0.01):
    """w ~ N(mean, std^2); the chapter's default is N(0, 0.01^2)."""
    draw = _host_draw(tensor, lambda rng, shape, dtype: rng.standard_normal(shape, dtype=dtype))
    tensor.data = draw * tensor.dtype.type(std) + tensor.dtype.type(mean)
    return tensor


def zeros_(tensor):
    """w = 0."""
    tensor.data = get_array_module(tensor.data).zeros_like(tensor.data)
    return tensor


def xavier_uniform_(tensor):
    """w ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Glorot and Bengio, 2010); weight shape (out, in)."""
    fan_out, fan_in = tensor.shape
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    draw = _host_draw(tensor, lambda rng, shape, dtype: rng.random(shape, dtype=dtype))
    tensor.data = (draw * 2 - 1) * tensor.dtype.type(bound)
    return tensor


def kaiming_normal_(tensor):
    """w ~ N(0, 2 / fan_in) (He et al., 2015), suited to ReLU layers; weight shape (out, in)."""
    return normal_(tensor, std=math.sqrt(2.0 / tensor.shape[1]))
