"""The serving rules against the sample shop's planted truth, without a server."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from features.loading import ShopData
from features.sample import SampleShop
from features.triggers import TriggerConfig, first_triggers, trigger_facts
from serving.config import ServingConfig
from serving.recommender import ShopRecommender
from tests.conftest import SAMPLE
from training.bundle import Bundle


@pytest.fixture(scope="module")
def rec(bundle: Bundle) -> ShopRecommender:
    return ShopRecommender(bundle, "shoprec/1")


def _catalogue(bundle: Bundle) -> pd.DataFrame:
    return bundle.catalogue.set_index("item_id")


def _planted_pairs(bundle: Bundle, sample_shop: SampleShop) -> pd.DataFrame:
    """The sample's planted anchor -> partner pairs whose partner is in the catalogue and in stock."""
    cat = _catalogue(bundle)
    pairs = sample_shop.truth["pairs"]
    pairs = pairs[pairs["anchor_item_id"].isin(cat.index) & pairs["partner_item_id"].isin(cat.index)]
    return pairs[cat.loc[pairs["partner_item_id"], "in_stock"].to_numpy()]


def test_cross_sell_finds_planted_partners(rec: ShopRecommender, bundle: Bundle, sample_shop: SampleShop) -> None:
    pairs = _planted_pairs(bundle, sample_shop)
    hits = []
    for anchor, partner in zip(pairs["anchor_item_id"], pairs["partner_item_id"], strict=True):
        picks = {p.item_id: p.reason for p in rec.cross_sell([anchor], None, 5).items}
        hits.append(picks.get(partner) == f"bought_together:{anchor}")
    assert len(hits) >= 30
    assert np.mean(hits) >= 0.75


def _views(items: list[str], start: str = "2025-06-01T10:00:00Z", event_type: str = "view") -> list[dict]:
    t0 = pd.Timestamp(start)
    return [{"event_type": event_type, "item_id": item, "ts": t0 + pd.Timedelta(minutes=n)}
            for n, item in enumerate(items)]


def test_an_anonymous_session_gets_the_partners_of_what_it_viewed(rec: ShopRecommender, bundle: Bundle,
                                                                  sample_shop: SampleShop) -> None:
    pairs = _planted_pairs(bundle, sample_shop)
    hits = []
    for anchor, partner in zip(pairs["anchor_item_id"], pairs["partner_item_id"], strict=True):
        session = rec.live_session(_views([anchor, anchor]))
        answer = rec.cross_sell([], None, 5, session)
        assert answer.session_items == 1 and anchor not in {p.item_id for p in answer.items}
        hits.append({p.item_id: p.reason for p in answer.items}.get(partner) == f"goes_with_viewed:{anchor}")
    assert len(hits) >= 30 and np.mean(hits) >= 0.75
    without = rec.cross_sell([], None, 5)
    assert {p.reason for p in without.items} <= {"popular"}


def test_a_session_personalises_offers_for_a_stranger(rec: ShopRecommender, bundle: Bundle) -> None:
    cat = _catalogue(bundle)
    category = cat["category"].value_counts().index[0]
    viewed = cat[(cat["category"] == category) & cat["in_stock"]].index[:4].tolist()
    session = rec.live_session(_views(viewed))
    offers = rec.offers("stranger", 5, session=session)
    assert offers.band.source == "session" and not offers.customer_known and offers.session_items == 4
    assert offers.band.lo == pytest.approx(cat.loc[viewed, "price"].min())
    assert "session_interest" in {p.reason for p in offers.items}
    prices = cat.loc[[p.item_id for p in offers.items], "price"]
    assert prices.between(offers.band.lo, offers.band.hi).all()  # viewed items may come back as offers
    assert rec.offers("stranger", 5).band.source == "catalogue"


def test_live_session_weighs_events_like_training(rec: ShopRecommender, bundle: Bundle) -> None:
    a, b, c = (str(i) for i in bundle.items.external_ids[:3])
    events = [*_views([a, b]), *_views([b], "2025-06-01T11:00:00Z", "cart"),
              {"event_type": "search", "ts": "2025-06-01T11:01:00Z"},
              {"event_type": "view", "item_id": "ghost", "ts": "2025-06-01T11:02:00Z"},
              *_views([c], "2025-06-01T09:00:00Z", "remove_from_cart")]
    session = rec.live_session(events)
    assert [str(bundle.items.external_ids[i]) for i in session.item_idx] == [b, a]  # most recent first
    assert session.weights.tolist() == pytest.approx([0.4, 0.1]) and session.unknown_items == 1
    capped = ShopRecommender(bundle, "v", ServingConfig(session_items=1)).live_session(events)
    assert len(capped) == 1


def test_recently_viewed_items_weigh_as_views(rec: ShopRecommender, bundle: Bundle) -> None:
    a, b = (str(i) for i in bundle.items.external_ids[:2])
    seen = rec.recently_viewed([b, "ghost", a, b])
    assert [str(bundle.items.external_ids[i]) for i in seen.item_idx] == [b, a] and seen.unknown_items == 1
    assert seen.weights.tolist() == pytest.approx([0.1, 0.1])
    assert len(rec.recently_viewed([])) == 0


def test_cross_sell_never_returns_cart_or_out_of_stock(rec: ShopRecommender, bundle: Bundle,
                                                       sample_shop: SampleShop) -> None:
    cat = _catalogue(bundle)
    out_of_stock = set(cat.index[~cat["in_stock"]])
    assert out_of_stock
    customers = bundle.profiles["customers"]["customer_id"][:200]
    anchors = sample_shop.truth["pairs"]["anchor_item_id"].tolist()
    for n, customer in enumerate(customers):
        cart = [anchors[n % len(anchors)], anchors[(n + 7) % len(anchors)]]
        answer = rec.cross_sell(cart, str(customer), 8)
        ids = [p.item_id for p in answer.items]
        assert len(ids) == 8 and len(set(ids)) == 8
        assert not set(ids) & (set(cart) | out_of_stock)
        assert answer.customer_known


def _blocked_durables(rec: ShopRecommender, bundle: Bundle, customer: str) -> set[str]:
    """Durable items in categories where the customer bought a durable within its interval."""
    idx = bundle.customers.to_index([customer])[0]
    cat = _catalogue(bundle)
    bought = bundle.items.external_ids[bundle.purchases[idx].indices]
    categories = set(cat.loc[bought][cat.loc[bought, "durable"]]["category"])
    interval = cat.groupby("category")["repurchase_days"].median()
    recent = {c for c in categories if interval[c] > rec.profiles.recency_days[idx]}
    return set(cat.index[cat["durable"] & cat["category"].isin(recent)])


def test_durables_just_bought_are_not_offered_anywhere(rec: ShopRecommender, bundle: Bundle) -> None:
    customers = [str(c) for c in bundle.profiles["customers"]["customer_id"][:400]]
    blocked = {c: _blocked_durables(rec, bundle, c) for c in customers}
    assert sum(bool(b) for b in blocked.values()) > 50
    for pick in rec.email_picks(customers, 10):
        assert not {p.item_id for p in pick.items} & blocked[pick.customer_id]
    for customer in [c for c in customers if blocked[c]][:60]:
        category = bundle.catalogue.set_index("item_id").loc[sorted(blocked[customer])[0], "category"]
        partners = rec.cross_sell([], customer, 20).items + rec.offers(customer, 20, category).items
        assert not {p.item_id for p in partners} & blocked[customer]


def test_consumables_may_come_back_in_email_picks(rec: ShopRecommender, bundle: Bundle) -> None:
    customers = [str(c) for c in bundle.profiles["customers"]["customer_id"][:300]]
    cat = _catalogue(bundle)
    again = 0
    for pick in rec.email_picks(customers, 10):
        idx = bundle.customers.to_index([pick.customer_id])[0]
        bought = set(bundle.items.external_ids[bundle.purchases[idx].indices])
        again += sum(p.item_id in bought and not cat.loc[p.item_id, "durable"] for p in pick.items)
    assert again > 0


def test_email_send_is_false_for_never_openers(rec: ShopRecommender, bundle: Bundle, sample_shop: SampleShop) -> None:
    rates = bundle.profiles["email_open_rates"].merge(sample_shop.truth["customers"], on="customer_id")
    picks = pd.DataFrame([(p.customer_id, p.send, p.open_propensity)
                          for p in rec.email_picks(rates["customer_id"].tolist()[:1000], 5)],
                         columns=["customer_id", "send", "open_propensity"]).merge(rates, on="customer_id")
    seasoned_never = picks[picks["never_open"] & (picks["sends"] >= 6)]
    assert len(seasoned_never) > 20 and not seasoned_never["send"].any()
    openers = picks[~picks["never_open"] & (picks["open_rate_x"] >= 0.3)]
    assert openers["send"].mean() > 0.7
    assert picks["open_propensity"].between(0, 1).all()


def test_send_thresholds_are_configurable(bundle: Bundle) -> None:
    ids = [str(c) for c in bundle.customers.external_ids[:50]]
    never = ShopRecommender(bundle, "v", ServingConfig(send_min_open_propensity=1.0))
    always = ShopRecommender(bundle, "v", ServingConfig(send_min_open_propensity=0.0, send_min_personal_share=0.0,
                                                        sunset_after_unopened=0))
    opted_out = set(bundle.profiles["email_opt_out"]["customer_id"])
    assert not any(p.send for p in never.email_picks(ids, 5))
    assert all(p.send == (p.customer_id not in opted_out) for p in always.email_picks(ids, 5))


def test_customers_who_opted_out_are_never_mailed(bundle: Bundle, sample_shop: SampleShop) -> None:
    customers = sample_shop.tables["customers"]
    opted_out = customers.loc[~customers["email_opt_in"].astype(bool), "customer_id"].astype(str).tolist()
    assert set(bundle.profiles["email_opt_out"]["customer_id"]) == set(opted_out) and len(opted_out) > 50
    keen = ShopRecommender(bundle, "v", ServingConfig(send_min_open_propensity=0.0, send_min_personal_share=0.0,
                                                      sunset_after_unopened=0))
    picks = keen.email_picks(opted_out, 3)
    assert not any(p.send for p in picks) and all(len(p.items) == 3 for p in picks)
    opted_in = customers.loc[customers["email_opt_in"].astype(bool), "customer_id"].astype(str).tolist()[:200]
    assert all(p.send for p in keen.email_picks(opted_in, 3))


def test_offers_lie_inside_the_customers_band(rec: ShopRecommender, bundle: Bundle) -> None:
    cat = _catalogue(bundle)
    for customer in [str(c) for c in bundle.profiles["customers"]["customer_id"][:150]]:
        offers = rec.offers(customer, 5)
        assert offers.band.source == "customer" and offers.customer_known
        prices = cat.loc[[p.item_id for p in offers.items], "price"]
        assert len(prices) == 5
        assert prices.between(offers.band.lo, offers.band.hi).all()
        assert cat.loc[prices.index, "in_stock"].all()


def test_offers_band_falls_back_to_segment_then_catalogue(bundle: Bundle) -> None:
    profiles = bundle.profiles["customers"].copy()
    customer = str(profiles["customer_id"].iloc[0])
    profiles.loc[profiles.index[0], ["price_lo", "price_hi"]] = np.nan
    rec = ShopRecommender(dataclasses.replace(bundle, profiles={**bundle.profiles, "customers": profiles}), "v")
    segment = rec.offers(customer, 5)
    assert segment.band.source == "segment"
    stranger = rec.offers("nobody-at-all", 5)
    assert stranger.band.source == "catalogue" and not stranger.customer_known
    assert {p.reason for p in stranger.items} == {"popular"}
    cat = _catalogue(bundle)
    assert cat.loc[[p.item_id for p in stranger.items], "price"].between(stranger.band.lo, stranger.band.hi).all()


def test_offers_in_a_category_widen_the_band_rather_than_return_nothing(rec: ShopRecommender, bundle: Bundle) -> None:
    cheap = str(bundle.profiles["customers"].sort_values("price_hi")["customer_id"].iloc[0])
    offers = rec.offers(cheap, 5, "laptops")
    cat = _catalogue(bundle)
    assert offers.items and offers.band.widened
    assert (cat.loc[[p.item_id for p in offers.items], "category"] == "laptops").all()
    assert cat.loc[[p.item_id for p in offers.items], "price"].between(offers.band.lo, offers.band.hi).all()
    assert rec.offers(cheap, 5, "no-such-category").unknown_category


def test_unknown_customers_and_items_fall_back(rec: ShopRecommender, bundle: Bundle, sample_shop: SampleShop) -> None:
    answer = rec.cross_sell(["ghost-1", "ghost-2"], "ghost-customer", 4)
    assert answer.unknown_items == ["ghost-1", "ghost-2"] and not answer.customer_known
    assert [p.reason for p in answer.items] == ["popular"] * 4
    anchor = sample_shop.truth["pairs"]["anchor_item_id"].iloc[0]
    many = rec.cross_sell([anchor, "ghost"], None, 100)
    assert many.unknown_items == ["ghost"]
    reasons = {p.reason.split(":")[0] for p in many.items}
    assert {"bought_together", "popular_in"} <= reasons
    assert len(many.items) == 100
    segment = rec.email_picks([str(bundle.profiles["customers"]["customer_id"].iloc[0]), "ghost"], 3)
    assert not segment[1].customer_known and len(segment[1].items) == 3
    assert segment[1].open_propensity == pytest.approx(rec.profiles.open_prior)


def test_never_empty_while_anything_is_in_stock(bundle: Bundle) -> None:
    catalogue = bundle.catalogue.copy()
    catalogue["in_stock"] = False
    catalogue.loc[catalogue.index[-1], "in_stock"] = True
    rec = ShopRecommender(dataclasses.replace(bundle, catalogue=catalogue), "v")
    last = str(catalogue["item_id"].iloc[-1])
    customer = str(bundle.customers.external_ids[0])
    assert [p.item_id for p in rec.cross_sell(["ghost"], customer, 5).items] == [last]
    assert [p.item_id for p in rec.email_picks(["ghost"], 5)[0].items] == [last]
    assert [p.item_id for p in rec.offers("ghost", 5).items] == [last]


def test_a_tight_diversity_cap_still_fills_cross_sell_and_offers(bundle: Bundle, sample_shop: SampleShop) -> None:
    """With one item per category, cart partners, the cart's categories, the customer's fallback
    list and the shop's popular items are walked in turn under one cap: every list is full while
    enough categories are allowed, holds each category once, and keeps the tiers in order."""
    metadata = {**bundle.metadata, "ranking": {**bundle.metadata.get("ranking", {}), "diversity_cap": 1}}
    rec = ShopRecommender(dataclasses.replace(bundle, metadata=metadata), "v")
    category = _catalogue(bundle)["category"]
    k = 8
    assert category.nunique() > k + 3
    anchors = sample_shop.truth["pairs"]["anchor_item_id"].tolist()
    customers = [str(c) for c in bundle.customers.external_ids[:60]]
    for n, customer in enumerate(customers):
        cart = [anchors[n % len(anchors)], anchors[(n + 3) % len(anchors)]]
        offers = rec.offers(customer, k)
        allowed = rec.rules.allowed(bundle.customer_index(np.array([customer], dtype=object)))[0]
        price = bundle.catalogue["price"].to_numpy()
        in_band = allowed & (price >= offers.band.lo) & (price <= offers.band.hi)
        for answer, room in ((rec.cross_sell(cart, customer, k), k),
                             (offers, min(k, category.iloc[np.flatnonzero(in_band)].nunique()))):
            ids = [p.item_id for p in answer.items]
            assert len(ids) == room and category[ids].is_unique, (customer, ids)
            tier = [0 if not r.startswith("popular") else 1 if r.startswith("popular_in:") else
                    2 if r.startswith("popular_in_segment") else 3 for r in (p.reason for p in answer.items)]
            assert tier == sorted(tier), (customer, [p.reason for p in answer.items])


def test_propensity_needs_a_model_and_says_why(bundle) -> None:
    from training.propensity_set import PropensityUnavailable

    recommender = ShopRecommender(bundle, "shoprec/v1")
    with pytest.raises(PropensityUnavailable):
        recommender.propensity("c000001", None)


def test_session_propensity_rises_with_intent(bundle_with_propensity, sample_shop) -> None:
    recommender = ShopRecommender(bundle_with_propensity, "shoprec/v1")
    items = sample_shop.tables["items"]
    # a consumable: in the sample most carted durables are abandoned, most carted refills bought
    item = str(items.loc[~items["durable"], "item_id"].iloc[0])
    customer = str(sample_shop.tables["orders"]["customer_id"].iloc[0])
    browse = [{"event_type": "view", "item_id": item, "ts": f"2025-06-01T10:0{i}:00", "customer_id": customer}
              for i in range(2)]
    carted = browse + [{"event_type": "cart", "item_id": item, "ts": "2025-06-01T10:03:00Z"}]
    low = recommender.propensity(None, browse[:1])
    high = recommender.propensity(None, carted)
    assert low.customer is None and low.session_events_used == 1
    # isotonic calibration is a step function: intent may share a step, but never lowers the odds
    assert 0.0 <= low.session <= recommender.propensity(None, browse).session <= high.session <= 1.0
    assert low.session < high.session
    both = recommender.propensity(customer, carted + [{"event_type": "purchase", "item_id": item,
                                                        "ts": "2025-06-01T10:09:00Z"}])
    assert both.customer_known and 0.0 < both.customer < 1.0
    assert both.session_events_used == 3  # nothing after the purchase is read
    stranger = recommender.propensity("someone-new", None)
    assert not stranger.customer_known and 0.0 < stranger.customer < 1.0


def _plan(rec: ShopRecommender, ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame([(p.customer_id, p.send, p.send_reason, p.send_hour, p.open_propensity)
                         for p in rec.email_picks(ids, 5)],
                        columns=["customer_id", "send", "send_reason", "send_hour", "open_propensity"])


def test_the_frequency_cap_holds_back_customers_mailed_often_lately(bundle: Bundle, sample_shop: SampleShop) -> None:
    """No more than max_mails in max_mails_days (before the bundle's end of data), counted here
    from the raw email log, not from the bundle's profile."""
    emails = sample_shop.tables["email_events"]
    as_of = bundle.profiles["email_shop"]["as_of"].iloc[0]
    ids = sorted(set(emails["customer_id"]) - set(bundle.profiles["email_opt_out"]["customer_id"]))
    config = ServingConfig(send_min_open_propensity=0.0, send_min_personal_share=0.0, sunset_after_unopened=0,
                           max_mails=2, max_mails_days=21)
    plan = _plan(ShopRecommender(bundle, "v", config), ids).set_index("customer_id")
    recent = emails[(emails["sent_ts"] < as_of) & (emails["sent_ts"] > as_of - pd.Timedelta(days=21))]
    capped = recent.groupby("customer_id").size().reindex(plan.index, fill_value=0) >= 2
    assert capped.sum() > 100 and (~capped).sum() > 100
    assert (plan.loc[capped, "send_reason"] == "mailed_recently").all() and not plan.loc[capped, "send"].any()
    assert (plan.loc[~capped, "send_reason"] == "likely_opener").all() and plan.loc[~capped, "send"].all()
    looser = _plan(ShopRecommender(bundle, "v", config.model_copy(update={"max_mails": 10})), ids)
    assert looser["send"].all()


def test_every_customer_gets_the_first_send_reason_that_holds(bundle: Bundle, sample_shop: SampleShop) -> None:
    customers = sample_shop.tables["customers"]
    ids = customers["customer_id"].astype(str).tolist()[:1500] + ["never-seen"]
    rec = ShopRecommender(bundle, "v", ServingConfig(send_min_open_propensity=0.25))
    plan = _plan(rec, ids).set_index("customer_id")
    assert set(plan["send_reason"]) == {"opted_out", "unengaged", "below_threshold", "mostly_fallbacks",
                                        "likely_opener"}
    assert (plan["send"] == (plan["send_reason"] == "likely_opener")).all()
    opted_out = set(bundle.profiles["email_opt_out"]["customer_id"])
    assert (plan["send_reason"] == "opted_out").sum() == len(opted_out & set(ids))
    emails = sample_shop.tables["email_events"].groupby("customer_id")["opened"].agg(["size", "sum"])
    unopened = set(emails[(emails["sum"] == 0) & (emails["size"] >= 6)].index) - opted_out
    assert set(plan.index[plan["send_reason"] == "unengaged"]) == unopened & set(ids) and len(unopened & set(ids)) > 20
    rest = plan[~plan.index.isin(opted_out | unopened)]
    assert ((rest["open_propensity"] < 0.25) == (rest["send_reason"] == "below_threshold")).all()
    assert plan.loc["never-seen", "send_reason"] in ("below_threshold", "mostly_fallbacks")


def test_the_send_hour_is_the_hour_each_customer_opens_at(bundle: Bundle, sample_shop: SampleShop) -> None:
    """The sample plants one open hour per customer (docs/sample.md): customers with two or more
    timed opens are mailed at it; the rest and strangers at the shop's most common open hour."""
    emails = sample_shop.tables["email_events"]
    truth = sample_shop.truth["customers"].set_index("customer_id")
    opens = emails[emails["opened"]].groupby("customer_id").size()
    ids = sorted(emails["customer_id"].unique())
    plan = _plan(ShopRecommender(bundle, "v"), [*ids, "never-seen"]).set_index("customer_id")
    seasoned = opens[opens >= 2].index
    assert len(seasoned) > 300
    assert (plan.loc[seasoned, "send_hour"] == truth.loc[seasoned, "open_hour"]).all()
    shop_hour = int(emails["opened_ts"].dt.hour.mode().min())
    others = plan.index.difference(seasoned)
    assert (plan.loc[others, "send_hour"] == shop_hour).all() and plan.loc["never-seen", "send_hour"] == shop_hour


def test_the_plan_names_the_trigger_the_sample_planted_for_the_day_after_its_data(
        bundle: Bundle, sample_shop: SampleShop, shop: ShopData) -> None:
    """The plan's ``trigger`` is each customer's first lifecycle trigger on the day after the
    bundle's data ends (2025-06-30 for the sample): a cart the simulation left full names
    ``abandoned_cart`` whatever else fired; every customer gets their first fact, through an
    alias of theirs too; strangers get none."""
    truth = sample_shop.truth["triggers"]
    aliases = sample_shop.tables["customer_aliases"].set_index("customer_id")["alias_id"]
    customers = sample_shop.truth["customers"]
    mailable = set(customers.loc[customers["email_opt_in"], "customer_id"])
    items = sample_shop.tables["items"]
    end = pd.Timestamp(SAMPLE.end, tz="UTC")
    age = end - truth["at"]
    left = truth[(truth["trigger"] == "abandoned_cart") & (age >= pd.Timedelta(hours=24)) & (age < pd.Timedelta(days=7))
                 & truth["item_id"].isin(set(items.loc[items["in_stock"], "item_id"]))
                 & truth["customer_id"].isin(mailable)]
    facts = first_triggers(trigger_facts(shop, end, TriggerConfig())).set_index("customer_id")
    assert set(facts.loc[facts["trigger"] == "abandoned_cart"].index) == set(left["customer_id"])
    assert set(facts["trigger"]) == {"abandoned_cart", "refill_due", "wishlist_reminder"}  # no campaign 3-7 days ago
    ids = sorted(set(customers["customer_id"]) | set(facts.index))
    plan = {p.customer_id: p for p in ShopRecommender(bundle, "v").email_picks([*ids, "never-seen"], 3)}
    named = pd.DataFrame([(c, plan[c].trigger, plan[c].trigger_detail) for c in facts.index],
                         columns=["customer_id", "trigger", "detail"]).set_index("customer_id")
    pd.testing.assert_frame_equal(named, facts, check_dtype=False)
    assert all(plan[c].trigger is None for c in ids if c not in facts.index) and plan["never-seen"].trigger is None
    via_alias = [a for c, a in aliases.items() if c in facts.index]
    assert via_alias
    for alias, pick in zip(via_alias, ShopRecommender(bundle, "v").email_picks(via_alias, 3), strict=True):
        assert pick.trigger == facts.loc[pick.canonical_id, "trigger"], alias


def test_the_open_model_replaces_the_own_rate_once_it_beat_it(bundle_with_propensity: Bundle) -> None:
    ids = [str(c) for c in bundle_with_propensity.customers.external_ids[:300]]
    propensity = bundle_with_propensity.propensity
    assert propensity is not None
    modelled = bundle_with_propensity.email_open_propensity(ids)["probability"].to_numpy()
    own = bundle_with_propensity.profiles["email_open_rates"].set_index("customer_id")["open_rate"]
    for beats, expected in ((True, modelled), (False, own.reindex(ids).to_numpy())):
        trusted = dataclasses.replace(bundle_with_propensity, propensity=dataclasses.replace(
            propensity, beats_baseline={"email": beats}))
        got = _plan(ShopRecommender(trusted, "v"), ids)["open_propensity"].to_numpy()
        has_rate = np.isfinite(expected)
        np.testing.assert_allclose(got[has_rate], expected[has_rate])


def test_the_sunset_rule_can_be_turned_off(bundle: Bundle, sample_shop: SampleShop) -> None:
    emails = sample_shop.tables["email_events"].groupby("customer_id")["opened"].agg(["size", "sum"])
    opted_out = set(bundle.profiles["email_opt_out"]["customer_id"])
    unopened = sorted(set(emails[(emails["sum"] == 0) & (emails["size"] >= 3)].index) - opted_out)
    keen = dict(send_min_open_propensity=0.0, send_min_personal_share=0.0)
    at_three = _plan(ShopRecommender(bundle, "v", ServingConfig(sunset_after_unopened=3, **keen)), unopened)
    off = _plan(ShopRecommender(bundle, "v", ServingConfig(sunset_after_unopened=0, **keen)), unopened)
    assert len(unopened) > 50 and (at_three["send_reason"] == "unengaged").all() and off["send"].all()
