"""The notebooks in examples/notebooks: committed without outputs, and every cell runs (CI executes them).

Each runs from a copy in an empty folder outside the repository, against the installed package, as a
notebook a learner downloads from the site does.
"""

import json
import os
import shutil
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(ROOT, "examples", "notebooks")
NOTEBOOKS = sorted(name for name in os.listdir(FOLDER) if name.endswith(".ipynb"))


def test_both_notebooks_are_there():
    assert NOTEBOOKS == ["autograd.ipynb", "dropout.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_are_committed_without_outputs(name):
    """Outputs would go stale and bloat the diffs: `jupyter nbconvert --clear-output --inplace` before committing."""
    with open(os.path.join(FOLDER, name)) as file:
        notebook = json.load(file)
    dirty = [
        index
        for index, cell in enumerate(notebook["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, f"{name}: code cells {dirty} have outputs or execution counts; clear them before committing"


def execute(name):
    """Run every cell of a notebook in a fresh kernel; return the code cells' outputs and the seconds it took."""
    nbformat = pytest.importorskip("nbformat", reason="executing notebooks needs the dev extra: nbformat")
    nbclient = pytest.importorskip("nbclient", reason="executing notebooks needs the dev extra: nbclient")
    pytest.importorskip("ipykernel", reason="executing notebooks needs the dev extra: ipykernel")
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(os.path.join(FOLDER, name), folder)
        notebook = nbformat.read(os.path.join(folder, name), as_version=4)
        started = time.perf_counter()
        # A failing cell raises CellExecutionError, naming the cell and the error.
        nbclient.NotebookClient(
            notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": folder}}
        ).execute()
    seconds = time.perf_counter() - started
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.get("output_type") == "error"]
    print(f"{name}: {seconds:.1f} s")
    return outputs


def first_text(outputs):
    return next(output["text"] for output in outputs if output.get("output_type") == "stream")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name):
    outputs = execute(name)
    assert first_text(outputs).startswith("data: "), f"{name}'s first output must say which data it uses"
    pictures = [
        output
        for output in outputs
        if "image/png" in output.get("data", {}) or "image/svg+xml" in output.get("data", {})
    ]
    assert len(pictures) >= (3 if name == "dropout.ipynb" else 0)


def test_the_dropout_notebook_runs_on_the_synthetic_data_without_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGRAD_DATA", str(tmp_path))  # an empty folder: the only place looked in
    outputs = execute("dropout.ipynb")
    assert first_text(outputs).startswith("data: synthetic")
