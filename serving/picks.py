"""The email-picks batch job, local engine: the whole customer base (or a list) scored in blocks.

``shoprec picks --model models:/shoprec@champion --out picks.parquet`` loads the bundle,
scores customers block by block through :func:`score_block` (which is
:meth:`ShopRecommender.email_picks_block`, the very method behind ``POST /email_picks``, so
the endpoint and the batch give the same answers), streams one row per customer and rank
into a sink that swaps the new output in only at the end (:mod:`serving.picks_sinks`), and
logs a summary to MLflow as a batch run linked to the model version.

Memory is bounded by the block: scoring holds at most ``BLOCK_ROWS`` x items dense scores
at a time and the sinks stream; only the list of customer ids grows with the base.
"""

from __future__ import annotations

import time
from itertools import pairwise
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.sources import safe_url
from serving.lifecycle import Loaded
from serving.picks_sinks import DEFAULT_SQL_TIMEOUT_S, PICKS_COLUMNS, PicksSink, open_sink
from serving.recommender import ShopRecommender
from training.bundle import MANIFEST, Bundle, is_fallback

DEFAULT_BLOCK = 4096
"""Customers per :func:`score_block` call in the local loop (scoring sub-blocks them further)."""
EXPERIMENT = "shoprec-picks"
PRICE_QUANTILES = (0.2, 0.4, 0.6, 0.8)


def score_block(recommender: ShopRecommender, customer_ids: Sequence[str] | np.ndarray, k: int) -> pd.DataFrame:
    """Email picks for ``customer_ids`` as one row per customer and rank:
    ``customer_id, canonical_id, rank, item_id, score, reason, send, open_propensity, model_version``
    (``canonical_id``: the id it was scored as, an alias resolved).

    Rows follow the order of ``customer_ids``, ranks run 1..n per customer. Unknown ids get
    fallback picks (as the endpoint gives them); a customer gets no row only when nothing at
    all is in stock and allowed. Shared by the local and the Spark engine.
    """
    block = recommender.email_picks_block(customer_ids, k)
    valid = block.items >= 0
    per_customer = valid.sum(axis=1)
    flat = valid.ravel()
    width = block.items.shape[1]
    return pd.DataFrame({
        "customer_id": np.repeat(block.customer_ids, per_customer),
        "canonical_id": np.repeat(block.canonical_ids, per_customer),
        "rank": np.tile(np.arange(1, width + 1, dtype=np.int64), len(block.customer_ids))[flat],
        "item_id": recommender.item_ids[block.items.ravel()[flat]],
        "score": block.scores.ravel()[flat],
        "reason": block.reasons.ravel()[flat],
        "send": np.repeat(block.send, per_customer),
        "open_propensity": np.repeat(block.open_propensity, per_customer),
        "model_version": recommender.model_version,
    }, columns=PICKS_COLUMNS)


# ---- which customers -------------------------------------------------------------------------
@dataclass(frozen=True)
class CustomerList:
    """The ids to score and what was done to the input on the way (reported, never silent)."""

    ids: np.ndarray
    source: str
    rows_in: int
    empty: int = 0
    """Rows with an empty or missing customer_id: skipped and reported."""
    duplicates: int = 0
    """Repeated ids: scored once, reported."""

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "rows_in": self.rows_in, "empty_ids_skipped": self.empty,
                "duplicate_ids_dropped": self.duplicates, "customers": len(self.ids)}


def all_customers(bundle: Bundle) -> CustomerList:
    ids = np.asarray(bundle.customers.external_ids, dtype=object)
    return CustomerList(ids, "bundle (every customer)", len(ids))


def read_customers(path: Path) -> CustomerList:
    """Customer ids from a CSV (optionally .gz) or Parquet file with a ``customer_id`` column.

    A missing file or column, or a file without any id, is a ``ValueError`` / ``FileNotFoundError``
    naming the file; empty ids are skipped and duplicates scored once, both counted.
    """
    if not path.is_file():
        raise FileNotFoundError(f"--customers {path}: no such file")
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            columns = pq.read_schema(path).names
            if "customer_id" not in columns:
                raise ValueError(_missing_column(path, columns))
            frame = pd.read_parquet(path, columns=["customer_id"])
        elif name.endswith((".csv", ".csv.gz")):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
            if "customer_id" not in frame.columns:
                raise ValueError(_missing_column(path, list(frame.columns)))
        else:
            raise ValueError(f"--customers {path}: use a .csv, .csv.gz or .parquet file with a customer_id column")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, UnicodeDecodeError,
            pa.ArrowException) as error:
        raise ValueError(f"--customers {path}: cannot read it ({str(error).splitlines()[0]})") from None
    raw = frame["customer_id"]
    present = raw.notna().to_numpy() & (raw.astype(str).str.strip() != "").to_numpy()
    ids = raw[present].astype(str).str.strip()
    unique = pd.unique(ids.to_numpy(dtype=object))
    if not len(unique):
        raise ValueError(f"--customers {path}: no customer ids in column customer_id ({len(frame):,} rows)")
    return CustomerList(np.asarray(unique, dtype=object), str(path), len(frame), int((~present).sum()),
                        int(len(ids) - len(unique)))


def _missing_column(path: Path, columns: list[str]) -> str:
    shown = ", ".join(map(str, columns[:8])) + (", ..." if len(columns) > 8 else "")
    return f"--customers {path}: no 'customer_id' column (columns: {shown or 'none'})"


# ---- which model --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRef:
    """A model URI resolved to one bundle, without loading it: what both engines report and tag.

    An alias is pinned to the version it points at when resolved, so a promotion during a job
    cannot mix two models.
    """

    uri: str
    """As given: ``models:/shoprec@champion``, ``models:/shoprec/3`` or a folder."""
    version: str
    """What every row reports as model_version: ``<name>/v<version>`` as the service does,
    ``local/<folder>`` for a bundle folder."""
    name: str | None = None
    registry_version: str | None = None
    source_run_id: str | None = None
    """The training run that logged the registered version."""
    model_id: str | None = None
    """The version's MLflow 3 logged model, when there is one."""
    folder: Path | None = None
    """The bundle folder of a local model; None for a registry model (downloaded when loaded)."""

    @property
    def pinned_uri(self) -> str:
        """``models:/NAME/VERSION`` for a registry model (an alias pinned), else the bundle folder."""
        return f"models:/{self.name}/{self.registry_version}" if self.folder is None else str(self.folder)


@dataclass(frozen=True)
class LoadedModel(ModelRef):
    bundle: Bundle = field(kw_only=True)


def resolve_model_uri(uri: str) -> ModelRef:
    """``models:/NAME@ALIAS`` (pinned to its version now), ``models:/NAME/VERSION`` or a bundle
    folder (also a folder holding one, as a downloaded MLflow model does), checked but not loaded.

    A malformed URI, a name, alias or version the registry does not have, or a folder without a
    bundle is a ``ValueError`` / ``FileNotFoundError`` naming ``--model``. Shared by both engines.
    """
    if not uri.startswith("models:/"):
        path = Path(uri)
        return ModelRef(uri, f"local/{path.resolve().name}", folder=find_bundle(path, uri))
    from mlflow.exceptions import MlflowException

    from training import tracking

    name, alias, version = _parse_models_uri(uri)
    client = tracking.configure()
    try:
        found = (client.get_model_version_by_alias(name, alias) if alias is not None
                 else client.get_model_version(name, str(version)))
    except MlflowException as error:
        raise ValueError(f"--model {uri}: not found in the registry at {safe_url(tracking.tracking_uri())} "
                         f"({error.message.splitlines()[0]})") from None
    return ModelRef(uri, f"{name}/v{found.version}", name, str(found.version), found.run_id or None,
                    getattr(found, "model_id", None) or None)


def load_model(uri: str, cache_dir: Path | None = None) -> LoadedModel:
    """The bundle :func:`resolve_model_uri` points at, loaded (checksums verified on load).

    Registry versions come through the one bundle cache the service uses
    (:class:`serving.lifecycle.BundleCache`, ``SHOPREC_HOME/serving-cache``), keyed by what the
    registry says the version is, so a recreated registry's ``v1`` is never an older ``v1``.
    The batch never touches the service's record of what it last served.
    """
    ref = resolve_model_uri(uri)
    bundle = Bundle.load(ref.folder) if ref.folder is not None else registry_copy(ref, cache_dir).bundle
    return LoadedModel(**vars(ref), bundle=bundle)


def registry_copy(ref: ModelRef, cache_dir: Path | None = None) -> Loaded:
    """A registry model's verified local copy, from the shared cache (downloaded on first use)."""
    from serving.lifecycle import BundleCache

    cache = BundleCache(ref.name or "", cache_dir)
    return cache.fetch(cache.version(ref.registry_version or ""))


def find_bundle(path: Path, uri: str) -> Path:
    """The bundle folder at ``path`` or below it (a downloaded MLflow model: artifacts/bundle)."""
    if not path.is_dir():
        raise FileNotFoundError(f"--model {uri}: no such folder (or use models:/NAME@ALIAS)")
    folder = path if (path / MANIFEST).is_file() else next((p.parent for p in sorted(path.rglob(MANIFEST))), None)
    if folder is None:
        raise ValueError(f"--model {uri}: no shoprec bundle ({MANIFEST}) in this folder")
    return folder


def _parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    rest = uri[len("models:/"):].strip("/")
    if "@" in rest and "/" not in rest:
        name, alias = rest.split("@", 1)
        if name and alias:
            return name, alias, None
    elif rest.count("/") == 1:
        name, version = rest.split("/")
        if name and version.isdigit():
            return name, None, version
    raise ValueError(f"--model {uri}: use models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder")


# ---- the run summary --------------------------------------------------------------------------
@dataclass
class PicksSummary:
    """Counters over the written picks; blocks add up, so engines can sum partial summaries."""

    k: int
    customers: int = 0
    customers_with_picks: int = 0
    short_customers: int = 0
    """Fewer than k picks (fewer than k items in stock and allowed)."""
    sent: int = 0
    fallback_customers: int = 0
    """At least one pick that is not personal (popular in segment / category / shop)."""
    unknown_customers: int = 0
    """Not in the bundle at all: fallbacks only."""
    cold_customers: int = 0
    """In the bundle without history: fallbacks only."""
    alias_customers: int = 0
    """Listed under a merged duplicate id (customer_aliases): scored as their canonical id."""
    picks: int = 0
    rows_written: int = 0
    item_picks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    reasons: dict[str, int] = field(default_factory=dict)

    def update(self, recommender: ShopRecommender, customer_ids: Sequence[str] | np.ndarray, frame: pd.DataFrame) -> None:
        """Add one scored block (``frame`` as :func:`score_block` returns it for ``customer_ids``)."""
        self.add_customers(recommender, customer_ids)
        if not len(frame):
            return
        rank = frame["rank"].to_numpy()
        starts = np.flatnonzero(rank == 1)
        counts = np.diff(np.append(starts, len(frame)))
        not_personal = is_fallback(frame["reason"].to_numpy())
        self.customers_with_picks += len(starts)
        self.short_customers += int((counts < self.k).sum()) + len(customer_ids) - len(starts)
        self.sent += int(frame["send"].to_numpy()[starts].sum())
        self.fallback_customers += int(np.logical_or.reduceat(not_personal, starts).sum())
        self.picks += len(frame)
        codes, uniques = pd.factorize(frame["item_id"])
        if len(self.item_picks) != recommender.n_items:
            self.item_picks = np.zeros(recommender.n_items, dtype=np.int64)
        item_idx = recommender.bundle.items.to_index(np.asarray(uniques, dtype=object), unknown="mark")
        np.add.at(self.item_picks, item_idx[item_idx >= 0], np.bincount(codes)[item_idx >= 0])
        for reason, count in frame["reason"].value_counts(sort=False).items():
            self.reasons[reason] = self.reasons.get(reason, 0) + int(count)

    def add_customers(self, recommender: ShopRecommender, customer_ids: Sequence[str] | np.ndarray) -> None:
        """Count the scored ids: all, unknown, known without history, given as an alias."""
        ids = np.asarray(customer_ids, dtype=object)
        canonical = recommender.bundle.canonical_ids(ids)
        raw = recommender.bundle.customers.to_index(canonical, unknown="mark")
        self.customers += len(ids)
        self.unknown_customers += int((raw < 0).sum())
        self.cold_customers += int((~recommender.has_history[raw[raw >= 0]]).sum())
        self.alias_customers += int((canonical != ids).sum())

    def to_dict(self, recommender: ShopRecommender) -> dict[str, Any]:
        """Counts plus the distributions of reasons, price bands and categories in the picks."""
        counts = self.item_picks if len(self.item_picks) else np.zeros(recommender.n_items, dtype=np.int64)
        labels, band = price_bands(recommender)
        by_band = np.bincount(band, weights=counts, minlength=len(labels))
        by_category = np.bincount(recommender.item_category, weights=counts, minlength=len(recommender.categories))
        categories = sorted(((str(c), int(n)) for c, n in zip(recommender.categories, by_category, strict=True)
                             if n), key=lambda cn: (-cn[1], cn[0]))
        return {
            "customers": self.customers, "customers_with_picks": self.customers_with_picks,
            "short_customers": self.short_customers, "sent": self.sent,
            "sent_share": self.sent / max(self.customers, 1),
            "fallback_customers": self.fallback_customers, "unknown_customers": self.unknown_customers,
            "cold_customers": self.cold_customers, "alias_customers": self.alias_customers,
            "picks": self.picks, "rows_written": self.rows_written,
            "reasons": _reason_groups(self.reasons),
            "price_bands": {label: int(n) for label, n in zip(labels, by_band, strict=True)},
            "categories": dict(categories),
        }


def price_bands(recommender: ShopRecommender) -> tuple[list[str], np.ndarray]:
    """Catalogue price quintiles (in-stock items) as labels, and each item's band index."""
    priced = recommender.price[recommender.in_stock & (recommender.price > 0)]
    if not len(priced):
        return ["all prices"], np.zeros(recommender.n_items, dtype=np.int64)
    edges = np.unique(np.quantile(priced, PRICE_QUANTILES))
    bounds = [f"{e:,.2f}" for e in edges]
    labels = ([f"q1 <= {bounds[0]}"] + [f"q{i + 2} {lo}-{hi}" for i, (lo, hi) in enumerate(pairwise(bounds))]
              + [f"q{len(edges) + 1} > {bounds[-1]}"])
    return labels, np.searchsorted(edges, recommender.price, side="left")


def _reason_groups(reasons: dict[str, int]) -> dict[str, int]:
    """Picks per kind of reason (``popular_in:<category>`` -> ``popular_in``), most first."""
    groups: dict[str, int] = {}
    for reason, count in reasons.items():
        kind = reason.split(":", 1)[0]
        groups[kind] = groups.get(kind, 0) + count
    return dict(sorted(groups.items(), key=lambda kv: -kv[1]))


# ---- the run ---------------------------------------------------------------------------------------
def blocks(ids: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def run_picks(recommender: ShopRecommender, ids: np.ndarray, k: int, sink: PicksSink, *,
              only_send: bool = False, block: int = DEFAULT_BLOCK,
              progress: Callable[[int], None] | None = None) -> PicksSummary:
    """Score ``ids`` block by block into ``sink`` (not committed here); returns the summary.

    With ``only_send`` only customers marked ``send`` are written; the summary counts everyone.
    """
    summary = PicksSummary(k)
    for chunk in blocks(ids, block):
        frame = score_block(recommender, chunk, k)
        summary.update(recommender, chunk, frame)
        if only_send:
            frame = frame[frame["send"].to_numpy()]
        sink.write(frame)
        summary.rows_written += len(frame)
        if progress is not None:
            progress(len(chunk))
    return summary


@dataclass
class JobResult:
    summary: dict[str, Any]
    model_version: str
    output: str
    seconds: float
    customers_per_s: float
    run_id: str | None = None


def run_job(model: str, out: str, *, k: int = 10, customers_file: Path | None = None, only_send: bool = False,
            table: str = "email_picks", sql_timeout_s: float = DEFAULT_SQL_TIMEOUT_S,
            block: int = DEFAULT_BLOCK, track: bool = True,
            progress: Callable[[int, int], None] | None = None, log: Callable[[str], None] = lambda _: None,
            ) -> JobResult:
    """Load, score, write atomically, summarise and (with ``track``) log the MLflow batch run.

    ``progress(done, total)`` is called after every block. Any failure aborts the sink (the
    previous output stays) and marks the MLflow run FAILED.
    """
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    sink = open_sink(out, table, sql_timeout_s)  # bad targets and customer files fail before the model is fetched
    listed = read_customers(customers_file) if customers_file is not None else None
    log(f"loading {model}")
    loaded = load_model(model)
    recommender = ShopRecommender(loaded.bundle, loaded.version)
    customers = listed if listed is not None else all_customers(loaded.bundle)
    log(f"scoring {len(customers.ids):,} customers with {loaded.version} into {sink.description}")
    run = (start_picks_run(loaded, engine="local", k=k, only_send=only_send, customers_source=customers.source,
                           output=sink.description, params={"block": block}) if track else None)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, len(customers.ids))

    try:
        scoring_started = time.perf_counter()
        advance(0)
        with sink, threadpool_limits(1, user_api="blas"):
            summary = run_picks(recommender, customers.ids, k, sink, only_send=only_send, block=block,
                                progress=advance)
        seconds = time.perf_counter() - scoring_started
    except BaseException:
        if run is not None:
            fail_picks_run()
        raise
    result = summary.to_dict(recommender)
    result["input"] = customers.to_dict()
    rate = len(customers.ids) / max(seconds, 1e-9)
    result.update(engine="local", model_version=loaded.version, model_uri=loaded.uri, output=sink.description,
                  only_send=only_send, k=k, seconds=round(seconds, 3),
                  seconds_with_load=round(time.perf_counter() - started, 3), customers_per_s=round(rate, 1))
    run_id = finish_picks_run(run, loaded, result) if run is not None else None
    return JobResult(result, loaded.version, sink.description, seconds, rate, run_id)


# ---- the MLflow batch run (both engines) ---------------------------------------------------------
def start_picks_run(model: ModelRef, *, engine: str, k: int, only_send: bool, customers_source: str, output: str,
                    params: dict[str, Any] | None = None) -> Any:
    """Open the batch run of one picks job in the ``shoprec-picks`` experiment, for either engine.

    Tagged with the model (URI as given, version reported, registry name and version, the
    training run) and, on MLflow 3, with the version's logged model as the run's input. The
    run is MLflow's active run until :func:`finish_picks_run` or :func:`fail_picks_run` ends
    it; ``params`` adds the engine's own settings (block, partitions, ...).
    """
    import mlflow

    from training import tracking

    client = tracking.configure()
    experiment_id = tracking.ensure_experiment(client, EXPERIMENT)
    tracking.fail_dead_runs(client, experiment_id)
    tags = {**tracking.process_tags(), "shoprec.kind": "picks-batch", "shoprec.engine": engine, "shoprec.model_uri": model.uri,
            "shoprec.model_version": model.version, "shoprec.output": output}
    if model.name:
        tags.update({"shoprec.model_name": model.name, "shoprec.registry_version": model.registry_version or ""})
    if model.source_run_id:
        tags["shoprec.source_run_id"] = model.source_run_id
    run = mlflow.start_run(experiment_id=experiment_id, run_name=f"picks {model.version} ({engine})", tags=tags)
    try:
        mlflow.log_params({"model_uri": model.uri, "model_version": model.version, "k": k, "engine": engine,
                           "only_send": only_send, "customers_source": customers_source, "output": output,
                           **(params or {})})
        if model.model_id:  # MLflow 3: the run's input is the version's logged model
            from mlflow.entities import LoggedModelInput

            mlflow.log_inputs(models=[LoggedModelInput(model.model_id)])
    except BaseException:
        fail_picks_run()
        raise
    return run


def fail_picks_run() -> None:
    """End the active picks run as FAILED (the job raised; its previous output is kept)."""
    import mlflow

    mlflow.end_run("FAILED")


def finish_picks_run(run: Any, model: ModelRef, result: dict[str, Any]) -> str:
    """Log the summary (metrics and ``picks_summary.json``), end the run, link it from the model
    version (tag ``shoprec.last_picks_run_id``); returns the run id."""
    import mlflow

    from training import tracking

    mlflow.log_metrics({
        "customers": result["customers"], "sent": result["sent"], "sent_share": result["sent_share"],
        "fallback_customers": result["fallback_customers"], "unknown_customers": result["unknown_customers"],
        "cold_customers": result["cold_customers"], "alias_customers": result["alias_customers"],
        "short_customers": result["short_customers"],
        "rows_written": result["rows_written"], "duplicate_ids_dropped": result["input"]["duplicate_ids_dropped"],
        "empty_ids_skipped": result["input"]["empty_ids_skipped"], "seconds": result["seconds"],
        "customers_per_s": result["customers_per_s"]})
    mlflow.log_dict(result, "picks_summary.json")
    run_id = run.info.run_id
    mlflow.end_run()
    if model.name and model.registry_version:
        tracking.configure().set_model_version_tag(model.name, model.registry_version,
                                                   "shoprec.last_picks_run_id", run_id)
    return run_id


# ---- presentation (the CLI) ----------------------------------------------------------------------
@contextmanager
def progress_bar(console: Any) -> Iterator[Callable[[int, int], None]]:
    """A bar with customers/second on a terminal; a plain line every 10% otherwise (CI logs, pipes).

    The rate counts from the first call (``done == 0``: scoring starts), not from loading.
    """
    clock = {"start": time.perf_counter()}

    def rate_of(done: int) -> float:
        if done == 0:
            clock["start"] = time.perf_counter()
        return done / max(time.perf_counter() - clock["start"], 1e-9)
    if console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]} customers/s"), TimeRemainingColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("scoring", total=None, rate="-")

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total, rate=f"{rate_of(done):,.0f}")

            yield update
        return
    last = [-1]

    def line(done: int, total: int) -> None:
        rate = rate_of(done)
        decile = done * 10 // max(total, 1)
        if done and decile != last[0]:
            last[0] = decile
            console.print(f"  scored {done:,}/{total:,} customers ({rate:,.0f} customers/s)", highlight=False)

    yield line


def render_summary(result: JobResult, top: int = 8) -> Any:
    """The run summary as a rich table: counts, reasons, price bands and the top categories."""
    from rich.table import Table

    s = result.summary
    table = Table(title=f"Email picks: {result.model_version} -> {result.output}", title_justify="left",
                  show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    inputs = s["input"]
    rows = [("customers scored", f"{s['customers']:,}"),
            ("marked send", f"{s['sent']:,} ({s['sent_share']:.1%})"),
            ("with fallback picks", f"{s['fallback_customers']:,}"),
            ("unknown ids (fallbacks only)", f"{s['unknown_customers']:,}"),
            ("known, no history (fallbacks only)", f"{s['cold_customers']:,}"),
            ("alias ids (scored as their canonical id)", f"{s['alias_customers']:,}"),
            ("fewer than k picks", f"{s['short_customers']:,}"),
            ("duplicate ids dropped", f"{inputs['duplicate_ids_dropped']:,}"),
            ("empty ids skipped", f"{inputs['empty_ids_skipped']:,}"),
            ("rows written", f"{s['rows_written']:,}"),
            ("seconds (scoring + writing)", f"{s['seconds']:,.2f} ({s['customers_per_s']:,.0f} customers/s)")]
    picks = max(s["picks"], 1)
    rows += [(f"reason: {name}", f"{n / picks:.1%}") for name, n in s["reasons"].items()]
    rows += [(f"price band {name}", f"{n / picks:.1%}") for name, n in s["price_bands"].items()]
    rows += [(f"category {name}", f"{n / picks:.1%}") for name, n in list(s["categories"].items())[:top]]
    for what, value in rows:
        table.add_row(what, value)
    return table
