"""Where MLflow lives: a local SQLite database and artefact folder by default, or a server.

``MLFLOW_TRACKING_URI`` (a server, or a database URL such as PostgreSQL) wins; otherwise
everything goes under ``SHOPREC_HOME`` (default ``./shoprec-home``), so a fresh clone
needs no server to train, register and serve.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

DEFAULT_HOME = "shoprec-home"
SQLITE_PREFIX = "sqlite:///"


def shoprec_home() -> Path:
    return Path(os.environ.get("SHOPREC_HOME", DEFAULT_HOME)).resolve()


def tracking_uri() -> str:
    """The tracking URI in force: the user's ``MLFLOW_TRACKING_URI``, or the local SQLite default."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    home = shoprec_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"{SQLITE_PREFIX}{home / 'mlflow.db'}"


def configure() -> MlflowClient:
    """Point MLflow at the tracking URI in force and return a client for it."""
    # Per-file download bars drown the job's own progress in logs; the job reports its steps.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    given = os.environ.get("MLFLOW_TRACKING_URI")
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if not given:
        # MLflow exports the URI as MLFLOW_TRACKING_URI; left there, the local default would
        # pass for the user's choice and pin the process to the first SHOPREC_HOME it saw.
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The experiment id, creating it (with its artefact folder next to a SQLite database).

    Decided from the URI, not from the environment: ``mlflow.set_tracking_uri`` exports
    ``MLFLOW_TRACKING_URI`` itself, so the environment cannot tell the local default from a
    server, and MLflow's own default for a database store is ``./mlruns`` in whatever
    folder the job happened to start in.
    """
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifact_location = None
    uri = tracking_uri()
    if uri.startswith(SQLITE_PREFIX):
        artifact_location = (Path(uri[len(SQLITE_PREFIX):]).parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)


HOST_TAG, PID_TAG, STARTED_TAG = "shoprec.host", "shoprec.pid", "shoprec.process_started"
"""Who runs a job: set on every training and picks run, so a later run can tell a run whose
process died (SIGKILL, OOM, a segfault in a BLAS library) from one still in progress."""


def process_tags() -> dict[str, str]:
    """This process's host, pid and start time, as run tags."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), STARTED_TAG: _started(os.getpid()) or ""}


def fail_dead_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """End as FAILED every RUNNING run of the experiment whose process on this host is gone.

    A killed process cannot end its own run, which would otherwise stay RUNNING in the UI for
    ever. A run counts as dead when its pid no longer exists, or exists but started at another
    time (the pid was reused). Runs from other hosts, or without the tags, are left alone.
    Returns the ids of the runs it ended.
    """
    from mlflow.entities import RunStatus

    host = socket.gethostname()
    ended = []
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        if tags.get(HOST_TAG) != host or not tags.get(PID_TAG, "").isdigit():
            continue
        pid = int(tags[PID_TAG])
        if pid == os.getpid() or (_started(pid) is not None and _started(pid) == tags.get(STARTED_TAG)):
            continue  # this process, or the very process that started the run: still alive
        client.set_tag(run.info.run_id, "shoprec.failure",
                       f"process {pid} on {host} ended without ending the run (killed or crashed); "
                       "marked FAILED by the next run")
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
        ended.append(run.info.run_id)
    return ended


def _started(pid: int) -> str | None:
    """When process ``pid`` started (Linux: clock ticks since boot from /proc), None if it does not
    exist. Elsewhere only existence is known, reported as "alive"."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "alive"
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name
