"""The email-picks batch job: the whole customer base (or a list) scored in blocks, written atomically.

``shoprec picks --model models:/shoprec@champion --out picks.parquet`` loads the bundle
(:mod:`batch.model_ref`), scores customers block by block through :func:`score_block` (which
is :meth:`ShopRecommender.email_picks_block`, the very method behind ``POST /email_picks``, so
the endpoint and the batch give the same answers), streams one row per customer and rank
(:mod:`batch.schema`) into a sink that swaps the new output in only at the end
(:mod:`batch.sinks`), and logs a summary (:mod:`batch.summary`) to MLflow as a batch run
linked to the model version (:mod:`batch.runs`). The Spark engine (:mod:`batch.spark`) calls
the same :func:`score_block` with the same :data:`DEFAULT_BLOCK`.

Memory is bounded by the block: scoring holds at most ``BLOCK_ROWS`` x items dense scores
at a time and the sinks stream; only the list of customer ids grows with the base.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from batch.customers import all_customers, read_customers
from batch.model_ref import load_model_uri
from batch.runs import fail_picks_run, finish_picks_run, start_picks_run
from batch.schema import PICKS_COLUMNS
from batch.sinks import DEFAULT_SQL_TIMEOUT_S, DEFAULT_TABLE, PicksSink, open_sink
from batch.summary import PicksSummary
from serving.config import serving_config
from serving.recommender import ShopRecommender

DEFAULT_BLOCK = 4096
"""Customers per :func:`score_block` call, in both engines (scoring sub-blocks them further by
``BLOCK_ROWS``)."""


def score_block(recommender: ShopRecommender, customer_ids: Sequence[str] | np.ndarray, k: int) -> pd.DataFrame:
    """Email picks for ``customer_ids`` as one row per customer and rank:
    ``customer_id, canonical_id, rank, item_id, score, reason, send, send_reason, send_hour,
    trigger, trigger_detail, open_propensity, model_version``
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
    row_of = np.repeat(np.arange(len(block.customer_ids)), per_customer)

    def per_row(values: np.ndarray) -> pd.api.extensions.ExtensionArray:
        return _text(pa.array(values, pa.string(), from_pandas=True).take(row_of))

    return pd.DataFrame({
        "customer_id": per_row(block.customer_ids),
        "canonical_id": per_row(block.canonical_ids),
        "rank": np.tile(np.arange(1, width + 1, dtype=np.int64), len(block.customer_ids))[flat],
        "item_id": _text(recommender.item_id_array.take(block.items.ravel()[flat])),
        "score": block.scores.ravel()[flat],
        "reason": _text(pa.array(block.reasons.ravel()[flat], pa.string(), from_pandas=True)),
        "send": block.send[row_of],
        "send_reason": per_row(block.send_reason),
        "send_hour": block.send_hour[row_of],
        "trigger": per_row(block.trigger),
        "trigger_detail": per_row(block.trigger_detail),
        "open_propensity": block.open_propensity[row_of],
        "model_version": _text(pa.repeat(pa.scalar(recommender.model_version, pa.string()), len(row_of))),
    }, columns=PICKS_COLUMNS)


def _text(values: pa.Array) -> pd.api.extensions.ExtensionArray:
    """A text column from Arrow strings: what pandas makes of an object array of ``str`` (missing
    values as missing), without pandas converting every value again: that conversion of each
    block's item ids, reasons and repeated customer fields was a large share of the job's time."""
    return pd.array(values, dtype="str")


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
        summary.update(recommender.bundle, chunk, frame)
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
            table: str = DEFAULT_TABLE, sql_timeout_s: float = DEFAULT_SQL_TIMEOUT_S,
            block: int = DEFAULT_BLOCK, track: bool = True,
            progress: Callable[[int, int], None] | None = None, log: Callable[[str], None] = lambda _: None,
            ) -> JobResult:
    """Load, score, write atomically, summarise and (with ``track``) log the MLflow batch run.

    ``progress(done, total)`` is called after every block. Any failure aborts the sink (the
    previous output stays) and marks the MLflow run FAILED.
    """
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    sink = open_sink(out, table, sql_timeout_s)  # bad targets, settings and customer files fail before the model is fetched
    config = serving_config()  # the rules the service applies (SHOPREC_SERVING_CONFIG): the same picks as /email_picks
    listed = read_customers(customers_file) if customers_file is not None else None
    log(f"loading {model}")
    loaded = load_model_uri(model)
    recommender = ShopRecommender(loaded.bundle, loaded.version, config)
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
    result = summary.to_dict(loaded.bundle)
    result["input"] = customers.to_dict()
    rate = len(customers.ids) / max(seconds, 1e-9)
    result.update(engine="local", model_version=loaded.version, model_uri=loaded.uri, output=sink.description,
                  only_send=only_send, k=k, seconds=round(seconds, 3),
                  seconds_with_load=round(time.perf_counter() - started, 3), customers_per_s=round(rate, 1))
    run_id = finish_picks_run(run, loaded, result) if run is not None else None
    return JobResult(result, loaded.version, sink.description, seconds, rate, run_id)
