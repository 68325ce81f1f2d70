"""The data scientist's notebook runs top to bottom (on a small sample), so it can never rot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.mark.parametrize("name", ["retrain_and_compare.ipynb"])
def test_notebook_runs_top_to_bottom(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SHOPREC_NB_DATA", raising=False)
    monkeypatch.setenv("SHOPREC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHOPREC_NB_WORK", str(tmp_path))
    monkeypatch.setenv("SHOPREC_NB_CUSTOMERS", "1200")
    monkeypatch.setenv("SHOPREC_NB_ITEMS", "300")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    stored = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not cell.get("outputs") for cell in stored.cells if cell.cell_type == "code"), "clear outputs"
    NotebookClient(stored, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = json.dumps([cell.get("outputs", []) for cell in stored.cells])
    assert "@champion -> v" in outputs
    assert "similar_customers" in outputs or "model:" in outputs  # personal recommendations were shown
