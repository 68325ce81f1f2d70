"""The sample shop (tests/conftest.py) validated, bundles built from it, and a live server per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from features.loading import ShopData, validate_tables
from features.sample import SampleShop
from features.sources import RawTable
from tests.serving.live_server import Server, running_server
from training.bundle import Bundle
from training.pipeline import TrainConfig, build_bundle


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


@pytest.fixture(scope="module")
def server(sample_shop: SampleShop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server per test module, so a module that swaps champions disturbs no other."""
    with running_server(sample_shop, tmp_path_factory.mktemp("server")) as live:
        yield live
