"""A finished run is never lost and no two files of a run disagree: `python -m examples.dropout_mlp` under faults.

Mistyped and truncated data, damaged checkpoints, two runs on one folder, a killed run, resuming a finished
run, and a loss that explodes but stays finite. Each case failed before this round (see the issue's list).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minigrad import cli
from minigrad.chapter import dropout_mlp
from minigrad.checkpoint import load_checkpoint, save_checkpoint

from .test_example import ROOT, base_args, strict_json


def finished_run(data, out, *extra):
    assert dropout_mlp.main(base_args(data, out, "--epochs", "2", "--batch-size", "32", *extra)) == 0
    return snapshot(out)


def snapshot(out):
    return {name: (out / name).read_bytes() for name in sorted(os.listdir(out))}


def test_a_mistyped_data_dir_leaves_the_finished_run_alone(fake_data, tmp_path, capsys):
    out = tmp_path / "run"
    before = finished_run(fake_data, out)
    code = dropout_mlp.main(base_args(tmp_path / "no-such-folder", out, "--epochs", "2"))
    assert code == 1 and "error:" in capsys.readouterr().err
    assert snapshot(out) == before


def test_a_truncated_data_file_leaves_the_finished_run_alone(fake_data, tmp_path, capsys):
    out = tmp_path / "run"
    before = finished_run(fake_data, out)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in os.listdir(fake_data):
        content = (fake_data / name).read_bytes()
        (broken / name).write_bytes(content[: len(content) // 2] if "train-images" in name else content)
    assert dropout_mlp.main(base_args(broken, out, "--epochs", "2")) == 1
    assert capsys.readouterr().err.startswith("error: ")
    assert snapshot(out) == before


def damage(path, change):
    arrays, meta = load_checkpoint(path)
    arrays, meta = change(arrays, meta)
    save_checkpoint(path, arrays, meta)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda arrays, meta: ({k: v for k, v in arrays.items() if k != "model/3.weight"}, meta),
            "missing model/3.weight",
        ),
        (
            lambda arrays, meta: ({**arrays, "model/0.bias": arrays["model/0.bias"][:7]}, meta),
            "model/0.bias is float32 of shape (7,), the model needs float32 of shape (256,)",
        ),
        (
            lambda arrays, meta: ({**arrays, "model/0.bias": arrays["model/0.bias"].astype(np.float64)}, meta),
            "model/0.bias is float64",
        ),
        (lambda arrays, meta: ({**arrays, "extra": np.zeros(1)}, meta), "unexpected extra"),
        (lambda arrays, meta: (arrays, {k: v for k, v in meta.items() if k != "rng"}), "record's 'rng' is missing"),
        (lambda arrays, meta: (arrays, {**meta, "history": meta["history"][:1]}), "history does not hold its 2 epochs"),
        (lambda arrays, meta: (arrays, {**meta, "optimizer": {"state": {}}}), "optimizer record is incomplete"),
        (lambda arrays, meta: (arrays, {**meta, "loader": {}}), "cannot be restored (KeyError"),
        (
            lambda arrays, meta: (arrays, {**meta, "rng": {"unsaved": [], "seed": 0, "cpu": {"state": 1}}}),
            "cannot be restored",
        ),
    ],
    ids=[
        "a missing array",
        "a wrong shape",
        "a wrong dtype",
        "an extra array",
        "no rng",
        "a short history",
        "no optimizer groups",
        "no shuffling state",
        "a broken generator state",
    ],
)
def test_a_damaged_checkpoint_is_one_line_and_nothing_is_lost(fake_data, tmp_path, capsys, change, message):
    out = tmp_path / "run"
    finished_run(fake_data, out)
    damage(out / "checkpoint.npz", change)
    before = snapshot(out)
    code = dropout_mlp.main(base_args(fake_data, out, "--epochs", "3", "--batch-size", "32", "--resume"))
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and message in err and "checkpoint.npz" in err, err
    assert snapshot(out) == before, "model.npz, metrics.json and curves.png are as the finished run left them"


def test_a_checkpoint_overwritten_with_text_never_suggests_unpickling(fake_data, tmp_path, capsys):
    out = tmp_path / "run"
    finished_run(fake_data, out)
    (out / "checkpoint.npz").write_text("this is not a checkpoint\n")
    assert dropout_mlp.main(base_args(fake_data, out, "--epochs", "3", "--batch-size", "32", "--resume")) == 1
    err = capsys.readouterr().err
    assert "checkpoint.npz" in err and "not" in err and "pickle" not in err.lower() and err.count("\n") == 1, err
    assert (out / "model.npz").exists()


def test_a_second_run_on_a_folder_in_use_is_refused(fake_data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    parser = dropout_mlp.build_parser()
    held = cli.lock_folder(parser, str(out))  # as a run in progress holds it
    try:
        with pytest.raises(SystemExit) as stopped:
            dropout_mlp.main(base_args(fake_data, out, "--epochs", "1"))
        assert stopped.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is in use by another run" in err
        assert os.listdir(out) == []
    finally:
        cli.unlock_folder(held)
    assert dropout_mlp.main(base_args(fake_data, out, "--epochs", "1", "--batch-size", "32")) == 0


def test_two_processes_on_one_folder_one_is_refused_and_a_killed_one_leaves_no_lock(fake_data, tmp_path):
    out = tmp_path / "run"

    def command(*flags):
        return [
            sys.executable,
            "-m",
            "examples.dropout_mlp",
            *base_args(fake_data, out, "--batch-size", "16", "--no-plot", *flags),
        ]

    env = {**os.environ, "PYTHONPATH": ROOT}
    first = subprocess.Popen(
        command("--epochs", "100000"), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        for line in first.stdout:  # wait until it trains (and so holds the folder)
            if line.startswith("epoch   1"):
                break
        second = subprocess.run(
            command("--epochs", "100000"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 2 and "is in use by another run" in second.stderr
        assert second.stderr.count("\n") == 1
        first.send_signal(signal.SIGKILL)  # kill -9: no handler runs, nothing is cleaned up
        first.wait(timeout=60)
    finally:
        first.kill()
        first.stdout.close()
        first.stderr.close()
    metrics = strict_json(out / "metrics.json")
    history = load_checkpoint(out / "checkpoint.npz")[1]["history"]
    # each epoch writes the checkpoint, then metrics.json: a kill between the two leaves the checkpoint one
    # epoch ahead, never behind, and --resume goes on from the checkpoint
    assert metrics["status"] == "running" and len(history) - len(metrics["epochs"]) in (0, 1)
    assert [r["epoch"] for r in history[: len(metrics["epochs"])]] == [r["epoch"] for r in metrics["epochs"]]
    (out / ".checkpoint.npz.left.part").write_bytes(b"half a file")  # as a kill during a write leaves
    third = subprocess.run(
        command("--epochs", str(len(history) + 1), "--resume"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert third.returncode == 0, third.stderr
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "metrics.json", "model.npz"], "the .part file is gone"


@pytest.mark.parametrize("metrics_epochs", [1, 2])
def test_resuming_a_run_killed_after_its_last_checkpoint_finishes_it(fake_data, tmp_path, capsys, metrics_epochs):
    """Killed after the last epoch's checkpoint, before metrics.json (1 of 2 epochs listed) or before the files
    that end a run (2 listed, no model.npz): --resume with the same --epochs has nothing to train, and writes
    what a run that was never killed would have (it said "nothing to do" and left the run unfinished)."""
    out, straight = tmp_path / "run", tmp_path / "straight"
    finished_run(fake_data, straight)
    finished_run(fake_data, out)
    metrics = strict_json(out / "metrics.json")
    metrics.update(status="running", epochs=metrics["epochs"][:metrics_epochs], timings={})
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / "model.npz").unlink()
    capsys.readouterr()
    assert dropout_mlp.main(base_args(fake_data, out, "--epochs", "2", "--batch-size", "32", "--resume")) == 0
    assert capsys.readouterr().out.startswith("nothing to train:")
    finished, expected = strict_json(out / "metrics.json"), strict_json(straight / "metrics.json")
    assert finished["status"] == "completed"
    assert [r["test_acc"] for r in finished["epochs"]] == [r["test_acc"] for r in expected["epochs"]]
    assert (out / "model.npz").read_bytes() == (straight / "model.npz").read_bytes()
    assert sorted(os.listdir(out)) == sorted(os.listdir(straight))
    capsys.readouterr()
    assert dropout_mlp.main(base_args(fake_data, out, "--epochs", "2", "--batch-size", "32", "--resume")) == 0
    assert capsys.readouterr().out.startswith("nothing to do:")  # now it is finished


def test_resuming_a_finished_run_is_nothing_to_do(fake_data, tmp_path, capsys):
    out = tmp_path / "run"
    before = finished_run(fake_data, out)
    capsys.readouterr()
    for epochs in ("1", "2"):
        assert dropout_mlp.main(base_args(fake_data, out, "--epochs", epochs, "--batch-size", "32", "--resume")) == 0
        printed = capsys.readouterr().out
        assert printed.startswith("nothing to do:") and printed.count("\n") == 1
        assert snapshot(out) == before, "metrics.json keeps its 2 epochs and its timings"


def test_resuming_a_finished_run_with_more_epochs_extends_it(fake_data, tmp_path):
    out = tmp_path / "run"
    finished_run(fake_data, out)
    straight = tmp_path / "straight"
    assert dropout_mlp.main(base_args(fake_data, straight, "--epochs", "3", "--batch-size", "32")) == 0
    assert dropout_mlp.main(base_args(fake_data, out, "--epochs", "3", "--batch-size", "32", "--resume")) == 0
    metrics, expected = strict_json(out / "metrics.json"), strict_json(straight / "metrics.json")
    assert metrics["status"] == "completed" and metrics["config"]["epochs"] == 3
    assert [e["train_loss"] for e in metrics["epochs"]] == [e["train_loss"] for e in expected["epochs"]]
    assert (out / "model.npz").read_bytes() != b"" and (out / "curves.png").exists()


def test_a_loss_that_explodes_but_stays_finite_is_divergence(fake_data, tmp_path, capsys):
    """--lr 5 used to end with a training loss of 1e5, chance accuracy, status completed and exit 0."""
    out = tmp_path / "run"
    code = dropout_mlp.main(base_args(fake_data, out, "--epochs", "3", "--batch-size", "32", "--lr", "20"))
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "above 23.03" in err and "smaller learning rate" in err
    metrics = strict_json(out / "metrics.json")
    assert metrics["status"] == "diverged" and metrics["diverged_epoch"]["train_loss"] > 23.03
    assert (out / "curves.png").exists(), "the learner sees the curve that diverged"
    assert not (out / "model.npz").exists()


def test_the_divergence_rule_leaves_ordinary_runs_alone(fake_data, tmp_path):
    out = tmp_path / "run"
    assert dropout_mlp.main(base_args(fake_data, out, "--epochs", "3", "--batch-size", "32", "--lr", "0.5")) == 0
    assert json.loads((out / "metrics.json").read_text())["status"] == "completed"


def test_the_header_names_the_data_folder(fake_data, tmp_path, capsys):
    assert dropout_mlp.main(base_args(fake_data, tmp_path / "run", "--epochs", "1", "--batch-size", "32")) == 0
    assert f"from {fake_data} on cpu" in capsys.readouterr().out.splitlines()[0]


def test_a_killed_runs_part_files_are_removed_by_the_next_run(fake_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in (".checkpoint.npz.abc123.part", ".metrics.json.x.part", "notes.part"):
        (out / name).write_text("left")
    started = time.time()
    assert dropout_mlp.main(base_args(fake_data, out, "--epochs", "1", "--batch-size", "32")) == 0
    assert time.time() - started < 120
    assert "notes.part" in os.listdir(out), "a file that is not one of the run's own is left alone"
    assert not [name for name in os.listdir(out) if name.startswith(".")]
