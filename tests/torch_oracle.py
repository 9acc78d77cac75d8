"""PyTorch, the test oracle: optional (not a dependency of minigrad), and skipped for one reason everywhere."""

import pytest

try:
    import torch
except ImportError:
    torch = None

MISSING = "PyTorch is not installed (pip install torch==2.13.0; CI installs it): the comparisons with it are skipped"
needs_torch = pytest.mark.skipif(torch is None, reason=MISSING)
