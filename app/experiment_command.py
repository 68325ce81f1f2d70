"""``shoprec experiment start|status|stop|report``: online experiments kept in the registry (training.experiments)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from features.errors import UserError

if TYPE_CHECKING:
    from batch.experiment_report import ExperimentReport
    from training.experiment_stats import Lift

ModelOption = Annotated[str, typer.Option("--model", help="Registered model name.")]
out = Console(width=None if sys.stdout.isatty() else 160)


def experiment_start(
    name: Annotated[str, typer.Argument(help="The experiment's name (letters, digits, '-', '_').")],
    variants: Annotated[str, typer.Option(help="NAME:SHARE,... where NAME is an alias or a version number, "
                                               "e.g. champion:90,challenger:10 (shares are normalised).")],
    model: ModelOption = "shoprec",
    unit: Annotated[str, typer.Option(help="customer: assign by customer id, else session id; session: by "
                                           "session id, else customer id.")] = "customer",
) -> None:
    """Start an experiment: the service's workers pick it up at their next poll (or POST /admin/reload)."""
    from training import experiments, tracking

    started = experiments.start(tracking.configure(), model, name, variants, unit)
    out.print(f"started {started.describe()}")
    out.print("the service follows at its next poll (SHOPREC_POLL_SECONDS) or at POST /admin/reload")


def experiment_status(model: ModelOption = "shoprec") -> None:
    """The experiment running now, if any."""
    from training import experiments, tracking

    running = experiments.running(tracking.configure(), model)
    out.print(f"running since {running.started}: {running.describe()}" if running else
              f"no experiment is running on {model}")


def experiment_stop(
    name: Annotated[str, typer.Argument(help="The running experiment's name.")],
    model: ModelOption = "shoprec",
    promote: Annotated[str | None, typer.Option("--promote", help="The winning variant's name: its version "
                                                                  "becomes @champion.")] = None,
) -> None:
    """Stop an experiment (every visitor gets the champion again); optionally promote its winner."""
    from training import experiments, tracking

    stopped = experiments.stop(tracking.configure(), model, name, promote)
    out.print(f"stopped experiment {stopped.name} at {stopped.stopped}")
    if promote is not None:
        version = next(v.version for v in stopped.variants if v.name == promote)
        out.print(f"{model} v{version} ({promote}) is now @champion")


def experiment_report(
    name: Annotated[str, typer.Argument(help="The experiment (running or stopped).")],
    model: ModelOption = "shoprec",
    exposures: Annotated[Path | None, typer.Option(help="The exposure log folder, which holds the outcomes too "
                                                        "(default: SHOPREC_EXPOSURE_LOG, else "
                                                        "$SHOPREC_HOME/exposure-log).")] = None,
    events: Annotated[str | None, typer.Option(help="The live event log: a folder or a database URL (default: "
                                                    "SHOPREC_EVENT_LOG, else $SHOPREC_HOME/event-log); its "
                                                    "purchase events are outcomes.")] = None,
    data: Annotated[str | None, typer.Option(help="The shop's data (folder or URL): its orders are outcomes "
                                                  "too, with revenue.")] = None,
    window_hours: Annotated[float, typer.Option(min=0.01, help="Attribution window after an exposure "
                                                               "(last touch).")] = 24.0,
    track: Annotated[bool, typer.Option("--track/--no-track", help="Log the report to MLflow.")] = True,
) -> None:
    """Per variant: units, exposures, click-through, conversion, recommended items bought and revenue per
    unit, each variant's lift over the first with a 95% interval, and the sample-ratio check."""
    from batch import experiment_report as reports
    from serving.exposures import exposure_log_location
    from training import experiments, tracking

    experiment = experiments.named(tracking.configure(), model, name)
    folder = exposures or exposure_log_location()
    shown = reports.read_exposures(folder)
    if not (shown["experiment"] == name).any():
        raise UserError(f"no exposures of experiment {name!r} in {folder}: has the service run it "
                        f"(SHOPREC_EXPOSURE_LOG)?")
    orders = None
    if data is not None:
        from features.loading import load_shop

        orders = load_shop(data)["orders"]
    outcomes = reports.read_outcomes(folder)
    purchases = reports.purchases_from(reports.read_events(events), orders, experiment, outcomes)
    report = reports.build_report(experiment, shown, purchases, outcomes=outcomes, window_hours=window_hours,
                                  has_revenue=orders is not None)
    render_report(report)
    if track:
        out.print(f"logged to MLflow experiment {reports.TRACKING_EXPERIMENT}, run {reports.log_report(report)}")


def _interval(found: Lift | None) -> str:
    if found is None or found.lift is None:
        return "-"
    if found.low is None or found.high is None:
        return f"{found.lift:+.1%} (too few outcomes for an interval)"
    return f"{found.lift:+.1%} [{found.low:+.1%}, {found.high:+.1%}]" + (" *" if found.significant else "")


def render_report(report: ExperimentReport) -> None:
    """The report as a terminal table and the lines a data scientist reads first."""
    experiment = report.experiment
    table = Table(title=f"experiment {experiment.name} ({experiment.unit}s, last touch within "
                        f"{report.window_hours:g} h)")
    for column in ("variant", "units", "exposures", *report.metrics, *(f"{m} lift [95%]" for m in report.metrics)):
        table.add_column(column)
    for figures in report.variants:
        table.add_row(f"{figures.variant} (v{figures.version}, {figures.planned_share:.0%})", str(figures.units),
                      str(figures.exposures), *(f"{figures.means[m]:.4f}" for m in report.metrics),
                      *(_interval(figures.lifts.get(m)) for m in report.metrics))
    out.print(table)
    out.print(f"{report.attributed} of {report.purchases} purchases attributed ({report.named} by the request_id "
              f"they carried, the rest by last touch); * marks an interval that excludes zero")
    if not report.has_clicks:
        out.print("no event came back with a request_id: click-through is left out (POST /events, request_id)")
    split = report.split
    if split.mismatch:
        out.print(f"[red]SAMPLE-RATIO MISMATCH[/red]: units {list(split.counts)} against planned shares "
                  f"{[round(s, 3) for s in split.expected_shares]} (p = {split.p_value:.2g}); the split is broken, "
                  f"do not trust the lifts")
    else:
        out.print(f"split as planned (sample-ratio p = {split.p_value:.3f})")
    if report.mixed_units:
        out.print(f"{report.mixed_units} units were exposed to more than one variant and were left out")
