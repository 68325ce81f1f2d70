"""What an experiment costs a checkout request: /cross_sell with and without a running experiment.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_exposures.py [--home DIR] [--rounds 3]
     [--one-version] [--durability fsync|write]

One real server (``bentoml serve``, one worker), driven from a separate process by the same
closed-loop load as benchmarks/bench_serving.py (8 keep-alive clients by default, every request
its own body with a known customer). Phases alternate on the same warm server: no experiment,
then an experiment (champion against a second registered version of the same bundle, 50/50,
so both arms do the same recommender work), switched by the registry and ``POST
/admin/reload``. With the experiment on, each answer is routed by the customer's hash and
waits for its exposure to be written (at the default ``write`` durability, by the request
itself; at ``fsync``, by the writer thread, one ``fsync`` shared by the requests queued
meanwhile). The ratio of the medians of req/s is the figure the issue bounds (at most
10% lost). ``--one-version`` runs an A/A on the champion's version instead, both arms sharing
one recommender, which leaves the routing and the exposure log as the only difference.
``--durability`` sets the server's SHOPREC_EXPOSURE_DURABILITY (serving/exposures.py): ``write``
(the default) or ``fsync``.

Without ``--home`` it trains the default sample shop into a temporary home. With ``--home``
it registers one more version there (the champion's bundle again) and leaves the experiments it
ran, stopped, in that home's registry.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import httpx

import bench_serving as serving_bench  # benchmarks/bench_serving.py: the server, the load process, the ids
import loadgen

TOKEN = "bench-exposures"


def second_version(model: str) -> tuple[str, str]:
    """The champion's version and a new version registered from the same bundle."""
    from training import tracking

    client = tracking.configure()
    champion = client.get_model_version_by_alias(model, "champion")
    again = client.create_model_version(model, source=champion.source, run_id=champion.run_id, tags=champion.tags)
    return str(champion.version), str(again.version)


def switch(url: str, model: str, on: str | None) -> None:
    """Stop any running experiment, start ``on`` if given, and make the server follow now."""
    from training import experiments, tracking

    client = tracking.configure()
    if (running := experiments.running(client, model)) is not None:
        experiments.stop(client, model, running.name)
    if on is not None:
        experiments.start(client, model, f"bench-{uuid.uuid4().hex[:8]}", on)
    reloaded = httpx.post(f"{url}/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
    reloaded.raise_for_status()


def main() -> None:
    from serving.exposures import DURABILITY, DURABILITY_ENV  # not at the top: the spawned load process stays light

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="A SHOPREC_HOME with a registered champion (skips training).")
    parser.add_argument("--rounds", type=int, default=3, help="Off/on pairs, alternating which goes first.")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4000, help="Measured requests per phase, at most.")
    parser.add_argument("--seconds", type=float, default=8.0, help="Measured seconds per phase, at most.")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--one-version", action="store_true",
                        help="An A/A on the champion's version: both arms share one recommender, so the "
                             "difference is the routing and the exposure log alone.")
    parser.add_argument("--durability", choices=DURABILITY, default=DURABILITY[0],
                        help="The exposure log's durability (SHOPREC_EXPOSURE_DURABILITY).")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    model = os.environ.get("SHOPREC_MODEL_NAME", "shoprec")
    with tempfile.TemporaryDirectory(prefix="bench-exposures-") as tmp:
        root = Path(tmp)
        home = args.home.resolve() if args.home else serving_bench.train_home(root)
        recommender, ids = serving_bench.load_served(home)
        del recommender
        champion, again = second_version(model)
        arms = f"champion:50,{champion}:50" if args.one_version else f"{champion}:50,{again}:50"
        print(f"experiment arms: {arms} (v{again} is the champion's bundle registered again)", flush=True)
        endpoint = next(e for e in serving_bench.ENDPOINTS if e.path == "/cross_sell")
        rng = random.Random(args.seed)
        os.environ.update({"SHOPREC_ADMIN_TOKEN": TOKEN, "SHOPREC_EXPOSURE_LOG": str(root / "exposure-log"),
                           "SHOPREC_EVENT_LOG": str(root / "event-log"), DURABILITY_ENV: args.durability})
        figures: dict[str, list[tuple[float, float, float]]] = {"off": [], "on": []}
        with serving_bench.running_server(home, root / "server.log") as (url, pids), \
                ProcessPoolExecutor(1, mp_context=get_context("spawn")) as load:
            try:
                for round_number in range(args.rounds):
                    for phase in (("off", "on") if round_number % 2 == 0 else ("on", "off")):
                        switch(url, model, arms if phase == "on" else None)
                        bodies = [json.dumps(endpoint.body(rng, ids)).encode() for _ in range(200 + args.requests)]
                        cell = load.submit(serving_bench.drive, url, endpoint.path, bodies[:200], bodies[200:],
                                           args.clients, pids, 2.0, args.seconds).result()
                        if cell.errors:
                            raise SystemExit(f"{cell.errors} errors, first: {cell.first_error}")
                        p50, p99 = (loadgen.percentile(cell.latencies_ms, q) for q in (50, 99))
                        figures[phase].append((cell.requests / cell.seconds, p50, p99))
                        print(f"  round {round_number + 1} {phase:>3}: {cell.requests / cell.seconds:7.0f} req/s, "
                              f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, server CPU "
                              f"{cell.server_cpu_s / cell.requests * 1000:.2f} ms/request", flush=True)
            finally:
                switch(url, model, None)
        from serving.event_log.reading import read_log
        from serving.exposures import EXPOSURES_TABLE

        logged = read_log(root / "exposure-log", EXPOSURES_TABLE).num_rows
    off, on = (statistics.median(r for r, _, _ in figures[p]) for p in ("off", "on"))
    print(f"\n/cross_sell at {args.clients} clients, median of {args.rounds} phases each "
          f"(exposure durability {args.durability}):")
    for phase in ("off", "on"):
        print(f"  experiment {phase:>3}: {statistics.median(r for r, _, _ in figures[phase]):7.0f} req/s, "
              f"p50 {statistics.median(p for _, p, _ in figures[phase]):.2f} ms, "
              f"p99 {statistics.median(p for _, _, p in figures[phase]):.2f} ms")
    print(f"  with the experiment: {on / off:.2f}x the throughput ({(1 - on / off):+.1%} lost); "
          f"{logged:,} exposures logged")


if __name__ == "__main__":
    main()
