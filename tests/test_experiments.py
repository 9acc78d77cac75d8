"""`python -m examples.dropout_experiments all --quick`: every experiment runs and writes its report."""

import json
import os

import matplotlib.image
import pytest

from minigrad.chapter import dropout_experiments
from minigrad.chapter.experiments import exercises, summaries
from minigrad.chapter.experiments.settings import Setting

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiments")
    assert dropout_experiments.main(["all", "--quick", "--seeds", "0", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("name", list(exercises.EXPERIMENTS))
def test_each_experiment_writes_results_report_and_plots(quick_run, name):
    folder = quick_run / name
    results = json.loads((folder / "results.json").read_text())
    assert results["name"] == name and results["results"] and "--quick" in results["command"]
    report = (folder / "report.md").read_text()
    assert report.startswith(f"# {name}") and "| --- |" in report and "Command: `python -m " in report
    for plot in folder.glob("*.png"):
        assert matplotlib.image.imread(plot).ndim == 3
        assert f"]({plot.name})" in report


def test_summaries_have_the_documented_fields(quick_run):
    results = json.loads((quick_run / "swap" / "results.json").read_text())["results"]
    assert len(results) == 16  # the 4 x 4 grid of (p1, p2)
    summary = results["dropout (0.5, 0.2)"]["summary"]
    assert set(summary) == {"last3_test_acc", "final_test_acc", "best_test_acc", "gap"}
    assert 0.0 <= summary["final_test_acc"]["mean"] <= summary["best_test_acc"]["mean"] <= 1.0


def test_one_seed_makes_no_significance_claim(quick_run):
    """The quick run has one seed: a standard error of 0 used to call every difference real."""
    results = json.loads((quick_run / "swap" / "results.json").read_text())["results"]
    assert all(r["summary"]["last3_test_acc"]["sd"] is None for r in results.values())
    for name in ("swap", "with-without", "dropconnect", "noise", "weight-decay"):
        report = (quick_run / name / "report.md").read_text()
        assert "real difference" not in report and "not distinguishable" not in report
    assert "no claim either way" in (quick_run / "swap" / "report.md").read_text()


def summary(mean, sd, n):
    return {"summary": {"last3_test_acc": {"mean": mean, "sd": sd, "n": n}}}


def test_compare_judges_only_with_a_standard_error():
    a, b, c, one = (Setting(label) for label in "a b c one".split())
    results = {
        a: summary(0.85, 0.002, 3),
        b: summary(0.80, 0.003, 3),
        c: summary(0.849, 0.01, 3),
        one: summary(0.9, None, 1),
    }
    assert "a real difference" in summaries.compare(results, a, b)
    assert "not distinguishable" in summaries.compare(results, a, c)
    assert "no claim either way" in summaries.compare(results, a, one)


@pytest.mark.parametrize(
    "wrong, right, says",
    [
        ([2.303, 2.303], [2.303, 2.303, 2.303], "does not tell mistakes from correct predictions"),
        ([0.9, 0.8], [0.2, 0.3], "less certain where it is wrong (by 0.600 nats)"),
        ([0.1], [0.5, 0.7], "the entropy does not flag them"),
        ([], [0.5], "classified correctly"),
    ],
)
def test_the_entropy_sentence_follows_the_numbers(wrong, right, says):
    import numpy as np

    sentence = summaries.entropy_sentence(np.array(wrong), np.array(right))
    assert says in sentence
    assert ("flags" in sentence or "goes with likelier mistakes" in sentence) == (says.startswith("less certain"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["swap", "--device", "tpu"], "argument --device: unknown device 'tpu'"),
        (["swap", "--seeds", "-1"], "argument --seeds: must be an integer in [0, 2**63 - 1], got -1"),
        (["swap", "--seeds", "0", "0"], "argument --seeds: each seed once"),
        (["swap", "--lr", "0"], "argument --lr: must be a finite number > 0, got 0"),
        (["swap", "--lr", "inf"], "argument --lr: must be a finite number > 0, got inf"),
        (["swap", "--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
        (["swap", "--hidden", "1000000", "1000000"], "argument --hidden: a 784-1000000-1000000-10 MLP needs about"),
        (["swap", "--out", "README.md"], "argument --out: cannot write into 'README.md'"),
        (["swap", "--data-dir", "README.md"], "argument --data-dir: 'README.md' is a file"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_flags_exit_2_with_one_line(flags, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as caught:
        dropout_experiments.main(flags)
    err = capsys.readouterr().err
    assert caught.value.code == 2 and err.count("\n") == 1 and message in err


def test_missing_data_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    from minigrad.data import fashion_mnist

    monkeypatch.setattr(fashion_mnist, "MIRRORS", ("http://127.0.0.1:9/",))
    code = dropout_experiments.main(["swap", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: could not download") and "Traceback" not in err
