"""The notebooks run top to bottom in their small mode (DYSEN_NOTEBOOK_SMALL=1) and are stored without
outputs. Executed with nbclient in a fresh kernel that inherits this session's environment (8 host
CPU devices, the shared XLA compilation cache of tests/conftest.py)."""

from __future__ import annotations

import glob
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
# The CI notebooks, with what their small-mode run must show: pictures, and text in the outputs.
EXECUTED = {
    "train_tiny.ipynb": (3, ["final step 4"]),  # the DSG picture, loss plot, samples
    "bring_your_own_data.ipynb": (1, ["repaired 1, fell back 1", "this_file_is_missing.mp4"]),  # report, failures
}
TIMEOUT_S = 600  # per cell (a cold XLA cache on a loaded 2-core machine is slow)


def test_the_notebooks_exist():
    names = {os.path.basename(p) for p in NOTEBOOKS}
    assert set(EXECUTED) <= names, f"missing notebooks: {sorted(set(EXECUTED) - names)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_is_stored_without_outputs(path):
    with open(path, encoding="utf-8") as f:
        notebook = json.load(f)
    dirty = [i for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{os.path.basename(path)} is stored with outputs in cells {dirty}: clear them "
                       "(Jupyter: Edit > Clear All Outputs; or `jupyter nbconvert --clear-output --inplace`)")


@pytest.mark.parametrize("name", EXECUTED)
def test_notebook_runs_in_small_mode(name, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="executing notebooks needs nbformat==5.11.1 (test extra)")
    nbclient = pytest.importorskip("nbclient", reason="executing notebooks needs nbclient==0.11.0 (test extra)")
    pytest.importorskip("ipykernel", reason="executing notebooks needs ipykernel==7.4.0 (test extra)")
    monkeypatch.setenv("DYSEN_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("DYSEN_NOTEBOOK_RUNS", str(tmp_path))
    notebook = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}})
    client.execute()  # raises CellExecutionError with the cell and its traceback if a cell fails
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    images = sum(1 for out in outputs if {"image/png", "image/gif"} & set(out.get("data", {})))
    text = "".join(out.get("text", "") + out.get("data", {}).get("text/plain", "") for out in outputs)
    min_images, phrases = EXECUTED[name]
    assert images >= min_images, f"{name} showed {images} pictures in small mode, expected at least {min_images}"
    missing = [p for p in phrases if p not in text]
    assert not missing, f"{name}'s outputs lack {missing}"
