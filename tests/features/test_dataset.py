"""The training view: id maps, event weights, time decay and the time cut-off (no leakage)."""

from __future__ import annotations

import pandas as pd
import pytest

from features.dataset import IdMap, InteractionConfig, build_dataset
from features.loading import ShopData, validate_tables
from features.sources import RawTable

AS_OF = pd.Timestamp("2024-03-01", tz="UTC")


def shop() -> ShopData:
    items = pd.DataFrame({"item_id": ["b", "a", "c"], "category": "x", "price": 1.0})
    orders = pd.DataFrame({"order_id": ["o1", "o2", "o3"], "customer_id": ["u1", "u1", "u2"],
                           "item_id": ["a", "a", "b"], "quantity": 1.0, "unit_price": 1.0,
                           "ts": ["2024-02-29T00:00:00Z", "2023-11-01T00:00:00Z", "2024-03-05T00:00:00Z"]})
    events = pd.DataFrame({"session_id": ["s1", "s1", "s2", "s3"], "event_type": ["view", "cart", "view", "view"],
                           "ts": ["2024-02-29T00:00:00Z"] * 3 + ["2024-03-02T00:00:00Z"],
                           "customer_id": ["u1", "u1", None, "u3"], "item_id": ["c", "c", "c", "c"]})
    customers = pd.DataFrame({"customer_id": ["u4"]})
    raw = {"items": items, "orders": orders, "events": events, "customers": customers}
    return validate_tables({k: RawTable(v, k) for k, v in raw.items()}, source="t",
                           now=pd.Timestamp("2024-06-01", tz="UTC"))


def test_id_maps_are_sorted_and_round_trip() -> None:
    ids = IdMap.from_values(pd.Series(["z", "a", None, "m", "a"]))
    assert ids.external_ids.tolist() == ["a", "m", "z"]
    assert ids.to_external(ids.to_index(["m", "z"])).tolist() == ["m", "z"]
    assert ids.to_index(["a", "nope"], unknown="mark").tolist() == [0, -1]
    with pytest.raises(KeyError, match="nope"):
        ids.to_index(["nope"])


def test_weights_decay_and_cut_off() -> None:
    config = InteractionConfig(half_life_days=30.0, event_weights={"view": 0.1, "cart": 0.3})
    data = build_dataset(shop(), config, until=AS_OF)
    assert data.customers.external_ids.tolist() == ["u1", "u4"]  # u2 and u3 only act after the cut-off
    assert data.items.external_ids.tolist() == ["a", "b", "c"]
    dense = data.interactions.toarray()
    recent, old = 0.5 ** (1 / 30), 0.5 ** (121 / 30)
    assert dense[0, 0] == pytest.approx(recent + old, rel=1e-5)  # two purchases of a, one 121 days old
    assert dense[0, 2] == pytest.approx((0.1 + 0.3) * recent, rel=1e-5)  # view + cart of c
    assert dense[:, 1].sum() == 0  # b was bought after the cut-off: no leakage
    assert data.purchases.toarray()[0].tolist() == [2.0, 0.0, 0.0]
    assert len(data.baskets) == 2
    assert data.as_of == AS_OF


def test_no_decay_counts_purchases_plainly() -> None:
    data = build_dataset(shop(), InteractionConfig(half_life_days=None, event_weights={}))
    assert data.interactions.toarray()[data.customers.to_index(["u1"])[0]].tolist() == [2.0, 0.0, 0.0]


def test_unknown_config_key_is_an_error() -> None:
    with pytest.raises(ValueError, match="half_life"):
        InteractionConfig(half_life=3)  # type: ignore[call-arg]
