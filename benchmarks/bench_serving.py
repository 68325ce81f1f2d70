"""Serving latency and throughput: every endpoint at 1, 8 and 32 concurrent clients, next to /noop.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_serving.py [--home DIR]
Without ``--home`` it trains the default configuration on the default sample shop into a
temporary SHOPREC_HOME; with it, it serves that home's registered champion. Either way it
starts the real server (``bentoml serve``, one worker, as ``shoprec serve`` does) on a free
loopback port, waits for /readyz and drives it from a separate process, so the load
generator shares no interpreter (and no GIL) with the server; both do share the machine's
cores, which the CPU columns account for. Figures are recorded in docs/benchmarks.md with
the machine they came from.

For each endpoint and concurrency: a warm-up, then a run bounded by a request count and
a number of seconds, whichever comes first. Latency is measured in the client from send
to the end of the response (closed loop: each client sends its next request when the
previous one has answered), over keep-alive connections. The figure to watch is the
ratio to /noop at the same concurrency: /noop goes through the same guard, validation,
worker thread and serialisation without touching the recommender, so the ratio is what
the recommender itself costs on top of the framework. Every request of a cell has its own
body, drawn from the served bundle's real customer and in-stock item ids, so repeating
one request cannot flatter the figures.

Where the time goes: CPU milliseconds per request of the server's processes and of the
load process (both share the cores), and "in-process", the median time of the
recommender call alone for the same bodies, timed in this process before the server
starts. Server CPU minus in-process is the HTTP path: BentoML, the guard, validation and
building the response. The server's CPU includes what it does after the response has
left (access log, metrics), so at one client it can exceed the p50 latency.

Only light modules are imported at the top: the load process is spawned and re-imports
this file, and it should carry aiohttp and asyncio, not pandas, MLflow and the models.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import psutil

import loadgen  # benchmarks/loadgen.py: the closed-loop driver shared with load_test.py
from serving import schemas

if TYPE_CHECKING:
    from serving.recommender import ShopRecommender

REPO = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 8, 32)
EMAIL_BATCH = 100
READY_TIMEOUT_S = 120.0
IN_PROCESS_CALLS = 300


@dataclass(frozen=True)
class Ids:
    """Ids of the served bundle that requests draw from."""

    customers: list[str]
    """Known customers with history: the personal path, not the popular fallback."""
    items: list[str]
    """In-stock items: what a real cart can hold."""


@dataclass(frozen=True)
class Endpoint:
    label: str
    path: str
    body: Callable[[random.Random, Ids], dict[str, Any]]
    """One request body (the endpoint's default ``k``)."""
    call: Callable[[ShopRecommender, Any], object] | None
    """What the endpoint asks of the recommender, given the validated request; None for /noop."""


ENDPOINTS = (
    Endpoint("/noop", "/noop", lambda rng, ids: {"customer_id": rng.choice(ids.customers)}, None),
    Endpoint("/cross_sell", "/cross_sell",
             lambda rng, ids: {"cart": rng.sample(ids.items, rng.randint(1, 3)),
                               "customer_id": rng.choice(ids.customers)},
             lambda rec, r: rec.cross_sell(r.cart, r.customer_id, r.k)),
    Endpoint("/offers", "/offers", lambda rng, ids: {"customer_id": rng.choice(ids.customers)},
             lambda rec, r: rec.offers(r.customer_id, r.k, r.category)),
    Endpoint("/email_picks x1", "/email_picks", lambda rng, ids: {"customer_ids": [rng.choice(ids.customers)]},
             lambda rec, r: rec.email_picks(r.customer_ids, r.k)),
    Endpoint(f"/email_picks x{EMAIL_BATCH}", "/email_picks",
             lambda rng, ids: {"customer_ids": rng.sample(ids.customers, EMAIL_BATCH)},
             lambda rec, r: rec.email_picks(r.customer_ids, r.k)),
    Endpoint("/propensity", "/propensity",
             lambda rng, ids: {"customer_id": rng.choice(ids.customers), "session_events": [
                 {"event_type": kind, "item_id": item, "ts": f"2025-06-01T10:0{n}:00Z"}
                 for n, (kind, item) in enumerate(zip(("view", "view", "cart"), rng.sample(ids.items, 3), strict=True))]},
             lambda rec, r: rec.propensity(r.customer_id, [e.model_dump() for e in r.session_events])),
)
SCHEMAS = {"/noop": schemas.NoopRequest, "/cross_sell": schemas.CrossSellRequest, "/offers": schemas.OffersRequest,
           "/email_picks": schemas.EmailPicksRequest, "/propensity": schemas.PropensityRequest}


@dataclass
class Cell:
    """One (endpoint, concurrency) run as the load process measured it; plain data across the spawn."""

    requests: int
    errors: int
    first_error: str
    seconds: float
    latencies_ms: list[float]
    server_cpu_s: float
    client_cpu_s: float


# ---- the server -------------------------------------------------------------------------------


def train_home(root: Path) -> Path:
    """Default sample shop, default TrainConfig, registered into ``root/home``; returns the home."""
    from features.sample import SampleConfig, generate_shop
    from features.table_files import write_tables
    from training.pipeline import run_training

    data, home = root / "shop", root / "home"
    write_tables(generate_shop(SampleConfig()).tables, data, "parquet")
    os.environ["SHOPREC_HOME"] = str(home)
    started = time.perf_counter()
    result = run_training(str(data), progress=lambda message: print(f"  train: {message}", flush=True))
    print(f"trained v{result.model_version} ({result.chosen}) in {time.perf_counter() - started:.0f} s; "
          f"gate passed: {bool(result.gate and result.gate.passed)}", flush=True)
    return home


def load_served(home: Path) -> tuple[ShopRecommender, Ids]:
    """The home's champion as the server builds it, and the ids requests draw from.

    Loaded the way the server loads it (into the home's serving cache, which the server
    then reuses), so the ids are exactly those of the bundle being served.
    """
    from serving.lifecycle import BundleCache
    from serving.recommender import ShopRecommender

    os.environ["SHOPREC_HOME"] = str(home)
    loaded = BundleCache(os.environ.get("SHOPREC_MODEL_NAME", "shoprec")).load_initial()
    bundle = loaded.bundle
    has_history = np.diff(bundle.interactions.indptr) > 0
    in_stock = bundle.catalogue["in_stock"].to_numpy(dtype=bool)
    recommender = ShopRecommender(bundle, loaded.version)
    recommender.warm()  # as each worker does before it serves
    return recommender, Ids(
        customers=[str(c) for c in np.asarray(bundle.customers.external_ids)[has_history]],
        items=[str(i) for i in np.asarray(bundle.items.external_ids)[in_stock]])


def in_process_ms(endpoint: Endpoint, recommender: ShopRecommender, bodies: list[bytes]) -> float:
    """Median milliseconds of the recommender call alone, in this process, before the server starts.

    Server CPU per request minus this is what the HTTP path costs; for /noop it is zero.
    """
    if endpoint.call is None:
        return 0.0
    from threadpoolctl import threadpool_limits

    requests = [SCHEMAS[endpoint.path].model_validate_json(body) for body in bodies]
    times = []
    with threadpool_limits(1):  # as the service holds it
        for request in requests:
            started = time.perf_counter()
            endpoint.call(recommender, request)
            times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(home: Path, log_path: Path) -> Iterator[tuple[str, list[int]]]:
    """``bentoml serve`` on a free loopback port until the block ends, however it ends.

    Yields the base URL and the pids of the server's process tree (the arbiter and its
    worker), whose CPU time the load process reads. The server runs in its own session so
    that its whole tree is stopped with one signal.
    """
    port = _free_port()
    env = {**os.environ, "SHOPREC_HOME": str(home), "SHOPREC_POLL_SECONDS": "0", "OPENBLAS_NUM_THREADS": "1",
           "BENTOML_HOME": str(log_path.parent / "bentoml")}
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("bentoml")), "serve",
                                 "serving.service:ShoprecService", "--host", "127.0.0.1", "--port", str(port)],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            started = time.perf_counter()
            _wait_ready(url, proc, log_path)
            root = psutil.Process(proc.pid)
            tree = [root, *root.children(recursive=True)]
            print(f"server ready {time.perf_counter() - started:.1f} s after start; RSS of its {len(tree)} "
                  f"processes {sum(p.memory_info().rss for p in tree) / 2**30:.2f} GiB", flush=True)
            yield url, [p.pid for p in tree]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            print(f"server stopped (exit code {proc.returncode})", flush=True)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=5) as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                if client.get(f"{url}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in {READY_TIMEOUT_S:.0f} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)


# ---- the load process -------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the given processes so far (those that still exist)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def drive(url: str, path: str, warmup: list[bytes], payloads: list[bytes], concurrency: int,
          server_pids: list[int], warmup_s: float, max_s: float) -> Cell:
    """Runs in the spawned load process: the warm-up bodies, then the measured ones, for one cell."""
    return asyncio.run(_drive(url, path, warmup, payloads, concurrency, server_pids, warmup_s, max_s))


async def _drive(url: str, path: str, warmup: list[bytes], payloads: list[bytes], concurrency: int,
                 server_pids: list[int], warmup_s: float, max_s: float) -> Cell:
    """``concurrency`` closed-loop clients (:func:`loadgen.closed_loop`) over one keep-alive pool;
    errors of both phases are counted."""
    async with loadgen.session(url, concurrency) as client:
        warm = await loadgen.closed_loop(client, ((path, body) for body in warmup), concurrency, warmup_s)
        server_cpu, client_cpu = cpu_seconds(server_pids), time.process_time()
        started = time.perf_counter()
        measured = await loadgen.closed_loop(client, ((path, body) for body in payloads), concurrency, max_s)
        seconds = time.perf_counter() - started
        server_cpu, client_cpu = cpu_seconds(server_pids) - server_cpu, time.process_time() - client_cpu
    errors = [o.error for o in (*warm, *measured) if o.error]
    return Cell(requests=len(measured), errors=len(errors), first_error=errors[0] if errors else "",
                seconds=seconds, latencies_ms=[o.latency_ms for o in measured], server_cpu_s=server_cpu,
                client_cpu_s=client_cpu)


# ---- the report -------------------------------------------------------------------------------


@dataclass
class Row:
    endpoint: str
    concurrency: int
    cell: Cell
    in_process_ms: float

    def percentile(self, q: float) -> float:
        return loadgen.percentile(self.cell.latencies_ms, q)

    @property
    def throughput(self) -> float:
        return self.cell.requests / self.cell.seconds if self.cell.seconds else float("nan")

    def per_request_ms(self, cpu_s: float) -> float:
        return cpu_s / self.cell.requests * 1000 if self.cell.requests else float("nan")


def print_table(rows: list[Row]) -> None:
    noop = {r.concurrency: r for r in rows if r.endpoint == "/noop"}
    header = (f"{'endpoint':<18} {'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} "
              f"{'p99 ms':>8} {'req/s':>8} {'p50/noop':>8} {'rps/noop':>8} {'srv CPU ms/req':>14} "
              f"{'cli CPU ms/req':>14} {'in-process ms':>13}")
    print(header)
    print("-" * len(header))
    for r in rows:
        base = noop[r.concurrency]
        print(f"{r.endpoint:<18} {r.concurrency:>7} {r.cell.requests:>8} {r.cell.errors:>6} {r.percentile(50):>8.2f} "
              f"{r.percentile(95):>8.2f} {r.percentile(99):>8.2f} {r.throughput:>8.0f} "
              f"{r.percentile(50) / base.percentile(50):>7.2f}x {r.throughput / base.throughput:>7.2f}x "
              f"{r.per_request_ms(r.cell.server_cpu_s):>14.2f} {r.per_request_ms(r.cell.client_cpu_s):>14.2f} "
              f"{r.in_process_ms:>13.2f}")
    for r in rows:
        if r.cell.errors:
            print(f"ERRORS {r.endpoint} x{r.concurrency}: {r.cell.errors}, first: {r.cell.first_error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="A SHOPREC_HOME with a registered champion (skips training).")
    parser.add_argument("--requests", type=int, default=2000, help="Measured requests per cell, at most.")
    parser.add_argument("--seconds", type=float, default=8.0, help="Measured seconds per cell, at most.")
    parser.add_argument("--warmup-requests", type=int, default=100)
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--endpoints", help="Comma-separated labels to run (default: all), e.g. /noop,/cross_sell.")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)),
                        help="Comma-separated client counts.")
    args = parser.parse_args()
    labels = [e.label for e in ENDPOINTS]
    wanted = [label for label in (args.endpoints or "").split(",") if label] or labels
    if unknown := [label for label in wanted if label not in labels]:
        parser.error(f"--endpoints: unknown {unknown}; choose from {', '.join(labels)}")
    endpoints = [e for e in ENDPOINTS if e.label in wanted]
    try:
        concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--concurrency {args.concurrency}: comma-separated whole numbers")
    # A SIGTERM to the script should stop the server too: turn it into SystemExit so `finally` runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the home's own SQLite registry, never a shared server
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, python {platform.python_version()}; "
          f"load average {os.getloadavg()}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        root = Path(tmp)
        home = args.home.resolve() if args.home else train_home(root)
        recommender, ids = load_served(home)
        print(f"serving {recommender.model_version} from {home}: {len(ids.customers):,} known customers, "
              f"{len(ids.items):,} in-stock items", flush=True)
        rng = random.Random(args.seed)
        # Warm-up bodies first, then the measured ones: within a cell no body is sent twice.
        pools = {e.label: [json.dumps(e.body(rng, ids)).encode() for _ in range(args.warmup_requests + args.requests)]
                 for e in endpoints}
        alone = {e.label: in_process_ms(e, recommender, pools[e.label][args.warmup_requests:][:IN_PROCESS_CALLS])
                 for e in endpoints}
        del recommender  # the server holds its own copy; this one would only take memory from it
        rows: list[Row] = []
        with running_server(home, root / "server.log") as (url, server_pids), \
                ProcessPoolExecutor(1, mp_context=get_context("spawn")) as load:
            print(f"server ready at {url} (pids {server_pids}); server and load process share this machine's "
                  f"{os.cpu_count()} CPUs; load average {os.getloadavg()}", flush=True)
            for concurrency in concurrencies:
                for endpoint in endpoints:
                    pool = pools[endpoint.label]
                    cell = load.submit(drive, url, endpoint.path, pool[:args.warmup_requests],
                                       pool[args.warmup_requests:], concurrency, server_pids,
                                       args.warmup_seconds, args.seconds).result()
                    rows.append(Row(endpoint.label, concurrency, cell, alone[endpoint.label]))
                    print(f"  {endpoint.label} x{concurrency}: {cell.requests} requests in {cell.seconds:.1f} s, "
                          f"{cell.errors} errors", flush=True)
        rows.sort(key=lambda r: ([e.label for e in ENDPOINTS].index(r.endpoint), r.concurrency))
        print()
        print_table(rows)
    print(f"\nload average at the end {os.getloadavg()}; {time.perf_counter() - started:.0f} s in all")
    if any(r.cell.errors for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
