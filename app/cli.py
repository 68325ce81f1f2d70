"""The ``shoprec`` command line.

Every command exits non-zero with a one-line reason on bad input; ``--debug`` shows the
traceback instead. Long steps report progress on stderr.
"""

from __future__ import annotations

import os

# One BLAS thread for every command, whatever the caller's environment, set before numpy and
# scipy load their OpenBLAS: the products here are small or already parallel by block, and
# scipy's bundled OpenBLAS crashed with two threads on a large EASE inverse.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import faulthandler
import functools
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from app.config_file import train_config
from app.experiment_command import experiment_report, experiment_start, experiment_status, experiment_stop
from app.render import example_calls, render_metrics, render_report, selection_lines
from app.triggers_command import triggers
from features.errors import USER_ERRORS, UserError, one_line
from features.engines import engine_named, load_shop_with
from features.loading import ShopData, validate_tables, write_shop
from features.schema import MAX_QUANTITY, ContractConfig

app = typer.Typer(help="shoprec: recommendations and purchase propensity for online shops.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
import_app = typer.Typer(help="Turn public data formats into the shoprec data contract.", no_args_is_help=True)
app.add_typer(import_app, name="import")

console = Console(stderr=True)
# Pipes and CI logs get a wide fixed width so report tables are not squeezed to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)
_state = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])



@app.callback()
def main(debug: Annotated[bool, typer.Option(help="Show tracebacks instead of one-line errors.")] = False) -> None:
    _state["debug"] = debug
    faulthandler.enable()  # a hard crash (SIGSEGV in a native library) prints where it happened


def user_command(func: F) -> F:
    """Turn expected failures (bad data, missing files) into one line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as error:
            if _state["debug"]:
                raise
            console.print(f"[red]error:[/red] {one_line(error)}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _positive(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{option} {text!r}: give a positive number or 'none'") from None
    if not value > 0:
        raise UserError(f"{option} {text!r}: give a positive number or 'none'")
    return value


@contextmanager
def progress_status(message: str) -> Iterator[Callable[[str], None]]:
    """A spinner on a terminal; plain progress lines otherwise (CI logs, pipes)."""
    if console.is_terminal:
        with console.status(message) as status:
            yield lambda text: status.update(text)
    else:
        console.print(message, highlight=False)
        yield lambda text: console.print(f"  {text}", highlight=False)


def print_quarantine_examples(shop: ShopData, per_table: int = 3) -> None:
    """Show where the first bad rows are, so the data owner can go and fix them."""
    columns = ["_source", "_row", "_column", "_reason"]
    for frame in shop.quarantine.values():
        for source, row, column, reason in frame[columns].head(per_table).itertuples(index=False, name=None):
            out.print(f"quarantined: {source} row {row} column '{column}': {reason}", highlight=False, soft_wrap=True)


LoadEngineOption = Annotated[str, typer.Option(help="local (this process) or spark (the long Parquet tables' rows "
                                                   "checked on Spark; the same result; docs/spark.md).")]


def _load_and_report(data: str, quarantine_dir: Path | None, config: ContractConfig | None = None,
                     engine: str = "local") -> ShopData:
    with progress_status(f"loading {data}") as progress:
        shop = load_shop_with(engine_named(engine), data, progress=progress, config=config)
    out.print(render_report(shop.report))
    print_quarantine_examples(shop)
    if quarantine_dir is not None:
        shop.write_quarantine(quarantine_dir)
        out.print(f"quarantined rows and load_report.json written to {quarantine_dir}")
    return shop


@app.command()
@user_command
def validate(
    data: Annotated[str, typer.Argument(help="Data folder (CSV/Parquet) or SQLAlchemy URL.")],
    quarantine_dir: Annotated[Path | None, typer.Option(help="Write quarantined rows and the report here.")] = None,
    max_quantity: Annotated[str, typer.Option(help="Quarantine order lines with |quantity| above this "
                                                   "(the contract's max_quantity; 'none' for no bound).")]
    = str(int(MAX_QUANTITY)),
    engine: LoadEngineOption = "local",
) -> None:
    """Load a shop's data, check it against the contract and print the load report."""
    bound = None if max_quantity.strip().lower() == "none" else _positive(max_quantity, "--max-quantity")
    _load_and_report(data, quarantine_dir, ContractConfig(max_quantity=bound), engine)


@app.command()
@user_command
def sample(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the sample shop into.")],
    customers: Annotated[int, typer.Option(min=10)] = 5000,
    items: Annotated[int, typer.Option(min=50)] = 1000,
    days: Annotated[int, typer.Option(min=14)] = 180,
    seed: Annotated[int, typer.Option()] = 42,
    dirty_share: Annotated[float, typer.Option(min=0.0, max=0.2, help="Share of deliberately bad rows.")] = 0.005,
    fmt: Annotated[str, typer.Option("--format", help="csv, csv.gz or parquet")] = "csv",
) -> None:
    """Generate a synthetic shop with planted structure (see docs/sample.md)."""
    _write_sample(out_dir, customers=customers, items=items, days=days, seed=seed,
                  dirty_share=dirty_share, fmt=fmt)


def _write_sample(out_dir: Path, *, fmt: str, **config: Any) -> None:
    from features.sample import SampleConfig, write_sample

    _check_format(fmt)
    with progress_status("generating the sample shop") as progress:
        started = time.perf_counter()
        rows = write_sample(SampleConfig(**config), out_dir, fmt, progress=progress)  # type: ignore[arg-type]
    written = ", ".join(f"{name} {count:,}" for name, count in rows.items())
    out.print(f"sample shop written to {out_dir} in {time.perf_counter() - started:.1f}s: {written}")


def _check_format(fmt: str) -> None:
    if fmt not in ("csv", "csv.gz", "parquet"):
        raise typer.BadParameter(f"--format must be csv, csv.gz or parquet, not {fmt!r}")


def _run_import(importer: Callable[..., Any], source: Path, out_dir: Path, fmt: str) -> None:
    """Map a public format into the contract, validate it, write clean tables, quarantine and notes."""
    import json

    _check_format(fmt)
    with progress_status(f"importing {source}") as progress:
        raw, notes = importer(source.resolve(), progress=progress)
    with progress_status("validating imported tables") as progress:
        shop = validate_tables(raw, source=str(source), progress=progress)
        progress(f"writing {fmt} files to {out_dir}")
        write_shop(shop, out_dir, fmt)
    (out_dir / "quarantine" / "import_notes.json").write_text(json.dumps(notes.to_dict(), indent=2))
    out.print(render_report(shop.report))
    for line in notes.lines():
        out.print(f"note: {line}", highlight=False)
    out.print(f"imported into {out_dir} (quarantined rows in {out_dir / 'quarantine'})")


@import_app.command("completejourney")
@user_command
def import_completejourney_command(
    src: Annotated[Path, typer.Argument(help="Folder with the Complete Journey CSV files.")],
    out_dir: Annotated[Path, typer.Argument(help="Output folder (the data contract).")],
    fmt: Annotated[str, typer.Option("--format")] = "parquet",
) -> None:
    """84.51 Complete Journey (households, baskets, products, campaigns) into the contract."""
    from features.importers import import_completejourney

    _run_import(import_completejourney, src, out_dir, fmt)


@import_app.command("rees46")
@user_command
def import_rees46_command(
    path: Annotated[Path, typer.Argument(help="REES46-style event log (CSV, optionally gzipped).")],
    out_dir: Annotated[Path, typer.Argument(help="Output folder (the data contract).")],
    fmt: Annotated[str, typer.Option("--format")] = "parquet",
) -> None:
    """A REES46 e-commerce event log (view/cart/remove_from_cart/purchase) into the contract."""
    from features.importers import import_rees46

    _run_import(import_rees46, path, out_dir, fmt)


def _train(data: str, config_file: Path | None, experiment: str | None, register: bool,
           tune: int = 0, tune_minutes: float = 10.0, engine: str = "local") -> None:
    from training.pipeline import run_training
    from training.tracking import tracking_uri

    config = train_config(config_file, experiment, tune, tune_minutes)
    load_engine = engine_named(engine)
    with progress_status(f"training on {data}") as progress:
        result = run_training(data, config, register=register, progress=progress, engine=load_engine)
    out.print(render_metrics(result.selection, result.chosen, config.split.k))
    for line in selection_lines(result.selection, config.metric_key):
        out.print(line, highlight=False)
    evaluated, window = int(result.metrics["evaluated_customers"].iloc[0]), result.selection.test_split.window_customers
    out.print(f"evaluated on {evaluated:,}{f' of {window:,}' if window > evaluated else ''} customers who bought in the "
              f"test window and had history; MLflow run {result.run_id} at {tracking_uri()}", highlight=False)
    if result.model_version is not None and result.gate is not None:
        verdict = "promoted to @champion" if result.gate.passed else "kept as @challenger (champion unchanged)"
        out.print(f"registered {config.model_name} v{result.model_version}: {verdict}: {result.gate.reason}",
                  highlight=False)


DataOption = Annotated[str, typer.Option(help="Data folder (CSV/Parquet) or SQLAlchemy URL.")]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="TrainConfig as JSON.")]
ExperimentOption = Annotated[str | None, typer.Option(help="MLflow experiment name.")]
TuneOption = Annotated[int, typer.Option(min=0, help="Optuna trials per model family on the validation window.")]
TuneMinutesOption = Annotated[float, typer.Option(min=0.1, help="Time budget for the whole search.")]


@app.command()
@user_command
def train(data: DataOption, config_file: ConfigOption = None, experiment: ExperimentOption = None,
          tune: TuneOption = 0, tune_minutes: TuneMinutesOption = 10.0,
          engine: LoadEngineOption = "local") -> None:
    """Train every model family, evaluate on a time split, register, and promote through the gate."""
    _train(data, config_file, experiment, register=True, tune=tune, tune_minutes=tune_minutes, engine=engine)


@app.command()
@user_command
def evaluate(data: DataOption, config_file: ConfigOption = None, experiment: ExperimentOption = None,
             tune: TuneOption = 0, tune_minutes: TuneMinutesOption = 10.0,
             engine: LoadEngineOption = "local") -> None:
    """Like train, but registers nothing: evaluate and log to MLflow only."""
    _train(data, config_file, experiment, register=False, tune=tune, tune_minutes=tune_minutes, engine=engine)


@app.command()
@user_command
def promote(
    version: Annotated[str, typer.Argument(help="Registered model version to make @champion.")],
    model_name: Annotated[str, typer.Option(help="Registered model name.")] = "shoprec",
) -> None:
    """Force a model version to @champion, bypassing the gate (the choice is logged in the registry)."""
    from mlflow.exceptions import MlflowException

    from training import registry, tracking

    client = tracking.configure()
    try:
        registry.promote(client, model_name, version)
    except MlflowException as error:
        raise UserError(f"cannot promote {model_name} v{version}: {error.message}") from None
    out.print(f"{model_name} v{version} is now @champion")


@app.command()
@user_command
def picks(
    out_path: Annotated[str, typer.Option("--out", help="Output .parquet, .csv or .csv.gz file, or SQLAlchemy URL "
                                                        "(Spark: also s3a://, hdfs://, gs://; a folder of parts).")],
    model: Annotated[str, typer.Option(help="models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder.")]
    = "models:/shoprec@champion",
    k: Annotated[int, typer.Option(min=1, max=1000, help="Picks per customer.")] = 10,
    customers: Annotated[Path | None, typer.Option(help="CSV/Parquet with a customer_id column; "
                                                        "default: every customer of the bundle.")] = None,
    only_send: Annotated[bool, typer.Option("--only-send", help="Write only customers marked send.")] = False,
    table: Annotated[str, typer.Option(help="Table name when --out is a SQLAlchemy URL.")] = "email_picks",
    sql_timeout: Annotated[float, typer.Option(min=0.1, help="Seconds any one SQL statement or lock wait may take "
                                                             "when --out is a database (then: one error, the "
                                                             "old table kept).")] = 300.0,
    block: Annotated[int | None, typer.Option(min=1, help="Customers per scored block, either engine "
                                                          "(default: batch.job.DEFAULT_BLOCK, 4096).")] = None,
    track: Annotated[bool, typer.Option("--track/--no-track", help="Log the run to MLflow.")] = True,
    engine: Annotated[str, typer.Option(help="local (this process) or spark (the Spark cluster from the usual "
                                             "Spark settings; see docs/spark.md).")] = "local",
    partitions: Annotated[int | None, typer.Option(min=1, help="Scoring tasks (Spark engine; default: the "
                                                               "cluster's cores; ignored by local).")] = None,
) -> None:
    """Email picks for every customer (or a list), written atomically to a file or a SQL table."""
    from app.render import progress_bar, render_summary
    from batch.job import DEFAULT_BLOCK, run_job
    from batch.runs import EXPERIMENT

    def log(text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True)

    if engine_named(engine) == "spark":
        from batch.spark import run_spark_job

        result = run_spark_job(model, out_path, k=k, customers_file=customers, only_send=only_send, table=table,
                               sql_timeout_s=sql_timeout, partitions=partitions, block=block or DEFAULT_BLOCK,
                               track=track, log=log)
    else:
        with progress_bar(console) as progress:
            result = run_job(model, out_path, k=k, customers_file=customers, only_send=only_send, table=table,
                             sql_timeout_s=sql_timeout, block=block or DEFAULT_BLOCK, track=track, progress=progress,
                             log=log)
    out.print(render_summary(result))
    if result.run_id:
        out.print(f"MLflow run {result.run_id} (experiment {EXPERIMENT})", highlight=False)


app.command("triggers")(user_command(triggers))
experiment_app = typer.Typer(help="Online experiments: variants of the registered model on live traffic.",
                             no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")
for verb, command in (("start", experiment_start), ("status", experiment_status), ("stop", experiment_stop),
                      ("report", experiment_report)):
    experiment_app.command(verb)(user_command(command))


@app.command()
@user_command
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Working folder for the demo.")] = Path("demo-data"),
    customers: Annotated[int, typer.Option(min=10)] = 5000,
    items: Annotated[int, typer.Option(min=50)] = 1000,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="End by serving the champion.")] = True,
    port: Annotated[int, typer.Option(min=1, max=65535)] = 3000,
) -> None:
    """The embedded default end to end: sample shop -> validate -> train, register, promote -> serve."""
    import os

    import pandas as pd

    from training.tracking import tracking_uri

    data_dir = out_dir / "shop"
    os.environ.setdefault("SHOPREC_HOME", str((out_dir / "home").resolve()))
    _write_sample(data_dir, customers=customers, items=items, days=180, seed=42, dirty_share=0.005, fmt="csv")
    _load_and_report(str(data_dir), out_dir / "quarantine")
    _train(str(data_dir), None, None, register=True)
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    out.print(f"MLflow UI: {mlflow_bin} ui --backend-store-uri {tracking_uri()} --port 5000", highlight=False)
    anchor = str(pd.read_csv(data_dir / "_truth" / "pairs.csv", dtype=str)["anchor_item_id"].iloc[0])
    customer = str(pd.read_csv(data_dir / "orders.csv", dtype=str, nrows=1)["customer_id"].iloc[0])
    out.print(example_calls(port, anchor, customer), highlight=False, soft_wrap=True)
    if serve_after:
        raise typer.Exit(_serve("127.0.0.1", port))


@app.command()
@user_command
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the service.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 3000,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Worker processes (default: one per CPU when SHOPREC_REDIS_URL shares the live "
                    "sessions, else one; each holds its own copy of the bundle).")] = None,
) -> None:
    """Serve the @champion bundle over HTTP (BentoML): /cross_sell, /email_picks, /offers, /propensity."""
    raise typer.Exit(_serve(host, port, workers))


def _serve(host: str, port: int, workers: int | None = None) -> int:
    """Run `bentoml serve` for the service in the foreground; returns its exit code."""
    import os
    import subprocess

    from serving.session_store import REDIS_URL_ENV
    from serving.settings import WORKERS_ENV, workers as worker_count

    bentoml_bin = Path(sys.executable).with_name("bentoml")
    command = [str(bentoml_bin), "serve", "serving.service:ShoprecService", "--host", host, "--port", str(port)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    if workers is not None:
        env[WORKERS_ENV] = str(workers)
    count, why = worker_count(env, bool(env.get(REDIS_URL_ENV, "").strip()))
    out.print(f"workers: {count}; {why}", highlight=False)
    return subprocess.call(command, env=env, cwd=Path(__file__).resolve().parents[1])


if __name__ == "__main__":
    app()
