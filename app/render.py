"""What the terminal shows: the load report, the evaluation table and how the choice was made,
the picks run's progress and summary, and the example calls. Rich tables built from results;
no command logic here (that is app/cli.py)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from features.loading import LoadReport

if TYPE_CHECKING:  # the commands import these where they run: `shoprec --help` loads no model code
    from batch.job import JobResult
    from training.selection import Selection


def render_report(report: LoadReport) -> Table:
    table = Table(title=f"Load report: {report.source}", title_justify="left")
    for name, justify in (("table", "left"), ("rows in", "right"), ("loaded", "right"),
                          ("quarantined", "right"), ("merged", "right"), ("returns", "right"),
                          ("cancelled", "right"), ("reasons", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for name, t in report.tables.items():
        reasons = [f"{reason}: {count:,}" for reason, count in sorted(t.reasons.items(), key=lambda kv: -kv[1])]
        if t.returns.get("unmatched_lines"):
            reasons.append(f"returns with no earlier purchase: {t.returns['unmatched_lines']:,}")
        table.add_row(name, f"{t.rows_in:,}", f"{t.rows_loaded:,}", f"{t.rows_quarantined:,}",
                      f"{t.rows_merged:,}", f"{t.rows_returned:,}", f"{t.rows_cancelled:,}",
                      "\n".join(reasons) or "-")
    for name in report.absent:
        table.add_row(name, "-", "-", "-", "-", "-", "-", "absent (optional)")
    return table


TABLE_COLUMNS = ("ndcg_at_{k}", "precision_at_{k}", "recall_at_{k}", "hit_rate_at_{k}", "repeat_share",
                 "repeat_recall_at_{k}", "explore_recall_at_{k}", "coverage")
"""What the terminal shows of the evaluation (MLflow and the CSV artefacts hold every metric)."""


def render_metrics(selection: Selection, served: str, k: int) -> Table:
    """The test window: every baseline, the repeat scorer, each model alone and under the ranker.

    ``*`` marks the row the bundle serves, ``(b)`` the strongest baseline the gate compares with.
    """
    table, split = selection.test, selection.test_split
    scored = f"{int(table['evaluated_customers'].iloc[0]):,}"
    if len(split.customers) < split.window_customers:
        scored += f" of its {split.window_customers:,}"
    view = Table(title=f"Held-out evaluation (test window, {scored} customers); "
                       f"chosen on validation: {selection.chosen}", title_justify="left")
    columns = [c.format(k=k) for c in TABLE_COLUMNS]
    view.add_column("model")
    for column in columns:
        view.add_column(column.replace(f"_at_{k}", f"@{k}"), justify="right")
    for row_name, row in table.iterrows():
        mark = " *" if row_name == served else " (b)" if row_name == selection.strongest_baseline else ""
        view.add_row(f"{row_name}{mark}", *(f"{row[c]:.4f}" for c in columns))
    return view


def selection_lines(selection: Selection, key: str) -> list[str]:
    """How the choice was made, in a few lines under the table."""
    windows = selection.windows
    lines = [f"validation: {len(windows)} window(s) of the {sum(w['customers'] for w in windows):,} customers who "
             f"bought in them (cut-offs {', '.join(w['cutoff'][:10] for w in windows)}); repeat_share: share of list "
             f"slots given to items the customer bought before; repeat/explore recall: of re-bought / new items"]
    if selection.cap is not None:
        effect = selection.cap_effect
        lines.append(f"diversity: at most {selection.cap} items of one product type (or category) per list"
                     + (f"; {key} on test {effect['test_capped']:.4f} with the cap, {effect['test_no_cap']:.4f} "
                        f"without" if "test_capped" in effect else ""))
    from training.selection import GAIN, GAIN_HIGH, GAIN_LOW

    served, strongest, test = selection.primary_row, selection.strongest_baseline, selection.test
    if GAIN in test.columns and served != strongest and math.isfinite(float(test.loc[served, GAIN])):
        lines.append(f"{served} against the strongest baseline {strongest}: {key} {test.loc[served, GAIN]:+.1%} "
                     f"(95% interval {test.loc[served, GAIN_LOW]:+.1%} to {test.loc[served, GAIN_HIGH]:+.1%}, "
                     f"paired bootstrap over the {int(test.loc[served, 'evaluated_customers']):,} test customers)")
    lines += [f"skipped {family}: {reason}" for family, reason in selection.skipped.items()]
    if selection.fallback_reason:
        lines.append(f"no model beat the strongest baseline: {selection.fallback_reason}")
    return lines


@contextmanager
def progress_bar(console: Console) -> Iterator[Callable[[int, int], None]]:
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


def render_summary(result: JobResult, top: int = 8) -> Table:
    """The run summary as a rich table: counts, reasons, price bands and the top categories."""
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


def example_calls(port: int, cart_item: str, customer: str) -> str:
    """curl commands for every endpoint, with ids that exist in the served data."""
    post = f"curl -s -X POST http://127.0.0.1:{port}/{{}} -H 'content-type: application/json' -d '{{}}'"
    return "\n".join([
        "Once the service is up (Ctrl-C stops it), try:",
        f"curl -s http://127.0.0.1:{port}/readyz",
        post.format("cross_sell", f'{{"cart": ["{cart_item}"], "customer_id": "{customer}", "k": 5}}'),
        post.format("email_picks", f'{{"customer_ids": ["{customer}", "someone-new"], "k": 5}}'),
        post.format("offers", f'{{"customer_id": "{customer}", "k": 5}}'),
        post.format("propensity", f'{{"customer_id": "{customer}", "session_events": [{{"event_type": "cart", '
                                  f'"item_id": "{cart_item}", "ts": "2025-06-01T10:00:00Z"}}]}}'),
    ])
