"""Scale: sample shops from 50k to 1M customers, each trained end to end by the real CLI.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scale.py [--sizes demo,50k,200k,1M]
     [--out DIR] [--timeout-min 60] [--serve]

For each size, in fresh processes one after the other (so each peak RSS is that command's
own, read from ``wait4``; the tree's RSS is also sampled to give each train stage its highest): ``shoprec sample`` writes the shop as Parquet, ``shoprec train``
trains it with the default config into its own SHOPREC_HOME (SQLite registry), and
``shoprec picks`` writes every customer's email picks from the champion. ``train``'s
progress lines are timestamped as they arrive, so each stage's wall time is the time from
its line to the next one (a "fitting" line covers that family's fit and evaluation on one
window; the tail after the last line is the bundle build, MLflow logging and registration).
The run's MLflow tags and metrics give the skipped families with their reasons, the chosen
row and its test figure against the strongest baseline.

With ``--serve``, the largest size that trained is then served: ``bench_serving.py --home``
on its home, /noop and /cross_sell at 8 clients (load time and RSS of the server's
processes are printed by that script).

A command that runs past ``--timeout-min`` or is killed (out of memory) is reported as
such and the larger sizes are skipped: a limit found is a figure too. Figures are recorded
in docs/benchmarks.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RSS_EVERY_S = 0.5


@dataclass(frozen=True)
class Size:
    customers: int
    items: int
    days: int


SIZES = {
    "demo": Size(5_000, 1_000, 180),
    "50k": Size(50_000, 10_000, 365),
    "200k": Size(200_000, 40_000, 365),
    "1M": Size(1_000_000, 100_000, 365),
}
"""``demo`` is the embedded default (a check of the script in a few minutes). The sample's rate
is about 0.2 events a customer a day, so a year of 1M customers is about
75M events (the issue's mid-size shop: 1M customers, 100k items, ~100M events a year)."""


@dataclass
class Command:
    """One CLI command as it ran: wall seconds, peak RSS, exit code, timestamped output lines and
    the RSS of its process tree sampled as it ran (to place the peak in a stage)."""

    seconds: float
    peak_rss_gib: float
    returncode: int
    timed_out: bool
    lines: list[tuple[float, str]] = field(default_factory=list)
    rss_samples: list[tuple[float, float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def outcome(self) -> str:
        if self.timed_out:
            return f"stopped after {self.seconds / 60:.0f} min"
        if self.returncode < 0:
            return f"killed by {signal.Signals(-self.returncode).name} (out of memory?)"
        return "ok" if self.returncode == 0 else f"exit {self.returncode}: {self.tail()}"

    def tail(self) -> str:
        return self.lines[-1][1] if self.lines else ""


def run(args: list[str], env: dict[str, str], timeout_s: float) -> Command:
    """Run one CLI command in its own session; stream its output with arrival times."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, start_new_session=True)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.perf_counter() - started, line.rstrip()))
            print(f"    {lines[-1][0]:8.1f} s  {lines[-1][1]}", flush=True)

    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample_rss() -> None:
        """The tree's resident GiB every RSS_EVERY_S. Not wait4's figure: a brief peak between
        samples is missed, and pages two processes share count twice (``train`` runs as one
        process, so its stages' peaks and wait4's are the same measure)."""
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.wait(RSS_EVERY_S):
            try:
                tree = [root, *root.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in tree)
            except (psutil.NoSuchProcess, psutil.AccessDenied):  # a child that ended as it was read
                continue
            samples.append((time.perf_counter() - started, rss / 2**30))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    timer = threading.Timer(timeout_s, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    timer.cancel()
    done.set()
    seconds = time.perf_counter() - started
    reader.join(timeout=5)
    sampler.join(timeout=5)
    proc.returncode = os.waitstatus_to_exitcode(status)
    timed_out = seconds >= timeout_s
    return Command(seconds, usage.ru_maxrss / 2**20, proc.returncode, timed_out, lines, samples)


STAGES = ((re.compile(r"^validating "), "load + validate"),
          (re.compile(r"^(test window:|skipped )"), "split, budget, windows"),
          (re.compile(r"^fitting (\w+) on"), "fit + evaluate {0}"),
          (re.compile(r"^tuning (\w+)"), "tune {0}"),
          (re.compile(r"^(chosen on validation|diversity cap)"), "choose the cap"),
          (re.compile(r"^propensity"), "propensity"),
          (re.compile(r"^refitting "), "refit, bundle, log, register"))


def stage_figures(command: Command) -> dict[str, tuple[float, float | None]]:
    """Wall seconds and highest sampled RSS (GiB) per stage: each progress line lasts until the
    next one (or the exit), and what comes before the first line is the start (imports,
    MLflow). A stage is approximate where a line is printed after its work (a tuning trial)
    or a line's work runs on past what it names (the last "fitting" line also holds the test
    table's bootstrap)."""
    first = "start (imports, MLflow)"
    spans: list[tuple[str, float, float]] = [(first, 0.0, command.lines[0][0] if command.lines else command.seconds)]
    ends = [t for t, _ in command.lines[1:]] + [command.seconds]
    current = first
    for (at, text), end in zip(command.lines, ends[:len(command.lines)], strict=True):
        for pattern, name in STAGES:
            if match := pattern.match(text.strip()):
                current = name.format(*match.groups())
                break
        spans.append((current, at, end))
    seconds: dict[str, float] = defaultdict(float)
    peak: dict[str, float | None] = {}
    for stage, start, end in spans:
        seconds[stage] += end - start
        in_span = [rss for at, rss in command.rss_samples if start <= at < end]
        if in_span:  # a stage shorter than the sampling interval has none
            peak[stage] = max(in_span + [peak.get(stage) or 0.0])
    return {stage: (seconds[stage], peak.get(stage)) for stage in seconds}


def run_figures(home: Path) -> dict[str, str]:
    """The trained run's choice, test figure, baseline and skipped families, from its MLflow run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.`shoprec.chosen` != '' and attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return {}
    tags, metrics, params = runs[0].data.tags, runs[0].data.metrics, runs[0].data.params
    skipped = {k.removeprefix("shoprec.skipped."): v for k, v in tags.items() if k.startswith("shoprec.skipped.")}
    return {
        "served": tags.get("shoprec.served", ""),
        "NDCG@10 served / strongest baseline": (f"{metrics.get('ndcg_at_10', float('nan')):.4f} / "
                                               f"{metrics.get('baseline_ndcg_at_10', float('nan')):.4f} "
                                               f"({tags.get('shoprec.strongest_baseline', '')})"),
        "test customers": params.get("split.evaluated_customers", ""),
        "validation customers": params.get("validation.customers", ""),
        **{f"skipped {family}": reason for family, reason in sorted(skipped.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50k,200k,1M", help=f"comma-separated, from {', '.join(SIZES)}")
    parser.add_argument("--out", type=Path, default=Path("/tmp/shoprec-scale"),
                        help="Where shops, homes and picks go (kept, to serve or inspect).")
    parser.add_argument("--timeout-min", type=float, default=60.0, help="Most minutes one command may run.")
    parser.add_argument("--serve", action="store_true", help="Serve the largest trained size and load it.")
    args = parser.parse_args()
    sizes = args.sizes.split(",")
    if unknown := [s for s in sizes if s not in SIZES]:
        parser.error(f"unknown sizes {unknown}; choose from {', '.join(SIZES)}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB; load average {os.getloadavg()}", flush=True)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    env.pop("MLFLOW_TRACKING_URI", None)  # each size's own SQLite registry in its home
    shoprec, timeout_s = str(BIN / "shoprec"), args.timeout_min * 60
    table: dict[str, dict[str, str]] = {}
    served: Path | None = None
    for name in sizes:
        size, root = SIZES[name], args.out / name
        shutil.rmtree(root, ignore_errors=True)
        home, shop = root / "home", root / "shop"
        size_env = {**env, "SHOPREC_HOME": str(home)}
        column = table.setdefault(name, {"shop": f"{size.customers:,} customers, {size.items:,} items, "
                                                 f"{size.days} days"})
        steps = (("sample", [shoprec, "sample", "--out", str(shop), "--customers", str(size.customers),
                             "--items", str(size.items), "--days", str(size.days), "--format", "parquet"]),
                 ("train", [shoprec, "train", "--data", str(shop)]),
                 ("picks", [shoprec, "picks", "--out", str(root / "picks.parquet")]))
        failed = False
        for step, command_args in steps:
            print(f"[{name}] {step}", flush=True)
            command = run(command_args, size_env, timeout_s)
            column[f"{step}: wall, peak RSS"] = f"{command.seconds / 60:.1f} min, {command.peak_rss_gib:.1f} GiB"
            if step == "train":
                column.update({f"  {stage} (s, GiB)": f"{seconds:.0f}, {'-' if rss is None else f'{rss:.1f}'}"
                               for stage, (seconds, rss) in stage_figures(command).items()})
                column.update(run_figures(home))
            if step == "picks" and command.ok:
                column["picks: customers, scoring rate"] = f"{_customers(root / 'picks.parquet'):,}, {_rate(command)}"
            if not command.ok:
                column[f"{step}: outcome"] = command.outcome()
                failed = True
                break
        if failed:
            print(f"[{name}] stopped at {step}: larger sizes skipped", flush=True)
            break
        served = home
    print()
    _print_table(table)
    if args.serve and served is not None:
        print(f"\nserving {served}", flush=True)
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_serving.py"), "--home", str(served),
                        "--endpoints", "/noop,/cross_sell", "--concurrency", "8"], env=env, check=False)


def _customers(path: Path) -> int:
    """Customers with picks in a picks file."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    return int(pc.count_distinct(pq.read_table(path, columns=["customer_id"])["customer_id"]).as_py())


def _rate(command: Command) -> str:
    """The picks job's own scoring rate (its last progress line), load time excluded."""
    rates = [m.group(1) for _, text in command.lines if (m := re.search(r"\(([\d,]+ customers/s)\)", text))]
    return rates[-1] if rates else "?"


def _print_table(table: dict[str, dict[str, str]]) -> None:
    labels = list(dict.fromkeys(label for column in table.values() for label in column))
    print("| | " + " | ".join(table) + " |")
    print("| --- |" + " ---: |" * len(table))
    for label in labels:
        print(f"| {label} | " + " | ".join(column.get(label, "") for column in table.values()) + " |")


if __name__ == "__main__":
    main()
