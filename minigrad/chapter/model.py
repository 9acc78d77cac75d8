"""Section 4.6's model and settings, stated once, and its two implementations.

Every script, benchmark and test that trains "the chapter's MLP" takes it from here: a 784-256-256-10
network, dropout 0.2 after the first hidden layer and 0.5 after the second, SGD with learning rate
0.5 on batches of 256, for 10 epochs.

``dropout_layer`` and ``ScratchMLP`` follow section 4.6.4 (dropout from scratch, parameters by hand);
``concise_mlp`` follows section 4.6.5 (``nn.Sequential`` with ``nn.Dropout``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import minigrad as mg
from minigrad import Tensor, nn
from minigrad.backend import Array
from minigrad.nn import Sequential

NUM_INPUTS, NUM_HIDDENS, NUM_OUTPUTS = 784, (256, 256), 10
DROPOUT1, DROPOUT2 = 0.2, 0.5
LR, BATCH_SIZE, NUM_EPOCHS = 0.5, 256, 10


# --- section 4.6.4: dropout from scratch --------------------------------------------------------


def dropout_layer(X: Tensor, dropout: float) -> Tensor:
    """Eq. (4.6.1) with Tensor operations only: keep where U[0, 1) > p, scale survivors by 1 / (1 - p)."""
    if dropout == 1.0:  # every element is dropped
        return X * 0.0
    if dropout == 0.0:  # every element is kept
        return X
    mask = mg.rand(*X.shape, device=X.device) > dropout
    return X * mask / (1.0 - dropout)


class ScratchMLP:
    """The chapter's parameters W1, b1, W2, b2, W3, b3 and its ``net(X, is_training)``."""

    def __init__(
        self,
        hidden: Sequence[int] = NUM_HIDDENS,
        dropout1: float = DROPOUT1,
        dropout2: float = DROPOUT2,
        device: str = "cpu",
    ) -> None:
        sizes = [NUM_INPUTS, *hidden, NUM_OUTPUTS]
        self.params = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            W = mg.randn(fan_in, fan_out, device=device) * 0.01  # N(0, 0.01^2)
            W.requires_grad = True
            self.params += [W, mg.zeros(fan_out, device=device, requires_grad=True)]
        self.dropout1, self.dropout2 = dropout1, dropout2

    def net(self, X: Tensor, is_training: bool) -> Tensor:
        """Eq. (4.6.2) with dropout after each hidden layer while ``is_training``: the logits for images ``X``."""
        W1, b1, W2, b2, W3, b3 = self.params
        X = X.reshape(-1, NUM_INPUTS)
        H1 = (X @ W1 + b1).relu()
        if is_training:
            H1 = dropout_layer(H1, self.dropout1)
        H2 = (H1 @ W2 + b2).relu()
        if is_training:
            H2 = dropout_layer(H2, self.dropout2)
        return H2 @ W3 + b3

    def sgd(self, lr: float) -> None:
        """The update w <- w - lr * dL/dw (the loss is a batch mean, so no division by the batch size)."""
        for param in self.params:
            param.data -= lr * param.grad
            param.grad = None

    def state_dict(self) -> dict[str, Array]:
        """The six parameters' arrays by name (W1, b1, W2, b2, W3, b3)."""
        return {name: p.data for name, p in zip(["W1", "b1", "W2", "b2", "W3", "b3"], self.params)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Copy arrays saved by ``state_dict`` into the parameters, on their device and in their dtype."""
        for name, param in zip(["W1", "b1", "W2", "b2", "W3", "b3"], self.params):
            param.data = mg.backend.to_device(state[name], param.device).astype(param.dtype)


# --- section 4.6.5: the concise implementation ----------------------------------------------------


def concise_mlp(
    hidden: Sequence[int] = NUM_HIDDENS, dropout1: float = DROPOUT1, dropout2: float = DROPOUT2, device: str = "cpu"
) -> Sequential:
    """Section 4.6.5's model: ``nn.Sequential`` of Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear."""
    return nn.Sequential(
        nn.Linear(NUM_INPUTS, hidden[0], device=device),
        nn.ReLU(),
        nn.Dropout(dropout1),
        nn.Linear(hidden[0], hidden[1], device=device),
        nn.ReLU(),
        nn.Dropout(dropout2),
        nn.Linear(hidden[1], NUM_OUTPUTS, device=device),
    )
