"""Shared fixtures: the devices to run on (CPU always, CUDA where CuPy sees a GPU), hypothesis settings, and a
stand-in for CUDA graphs (``fake_cuda``)."""

import collections
import os

import pytest
from hypothesis import HealthCheck, settings

import minigrad as mg
from minigrad.fast import RecordedStep

from .fake_cuda import FakeCuda
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


@pytest.fixture
def fake_data(tmp_path, monkeypatch):
    """Synthetic Fashion-MNIST files in tmp/fake for the example's tests; the real dataset and the network out of
    reach, the environment's defaults unset, the working folder tmp."""
    from minigrad.data import fashion_mnist

    from .fakedata import write_fake_fashion

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINIGRAD_DATA", raising=False)
    monkeypatch.delenv("MAX_EPOCH", raising=False)
    monkeypatch.delenv("DATASET_LIMIT", raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FOLDER", str(tmp_path / "nowhere"))
    monkeypatch.setattr(fashion_mnist, "MIRRORS", ("http://127.0.0.1:9/",))  # nothing listens on port 9
    write_fake_fashion(tmp_path / "fake", train=300, test=100)
    return tmp_path / "fake"


def pytest_terminal_summary(terminalreporter):
    """The skipped tests counted by reason, a few lines instead of one per test (``-rs`` lists them all)."""
    reasons = collections.Counter()
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reasons[reason[len("Skipped: ") :] if reason.startswith("Skipped: ") else reason] += 1
    if reasons:
        terminalreporter.section(f"{sum(reasons.values())} skipped, by reason", sep="-")
        for reason, count in reasons.most_common():
            terminalreporter.write_line(f"{count:4d}  {reason}")


@pytest.fixture
def fake_cuda(monkeypatch):
    """The stand-in as backend.cupy.cuda; RecordedStep tells it which step and state it records."""
    cuda = FakeCuda()
    monkeypatch.setattr(mg.backend, "cupy", type("FakeCuPy", (), {"cuda": cuda, "ndarray": type("NoArray", (), {})}))
    original = RecordedStep.__init__

    def init(self, step, state, *args, **kwargs):
        cuda.step, cuda.state = step, state
        original(self, step, state, *args, **kwargs)

    monkeypatch.setattr(RecordedStep, "__init__", init)
    return cuda
