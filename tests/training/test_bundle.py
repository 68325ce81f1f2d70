"""The bundle: business rules in its answers, fallbacks, profiles, and refusal of corrupted files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from features.loading import ShopData, validate_tables
from features.sample import SampleConfig, generate_shop
from features.sources import RawTable
from training.bundle import Bundle
from training.bundle_files import MANIFEST, BundleError
from training.pipeline import TrainConfig, build_bundle
from training.ranker import NEW_FEATURES, OWN_FEATURES, Ranker, Tower


@pytest.fixture(scope="module")
def shop() -> ShopData:
    generated = generate_shop(SampleConfig(customers=1200, items=300, days=150, seed=9))
    return validate_tables({k: RawTable(v, k) for k, v in generated.tables.items()}, source="s")


@pytest.fixture(scope="module")
def bundle(shop: ShopData) -> Bundle:
    return build_bundle(shop, TrainConfig(), "ease", {"chosen": "ease"})


def test_known_customers_never_get_bought_durables_or_out_of_stock(bundle: Bundle) -> None:
    customers = bundle.customers.external_ids[:400].tolist()
    recs = bundle.recommend(customers, 10)
    catalogue = bundle.catalogue.set_index("item_id")
    assert catalogue.loc[recs["item_id"], "in_stock"].all()
    bought = bundle.purchases[bundle.customers.to_index(recs["customer_id"]), bundle.items.to_index(recs["item_id"])]
    durable = catalogue.loc[recs["item_id"], "durable"].to_numpy()
    assert not (np.asarray(bought).ravel() > 0)[durable].any()
    assert (recs.groupby("customer_id").size() == 10).all()
    assert set(recs["reason"].str.split(":").str[0]) <= {"similar_customers", "buy_again", "popular_in_segment",
                                                         "popular"}
    assert list(recs["customer_id"].drop_duplicates()) == customers  # input order kept


def test_unknown_customers_get_popular_in_stock_items(bundle: Bundle) -> None:
    recs = bundle.recommend(["nobody-1", "nobody-2"], 5)
    assert (recs["reason"] == "popular").all()
    first = recs[recs["customer_id"] == "nobody-1"]["item_id"].tolist()
    assert first == recs[recs["customer_id"] == "nobody-2"]["item_id"].tolist()
    counts = np.asarray(bundle.purchases.sum(axis=0)).ravel()
    in_stock = bundle.catalogue["in_stock"].to_numpy()
    best_in_stock = bundle.items.external_ids[np.argsort(-np.where(in_stock, counts, -1))[:5]]
    assert set(first) == set(best_in_stock)


def test_save_load_round_trip_keeps_answers_and_profiles(bundle: Bundle, tmp_path: Path) -> None:
    again = Bundle.load(bundle.save(tmp_path / "b"))
    customers = [*bundle.customers.external_ids[:50].tolist(), "stranger"]
    assert bundle.recommend(customers, 8).equals(again.recommend(customers, 8))
    assert set(again.profiles) == {"customers", "category_affinity", "rebuy_items", "rebuy_categories", "item_sales",
                                   "email_open_rates", "email_opt_out", "customer_aliases", "email_open_hours",
                                   "email_recent_sends", "email_shop", "plan_triggers"}
    assert again.profiles["customers"].equals(bundle.profiles["customers"])


def test_corrupted_or_incomplete_bundle_is_refused(bundle: Bundle, tmp_path: Path) -> None:
    folder = bundle.save(tmp_path / "b")
    target = folder / "models" / "primary" / "weights_.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="fails its checksum"):
        Bundle.load(folder)
    target.unlink()
    with pytest.raises(BundleError, match="is missing"):
        Bundle.load(folder)
    with pytest.raises(BundleError, match="not a shoprec bundle"):
        Bundle.load(tmp_path)


def with_ranker_json(bundle: Bundle, folder: Path, own_features: list[str], new_features: list[str]) -> Path:
    """``bundle`` saved with a ranker whose ranker.json names these features (towers as wide), its
    manifest made to match, as a bundle written by another version would be."""
    widths = (len(own_features), len(new_features))
    towers = [Tower(np.zeros(w), np.ones(w), np.full(w, 0.1), -2.0) for w in widths]
    dataclasses.replace(bundle, ranker=Ranker(*towers)).save(folder)
    (folder / "ranker" / "ranker.json").write_text(json.dumps({
        "own": towers[0].to_dict(), "new": towers[1].to_dict(), "depth": 30,
        "own_features": own_features, "new_features": new_features}))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["ranker/ranker.json"] = hashlib.sha256((folder / "ranker" / "ranker.json").read_bytes()).hexdigest()
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def test_a_bundle_whose_ranker_predates_a_feature_loads_and_answers(bundle: Bundle, tmp_path: Path) -> None:
    earlier = [n for n in OWN_FEATURES if n not in ("group_share", "share_of_group")]
    loaded = Bundle.load(with_ranker_json(bundle, tmp_path / "b", earlier, [n for n in NEW_FEATURES
                                                                             if n != "group_share"]))
    assert loaded.ranker is not None and len(loaded.ranker.own.coef) == len(OWN_FEATURES)
    recs = loaded.recommend(bundle.customers.external_ids[:50].tolist(), 10)
    assert (recs.groupby("customer_id").size() == 10).all()


def test_a_bundle_whose_ranker_uses_an_unknown_feature_is_refused_as_a_bundle(bundle: Bundle, tmp_path: Path) -> None:
    """Refused as a BundleError, which the service turns into "still serving" (a rollback)."""
    folder = with_ranker_json(bundle, tmp_path / "b", [*OWN_FEATURES, "days_to_payday"], [*NEW_FEATURES])
    with pytest.raises(BundleError, match="days_to_payday"):
        Bundle.load(folder)


def test_the_campaign_plan_is_as_of_the_latest_mail_even_after_the_latest_order(shop: ShopData) -> None:
    """Email exports often run past the orders: the frequency cap must count the newest mails."""
    import pandas as pd

    from features.dataset import build_dataset
    from training.bundle_profiles import RECENT_SENDS, SHOP_EMAIL, build_profiles

    last_order = shop["orders"]["ts"].max()
    late = pd.DataFrame({"customer_id": ["c000001"], "campaign_id": ["late"], "sent_ts": [last_order + pd.Timedelta(days=2)],
                         "opened": [False], "clicked": [False],
                         "opened_ts": pd.Series([pd.NaT], dtype=shop["email_events"]["opened_ts"].dtype)})
    tables = dict(shop.tables)
    tables["email_events"] = pd.concat([shop["email_events"], late.astype(shop["email_events"].dtypes)],
                                       ignore_index=True)
    later = ShopData(tables, shop.report, shop.quarantine)
    profiles = build_profiles(later, build_dataset(later), 28)
    assert profiles[SHOP_EMAIL]["as_of"].iloc[0] == late["sent_ts"].iloc[0] + pd.Timedelta(microseconds=1)
    recent = profiles[RECENT_SENDS]
    assert recent.loc[recent["customer_id"] == "c000001", "age_days"].min() < 1e-6
