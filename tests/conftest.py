"""Shared fixtures: the devices to run on (CPU always, CUDA where CuPy sees a GPU) and hypothesis settings."""
import os

import pytest
from hypothesis import HealthCheck, settings

import minigrad as mg

from .strategies import DEVICES

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(params=DEVICES)
def device(request):
    """Each test that takes ``device`` runs once per available device."""
    return request.param


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same seed, so failures reproduce."""
    mg.manual_seed(0)
    yield
