"""Shared fixtures: real PostgreSQL databases (skipped with a reason where none runs), paths, and the
sample shop validated, bundles built from it and a live server per module (serving, batch and CLI tests)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from features.loading import ShopData, validate_tables
from features.sample import SampleConfig, SampleShop, generate_shop
from features.sources import RawTable
from tests.serving.live_server import Server, TrainedHome, running_server, train_template
from training.bundle import Bundle
from training.pipeline import TrainConfig, build_bundle

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SAMPLE = SampleConfig(customers=1500, items=240, days=180, seed=11, dirty_share=0.0)
"""The small sample shop the serving and CLI-serving tests share (with its planted truth)."""
POSTGRES_ADMIN_URL = os.environ.get("SHOPREC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _postgres_admin_engine() -> sa.Engine:
    engine = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.OperationalError as error:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL} "
                    f"(set SHOPREC_TEST_POSTGRES_URL): {str(error).splitlines()[0]}")
    return engine


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    admin = _postgres_admin_engine()
    name = f"shoprec_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        sa.create_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def mlflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private local MLflow (SQLite + artefact folder) for one test."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SHOPREC_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="session")
def sample_shop() -> SampleShop:
    return generate_shop(SAMPLE)


@pytest.fixture(scope="session")
def shop(sample_shop: SampleShop) -> ShopData:
    return validate_tables({k: RawTable(v, k) for k, v in sample_shop.tables.items()}, source="sample")


@pytest.fixture(scope="session")
def bundle(shop: ShopData) -> Bundle:
    return build_bundle(shop, TrainConfig(), "ease", {"chosen": "ease"})


@pytest.fixture(scope="session")
def bundle_with_propensity(shop: ShopData) -> Bundle:
    from training.propensity import fit_propensity

    config = TrainConfig()
    return build_bundle(shop, config, "ease", {"chosen": "ease"}, fit_propensity(shop, config.propensity))


@pytest.fixture(scope="session")
def trained_home(sample_shop: SampleShop, tmp_path_factory: pytest.TempPathFactory) -> TrainedHome:
    """The sample shop trained once for the whole session; modules serve private copies of it."""
    return train_template(sample_shop, tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module")
def server(trained_home: TrainedHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server per test module, on its own copy of the trained home, so a module that
    swaps champions disturbs no other."""
    with running_server(trained_home, tmp_path_factory.mktemp("server")) as live:
        yield live
