"""Customer profiles and repurchase intervals recover what the sample shop planted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.loading import ShopData, validate_tables
from features.profiles import customer_profiles, email_open_rates, price_bands, repurchase_intervals, rfm
from features.sample import SampleConfig, SampleShop, generate_shop
from features.sources import RawTable


@pytest.fixture(scope="module")
def sample() -> tuple[SampleShop, ShopData]:
    generated = generate_shop(SampleConfig(customers=3000, items=500, days=180, seed=11))
    return generated, validate_tables({k: RawTable(v, k) for k, v in generated.tables.items()}, source="s")


def orders_frame(rows: list[tuple[str, str, float, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["order_id", "customer_id", "unit_price", "ts"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["quantity"], frame["item_id"] = 1.0, "x"
    return frame


def test_rfm_figures_and_segments() -> None:
    rows = [(f"o{i}", "loyal", 50.0, f"2024-05-{i + 1:02d}") for i in range(10)]
    rows += [("n1", "newbie", 20.0, "2024-05-30"), ("old1", "gone", 5.0, "2023-01-01"),
             ("old2", "gone", 5.0, "2023-01-02"), ("m1", "mid", 10.0, "2024-03-01")]
    frame = rfm(orders_frame(rows), pd.Timestamp("2024-06-01", tz="UTC")).loc[:, ["recency_days", "frequency",
                                                                                    "monetary", "segment"]]
    assert frame.loc["loyal", "frequency"] == 10 and frame.loc["loyal", "monetary"] == 500.0
    assert frame.loc["newbie", "recency_days"] == pytest.approx(2.0)
    assert frame.loc["loyal", "segment"] == "champion"
    assert frame.loc["newbie", "segment"] == "new"
    assert frame.loc["gone", "segment"] in ("at_risk", "hibernating")


def test_price_band_widens_for_few_purchases() -> None:
    many = [(f"a{i}", "many", 10.0 + i % 3, "2024-01-01") for i in range(50)]
    few = [("b1", "few", 10.0, "2024-01-01"), ("b2", "few", 12.0, "2024-01-02")]
    bands = price_bands(orders_frame(many + few))
    width = (bands["price_hi"] / bands["price_lo"])
    assert width["few"] > width["many"]
    assert bands.loc["many", "price_lo"] <= 10.0 and bands.loc["many", "price_hi"] >= 12.0


def test_customer_profiles_cover_buyers_and_match_planted_favourites(sample: tuple[SampleShop, ShopData]) -> None:
    generated, shop = sample
    orders, items = shop["orders"], shop["items"]
    profiles = customer_profiles(orders, items, orders["ts"].max()).set_index("customer_id")
    assert set(profiles.index) == set(orders["customer_id"])
    inside = orders.join(profiles[["price_lo", "price_hi"]], on="customer_id")
    share_inside = ((inside["unit_price"] >= inside["price_lo"]) & (inside["unit_price"] <= inside["price_hi"])).mean()
    assert share_inside > 0.6
    truth = generated.truth["customers"].set_index("customer_id")
    regulars = profiles[profiles["frequency"] >= 4].join(truth["top_categories"], how="inner")
    in_top3 = [cat in planted.split("|") for cat, planted in zip(regulars["top_category"], regulars["top_categories"],
                                                                   strict=True)]
    assert np.mean(in_top3) > 0.8


def test_repurchase_intervals_tell_durables_from_consumables(sample: tuple[SampleShop, ShopData]) -> None:
    _, shop = sample
    intervals = repurchase_intervals(shop["orders"], shop["items"]).set_index("category")
    durable = shop["items"].groupby("category")["durable"].first()
    assert (intervals.loc[durable[durable].index, "repeat_share"] < 0.02).all()
    consumables = intervals.loc[durable[~durable].index]
    assert (consumables["repeat_share"] > 0.15).all()
    assert consumables["median_gap_days"].between(7, 90).all()


def test_open_rate_is_shrunk_for_few_sends_and_separates_never_openers(sample: tuple[SampleShop, ShopData]) -> None:
    generated, shop = sample
    rates = email_open_rates(shop["email_events"]).set_index("customer_id")
    one_send = email_open_rates(pd.DataFrame({"customer_id": ["a", "b", "b"], "opened": [True, False, False]}))
    assert 0.2 < one_send.set_index("customer_id").loc["a", "open_rate"] < 0.5  # prior 1/3 pulls 100% down
    truth = generated.truth["customers"].set_index("customer_id")
    planted = generated.truth["emails"].groupby("customer_id")["open_chance"].mean().rename("open_rate_planted")
    joined = rates.join(truth[["never_open"]], how="inner").join(planted, how="inner")
    assert joined.loc[joined["never_open"], "opens"].sum() == 0
    # the planted chance of each customer's mails (open rate x engagement x fatigue), on average
    assert joined["open_rate"].corr(joined["open_rate_planted"]) > 0.7
    assert joined.loc[joined["never_open"], "open_rate"].max() < joined.loc[~joined["never_open"], "open_rate"].median()
