"""The Trainer and its Monitor: dropout is never on while evaluating, history and timings are recorded, NaN stops
training."""

import math

import numpy as np
import pytest

import minigrad as mg
import minigrad.nn.functional as F
from minigrad import nn
from minigrad.data import ArrayDataset, DataLoader
from minigrad.monitor import EpochProgress, Monitor, TrainingDiverged
from minigrad.train import Trainer, evaluate


class ModeSpy(nn.Module):
    """Records, at every forward, whether the module was training and whether a graph was being recorded."""

    def __init__(self):
        self.calls = []

    def forward(self, x):
        self.calls.append((self.training, mg.is_grad_enabled()))
        return x


def loaders(count=64, features=8):
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.integers(0, 255, size=(count, features)).astype(np.uint8), rng.integers(0, 3, count))
    return DataLoader(data, 16, shuffle=True, seed=0), DataLoader(data, 32)


def test_trainer_never_evaluates_in_training_mode():
    spy = ModeSpy()
    model = nn.Sequential(nn.Linear(8, 3), spy, nn.Dropout(0.5))
    train, test = loaders()
    Trainer(model, mg.optim.SGD(model.parameters(), lr=0.1), progress=False).fit(train, test, epochs=2)
    training_calls = [mode for mode, grad in spy.calls if grad]
    evaluation_calls = [mode for mode, grad in spy.calls if not grad]
    assert len(training_calls) == 2 * 4 and len(evaluation_calls) == 2 * 2
    assert all(training_calls) and not any(evaluation_calls)
    assert model.training, "fit leaves the model in training mode, as it found it"


def test_evaluate_restores_the_previous_mode():
    model = nn.Sequential(nn.Linear(8, 3), nn.Dropout(0.5))
    _, test = loaders()
    model.eval()
    evaluate(model, test)
    assert not model.training
    model.train()
    evaluate(model, test)
    assert all(m.training for m in model.modules())


def test_history_and_timings_are_recorded():
    model = nn.Sequential(nn.Linear(8, 3))
    train, test = loaders()
    trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.1), progress=False)
    history = trainer.fit(train, test, epochs=3)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all(0.0 <= h["train_acc"] <= 1.0 and 0.0 <= h["test_acc"] <= 1.0 and h["seconds"] > 0 for h in history)
    summary = trainer.stopwatch.summary()
    assert set(summary) == {"step", "epoch", "eval"}
    assert summary["step"]["count"] == 12 and summary["epoch"]["count"] == summary["eval"]["count"] == 3
    assert summary["epoch"]["p50"] <= summary["epoch"]["p90"]


def test_the_trainer_takes_its_device_from_the_model():
    """Trainer(device=) was used only for timing: a CUDA model with the default "cpu" synchronised every step."""
    model = nn.Sequential(nn.Linear(8, 3))
    trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.1), progress=False)
    assert trainer.monitor.device == "cpu" and trainer.monitor.stopwatch.on_gpu is False
    with pytest.raises(TypeError):
        Trainer(model, mg.optim.SGD(model.parameters(), lr=0.1), device="cpu")


@pytest.mark.skipif(not mg.cuda_available(), reason="no CUDA: CuPy is not installed or finds no GPU")
def test_the_trainer_times_a_cuda_model_with_cuda_events():
    model = nn.Sequential(nn.Linear(8, 3, device="cuda"))
    trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.1), progress=False)
    assert trainer.monitor.device == "cuda:0" and trainer.monitor.stopwatch.on_gpu


def test_a_loop_written_out_gets_the_same_record_from_the_monitor_as_the_trainer():
    """The scratch loop and Trainer share one implementation of the instruments: the same seed, the same record."""
    records = []
    for written_out in (False, True):
        train, test = loaders()
        mg.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 3), nn.Dropout(0.5))
        optimizer = mg.optim.SGD(model.parameters(), lr=0.1)
        if written_out:
            monitor = Monitor(progress=False)
            for x, y in monitor.epoch(train, 1):
                logits = model(x)
                loss = mg.nn.functional.cross_entropy(logits, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                monitor.step(loss, logits, y)
            record = monitor.end_epoch(lambda: evaluate(model, test))
        else:
            record = Trainer(model, optimizer, progress=False).fit(train, test, epochs=1)[0]
        records.append({key: value for key, value in record.items() if "seconds" not in key})
    assert records[0] == records[1]
    assert set(records[0]) == {"epoch", "train_loss", "train_acc", "test_loss", "test_acc"}


def test_a_loop_left_early_closes_the_progress_bar(capsys):
    train, _ = loaders()
    monitor = Monitor(progress=True)
    for _ in monitor.epoch(train, 1):
        assert not monitor._bar.bar.disable  # the bar is showing
        break
    assert monitor._bar.bar.disable, "tqdm marks a closed bar disabled"


def test_a_nan_loss_stops_training_naming_epoch_and_step():
    model = nn.Sequential(nn.Linear(8, 3))
    train, test = loaders()
    trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.1), progress=False)
    trainer.fit(train, test, epochs=1)
    model[0].weight.data[0, 0] = math.nan
    with pytest.raises(TrainingDiverged, match=r"the loss became nan in epoch 2 by step 1"):
        trainer.fit(train, test, epochs=1)
    assert len(trainer.history) == 1


@pytest.mark.parametrize("refresh_seconds", [0.0, math.inf], ids=["read-every-step", "read-at-close"])
def test_progress_weights_each_batch_by_its_size_however_often_it_reads(refresh_seconds):
    """The bar keeps per-step values and folds them at fixed steps: the epoch means come out the same."""
    # device "cuda:0" only switches off the per-step check that the CPU gets; the values here are NumPy's
    bar = EpochProgress(3, epoch=1, device="cuda:0", enabled=False, refresh_seconds=refresh_seconds)
    for loss, correct, size in [(1.0, 10, 16), (0.5, 12, 16), (2.0, 1, 4)]:
        bar.update(np.float32(loss), np.int64(correct), size)
    loss_sum, correct, count = bar.finish()
    mean_loss, accuracy = loss_sum / count, correct / count
    assert mean_loss == pytest.approx((1.0 * 16 + 0.5 * 16 + 2.0 * 4) / 36)
    assert accuracy == pytest.approx(23 / 36)


def test_progress_gives_bit_identical_means_whenever_it_reads():
    """Two runs of the same steps used to differ in the last bits of the training loss, because the kept values
    were folded into one sum whenever the bar happened to read (every 0.5 s of wall time)."""
    rng = np.random.default_rng(0)
    steps = [(np.float32(rng.uniform(0.1, 3.0)), np.int64(rng.integers(0, 256)), 256) for _ in range(235)]
    results = []
    for reads in ([], list(range(0, 235, 7)), list(range(235)), [3, 64, 65, 200]):
        bar = EpochProgress(235, epoch=1, enabled=False, refresh_seconds=math.inf)
        for step, values in enumerate(steps):
            bar.update(*values)
            if step in reads:
                bar.read()
            assert len(bar.losses) < EpochProgress.FOLD_EVERY  # the kept values stay few
        results.append(bar.finish())
    assert all(result == results[0] for result in results), results


def test_a_monitor_step_outside_an_epoch_says_where_it_belongs():
    """It used to fail with an AttributeError naming the Monitor's private attributes."""
    monitor = Monitor(progress=False)
    logits, labels = mg.tensor(np.random.default_rng(0).standard_normal((4, 3))), mg.tensor(np.array([0, 1, 2, 0]))
    with pytest.raises(RuntimeError, match=r"loop over monitor.epoch\(loader, epoch\) first"):
        monitor.step(F.cross_entropy(logits, labels), logits, labels)
    with pytest.raises(RuntimeError, match=r"loop over monitor.epoch"):
        monitor.end_epoch()


def test_progress_on_a_gpu_finds_a_nan_loss_when_it_reads():
    bar = EpochProgress(2, epoch=4, device="cuda:0", enabled=False, refresh_seconds=math.inf)
    bar.update(np.float32(math.nan), np.int64(0), 8)  # no read yet: no sync per step on a GPU
    bar.update(np.float32(1.0), np.int64(3), 8)
    with pytest.raises(TrainingDiverged, match=r"the loss became nan in epoch 4 by step 2"):
        bar.finish()


class NanWhenEvaluating(nn.Module):
    """The identity while training; NaN in eval mode: a finite training loss with a NaN test loss."""

    def forward(self, x):
        return x if self.training else x * math.nan


def test_a_nan_test_loss_stops_training_even_when_the_training_loss_is_finite():
    model = nn.Sequential(nn.Linear(8, 3), NanWhenEvaluating())
    train, test = loaders()
    trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.1), progress=False)
    with pytest.raises(TrainingDiverged, match="the test loss became nan in epoch 1") as caught:
        trainer.fit(train, test, epochs=2)
    assert trainer.history == [] and math.isfinite(caught.value.record["train_loss"])


def test_json_is_written_strictly(tmp_path):
    import json

    from minigrad.files import save_json

    save_json(
        {"loss": math.nan, "values": [1.0, math.inf, -math.inf], "nested": {"x": np.float64(2.0)}}, tmp_path / "m.json"
    )
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"loss": None, "values": [1.0, None, None], "nested": {"x": 2.0}}


def test_checkpoint_round_trip_of_arrays_and_record(tmp_path):
    from minigrad.checkpoint import load_checkpoint, save_checkpoint

    arrays = {"model/0.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "optimizer/0/momentum_buffer": np.ones(2)}
    save_checkpoint(tmp_path / "c.npz", arrays, {"epoch": 3, "rng": mg.get_rng_state(), "x": math.nan})
    loaded, meta = load_checkpoint(tmp_path / "c.npz")
    assert set(loaded) == set(arrays) and meta["epoch"] == 3 and meta["x"] is None
    for name, value in arrays.items():
        np.testing.assert_array_equal(loaded[name], value)
        assert loaded[name].dtype == value.dtype
    with pytest.raises(ValueError, match="not a training checkpoint"):
        from minigrad.checkpoint import save_state_dict

        save_state_dict({"w": np.zeros(2)}, tmp_path / "plain.npz")
        load_checkpoint(tmp_path / "plain.npz")


def test_random_state_round_trip_continues_the_same_draws():
    mg.manual_seed(5)
    mg.rand(10)
    state = mg.get_rng_state()
    expected = mg.rand(4).numpy()
    mg.manual_seed(99)
    mg.rand(3)
    mg.set_rng_state(state)
    np.testing.assert_array_equal(mg.rand(4).numpy(), expected)
    loader = DataLoader(ArrayDataset(np.zeros((20, 2), np.uint8), np.arange(20)), 5, shuffle=True, seed=0)
    list(loader)
    saved = loader.state_dict()
    first = [y.numpy().tolist() for _, y in loader]
    loader.load_state_dict(saved)
    assert [y.numpy().tolist() for _, y in loader] == first
