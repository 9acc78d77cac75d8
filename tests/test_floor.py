"""The hand-written floor (benchmarks/numpy_floor.py) and the engine are the same math: one seeded step of each
gives bit-identical losses and weights. If they drift apart, the benchmark's ratio stops meaning what it says."""

import numpy as np
import pytest

import minigrad as mg
from benchmarks.numpy_floor import FloorMLP
from minigrad import backend
from minigrad.chapter.model import BATCH_SIZE, LR, NUM_INPUTS, concise_mlp


@pytest.mark.parametrize("steps", [1, 3])
def test_a_seeded_step_of_the_floor_and_of_the_concise_model_agree_bit_for_bit(device, steps):
    rng = np.random.default_rng(7)
    batches = [
        (
            rng.integers(0, 256, (BATCH_SIZE, NUM_INPUTS)).astype(np.float32) / np.float32(255),
            rng.integers(0, 10, BATCH_SIZE),
        )
        for _ in range(steps)
    ]

    mg.manual_seed(3)
    model = concise_mlp(device=device)
    optimizer = mg.optim.SGD(model.parameters(), lr=LR)
    engine_losses = []
    for x, y in batches:
        logits = model(mg.Tensor(backend.to_device(x, device)))
        loss = mg.nn.functional.cross_entropy(logits, mg.Tensor(backend.to_device(y, device)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        engine_losses.append(backend.to_numpy(loss.data))

    mg.manual_seed(3)  # the same draws: the weights first, then the masks of each step, in the same order
    floor = FloorMLP(device=device)
    floor_losses = [
        backend.to_numpy(floor.step(backend.to_device(x, device), backend.to_device(y, device))) for x, y in batches
    ]

    np.testing.assert_array_equal(engine_losses, floor_losses)
    weights = [model[i].weight.data for i in (0, 3, 6)]
    biases = [model[i].bias.data for i in (0, 3, 6)]
    for ours, theirs in zip(weights + biases, floor.weights + floor.biases):
        np.testing.assert_array_equal(backend.to_numpy(ours), backend.to_numpy(theirs))
