"""Every notebook runs top to bottom on the tiny pipeline's project (with its tiny ablation), so none rots;
and the committed notebooks carry no outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from conftest import HANG_S, ROOT
from nbclient import NotebookClient
from test_ablation import ablation_project

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = HANG_S  # bounds a hung cell only; a busy 2-core machine can be 10x slower


@pytest.fixture(scope="module")
def ablated(tiny_pipeline, tmp_path_factory) -> Path:
    return ablation_project(tiny_pipeline, tmp_path_factory.getbasetemp())


def test_the_three_notebooks_exist_without_outputs():
    assert [p.name for p in NOTEBOOKS] == ["01_explore_sample.ipynb", "02_compare_runs.ipynb",
                                           "03_inspect_attention.ipynb"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs not stripped"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_the_tiny_project(path, ablated, tmp_path, monkeypatch):
    monkeypatch.setenv("BIGFIVE_PROJECT", str(ablated))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for key in [k for k in list(__import__("os").environ) if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(key)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs
                 if o.get("output_type") == "display_data" and "image/png" in o.get("data", {}))
    assert images >= 2, f"{path.name}: expected figures, got {images}"
