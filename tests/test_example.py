"""`python -m examples.dropout_mlp` end to end on a small synthetic IDX dataset, and its bad inputs."""

import json
import os
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

import minigrad as mg
from minigrad.chapter import dropout_mlp
from minigrad.checkpoint import load_state_dict

from .fakedata import HAVE_REAL, REAL_FOLDER, REAL_MISSING

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def base_args(data, out, *extra):
    return ["--data-dir", str(data), "--skip-checksum", "--no-progress", "--out", str(out), *extra]


@pytest.mark.parametrize("impl", ["concise", "scratch"])
def test_cli_trains_and_writes_its_files(fake_data, tmp_path, impl, capsys):
    out = tmp_path / "run"
    assert dropout_mlp.main(base_args(fake_data, out, "--impl", impl, "--epochs", "3", "--batch-size", "32")) == 0
    printed = capsys.readouterr().out
    assert "epoch   3" in printed and "step     P50" in printed and "final test accuracy" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"impl", "device", "config", "epochs", "final_test_acc", "timings"}
    assert metrics["impl"] == impl and metrics["device"] == "cpu" and metrics["config"]["epochs"] == 3
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    for record in metrics["epochs"]:
        assert set(record) >= {"epoch", "train_loss", "train_acc", "test_acc", "seconds", "eval_seconds"}
    assert set(metrics["timings"]) == {"step", "epoch", "eval"}
    assert all(record["seconds"] > 0 and record["eval_seconds"] > 0 for record in metrics["epochs"])
    # An epoch holds ten batches of 32 (300 examples), each one step: counts, not times (tests assert no timings:
    # the machines are shared).
    assert [metrics["timings"][phase]["count"] for phase in ("step", "epoch", "eval")] == [30, 3, 3]
    assert metrics["status"] == "completed"
    assert metrics["step"] == ("planned" if impl == "concise" else "eager: --impl scratch runs its own loop")
    assert set(metrics["data"]["folders"].values()) == {str(fake_data)} and len(metrics["data"]["sha256"]) == 4
    # Chance is 0.1 with a standard deviation of sqrt(0.1 * 0.9 / 100) = 0.03 on the 100 test examples.
    assert metrics["final_test_acc"] > 0.25
    image = matplotlib.image.imread(out / "curves.png")
    assert image.ndim == 3 and image.shape[0] > 100
    state = load_state_dict(out / "model.npz")
    if impl == "concise":
        model = dropout_mlp.concise_mlp([256, 256], 0.2, 0.5, "cpu")
        model.load_state_dict(state)
        assert [k for k, _ in model.named_parameters()] == list(state)
    else:
        assert list(state) == ["W1", "b1", "W2", "b2", "W3", "b3"] and state["W1"].shape == (784, 256)
    assert not [name for name in os.listdir(out) if name.endswith(".part")]


def test_module_runs_as_a_command(fake_data, tmp_path):
    out = tmp_path / "cmd"
    result = subprocess.run(
        [sys.executable, "-m", "examples.dropout_mlp", *base_args(fake_data, out, "--epochs", "1", "--no-plot")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert result.returncode == 0, result.stderr
    assert (out / "metrics.json").exists() and (out / "model.npz").exists() and not (out / "curves.png").exists()


def test_cosine_schedule_records_the_learning_rate_of_each_epoch(fake_data, tmp_path):
    out = tmp_path / "cos"
    assert dropout_mlp.main(base_args(fake_data, out, "--no-plot", "--epochs", "4", "--lr-schedule", "cosine")) == 0
    rates = [e["lr"] for e in json.loads((out / "metrics.json").read_text())["epochs"]]
    expected = [0.5 * (1 + np.cos(np.pi * epoch / 4)) / 2 for epoch in range(4)]
    np.testing.assert_allclose(rates, expected)


def test_environment_sets_epoch_and_limit_defaults_and_flags_win(fake_data, tmp_path, monkeypatch):
    monkeypatch.setenv("MAX_EPOCH", "2")
    monkeypatch.setenv("DATASET_LIMIT", "64")
    out = tmp_path / "env"
    assert dropout_mlp.main(base_args(fake_data, out, "--no-plot", "--batch-size", "32")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2 and metrics["config"]["limit"] == 64
    assert dropout_mlp.main(base_args(fake_data, out, "--no-plot", "--epochs", "1")) == 0
    assert len(json.loads((out / "metrics.json").read_text())["epochs"]) == 1


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dropout1", "1.5"], "argument --dropout1: must be in [0, 1], got 1.5"),
        (["--dropout2", "-0.1"], "argument --dropout2: must be in [0, 1], got -0.1"),
        (["--lr", "0"], "argument --lr: must be a finite number > 0, got 0"),
        (["--lr", "-1"], "argument --lr: must be a finite number > 0"),
        (["--lr", "inf"], "argument --lr: must be a finite number > 0, got inf"),
        (["--lr", "nan"], "argument --lr: must be a finite number > 0, got nan"),
        (["--seed", "-1"], "argument --seed: must be an integer in [0, 2**63 - 1], got -1"),
        (["--hidden", "1000000", "1000000"], "argument --hidden: a 784-1000000-1000000-10 MLP needs about"),
        (["--out", "README.md"], "argument --out: cannot write into 'README.md'"),
        (["--out", "README.md/run"], "argument --out: cannot write into 'README.md/run'"),
        (["--data-dir", "README.md"], "argument --data-dir: 'README.md' is a file"),
        (
            ["--resume", "--out", "runs/no-such-run"],
            "argument --resume: there is no checkpoint.npz in 'runs/no-such-run'",
        ),
        (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
        (["--device", "tpu"], "argument --device: unknown device 'tpu'"),
        (["--limit", "0"], "argument --limit: must be at least 1, got 0"),
        (["--epochs", "two"], "argument --epochs: expected an integer, got 'two'"),
        (["--impl", "scratch", "--lr-schedule", "cosine"], "implemented for --impl concise only"),
        (["--impl", "scratch", "--eager"], "implemented for --impl concise only"),
    ],
)
def test_bad_flags_exit_2_with_one_line(flags, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # README.md is a file there
    with pytest.raises(SystemExit) as caught:
        dropout_mlp.main(flags)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not os.path.exists(os.path.join(ROOT, "runs", "no-such-run"))


def test_bad_environment_value_exits_2(monkeypatch, capsys):
    monkeypatch.setenv("MAX_EPOCH", "ten")
    with pytest.raises(SystemExit) as caught:
        dropout_mlp.main([])
    assert caught.value.code == 2 and "environment variable MAX_EPOCH" in capsys.readouterr().err


def test_the_planned_run_and_the_eager_run_end_alike_bit_for_bit(fake_data, tmp_path, capsys):
    """The default (the planned step) against --eager: the same records, the same saved weights."""
    runs = {}
    for name, flags in (("planned", []), ("eager", ["--eager"])):
        out = tmp_path / name
        assert dropout_mlp.main(base_args(fake_data, out, "--epochs", "3", "--batch-size", "32", *flags)) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        records = [{k: v for k, v in r.items() if "seconds" not in k} for r in metrics["epochs"]]
        runs[name] = metrics["step"], records, load_state_dict(out / "model.npz")
    assert runs["planned"][0] == "planned" and runs["eager"][0] == "eager: asked for"
    assert runs["planned"][1] == runs["eager"][1]
    for key, value in runs["planned"][2].items():
        np.testing.assert_array_equal(value, runs["eager"][2][key])
    assert "planned step off" not in capsys.readouterr().err


@pytest.mark.skipif(not mg.cuda_available(), reason="no CUDA: CuPy is not installed or finds no GPU")
@pytest.mark.parametrize("flag, step", [([], "planned, recorded as a CUDA graph"), (["--eager"], "eager: asked for")])
def test_cuda_records_the_planned_step_unless_told_not_to(fake_data, tmp_path, flag, step, capsys):
    out = tmp_path / "run"
    assert (
        dropout_mlp.main(base_args(fake_data, out, "--device", "cuda", "--epochs", "3", "--batch-size", "32", *flag))
        == 0
    )
    assert "planned step off" not in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == step and metrics["status"] == "completed"
    assert [metrics["timings"][phase]["count"] for phase in ("step", "epoch", "eval")] == [30, 3, 3]
    assert metrics["final_test_acc"] > 0.25


@pytest.mark.skipif(mg.cuda_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_one_clear_message(fake_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        dropout_mlp.main(base_args(fake_data, tmp_path / "x", "--device", "cuda"))
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "argument --device: device 'cuda:0'" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists(), "checked before any work"


def test_missing_data_is_one_clear_message(fake_data, tmp_path, capsys):
    assert dropout_mlp.main(base_args(tmp_path / "empty", tmp_path / "x")) == 1
    err = capsys.readouterr().err
    assert "could not download" in err and "apt-get install dataset-fashion-mnist" in err and "Traceback" not in err


def test_corrupt_data_file_is_one_clear_message(fake_data, tmp_path, capsys):
    (fake_data / "train-images-idx3-ubyte.gz").write_bytes(b"<html>404</html>")
    assert dropout_mlp.main(base_args(fake_data, tmp_path / "x")) == 1
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz" in err and "HTML" in err


def test_official_checksum_is_checked_by_default(fake_data, tmp_path, capsys):
    assert dropout_mlp.main(["--data-dir", str(fake_data), "--no-progress", "--out", str(tmp_path / "x")]) == 1
    assert "is not the official" in capsys.readouterr().err


def test_debug_shows_the_traceback(fake_data, tmp_path):
    with pytest.raises(mg.data.DatasetError):
        dropout_mlp.main(base_args(tmp_path / "empty", tmp_path / "x", "--debug"))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow that this test provokes
def test_diverging_loss_stops_with_epoch_and_step_and_keeps_valid_metrics(fake_data, tmp_path, capsys):
    out = tmp_path / "nan"
    code = dropout_mlp.main(base_args(fake_data, out, "--lr", "1e38", "--epochs", "3", "--batch-size", "32"))
    err = capsys.readouterr().err
    assert code == 1 and "the loss became" in err and "in epoch 1 by step" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert "stopped" in metrics and metrics["epochs"] == []


# --- the real dataset, when present -----------------------------------------------------------------


@pytest.mark.skipif(not HAVE_REAL, reason=REAL_MISSING)
def test_two_epochs_on_5000_real_examples(tmp_path, capsys):
    out = tmp_path / "real"
    assert (
        dropout_mlp.main(
            [
                "--data-dir",
                REAL_FOLDER,
                "--epochs",
                "2",
                "--limit",
                "5000",
                "--no-progress",
                "--no-plot",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["limit"] == 5000 and len(metrics["epochs"]) == 2
    # Chance is 0.1 with a standard deviation of sqrt(0.1 * 0.9 / 5000) = 0.004 on 5000 test examples.
    assert metrics["final_test_acc"] > 0.15
    losses = [e["train_loss"] for e in metrics["epochs"]]
    assert np.isfinite(losses).all() and losses[1] < losses[0]


# --- a run's files never contradict each other; Ctrl-C keeps the last epoch; --resume continues exactly ---------


def strict_json(path):
    """Parse as the JSON standard does: NaN and Infinity are not JSON."""

    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}, which is not valid JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_nan_test_loss_stops_the_run_with_strict_json(fake_data, tmp_path, monkeypatch, capsys):
    """--lr 50 on the real data used to exit 0 with a finite training loss, a NaN test loss and NaN in the JSON."""
    import minigrad.train

    monkeypatch.setattr(minigrad.train.Trainer, "evaluate", lambda *args, **kwargs: {"loss": float("nan"), "acc": 0.1})
    out = tmp_path / "nan-test"
    assert dropout_mlp.main(base_args(fake_data, out, "--epochs", "3", "--batch-size", "32")) == 1
    assert "the test loss became nan in epoch 1" in capsys.readouterr().err
    metrics = strict_json(out / "metrics.json")
    assert metrics["status"] == "diverged" and metrics["epochs"] == [] and metrics["final_test_acc"] is None
    assert metrics["diverged_epoch"]["test_loss"] is None and np.isfinite(metrics["diverged_epoch"]["train_loss"])
    assert sorted(os.listdir(out)) == ["curves.png", "metrics.json"], (
        "no checkpoint (no epoch finished well), no model; the curves show the epoch that diverged"
    )


def test_a_run_that_fails_before_its_first_epoch_leaves_the_previous_run_as_it_was(
    fake_data, tmp_path, monkeypatch, capsys
):
    """It used to empty --out first, then fail: a completed run's model, metrics and curves were lost."""
    out = tmp_path / "run"
    assert dropout_mlp.main(base_args(fake_data, out, "--epochs", "2", "--batch-size", "32")) == 0
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    assert set(before) == {"metrics.json", "checkpoint.npz", "model.npz", "curves.png"}
    import minigrad.train

    def fail(*args, **kwargs):
        raise OSError("the disk went away")

    monkeypatch.setattr(minigrad.train.Trainer, "evaluate", lambda self, *args: fail(*args))
    assert dropout_mlp.main(base_args(fake_data, out, "--epochs", "2", "--batch-size", "32", "--seed", "1")) == 1
    assert "error: the disk went away" in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before


def test_a_run_that_fails_after_its_first_epoch_replaces_the_previous_run(fake_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert dropout_mlp.main(base_args(fake_data, out, "--epochs", "2", "--batch-size", "32")) == 0
    import minigrad.train

    calls = []

    def fail_second_time(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("the disk went away")
        return {"loss": 1.0, "acc": 0.5}

    monkeypatch.setattr(minigrad.train.Trainer, "evaluate", lambda self, *args: fail_second_time(*args))
    assert dropout_mlp.main(base_args(fake_data, out, "--epochs", "3", "--batch-size", "32", "--seed", "1")) == 1
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "metrics.json"], "no model or curves of the earlier run"
    metrics = strict_json(out / "metrics.json")
    assert metrics["status"] == "failed" and metrics["stopped"] == "OSError: the disk went away"
    assert metrics["config"]["seed"] == 1 and [e["epoch"] for e in metrics["epochs"]] == [1]


def interrupt_at_step(monkeypatch, step):
    """Raise KeyboardInterrupt (what Ctrl-C raises) at the given training step, counted from 1 across epochs."""
    from minigrad import monitor

    original, count = monitor.EpochProgress.update, [0]

    def update(self, *args):
        count[0] += 1
        if count[0] == step:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(monitor.EpochProgress, "update", update)


TRAINING_FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")


@pytest.mark.parametrize("impl, extra", [("concise", ["--lr-schedule", "cosine"]), ("scratch", [])])
def test_interrupted_then_resumed_equals_uninterrupted(fake_data, tmp_path, monkeypatch, capsys, impl, extra):
    flags = ["--impl", impl, "--epochs", "4", "--batch-size", "32", "--no-plot", *extra]
    straight = tmp_path / "straight"
    assert dropout_mlp.main(base_args(fake_data, straight, *flags)) == 0

    stopped = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        interrupt_at_step(patch, 25)  # 10 steps per epoch: in the middle of epoch 3
        try:
            code = dropout_mlp.main(base_args(fake_data, stopped, *flags))
        except KeyboardInterrupt:  # escaping, it would stop pytest itself
            pytest.fail("Ctrl-C escaped main() instead of ending the run with status 130")
        assert code == 130
    err = capsys.readouterr().err
    assert err == f"interrupted: kept epoch 2 in {stopped}/checkpoint.npz; continue with --resume\n"
    metrics = strict_json(stopped / "metrics.json")
    assert metrics["status"] == "interrupted" and [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert sorted(os.listdir(stopped)) == ["checkpoint.npz", "metrics.json"]

    assert dropout_mlp.main(base_args(fake_data, stopped, *flags, "--resume")) == 0
    resumed, expected = strict_json(stopped / "metrics.json"), strict_json(straight / "metrics.json")
    assert resumed["status"] == "completed" and resumed["resumed_from_epoch"] == 2
    assert [{k: e[k] for k in TRAINING_FIELDS if k in e} for e in resumed["epochs"]] == [
        {k: e[k] for k in TRAINING_FIELDS if k in e} for e in expected["epochs"]
    ]
    weights, reference = load_state_dict(stopped / "model.npz"), load_state_dict(straight / "model.npz")
    assert list(weights) == list(reference)
    for name in reference:
        np.testing.assert_array_equal(weights[name], reference[name], err_msg=name)


def test_resume_refuses_a_checkpoint_of_another_run(fake_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert dropout_mlp.main(base_args(fake_data, out, "--epochs", "1", "--batch-size", "32", "--no-plot")) == 0
    code = dropout_mlp.main(base_args(fake_data, out, "--epochs", "2", "--batch-size", "64", "--resume"))
    assert code == 1
    assert "is from another run: it had --batch-size 32 (now 64)" in capsys.readouterr().err
    assert (out / "model.npz").exists() and strict_json(out / "metrics.json")["status"] == "completed"


def test_ctrl_c_prints_one_line_and_exits_130(fake_data, tmp_path):
    """A real SIGINT to the command: one line on stderr, status 130, metrics marked, the checkpoint kept."""
    import signal

    out = tmp_path / "sigint"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "examples.dropout_mlp",
            *base_args(fake_data, out, "--epochs", "100000", "--batch-size", "16"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in process.stdout:  # wait until an epoch has finished and been kept
            if line.startswith("epoch   2"):
                break
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130
    assert err.count("\n") == 1 and err.startswith("interrupted: kept epoch ") and "Traceback" not in err
    metrics = strict_json(out / "metrics.json")
    assert metrics["status"] == "interrupted" and len(metrics["epochs"]) >= 2
    assert f"kept epoch {len(metrics['epochs'])} in" in err
