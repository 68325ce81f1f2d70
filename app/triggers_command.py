"""``shoprec triggers``: the lifecycle triggers of one day (batch.triggers), written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from app.config_file import read_config
from features.errors import UserError


def _today(text: str | None) -> object:
    """The day as a UTC midnight: strict ``YYYY-MM-DD`` (pandas would read "July" as 0001-07-01)."""
    import datetime as dt

    import pandas as pd

    if text is None:
        return pd.Timestamp.now(tz="UTC").normalize()
    try:
        return pd.Timestamp(dt.date.fromisoformat(text.strip())).tz_localize("UTC")
    except ValueError:
        raise UserError(f"--today {text!r}: give a date as YYYY-MM-DD") from None


def triggers(
    data: Annotated[str, typer.Option(help="Data folder (CSV/Parquet) or SQLAlchemy URL: the shop as of today.")],
    out_path: Annotated[str, typer.Option("--out", help="Output .parquet, .csv or .csv.gz file, or SQLAlchemy URL.")],
    today: Annotated[str | None, typer.Option(help="The day to find triggers for (YYYY-MM-DD, UTC; default: today). "
                                                   "Only data before its start is read.")] = None,
    model: Annotated[str, typer.Option(help="models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder "
                                            "(the picks of anniversary and follow-up rows).")]
    = "models:/shoprec@champion",
    config_file: Annotated[Path | None, typer.Option("--config", help="TriggerConfig as JSON (windows, k).")] = None,
    table: Annotated[str, typer.Option(help="Table name when --out is a SQLAlchemy URL.")] = "triggers",
    track: Annotated[bool, typer.Option("--track/--no-track", help="Log the run to MLflow.")] = True,
) -> None:
    """Who is worth a mail today and why: refills due, abandoned carts, wish lists, anniversaries, non-openers."""
    from batch.triggers import EXPERIMENT, run_triggers
    from features.triggers import TriggerConfig

    console = Console(stderr=True)
    config = TriggerConfig() if config_file is None else TriggerConfig.model_validate_json(read_config(config_file))
    summary = run_triggers(data, out_path, today=_today(today), model=model, config=config, table=table,
                           track=track, log=lambda text: console.print(text, highlight=False, soft_wrap=True))
    shown = Table(title=f"Triggers for {summary['today']}: {summary['model_version']} -> {summary['output']}",
                  title_justify="left")
    shown.add_column("trigger")
    shown.add_column("customers", justify="right")
    for name, n in summary["customers"].items():
        shown.add_row(name, f"{n:,}")
    out = Console()
    out.print(shown)
    out.print(f"{summary['rows']:,} rows in {summary['seconds']:.1f} s", highlight=False)
    if "run_id" in summary:
        out.print(f"MLflow run {summary['run_id']} (experiment {EXPERIMENT})", highlight=False)
