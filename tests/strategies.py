"""Hypothesis strategies shared by the tests."""

import pytest
from hypothesis import strategies as st

import minigrad as mg

# CPU always; CUDA where CuPy sees a GPU (elsewhere the CUDA variants show up as skipped, with the reason).
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not mg.cuda_available(), reason="no CUDA: CuPy is not installed or finds no GPU"),
    ),
]

small_shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)
probabilities = st.floats(0.05, 0.95)
seeds = st.integers(0, 2**31 - 1)
