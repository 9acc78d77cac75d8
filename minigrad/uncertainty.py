"""Monte-Carlo dropout: dropout left on at test time, averaged over many passes (Gal and Ghahramani, 2016).

The chapter notes that agreement across dropout masks can serve as a confidence estimate. Here the
model is put in eval mode except for its noise layers (Dropout and its cousins), T forward passes
are averaged in probability space, and the predictive entropy measures the uncertainty.
"""
from . import backend
from .autograd import no_grad
from .nn import functional as F
from .nn.layers import Dropout
from .nn.noise import DropConnect, GaussianDropout, GaussianNoise, UniformNoise

NOISE_LAYERS = (Dropout, DropConnect, GaussianDropout, GaussianNoise, UniformNoise)


def mc_dropout_probabilities(model, x, passes=30):
    """Mean of softmax(model(x)) over ``passes`` forward passes with only the noise layers in training mode.

    Returns a raw array (N, C). Every module's own training flag is restored afterwards.
    """
    if passes < 1:
        raise ValueError(f"passes must be at least 1, got {passes}")
    modes = {module: module.training for module in model.modules()}
    model.eval()
    for module in model.modules():
        if isinstance(module, NOISE_LAYERS):
            module.train()
    try:
        with no_grad():
            total = 0
            for _ in range(passes):
                total = total + F.softmax(model(x), axis=1).data
    finally:
        for module, mode in modes.items():
            module.training = mode
    return total / passes


def predictive_entropy(probabilities):
    """H = -sum_k p_k log p_k per row (in nats): 0 for a certain prediction, log C for a uniform one."""
    xp = backend.get_array_module(probabilities)
    return -(probabilities * xp.log(xp.clip(probabilities, 1e-12, 1.0))).sum(axis=1)
