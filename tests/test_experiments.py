"""`python -m examples.dropout_experiments all --quick`: every experiment runs and writes its report."""
import json

import matplotlib.image
import pytest

from examples import dropout_experiments


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiments")
    assert dropout_experiments.main(["all", "--quick", "--seeds", "0", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("name", list(dropout_experiments.EXPERIMENTS))
def test_each_experiment_writes_results_report_and_plots(quick_run, name):
    folder = quick_run / name
    results = json.loads((folder / "results.json").read_text())
    assert results["name"] == name and results["results"] and "--quick" in results["command"]
    report = (folder / "report.md").read_text()
    assert report.startswith(f"# {name}") and "| --- |" in report and "Command: `python -m examples." in report
    for plot in folder.glob("*.png"):
        assert matplotlib.image.imread(plot).ndim == 3
        assert f"]({plot.name})" in report


def test_summaries_have_the_documented_fields(quick_run):
    results = json.loads((quick_run / "swap" / "results.json").read_text())["results"]
    assert len(results) == 16  # the 4 x 4 grid of (p1, p2)
    summary = results["dropout (0.5, 0.2)"]["summary"]
    assert set(summary) == {"last3_test_acc", "final_test_acc", "best_test_acc", "gap"}
    assert 0.0 <= summary["final_test_acc"]["mean"] <= summary["best_test_acc"]["mean"] <= 1.0


def test_unknown_experiment_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        dropout_experiments.main(["nonsense"])
    assert caught.value.code == 2 and "invalid choice" in capsys.readouterr().err
