"""Credentials stay where they were given: a database password in the data URL never
reaches MLflow (params, tags, run names, artefacts, the registered version)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from features.sample import SampleShop
from features.sources import write_sql
from training import tracking
from training.pipeline import TrainConfig, run_training

PROBE = "s3cret-probe-7f3a"


def _artefact_texts(client: MlflowClient, run_id: str, root: Path, path: str = "") -> list[str]:
    """Every small text artefact of the run (JSON, YAML, CSV, text), read back from the store."""
    texts = []
    for entry in client.list_artifacts(run_id, path):
        if entry.is_dir:
            texts += _artefact_texts(client, run_id, root, entry.path)
        elif Path(entry.path).suffix in {".json", ".yaml", ".yml", ".txt", ".csv", ".md", ""} and \
                (entry.file_size or 0) < 5_000_000:
            texts.append(Path(client.download_artifacts(run_id, entry.path, str(root))).read_text(errors="replace"))
    return texts


@pytest.mark.postgres
def test_a_database_password_never_reaches_mlflow(postgres_url: str, sample_shop: SampleShop, mlflow_home: Path,
                                                  tmp_path: Path) -> None:
    url = sa.engine.make_url(postgres_url).set(password=PROBE).render_as_string(hide_password=False)
    assert PROBE in url  # trust auth accepts any password, so the probe travels the whole way
    write_sql(sample_shop.tables, url)
    result = run_training(url, TrainConfig(families=["ease"], propensity={"enabled": False}))
    client = tracking.configure()
    run = client.get_run(result.run_id)
    logged = [*run.data.params.items(), *run.data.tags.items(), ("run_name", run.info.run_name or "")]
    assert not [(k, v) for k, v in logged if PROBE in str(v)]
    version = client.get_model_version("shoprec", result.model_version)
    assert PROBE not in f"{version.description} {version.tags} {version.source}"
    texts = _artefact_texts(client, result.run_id, tmp_path / "artefacts")
    assert texts and not [t for t in texts if PROBE in t]
