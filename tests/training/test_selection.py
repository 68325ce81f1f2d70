"""Model choice on logs unlike the sample shop, written here: a ratings-like log where nothing
is ever bought twice, and a log without any personal signal where no model can beat popularity.
Either way the first run leaves a champion that the service answers from, and no list ever
re-suggests what was bought."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.render import selection_lines
from features.table_files import write_tables
from serving.recommender import ShopRecommender
from training import registry, tracking
from training.models.base import FitBudget
from training.pipeline import TrainConfig, run_training
from training.selection import BASELINES

CONFIG = TrainConfig(families=["als", "ease"], propensity={"enabled": False})


def _log(seed: int, customers: int, items: int, per_customer: int, taste: bool) -> dict[str, pd.DataFrame]:
    """Each customer buys ``per_customer`` distinct items over 120 days, by a Zipf popularity,
    within two favourite categories of six when ``taste``; without taste from the whole
    catalogue, whose 30 best sellers are all of one category. Nobody ever buys an item twice."""
    rng = np.random.default_rng(seed)
    category = np.arange(items) % 6 if taste else np.where(np.arange(items) < 30, 0, 1 + np.arange(items) % 5)
    weight = 1.0 / (1 + np.arange(items)) ** 0.8
    rows = []
    start = pd.Timestamp("2025-01-01", tz="UTC")
    for c in range(customers):
        w = weight * (np.isin(category, rng.choice(6, 2, replace=False)) if taste else 1.0)
        bought = rng.choice(items, size=per_customer, replace=False, p=w / w.sum())
        days = np.sort(rng.uniform(0, 120, per_customer))
        rows += [(f"o{c}-{n}", f"c{c:04d}", f"m{i:03d}", 1.0, 9.99, start + pd.Timedelta(days=float(d)))
                 for n, (i, d) in enumerate(zip(bought, days, strict=True))]
    orders = pd.DataFrame(rows, columns=["order_id", "customer_id", "item_id", "quantity", "unit_price", "ts"])
    catalogue = pd.DataFrame({"item_id": [f"m{i:03d}" for i in range(items)], "category": [f"g{c}" for c in category],
                              "price": 9.99})
    return {"items": catalogue, "orders": orders}


def _trained(tables: dict[str, pd.DataFrame], tmp_path: Path, config: TrainConfig = CONFIG):  # noqa: ANN202
    write_tables(tables, tmp_path / "shop", "parquet")
    return run_training(str(tmp_path / "shop"), config)


def _owned_pairs(result) -> set[tuple[str, str]]:  # noqa: ANN001
    bundle = result.bundle
    coo = bundle.purchases.tocoo()
    return set(zip(bundle.customers.to_external(coo.row), bundle.items.to_external(coo.col), strict=True))


def test_a_log_where_nothing_is_rebought_never_resuggests_a_bought_item(tmp_path: Path, mlflow_home: Path) -> None:
    result = _trained(_log(3, 900, 150, 8, taste=True), tmp_path)
    owned = _owned_pairs(result)
    customers = list(result.bundle.customers.external_ids)
    picks = result.bundle.recommend(customers, 10)
    assert not set(zip(picks["customer_id"], picks["item_id"], strict=True)) & owned
    served = ShopRecommender(result.bundle, "local")
    emailed = {(p.customer_id, i.item_id) for p in served.email_picks(customers, 10) for i in p.items}
    assert emailed and not emailed & owned
    assert result.gate is not None and result.gate.passed
    assert registry.champion_version(tracking.configure(), "shoprec") == result.model_version


def test_no_model_beats_popularity_and_the_first_run_still_leaves_a_champion(tmp_path: Path,
                                                                           mlflow_home: Path) -> None:
    """No personal signal, and the best list is ten best sellers of one category: popularity as a
    data scientist runs it (uncapped) is the strongest list there is, and every capped model loses."""
    result = _trained(_log(4, 900, 120, 6, taste=False), tmp_path)
    selection = result.selection
    assert result.chosen in BASELINES, selection.test.round(4).to_string()
    assert selection.strongest_baseline.endswith("_no_cap")
    assert result.bundle.ranker is None and result.bundle.primary_family == result.chosen
    assert result.gate is not None and result.gate.passed
    assert result.gate.reason.startswith(f"first champion serves the baseline {result.chosen}")
    assert registry.champion_version(tracking.configure(), "shoprec") == result.model_version
    answer = ShopRecommender(result.bundle, "shoprec/v1").email_picks(["c0001", "stranger"], 5)
    assert all(len(p.items) == 5 for p in answer)
    second = _trained(_log(4, 900, 120, 6, taste=False), tmp_path)  # a baseline never replaces a champion
    assert second.gate is not None and not second.gate.passed and "serves a baseline" in second.gate.reason


@pytest.mark.parametrize(("update", "skipped", "reason"), [
    ({"params": {"ease": {"max_items": 100}}}, "ease",
     "needs a dense 150 x 150 matrix (0.0 GB); fitted up to max_items=100"),
    ({"budget": FitBudget(fit_minutes=1e-6)}, "als", "an estimated 0.0 min a fit on 900 x 150 ("),
], ids=["ease-catalogue-limit", "fit-minutes"])
def test_a_family_over_its_limit_or_the_budget_is_skipped_with_its_reason_not_a_failed_run(
        tmp_path: Path, mlflow_home: Path, update: dict, skipped: str, reason: str) -> None:
    """A family that cannot run at a shop's size (EASE's dense Gram matrix) or whose estimated
    fit is over the budget is skipped; the shop still trains, promotes and serves, with the
    reason in the selection, the terminal lines and MLflow. With every family over the budget,
    the run serves the strongest baseline."""
    config = CONFIG.model_copy(update=update)
    result = _trained(_log(3, 900, 150, 8, taste=True), tmp_path, config)
    assert set(result.selection.skipped) == ({"als", "ease"} if "budget" in update else {skipped})
    assert result.selection.skipped[skipped].startswith(reason), result.selection.skipped
    assert not [row for row in result.selection.test.index if skipped in row]
    run = tracking.configure().get_run(result.run_id)
    assert run.data.tags[f"shoprec.skipped.{skipped}"] == result.selection.skipped[skipped]
    assert f"skipped {skipped}: {result.selection.skipped[skipped]}" in selection_lines(result.selection,
                                                                                        config.metric_key)
    assert result.gate is not None and result.gate.passed
    assert ("ranker_als" in result.selection.test.index) == ("budget" not in update)
    if "budget" in update:
        assert result.chosen in BASELINES
    answer = ShopRecommender(result.bundle, "shoprec/v1").email_picks(["c0001"], 5)
    assert len(answer[0].items) == 5


def test_a_large_test_window_is_scored_on_a_seeded_sample_and_the_run_says_of_how_many(
        tmp_path: Path, mlflow_home: Path) -> None:
    """Every model scores every test customer over the whole catalogue; on a large shop the test
    window's figures come from ``max_test_customers`` of them, the same ones for every row, and
    the table, the terminal and MLflow say how many of how many."""
    from app.render import render_metrics
    from rich.console import Console

    config = CONFIG.model_copy(update={"split": CONFIG.split.model_copy(update={"max_test_customers": 100})})
    result = _trained(_log(3, 900, 150, 8, taste=True), tmp_path, config)
    split = result.selection.test_split
    assert len(split.customers) == 100 < split.window_customers
    assert (result.selection.test["evaluated_customers"] == 100).all()
    params = tracking.configure().get_run(result.run_id).data.params
    assert params["split.evaluated_customers"] == "100"
    assert params["split.window_customers"] == str(split.window_customers)
    console = Console(width=200, record=True)
    console.print(render_metrics(result.selection, result.chosen, 10))
    assert f"test window, 100 of its {split.window_customers:,} customers" in console.export_text()
    assert result.gate is not None and result.gate.passed


def test_a_tuned_setting_over_the_budget_is_not_fitted_the_untuned_one_is(tmp_path: Path) -> None:
    """Tuning can raise a family's cost past the budget its untuned setting passed (ALS at 200
    iterations instead of 15): the run keeps the untuned setting and says so."""
    from features.dataset import build_dataset
    from features.loading import load_shop
    from training.models import build_model
    from training.models.base import MatrixSize
    from training.selection import select

    write_tables(_log(3, 900, 150, 8, taste=True), tmp_path / "shop", "parquet")
    shop = load_shop(tmp_path / "shop")
    default_cost = build_model("als").fit_cost(MatrixSize.of(build_dataset(shop))).seconds
    budget = FitBudget(fit_minutes=3 * default_cost / 60)  # the untuned passes, 200 iterations would not
    said: list[str] = []
    selection = select(shop, ["als"], {}, CONFIG.split, CONFIG.ranking, CONFIG.interactions, CONFIG.metric_key,
                       budget, lambda window, families, params: {"als": {"iterations": 200}}, said.append)
    assert selection.params == {"als": {}} and not selection.skipped
    assert [line for line in said if line.startswith("tuned als kept at its untuned setting: the tuned one is "
                                                     "an estimated ")], said
    assert "ranker_als" in selection.test.index
