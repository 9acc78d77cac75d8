"""The floor: the chapter's MLP trained with hand-written NumPy (or CuPy), no autograd.

Exactly minigrad's math for one training step: the same shapes (W of shape (out, in), as in
nn.Linear), the same uint8-to-float32 conversion per batch, the same dropout draws (U[0, 1) > p
from the device's dropout stream, by ``ops.keep_mask``; survivors scaled by 1/(1-p)), the same
fused softmax cross-entropy, and the same SGD update. Written as a competent NumPy user would:
in-place where it saves a pass, no float64, no Python per element. ``tests/test_floor.py`` checks that
one seeded step of the floor and of the engine give bit-identical losses and weights.
"""

import numpy

from minigrad import backend
from minigrad.chapter.model import DROPOUT1, DROPOUT2, LR, NUM_HIDDENS, NUM_INPUTS, NUM_OUTPUTS
from minigrad.ops import keep_mask
from minigrad.random import dropout_stream, generator


class FloorMLP:
    """The chapter's parameters drawn like nn.Linear's defaults (N(0, 0.01^2), zero biases), W of shape (out, in)."""

    def __init__(self, hidden=NUM_HIDDENS, dropout=(DROPOUT1, DROPOUT2), lr=LR, device="cpu"):
        device = backend.parse_device(device)
        self.xp, self.stream = backend.module_for(device), dropout_stream(device)
        sizes = [NUM_INPUTS, *hidden, NUM_OUTPUTS]
        host = generator("cpu")  # as nn.init draws: on the CPU, copied to the device
        self.weights = [
            backend.to_device(host.standard_normal((fan_out, fan_in), dtype=numpy.float32), device)
            * numpy.float32(0.01)
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:])
        ]
        self.biases = [self.xp.zeros(fan_out, dtype=numpy.float32) for fan_out in sizes[1:]]
        self.dropout, self.lr = dropout, numpy.float32(lr)

    def step(self, x, y):
        """One minibatch: forward, backward and SGD update. Returns the loss (a device scalar)."""
        loss, saved = self.forward(x, y)
        self.update(self.backward(x, *saved))
        return loss

    def forward(self, x, y):
        """The loss, and what backward needs: the activations, the masks and dL/dlogits."""
        xp, (W1, W2, W3), (b1, b2, b3) = self.xp, self.weights, self.biases
        n = x.shape[0]
        # The same draws as minigrad's: U > p from the device's dropout stream, 32 bits per element
        masks = [
            keep_mask(self.stream, (n, W.shape[0]), p) * numpy.float32(1 / (1 - p))
            for W, p in zip((W1, W2), self.dropout)
        ]
        # relu, then dropout, in place on the fresh product
        h1 = x @ W1.T
        h1 += b1
        xp.maximum(h1, 0, out=h1)
        h1 *= masks[0]
        h2 = h1 @ W2.T
        h2 += b2
        xp.maximum(h2, 0, out=h2)
        h2 *= masks[1]
        logits = h2 @ W3.T
        logits += b3
        # softmax cross-entropy, max-shifted; its gradient (p - onehot) / n
        logits -= logits.max(axis=1, keepdims=True)
        probs = xp.exp(logits)
        sums = probs.sum(axis=1, keepdims=True)
        rows = xp.arange(n)
        loss = (xp.log(sums[:, 0]) - logits[rows, y]).mean()
        probs /= sums
        probs[rows, y] -= 1
        probs *= numpy.float32(1 / n)
        return loss, (h1, h2, masks, probs)

    def backward(self, x, h1, h2, masks, grad):
        """The gradients of (W1, b1, W2, b2, W3, b3). A unit kept by dropout and active in relu is exactly one
        with h > 0 after both."""
        (_, W2, W3) = self.weights
        gW3, gb3 = grad.T @ h2, grad.sum(axis=0)
        dh2 = grad @ W3
        dh2 *= masks[1]
        dh2 *= h2 > 0
        gW2, gb2 = dh2.T @ h1, dh2.sum(axis=0)
        dh1 = dh2 @ W2
        dh1 *= masks[0]
        dh1 *= h1 > 0
        gW1, gb1 = dh1.T @ x, dh1.sum(axis=0)
        return gW1, gb1, gW2, gb2, gW3, gb3

    def update(self, grads):
        """SGD, in place: w <- w - lr * g."""
        W1, W2, W3 = self.weights
        b1, b2, b3 = self.biases
        for param, g in zip((W1, b1, W2, b2, W3, b3), grads):
            g *= self.lr
            param -= g


def train_epoch(model, loader):
    """One pass over a minigrad DataLoader's batches (the same batching and conversion as minigrad's)."""
    loss = None
    for x, y in loader:
        loss = model.step(x.data, y.data)
    return loss
