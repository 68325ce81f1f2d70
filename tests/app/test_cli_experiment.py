"""``shoprec experiment`` as a data scientist runs it: start, status, a report over real exposure and
event logs (printed and logged to MLflow), stop with a promotion; bad input is one line, exit 2."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import mlflow
import pytest

from serving.event_log import FileEventLog
from serving.exposures import EXPOSURES_TABLE, Exposure, ExposureWriter
from serving.live_events import LiveEvent
from tests.app.test_cli import SHOPREC
from tests.batch.test_experiment_report import _simulated
from training import experiments, registry, tracking


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([SHOPREC, "experiment", *args], capture_output=True, text=True, timeout=300,
                          env={**env, "SHOPREC_HOME": str(home), "COLUMNS": "200"})


@pytest.fixture
def two_versions(mlflow_home: Path) -> Path:
    client = tracking.configure()
    client.create_registered_model("shoprec")
    for _ in range(2):
        client.create_model_version("shoprec", source="file:///nowhere")
    registry.promote(client, "shoprec", "1")
    client.set_registered_model_alias("shoprec", registry.CHALLENGER, "2")
    return mlflow_home


def _logs(home: Path, experiment: experiments.Experiment) -> None:
    """The service's two logs as it would leave them: a planted better challenger."""
    shown, bought = _simulated(experiment, {"champion": 0.10, "challenger": 0.16}, seed=5, units=4_000)
    writer = ExposureWriter(FileEventLog(home / "exposure-log", table=EXPOSURES_TABLE))
    writer.record_now([Exposure(r["request_id"], r["experiment"], r["variant"], r["model_version"], r["unit"],
                                r["endpoint"], r["items"], r["customer_id"], None, r["ts"].to_pydatetime())
                       for r in shown.to_dict("records")])
    writer.close()
    with FileEventLog(home / "event-log") as events:
        events.append([LiveEvent(f"s-{r['unit']}", "purchase", r["ts"].to_pydatetime(), r["unit"], r["item_id"])
                       for r in bought.to_dict("records")])


def test_start_report_and_stop_with_a_promotion(two_versions: Path) -> None:
    home = two_versions
    started = run(home, "start", "rec-test", "--variants", "champion:50,challenger:50")
    assert started.returncode == 0, started.stderr
    assert "champion (v1) 50%, challenger (v2) 50%" in started.stdout
    assert "rec-test" in run(home, "status").stdout

    _logs(home, experiments.running(tracking.configure(), "shoprec"))
    report = run(home, "report", "rec-test")
    assert report.returncode == 0, report.stderr
    challenger_row = next(line for line in report.stdout.splitlines() if line.strip("│ ").startswith("challenger"))
    assert "*" in challenger_row  # the planted lift is found
    assert "split as planned" in report.stdout
    runs = mlflow.search_runs(experiment_names=["shoprec-experiments"], output_format="list")
    assert len(runs) == 1 and runs[0].data.metrics["challenger.recommended_bought.lift_low"] > 0
    assert runs[0].data.tags["shoprec.sample_ratio_mismatch"] == "false"

    stopped = run(home, "stop", "rec-test", "--promote", "challenger")
    assert stopped.returncode == 0 and "v2 (challenger) is now @champion" in stopped.stdout
    assert registry.champion_version(tracking.configure(), "shoprec") == "2"
    assert "no experiment is running" in run(home, "status").stdout
    assert run(home, "report", "rec-test", "--no-track").returncode == 0  # a stopped one still reports


@pytest.mark.parametrize(("args", "message"), [
    (("start", "x", "--variants", "champion:90"), "at least two variants"),
    (("start", "x", "--variants", "champion:50,v9:50"), "no version or alias 'v9'"),
    (("report", "nope"), "no experiment 'nope'"),
    (("stop", "nope"), "no experiment 'nope'"),
])
def test_bad_input_is_one_line_exit_2(two_versions: Path, args: tuple[str, ...], message: str) -> None:
    result = run(two_versions, *args)
    assert result.returncode == 2 and message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_a_report_without_exposures_says_where_it_looked(two_versions: Path) -> None:
    assert run(two_versions, "start", "quiet", "--variants", "champion:1,challenger:1").returncode == 0
    result = run(two_versions, "report", "quiet")
    assert result.returncode == 2 and "no exposures of experiment 'quiet'" in result.stderr + result.stdout
