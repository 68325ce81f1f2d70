"""The data scientist's notebooks run top to bottom (on a small sample), so they can never rot.

Each notebook is executed once by the shared runner; a per-notebook check then reads what
the executed cells showed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """Run a stored notebook (which must have no outputs) on the small sample, in ``tmp_path``."""
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
    return stored


def outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in notebook.cells for output in cell.get("outputs", [])]


def check_retrain_and_compare(notebook: nbformat.NotebookNode) -> None:
    text = json.dumps(outputs(notebook))
    assert "@champion -> v" in text
    assert "similar_customers" in text or "buy_again:" in text  # personal recommendations were shown
    for shown in ("own_most_bought", "tifu_knn", "recent_popularity", "repeat_recall_at_10", "explore_recall_at_10",
                  "validation windows:", "strongest baseline", "gain_low"):
        assert shown in text, shown  # every baseline, the repeat/explore split and the validation customers


def check_propensity(notebook: nbformat.NotebookNode) -> None:
    last = notebook.cells[-1]
    assert last.cell_type == "code", "the notebook ends with its summary cell"
    summary = json.loads("".join(o["text"] for o in last["outputs"] if o["output_type"] == "stream"))
    for target in ("customer", "email"):
        assert 0 < summary["brier"][target] < summary["base_rate_brier"][target], target  # beats "everyone = mean"
        assert summary["roc_auc"][target] > 0.6, target
        assert summary["top_decile_lift"][target] > 1.5, target
    # the open model against the customer's own open rate, the baseline the service would use
    assert summary["baseline"]["email"] in ("open_rate", "recency")
    assert summary["roc_auc"]["email"] > summary["baseline_roc_auc"]["email"]
    reasons = summary["send_reasons_at_default"]
    assert reasons.get("likely_opener", 0) > 0 and reasons.get("below_threshold", 0) > 0
    triggers = summary["triggers"]
    assert triggers["refill_due"] > 0 and triggers["follow_up_non_openers"] > 0, triggers
    mailed = summary["mailed"]
    assert summary["thresholds"] == sorted(summary["thresholds"]) and len(mailed) == len(summary["thresholds"])
    assert all(a >= b for a, b in zip(mailed, mailed[1:], strict=False)), "mailing more at a higher threshold"
    assert mailed[0] > 2 * mailed[-1] > 0, "the threshold does not move the send decision"
    at_default = summary["thresholds"].index(summary["default_threshold"])
    realised = summary["realised_open_rate"]
    assert np.isfinite(realised[at_default]) and realised[at_default] > summary["held_out_open_rate"], \
        "customers mailed at the default threshold should open more often than the average held-out mail"


def check_online_experiment(notebook: nbformat.NotebookNode) -> None:
    last = notebook.cells[-1]
    summary = json.loads("".join(o["text"] for o in last["outputs"] if o["output_type"] == "stream"))
    assert summary["customers"] > 500 and summary["metrics"] == ["click_through", "converted", "recommended_bought"]
    assert 0 < summary["named"] <= summary["attributed"], "clicks and purchases came back and were attributed"
    for low_lift_high in summary["lifts"].values():
        assert low_lift_high[1] < low_lift_high[0] < low_lift_high[2], "every lift has its interval"
    assert summary["aa_deciding_flags"] <= 5, "a correct interval flags more than 5 of 20 A/A splits 3 times in 10,000"
    assert summary["broken_split_flagged"], "a variant that loses half its customers is a sample-ratio mismatch"
    promoted = summary["versions"]["challenger"] if summary["promoted"] else summary["versions"]["champion"]
    assert summary["champion"] == promoted
    assert summary["units_needed"] > 0


CHECKS: dict[str, Callable[[nbformat.NotebookNode], None]] = {
    "retrain_and_compare.ipynb": check_retrain_and_compare,
    "propensity.ipynb": check_propensity,
    "online_experiment.ipynb": check_online_experiment,
}


def test_every_notebook_is_tested() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(CHECKS)


@pytest.mark.parametrize("name", list(CHECKS))
def test_notebook_runs_top_to_bottom(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = execute(name, tmp_path, monkeypatch)
    assert any("image/png" in o.get("data", {}) for o in outputs(notebook)), "figures are shown inline"
    CHECKS[name](notebook)
