"""``shoprec experiment report``: what each variant of an online experiment did, with its uncertainty.

Reads the experiment's exposures and outcomes (the service's exposure log) and the purchases
that followed them: the ``purchase`` events of the live event log and, when a shop's data is
given, its orders (which also carry revenue). A purchase event that names the answer it came
from (its ``request_id``, kept in the outcome log) is attributed to that answer. Any other
purchase goes to the unit's last exposure before it, within the attribution window (last touch;
24 hours by default): the unit is the customer id of the purchase (else its session id) for an
experiment by customer, the other way round by session, as the service assigned them.

Per variant and unit (units are the independent draws, docs/experiments.md):

- ``click_through``: the share of answers that an event came back from (a click, which the
  client sends as the view it leads to with the answer's ``request_id``), as clicked answers over
  answers, a ratio of sums over units (training/experiment_stats.py); only when any came back;
- ``converted``: bought anything attributed to an exposure (0/1);
- ``recommended_bought``: purchases of an item the unit was shown in the exposure they followed;
- ``revenue``: unit price times quantity of the attributed order lines (orders only).

Each variant other than the first (the control) gets its lift over the control with a 95%
interval (:mod:`training.experiment_stats`), and the split is checked for a sample-ratio
mismatch. Everything is printed by the CLI and logged to MLflow (experiment
``shoprec-experiments``: the figures as metrics, the table as an artifact, a lift plot).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from features.errors import first_line
from features.sources import safe_url
from serving.event_log import default_event_log_location
from serving.event_log.common import EVENT_LOG_ENV, EVENTS_TABLE, EventLogError
from serving.event_log.reading import read_log
from serving.exposures import EXPOSURES_TABLE, OUTCOMES_TABLE
from training.experiment_stats import Lift, SampleRatio, lift, sample_ratio
from training.experiments import Experiment

METRICS = ("click_through", "converted", "recommended_bought", "revenue")
RATIOS = {"click_through": ("clicks", "exposures")}
"""Metrics that are a ratio of two per-unit sums: (numerator, denominator)."""
TRACKING_EXPERIMENT = "shoprec-experiments"
SAME_PURCHASE = pd.Timedelta(days=1)
"""A purchase event and an order line of the same unit and item this close are one purchase."""


@dataclass(frozen=True)
class VariantFigures:
    variant: str
    version: str
    planned_share: float
    units: int
    exposures: int
    means: dict[str, float]
    """Per-unit mean of each metric."""
    lifts: dict[str, Lift]
    """Lift over the control per metric (empty for the control itself)."""


@dataclass(frozen=True)
class ExperimentReport:
    experiment: Experiment
    window_hours: float
    variants: list[VariantFigures]
    split: SampleRatio
    purchases: int
    """Purchases read (live events and order lines)."""
    attributed: int
    """Of those, purchases attributed to an exposure (by its request_id, else within the window)."""
    named: int
    """Of those, purchases attributed by the request_id they carried."""
    has_revenue: bool
    has_clicks: bool
    """Whether any event came back with a request_id (else click-through is left out)."""
    mixed_units: int
    """Units exposed to more than one variant (left out: they cannot be attributed)."""
    per_unit: pd.DataFrame
    """One row per unit: its variant, exposures, clicks and each metric's value (the draws the
    statistics are computed from, for a plot, a bootstrap or planning the next experiment)."""

    def table(self) -> pd.DataFrame:
        rows = []
        for figures in self.variants:
            row: dict[str, object] = {"variant": figures.variant, "version": figures.version,
                                      "planned": figures.planned_share, "units": figures.units,
                                      "exposures": figures.exposures}
            for metric in self.metrics:
                row[metric] = figures.means[metric]
                found = figures.lifts.get(metric)
                row[f"{metric}_lift"] = found.lift if found else None
                row[f"{metric}_low"] = found.low if found else None
                row[f"{metric}_high"] = found.high if found else None
            rows.append(row)
        return pd.DataFrame(rows)

    @property
    def metrics(self) -> tuple[str, ...]:
        return metrics_of(self.has_clicks, self.has_revenue)


def metrics_of(has_clicks: bool, has_revenue: bool) -> tuple[str, ...]:
    """The metrics a report can give from what its inputs hold."""
    return tuple(m for m in METRICS if (m != "click_through" or has_clicks) and (m != "revenue" or has_revenue))


def unit_column(experiment: Experiment, frame: pd.DataFrame) -> pd.Series:
    """The unit of each row as the service assigned it (:meth:`Experiment.unit_of`)."""
    customer = frame["customer_id"].where(frame["customer_id"].notna() & (frame["customer_id"] != ""))
    session = frame["session_id"].where(frame["session_id"].notna() & (frame["session_id"] != ""))
    return customer.fillna(session) if experiment.unit == "customer" else session.fillna(customer)


def _times(values: pd.Series) -> pd.Series:
    """UTC microseconds, whatever the source gave (a database may give seconds or text)."""
    return pd.to_datetime(values, utc=True).dt.as_unit("us")


def purchases_from(events: pd.DataFrame, orders: pd.DataFrame | None, experiment: Experiment,
                   outcomes: pd.DataFrame | None = None) -> pd.DataFrame:
    """Purchases as (unit, ts, item_id, revenue, request_id): the event log's purchase events (no
    revenue), with the request_id (and the merged customer id) the outcome log holds for those that
    named an answer, and the shop's order lines (``orders`` of the data contract, returns left out).
    An order line's unit is its customer: orders carry no session, so an experiment by session
    counts them only for customers. A purchase event and an order line of the same unit and item
    within a day are one purchase (:func:`_one_purchase_each`)."""
    bought = events[events["event_type"] == "purchase"]
    bought = bought.assign(ts=_times(bought["ts"]), session_id=bought["session_id"].astype(str),
                           item_id=bought["item_id"].astype(str))
    if outcomes is not None and len(outcomes):
        named = outcomes[outcomes["event_type"] == "purchase"]
        named = pd.DataFrame({"session_id": named["session_id"].astype(str), "item_id": named["item_id"].astype(str),
                              "ts": _times(named["ts"]), "request_id": named["request_id"],
                              "named_customer": named["customer_id"]}).drop_duplicates(["session_id", "item_id", "ts"])
        bought = bought.merge(named, on=["session_id", "item_id", "ts"], how="left")
        bought["customer_id"] = bought["named_customer"].where(bought["named_customer"].notna(), bought["customer_id"])
    else:
        bought = bought.assign(request_id=None)
    from_events = pd.DataFrame({"unit": unit_column(experiment, bought), "ts": bought["ts"],
                                "item_id": bought["item_id"], "revenue": np.nan, "request_id": bought["request_id"]})
    from_events = from_events.dropna(subset=["unit"]).astype({"unit": str})
    frames = [from_events]
    if orders is not None and len(orders):
        lines = orders[orders["quantity"] > 0]  # a return is not an outcome of the exposure before it
        lines = pd.DataFrame({"unit": lines["customer_id"].astype(str), "ts": _times(lines["ts"]),
                              "item_id": lines["item_id"].astype(str),
                              "revenue": (lines["unit_price"] * lines["quantity"]).astype(float), "request_id": None})
        frames = list(_one_purchase_each(from_events, lines))
    return pd.concat(frames, ignore_index=True)


def _one_purchase_each(from_events: pd.DataFrame, lines: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A shop that sends its purchases to ``POST /events`` and loads its orders has each purchase
    twice. The event (which may name its answer) and the nearest order line of the same unit and
    item within :data:`SAME_PURCHASE` are one purchase: the event takes the line's revenue, the line goes."""
    lines = lines.assign(line=np.arange(len(lines)))
    matched = pd.merge_asof(
        from_events.sort_values("ts"),
        lines[["ts", "unit", "item_id", "revenue", "line"]].rename(columns={"ts": "line_ts", "revenue": "line_revenue"})
        .sort_values("line_ts"),
        left_on="ts", right_on="line_ts", by=["unit", "item_id"], direction="nearest", tolerance=SAME_PURCHASE)
    first = matched["line"].notna() & ~matched["line"].duplicated()  # one line's revenue counted once
    matched["revenue"] = matched["line_revenue"].where(first)
    kept_lines = lines[~lines["line"].isin(matched["line"].dropna())]
    return (matched.drop(columns=["line_ts", "line_revenue", "line"]), kept_lines.drop(columns=["line"]))


def _by_request(frame: pd.DataFrame, shown: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``frame`` (with ``unit`` and ``request_id``) joined to the exposure whose request_id they
    carry, with ``row``, the index of the row in ``frame``. An answer to one unit takes the row
    whatever ids it came with (a click from a visitor who was not logged in); an id logged for
    several units (a client reusing ids, or a log from before each ``/email_picks`` customer got
    an id of their own) takes only the rows of those units. The unit of the result is the
    exposure's."""
    frame = frame.assign(row=frame.index)
    if not frame["request_id"].notna().any():
        return frame.iloc[0:0].assign(exposed_at=pd.Series(dtype="datetime64[us, UTC]"), items=None)
    shared = shown.groupby("request_id")["unit"].transform("size").gt(1)
    joined = frame.rename(columns={"unit": "own_unit"}).merge(shown.assign(shared=shared), on="request_id")
    return joined[~joined["shared"] | (joined["own_unit"] == joined["unit"])].drop(columns=["own_unit", "shared"])


def build_report(experiment: Experiment, exposures: pd.DataFrame, purchases: pd.DataFrame, *,
                 outcomes: pd.DataFrame | None = None, window_hours: float = 24.0,
                 has_revenue: bool = False) -> ExperimentReport:
    """Attribute ``purchases`` (unit, ts, item_id, revenue, request_id) and ``outcomes`` (the outcome
    log's events that named an answer) to ``exposures`` and compare the variants."""
    exposures = exposures[exposures["experiment"] == experiment.name]
    exposures = exposures.assign(ts=_times(exposures["ts"]), unit=exposures["unit"].astype(str))
    variants_per_unit = exposures.groupby("unit")["variant"].nunique()
    mixed = set(variants_per_unit.index[variants_per_unit > 1])
    exposures = exposures[~exposures["unit"].isin(mixed)]
    unit_variant = exposures.drop_duplicates("unit").set_index("unit")["variant"]
    shown = exposures[["request_id", "unit", "ts", "items"]].rename(columns={"ts": "exposed_at"})

    if "request_id" not in purchases:  # none named an answer
        purchases = purchases.assign(request_id=None)
    purchases = purchases.assign(ts=_times(purchases["ts"]), unit=purchases["unit"].astype(str))
    named = _by_request(purchases, shown)
    rest = purchases.drop(index=named["row"].unique())  # any other purchase: last touch, request_id or not
    rest = rest[rest["unit"].isin(unit_variant.index)].sort_values("ts")
    touched = pd.merge_asof(rest.drop(columns=["request_id"]), shown.drop(columns=["request_id"]).sort_values(
        "exposed_at"), left_on="ts", right_on="exposed_at", by="unit", direction="backward",
        tolerance=pd.Timedelta(hours=window_hours))
    matched = pd.concat([named.drop(columns=["request_id", "row"]), touched[touched["exposed_at"].notna()]],
                        ignore_index=True)
    matched = matched.assign(recommended=[item in (items if items is not None else ())
                                          for item, items in zip(matched["item_id"], matched["items"], strict=True)])
    per_unit = pd.DataFrame(index=unit_variant.index)
    per_unit["variant"] = unit_variant
    grouped = matched.groupby("unit")
    per_unit["converted"] = grouped.size().reindex(per_unit.index, fill_value=0).gt(0).astype(float)
    per_unit["recommended_bought"] = grouped["recommended"].sum().reindex(per_unit.index, fill_value=0).astype(float)
    per_unit["revenue"] = grouped["revenue"].sum(min_count=1).reindex(per_unit.index).fillna(0.0)
    per_unit["exposures"] = exposures.groupby("unit").size().reindex(per_unit.index, fill_value=0).astype(float)
    has_clicks = outcomes is not None and bool(outcomes["request_id"].isin(shown["request_id"]).any())
    clicked = pd.DataFrame(columns=["request_id", "unit"])
    if has_clicks:
        assert outcomes is not None
        clicked = _by_request(outcomes.assign(unit=unit_column(experiment, outcomes).astype(str)), shown)
    per_unit["clicks"] = (clicked.drop_duplicates(["request_id", "unit"]).groupby("unit").size()
                          .reindex(per_unit.index, fill_value=0).astype(float))

    metrics = metrics_of(has_clicks, has_revenue)
    control_variant = experiment.variants[0].name  # the one the others are compared with
    control = per_unit[per_unit["variant"] == control_variant]
    counts = exposures.groupby("variant").size()
    figures = []
    for variant in experiment.variants:
        units = per_unit[per_unit["variant"] == variant.name]
        means, lifts = {}, {}
        for metric in metrics:
            numerator, denominator = RATIOS.get(metric, (metric, None))
            per_c = None if denominator is None else control[denominator].to_numpy()
            per_t = None if denominator is None else units[denominator].to_numpy()
            found = lift(control[numerator].to_numpy(), units[numerator].to_numpy(), per_c, per_t)
            means[metric] = found.variant_mean
            if variant.name != control_variant:
                lifts[metric] = found
        figures.append(VariantFigures(variant.name, variant.version, variant.share, len(units),
                                      int(counts.get(variant.name, 0)), means, lifts))
    split = sample_ratio([f.units for f in figures], [v.share for v in experiment.variants])
    return ExperimentReport(experiment, window_hours, figures, split, len(purchases), len(matched), len(named),
                            has_revenue, has_clicks, len(mixed), per_unit)


def read_exposures(folder: Path) -> pd.DataFrame:
    """Every exposure in the log: its Parquet parts and the live segments not compacted yet."""
    frame = read_log(folder, EXPOSURES_TABLE).to_pandas()
    return frame.drop_duplicates(subset=["request_id", "unit"])  # a segment read as it was being compacted


def read_outcomes(folder: Path) -> pd.DataFrame:
    """Every outcome (live event that named an answer) in the exposure log folder."""
    frame = read_log(folder, OUTCOMES_TABLE).to_pandas()
    return frame.drop_duplicates()  # a segment read as it was being compacted


def read_events(location: str | None = None) -> pd.DataFrame:
    """The live event log's purchase events, from a folder (parts and live segments; a row read twice
    during a compaction counts once) or a database; ``None`` is where the service writes them."""
    from features.sources import is_database_url

    location = location or os.environ.get(EVENT_LOG_ENV, "").strip() or str(default_event_log_location())
    if is_database_url(location):
        import sqlalchemy as sa

        engine = sa.create_engine(location)
        try:
            query = sa.text("select session_id, event_type, ts, customer_id, item_id from events "
                            "where event_type = 'purchase'")
            with engine.connect() as connection:
                return pd.read_sql_query(query, connection)
        except sa.exc.SQLAlchemyError as error:
            raise EventLogError(f"{safe_url(location)}: cannot read the events table ({first_line(error)})") from None
        finally:
            engine.dispose()
    frame = read_log(Path(location), EVENTS_TABLE).to_pandas()
    return frame[frame["event_type"] == "purchase"].drop_duplicates()


def lift_figure(report: ExperimentReport) -> Figure:
    """Each variant's lift over the control per metric, with its 95% interval."""
    fig = Figure(figsize=(6.5, 1.2 + 0.6 * len(report.metrics) * max(1, len(report.variants) - 1)))
    ax = fig.subplots()
    labels, values, lows, highs = [], [], [], []
    for figures in report.variants[1:]:
        for metric in report.metrics:
            found = figures.lifts[metric]
            labels.append(f"{figures.variant}: {metric}")
            values.append(found.lift or 0.0)
            lows.append((found.lift or 0.0) - (found.low if found.low is not None else found.lift or 0.0))
            highs.append((found.high if found.high is not None else found.lift or 0.0) - (found.lift or 0.0))
    y = np.arange(len(labels))
    ax.errorbar(values, y, xerr=[lows, highs], fmt="o", color="#3b75af", capsize=4)
    ax.axvline(0.0, color="#999999", linewidth=1)
    ax.set_yticks(y, labels)
    ax.set_xlabel(f"lift over {report.variants[0].variant} (95% interval)")
    ax.set_title(f"experiment {report.experiment.name}")
    fig.tight_layout()
    return fig


def log_report(report: ExperimentReport) -> str:
    """Log the report as a run of the ``shoprec-experiments`` MLflow experiment; the run id."""
    import mlflow

    from training import tracking

    client = tracking.configure()
    experiment_id = tracking.ensure_experiment(client, TRACKING_EXPERIMENT)
    experiment = report.experiment
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{experiment.name}-report") as run:
        mlflow.set_tags({"shoprec.experiment": experiment.name, "shoprec.model": experiment.model,
                         "shoprec.sample_ratio_mismatch": str(report.split.mismatch).lower(), **tracking.process_tags()})
        mlflow.log_params({"unit": experiment.unit, "window_hours": report.window_hours,
                           "started": experiment.started, "stopped": experiment.stopped or "",
                           "variants": ",".join(f"{v.name}:v{v.version}:{v.share:.4f}" for v in experiment.variants)})
        metrics: dict[str, float] = {"srm_p_value": report.split.p_value, "purchases": float(report.purchases),
                                     "attributed_purchases": float(report.attributed),
                                     "purchases_by_request_id": float(report.named),
                                     "mixed_units": float(report.mixed_units)}
        for figures in report.variants:
            metrics[f"{figures.variant}.units"] = float(figures.units)
            metrics[f"{figures.variant}.exposures"] = float(figures.exposures)
            for metric, value in figures.means.items():
                metrics[f"{figures.variant}.{metric}"] = value
            for metric, found in figures.lifts.items():
                for name, bound in (("lift", found.lift), ("lift_low", found.low), ("lift_high", found.high)):
                    if bound is not None:
                        metrics[f"{figures.variant}.{metric}.{name}"] = bound
        mlflow.log_metrics(metrics)
        mlflow.log_text(report.table().to_csv(index=False), "experiment_report.csv")
        if len(report.variants) > 1:
            mlflow.log_figure(lift_figure(report), "lift.png")
        return run.info.run_id

