"""The DataLoader: every example once per epoch, shapes, dtypes, limit, drop_last, reproducible shuffling."""

import numpy as np
import pytest

import minigrad as mg
from minigrad.data import ArrayDataset, DataLoader

from .fakedata import make_split


@pytest.fixture
def dataset():
    images, labels = make_split(103, seed=0)
    images[:, 0, 0] = np.arange(103) % 256  # an id per example, to follow each one through the loader
    images[:, 0, 1] = np.arange(103) // 256
    return ArrayDataset(images, labels)


def ids(x):
    pixels = np.rint(x.numpy()[:, :2] * 255).astype(int)
    return pixels[:, 0] + 256 * pixels[:, 1]


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_example_once_per_epoch(dataset, shuffle, device):
    loader = DataLoader(dataset, batch_size=10, shuffle=shuffle, device=device, seed=1)
    for _ in range(2):
        seen = np.concatenate([ids(x) for x, _ in loader])
        assert sorted(seen) == list(range(103))
        if not shuffle:
            assert list(seen) == list(range(103))


def test_batches_have_the_documented_shapes_and_dtypes(dataset, device):
    loader = DataLoader(dataset, batch_size=25, device=device)
    batches = list(loader)
    assert len(loader) == len(batches) == 5
    x, y = batches[0]
    assert x.shape == (25, 784) and x.dtype == np.float32 and x.device == mg.backend.parse_device(device)
    assert y.shape == (25,) and y.dtype == np.int64
    assert 0.0 <= float(x.data.min()) and float(x.data.max()) <= 1.0
    assert batches[-1][0].shape == (3, 784)
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), dataset.labels)
    unflat = next(iter(DataLoader(dataset, batch_size=4, flatten=False)))[0]
    assert unflat.shape == (4, 28, 28)


def test_limit_and_drop_last(dataset):
    loader = DataLoader(dataset, batch_size=10, limit=35, drop_last=True)
    assert len(loader) == 3 and loader.num_examples == 30
    assert [len(y) for _, y in loader] == [10, 10, 10]
    assert len(DataLoader(dataset, batch_size=10, limit=35)) == 4


def test_shuffle_is_reproducible_and_fresh_each_epoch(dataset):
    first = DataLoader(dataset, batch_size=103, shuffle=True, seed=3)
    second = DataLoader(dataset, batch_size=103, shuffle=True, seed=3)
    epoch1, epoch2 = ids(next(iter(first))[0]), ids(next(iter(first))[0])
    np.testing.assert_array_equal(epoch1, ids(next(iter(second))[0]))
    assert (epoch1 != epoch2).any()
    assert (epoch1 != ids(next(iter(DataLoader(dataset, 103, shuffle=True, seed=4)))[0])).any()


@pytest.mark.parametrize(
    "kwargs, message",
    [({"batch_size": 0}, "batch_size must be at least 1"), ({"batch_size": 4, "limit": 0}, "limit must be at least 1")],
)
def test_bad_arguments(dataset, kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataLoader(dataset, **kwargs)


def test_labels_follow_their_images_under_shuffling(dataset):
    for x, y in DataLoader(dataset, batch_size=16, shuffle=True, seed=0):
        np.testing.assert_array_equal(y.numpy(), dataset.labels[ids(x)])
