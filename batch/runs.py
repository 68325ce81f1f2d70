"""The MLflow batch run of one picks job, the same for both engines: tags, params, metrics, the link
from the model version."""

from __future__ import annotations

from typing import Any

from batch.model_ref import ModelRef

EXPERIMENT = "shoprec-picks"


def start_picks_run(model: ModelRef, *, engine: str, k: int, only_send: bool, customers_source: str, output: str,
                    params: dict[str, Any] | None = None) -> Any:
    """Open the batch run of one picks job in the ``shoprec-picks`` experiment, for either engine.

    Tagged with the model (URI as given, version reported, registry name and version, the
    training run) and, on MLflow 3, with the version's logged model as the run's input. The
    run is MLflow's active run until :func:`finish_picks_run` or :func:`fail_picks_run` ends
    it; ``params`` adds the engine's own settings (block, partitions, ...).
    """
    import mlflow

    from training import tracking

    client = tracking.configure()
    experiment_id = tracking.ensure_experiment(client, EXPERIMENT)
    tracking.fail_dead_runs(client, experiment_id)
    tags = {**tracking.process_tags(), "shoprec.kind": "picks-batch", "shoprec.engine": engine, "shoprec.model_uri": model.uri,
            "shoprec.model_version": model.version, "shoprec.output": output}
    if model.name:
        tags.update({"shoprec.model_name": model.name, "shoprec.registry_version": model.registry_version or ""})
    if model.source_run_id:
        tags["shoprec.source_run_id"] = model.source_run_id
    run = mlflow.start_run(experiment_id=experiment_id, run_name=f"picks {model.version} ({engine})", tags=tags)
    try:
        mlflow.log_params({"model_uri": model.uri, "model_version": model.version, "k": k, "engine": engine,
                           "only_send": only_send, "customers_source": customers_source, "output": output,
                           **(params or {})})
        if model.model_id:  # MLflow 3: the run's input is the version's logged model
            from mlflow.entities import LoggedModelInput

            mlflow.log_inputs(models=[LoggedModelInput(model.model_id)])
    except BaseException:
        fail_picks_run()
        raise
    return run


def fail_picks_run() -> None:
    """End the active picks run as FAILED (the job raised; its previous output is kept)."""
    import mlflow

    mlflow.end_run("FAILED")


def finish_picks_run(run: Any, model: ModelRef, result: dict[str, Any]) -> str:
    """Log the summary (metrics and ``picks_summary.json``), end the run, link it from the model
    version (tag ``shoprec.last_picks_run_id``); returns the run id."""
    import mlflow

    from training import tracking

    mlflow.log_metrics({
        "customers": result["customers"], "sent": result["sent"], "sent_share": result["sent_share"],
        "fallback_customers": result["fallback_customers"], "unknown_customers": result["unknown_customers"],
        "cold_customers": result["cold_customers"], "alias_customers": result["alias_customers"],
        "short_customers": result["short_customers"],
        "rows_written": result["rows_written"], "duplicate_ids_dropped": result["input"]["duplicate_ids_dropped"],
        "empty_ids_skipped": result["input"]["empty_ids_skipped"], "seconds": result["seconds"],
        "customers_per_s": result["customers_per_s"]})
    mlflow.log_dict(result, "picks_summary.json")
    run_id = run.info.run_id
    mlflow.end_run()
    if model.name and model.registry_version:
        tracking.configure().set_model_version_tag(model.name, model.registry_version,
                                                   "shoprec.last_picks_run_id", run_id)
    return run_id
