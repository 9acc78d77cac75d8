"""Hypothesis strategies shared by the tests."""
from hypothesis import strategies as st

import minigrad as mg

# CPU always; CUDA where CuPy sees a GPU (the CUDA variants are skipped, by absence, elsewhere).
DEVICES = ["cpu"] + (["cuda"] if mg.cuda_available() else [])

small_shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)
probabilities = st.floats(0.05, 0.95)
seeds = st.integers(0, 2**31 - 1)
