"""Fit-cost estimates: what decides whether training fits a family at a shop's size."""

from __future__ import annotations

import pytest

from training.models import build_model
from training.models.base import FitBudget, MatrixSize

MID_SIZE = MatrixSize(1_000_000, 100_000, 50_000_000)
"""The mid-size shop of the scale issue: 1M customers, 100k items, 50M distinct interactions."""


@pytest.mark.parametrize("family", ["als", "bpr", "lightfm", "ease"])
def test_estimates_grow_with_the_matrix_and_with_the_work_asked(family: str) -> None:
    small, large = MatrixSize(5_000, 1_000, 50_000), MatrixSize(50_000, 10_000, 500_000)
    model = build_model(family)
    assert 0 < model.fit_cost(small).seconds < model.fit_cost(large).seconds
    assert 0 < model.fit_cost(small).gib < model.fit_cost(large).gib
    more = {"als": {"iterations": 30}, "bpr": {"iterations": 200}, "lightfm": {"epochs": 60}, "ease": None}[family]
    if more is not None:
        assert build_model(family, more).fit_cost(large).seconds == pytest.approx(
            2 * model.fit_cost(large).seconds, rel=0.01)


def test_the_default_budget_keeps_als_and_drops_what_would_run_for_hours_on_a_mid_size_shop() -> None:
    """At 1M x 100k with 50M entries: ALS fits in minutes; LightFM's 30 WARP epochs would take
    about an hour and EASE would need a 100k x 100k dense inverse."""
    budget = FitBudget()
    assert build_model("als").over_budget(MID_SIZE, budget) is None
    assert build_model("cooccurrence").over_budget(MID_SIZE, budget) is None
    lightfm = build_model("lightfm").over_budget(MID_SIZE, budget)
    assert lightfm is not None and lightfm.startswith("an estimated ") and "fit_minutes=20" in lightfm
    assert "max_items=30,000" in (build_model("ease").over_budget(MID_SIZE, budget) or "")


def test_ease_at_complete_journeys_catalogue_stays_inside_the_default_budget() -> None:
    """20,819 items: about 6 minutes and 8 GiB a fit (measured: 10.3 GiB peak for the whole run)."""
    size = MatrixSize(2_379, 20_819, 60_000)
    cost = build_model("ease").fit_cost(size)
    assert 4 * 60 < cost.seconds < 8 * 60 and 7 < cost.gib < 9
    assert build_model("ease").over_budget(size, FitBudget()) is None
    memory = build_model("ease").over_budget(size, FitBudget(memory_gib=4))
    assert memory == "an estimated 8.1 GiB to fit on 2,379 x 20,819 (60,000 entries), over the budget's memory_gib=4"


@pytest.mark.parametrize(("config", "field"), [
    ({"budget": {"fit_minutes": 0}}, ("budget", "fit_minutes")),
    ({"budget": {"fit_mins": 5}}, ("budget", "fit_mins")),
    ({"split": {"max_test_customers": 5}}, ("split", "max_test_customers")),
], ids=["not-positive", "unknown-key", "too-few-test-customers"])
def test_a_bad_budget_or_test_sample_setting_is_refused_naming_its_field(config: dict, field: tuple[str, ...]) -> None:
    """What ``--config`` turns into one line (``error: invalid TrainConfig: budget.fit_minutes: ...``)."""
    from pydantic import ValidationError

    from training.pipeline import TrainConfig

    with pytest.raises(ValidationError) as error:
        TrainConfig.model_validate(config)
    assert [e["loc"] for e in error.value.errors()] == [field]
