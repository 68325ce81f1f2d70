"""The experiment report: last-touch attribution within the window, outcomes that name their answer,
per-unit figures, a planted lift found with an interval that covers it, none found in an A/A split,
and a broken split flagged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from batch.experiment_report import build_report, purchases_from
from training.experiments import Experiment, Variant

T0 = pd.Timestamp("2026-11-01T10:00:00Z")


def _experiment(shares: tuple[float, float] = (0.5, 0.5), versions: tuple[str, str] = ("1", "2")) -> Experiment:
    return Experiment("ab", "shoprec", "customer", "salt", (Variant("champion", versions[0], shares[0]),
                                                          Variant("challenger", versions[1], shares[1])), T0.isoformat())


def _exposure(unit: str, variant: str, hours: float, items: list[str], experiment: str = "ab",
              request_id: str | None = None) -> dict:
    return {"ts": (T0 + pd.Timedelta(hours=hours)).floor("us"), "request_id": request_id or f"r-{unit}-{hours}",
            "experiment": experiment,
            "variant": variant, "model_version": "shoprec/v1", "unit": unit, "customer_id": unit, "session_id": None,
            "endpoint": "cross_sell", "items": items}


def _purchase(unit: str, hours: float, item: str, revenue: float = float("nan")) -> dict:
    return {"unit": unit, "ts": (T0 + pd.Timedelta(hours=hours)).floor("us"), "item_id": item, "revenue": revenue}


def test_attribution_is_last_touch_within_the_window() -> None:
    exposures = pd.DataFrame([
        _exposure("a", "champion", 0, ["i1", "i2"]), _exposure("a", "champion", 30, ["i3"]),
        _exposure("b", "challenger", 0, ["i1"]),
        _exposure("c", "challenger", 0, ["i9"]), _exposure("c", "champion", 1, ["i9"]),  # in both: left out
        _exposure("z", "champion", 0, ["i1"], experiment="other")])
    purchases = pd.DataFrame([
        _purchase("a", -1, "i1"),    # before any exposure: not attributed
        _purchase("a", 2, "i2"),     # shown at 0 h: a recommended purchase
        _purchase("a", 31, "i1"),    # last touch is the 30 h exposure, which did not show i1
        _purchase("b", 25, "i1"),    # 25 h after the only exposure: outside 24 h
        _purchase("c", 2, "i9"), _purchase("z", 1, "i1"), _purchase("nobody", 1, "i1")])
    report = build_report(_experiment(), exposures, purchases, window_hours=24)
    champion, challenger = report.variants
    assert (champion.units, champion.exposures, challenger.units, challenger.exposures) == (1, 2, 1, 1)
    assert champion.means == {"converted": 1.0, "recommended_bought": 1.0}
    assert challenger.means == {"converted": 0.0, "recommended_bought": 0.0}
    assert report.attributed == 2 and report.mixed_units == 1
    longer = build_report(_experiment(), exposures, purchases, window_hours=48)
    assert longer.variants[1].means["recommended_bought"] == 1.0


def _outcome(request_id: str, event_type: str, item: str, session: str, customer: str | None,
             hours: float = 1) -> dict:
    return {"ts": T0 + pd.Timedelta(hours=hours), "request_id": request_id, "event_type": event_type,
            "session_id": session, "customer_id": customer, "item_id": item}


def test_outcomes_that_name_their_answer_give_click_through_and_attribute_purchases() -> None:
    exposures = pd.DataFrame([
        _exposure("a", "champion", 0, ["i1", "i2"]),
        _exposure("b", "challenger", 0, ["i1"]), _exposure("b", "challenger", 5, ["i4"]),
        _exposure("e1", "champion", 0, ["i7"], request_id="batch"),  # one /email_picks answer, two customers
        _exposure("e2", "challenger", 0, ["i8"], request_id="batch")])
    outcomes = pd.DataFrame([
        _outcome("r-a-0", "view", "i1", "s-anon", None),  # a click from a visitor not logged in: still a's
        _outcome("r-a-0", "cart", "i1", "s-anon", None),  # the same answer again: one click
        _outcome("batch", "view", "i8", "s-e2", "e2"),    # the batch answer, e2's part
        _outcome("batch", "view", "i7", "s-x", "x"),      # a customer the batch did not answer: no click
        _outcome("r-unknown", "view", "i1", "s-q", "q"),  # an answer the log never saw
        _outcome("r-b-0", "purchase", "i1", "s-b", "b", hours=40)])
    events = pd.DataFrame([{k: v for k, v in o.items() if k != "request_id"} for o in outcomes.to_dict("records")
                           if o["event_type"] == "purchase"] +
                          [{"ts": T0 + pd.Timedelta(hours=41), "event_type": "purchase", "session_id": "s-b",
                            "customer_id": "b", "item_id": "i4"}])  # unnamed, 36 h after b's last exposure
    experiment = _experiment()
    purchases = purchases_from(events, None, experiment, outcomes)
    assert list(purchases["request_id"].fillna("-")) == ["r-b-0", "-"]
    report = build_report(experiment, exposures, purchases, outcomes=outcomes, window_hours=24)
    champion, challenger = report.variants
    assert report.metrics == ("click_through", "converted", "recommended_bought")
    assert champion.means["click_through"] == pytest.approx(1 / 2)  # a's answer clicked, e1's part of the batch not
    # b's first answer came back (as the purchase), the second did not; e2's part of the batch did
    assert challenger.means["click_through"] == pytest.approx(2 / 3)
    assert challenger.means["recommended_bought"] == pytest.approx(1 / 2)  # b's named purchase, 40 h on
    assert (report.attributed, report.named) == (1, 1)
    without = build_report(experiment, exposures, purchases_from(events, None, experiment), window_hours=24)
    assert without.metrics == ("converted", "recommended_bought") and without.attributed == 0


def test_a_purchase_naming_a_batch_it_was_not_in_falls_back_to_last_touch() -> None:
    """c3 buys with the id of an email batch sent to c1 and c2 (a forwarded email): not that
    answer's, but c3's own exposure an hour before still takes it."""
    exposures = pd.DataFrame([_exposure("c1", "champion", 0, ["i1"], request_id="batch"),
                              _exposure("c2", "challenger", 0, ["i2"], request_id="batch"),
                              _exposure("c3", "challenger", 1, ["i1"])])
    purchases = pd.DataFrame([{**_purchase("c1", 2, "i1"), "request_id": "batch"},
                              {**_purchase("c3", 2, "i1"), "request_id": "batch"}])
    report = build_report(_experiment(), exposures, purchases)
    assert (report.attributed, report.named) == (2, 1)
    assert report.per_unit.loc["c3", "recommended_bought"] == 1.0


def test_orders_and_purchase_events_of_one_purchase_count_once() -> None:
    """A shop that sends purchase events and loads its orders: the event keeps the answer it named
    and takes the order line's revenue; lines without an event, and events without a line, stay."""
    events = pd.DataFrame({"session_id": ["s1", "s2"], "event_type": ["purchase", "purchase"],
                           "ts": [T0, T0 + pd.Timedelta(hours=3)], "customer_id": ["c1", "c2"],
                           "item_id": ["i1", "i2"]})
    outcomes = pd.DataFrame([_outcome("r1", "purchase", "i1", "s1", "c1", hours=0)])
    orders = pd.DataFrame({"customer_id": ["c1", "c1", "c3"], "item_id": ["i1", "i5", "i1"],
                           "ts": [T0 + pd.Timedelta(minutes=2), T0, T0], "unit_price": [2.0, 1.0, 4.0],
                           "quantity": [3, 1, 1]})
    bought = purchases_from(events, orders, _experiment(), outcomes).sort_values(["unit", "item_id"])
    assert list(zip(bought["unit"], bought["item_id"], bought["revenue"].fillna(-1), bought["request_id"].fillna("-"),
                    strict=True)) == [("c1", "i1", 6.0, "r1"), ("c1", "i5", 1.0, "-"), ("c2", "i2", -1, "-"),
                                      ("c3", "i1", 4.0, "-")]


def test_times_and_ids_of_any_resolution_are_joined() -> None:
    """A database gives times in seconds and ids as objects; the report joins them all the same."""
    exposures = pd.DataFrame([_exposure("a", "champion", 0, ["i1"]), _exposure("b", "challenger", 0, ["i1"])])
    purchases = pd.DataFrame([_purchase("a", 1, "i1")]).astype({"ts": "datetime64[s, UTC]", "unit": object})
    assert build_report(_experiment(), exposures, purchases).attributed == 1


def test_purchases_come_from_events_and_orders_by_the_unit_rule() -> None:
    events = pd.DataFrame({"session_id": ["s1", "s2", "s3"], "event_type": ["purchase", "view", "purchase"],
                           "ts": [T0, T0, T0], "customer_id": ["c1", "c2", None], "item_id": ["i1", "i2", "i3"]})
    orders = pd.DataFrame({"customer_id": ["c4", "c5"], "item_id": ["i4", "i5"], "ts": [T0, T0],
                           "unit_price": [2.5, 3.0], "quantity": [2, -1]})  # c5's line is a return
    bought = purchases_from(events, orders, _experiment())
    assert list(bought["unit"]) == ["c1", "s3", "c4"] and list(bought["revenue"].fillna(-1)) == [-1, -1, 5.0]
    by_session = Experiment(**{**_experiment().__dict__, "unit": "session"})
    assert list(purchases_from(events, None, by_session)["unit"]) == ["s1", "s3"]


def _simulated(experiment: Experiment, rates: dict[str, float], seed: int, units: int = 6_000,
               drop_share: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customers assigned as the service would; each is shown items and buys a shown item with their
    variant's rate within a few hours, and something unshown at a shared background rate."""
    rng = np.random.default_rng(seed)
    exposures, purchases = [], []
    for number in range(units):
        unit = f"c{number}"
        variant = experiment.assign(unit).name
        if variant == experiment.variants[1].name and rng.random() < drop_share:
            continue  # a variant that loses units (a broken split)
        shown = [f"i{k}" for k in rng.choice(200, 5, replace=False)]
        exposures.append(_exposure(unit, variant, float(rng.uniform(0, 100)), shown, experiment.name))
        exposed_at = (exposures[-1]["ts"] - T0) / pd.Timedelta(hours=1)
        if rng.random() < rates[variant]:
            purchases.append(_purchase(unit, exposed_at + rng.uniform(0, 6), shown[0], float(rng.gamma(2, 20))))
        if rng.random() < 0.05:
            purchases.append(_purchase(unit, exposed_at + rng.uniform(0, 6), "i999", float(rng.gamma(2, 20))))
    return pd.DataFrame(exposures), pd.DataFrame(purchases)


def test_a_planted_lift_is_found() -> None:
    experiment = _experiment()
    exposures, purchases = _simulated(experiment, {"champion": 0.10, "challenger": 0.15}, seed=1)
    report = build_report(experiment, exposures, purchases, has_revenue=True)
    found = report.variants[1].lifts["recommended_bought"]
    assert found.significant and found.low < 0.5 < found.high  # the planted +50%
    assert report.variants[1].lifts["converted"].lift > 0 and not report.split.mismatch
    assert set(report.table().columns) >= {"variant", "units", "revenue", "revenue_lift", "converted_low"}


def test_an_a_a_split_finds_nothing_and_a_broken_split_is_flagged() -> None:
    experiment = _experiment(versions=("1", "1"))
    clean = [build_report(experiment, *_simulated(experiment, {"champion": 0.1, "challenger": 0.1}, seed=s,
                                                  units=2_000)) for s in range(20)]
    false_positives = sum(r.variants[1].lifts["recommended_bought"].significant for r in clean)
    assert false_positives <= 3  # 5% of 20 is 1; 3 or more happens in 7.5% of correct sets, 4+ in 1.6%
    assert not any(r.split.mismatch for r in clean)
    broken = build_report(experiment, *_simulated(experiment, {"champion": 0.1, "challenger": 0.1}, seed=0,
                                                  drop_share=0.2))
    assert broken.split.mismatch


@pytest.mark.parametrize("window", [1.0, 24.0])
def test_every_purchase_is_counted_once(window: float) -> None:
    experiment = _experiment()
    exposures, purchases = _simulated(experiment, {"champion": 0.2, "challenger": 0.2}, seed=3, units=500)
    report = build_report(experiment, exposures, purchases, window_hours=window)
    assert report.attributed <= len(purchases)
    assert sum(f.means["recommended_bought"] * f.units for f in report.variants) <= report.attributed
