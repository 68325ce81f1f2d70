"""Live events ingestion: POST /events in batches of 50 at 1, 4 and 16 concurrent clients, next to /noop.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_events.py [--home DIR]
Without ``--home`` it trains the default configuration on the default sample shop into a
temporary SHOPREC_HOME (as bench_serving.py does); with it, it serves that home's
champion. It then starts the real server (``bentoml serve``, one worker) twice, once per
session store:

- ``redis``: ``SHOPREC_REDIS_URL=redis://127.0.0.1:6379/3`` (``--redis-url``; database 3
  is this benchmark's: the run's keys are deleted at the end);
- ``memory``: no ``SHOPREC_REDIS_URL``, the worker's in-process store;

each with ``SHOPREC_EVENT_LOG`` a fresh folder of the run (the write-ahead file log: one
write and one fsync per batch before the answer). A separate, spawned process drives it
with the closed loop of benchmarks/loadgen.py, so the load generator shares no interpreter
with the server (it does share the cores).

Per store and concurrency: /noop (the framework's floor, as in bench_serving.py), then
/events with batches of ``--batch-size`` realistic events: each event comes from one of
200 concurrently active visits (new visits replace finished ones, so a visit spans
batches and a batch touches dozens of sessions); mostly views, some carts, wishlists,
removals, searches (no item) and purchases; 40% of visits logged in as a real customer;
in-stock item ids of the served bundle, 3% unknown ids. Each cell: a warm-up, then a run
bounded by a batch count and a number of seconds. The figures to watch are events/s and
the ratio of batches/s to /noop requests/s at the same concurrency.

Read-your-writes: ``--ryw-sessions`` new visits (4 at a time), each one event (a view of
a known item) and, as soon as it is acknowledged, ``POST /cross_sell`` with that
``session_id`` and an empty cart: ``session_items`` must be 1 and the viewed item must not
come back. A miss is either.

Acknowledged vs logged: every 200 of /events says how many events it ``accepted``; after
the server has been stopped cleanly (SIGTERM: the worker closes the log, which compacts
its last segment), the rows of the log folder's ``events/`` Parquet parts plus the lines
of any ``wal/`` segment left must equal the sum.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path

import psutil

import bench_serving  # train_home, load_served, running_server, drive, cpu_seconds, Cell
import loadgen

CONCURRENCY = (1, 4, 16)
STORES = ("redis", "memory")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/3"
ACTIVE_VISITS = 200
EVENT_MIX = (("view", 0.70), ("cart", 0.12), ("wishlist", 0.04), ("remove_from_cart", 0.04), ("search", 0.07),
             ("purchase", 0.03))
LOGGED_IN_SHARE = 0.4
UNKNOWN_ITEM_SHARE = 0.03
RYW_CLIENTS = 4


# ---- realistic batches (built in the load process, before its clock starts) --------------------


def event_batches(rng: random.Random, items: list[str], customers: list[str], prefix: str, count: int,
                  size: int) -> list[bytes]:
    """``count`` JSON bodies of ``size`` events from ``ACTIVE_VISITS`` concurrent visits (module docstring)."""
    kinds, weights = zip(*EVENT_MIX, strict=True)
    clock = datetime.now(UTC)
    serial = 0

    def new_visit() -> list:
        nonlocal serial
        serial += 1
        customer = rng.choice(customers) if rng.random() < LOGGED_IN_SHARE else None
        return [f"{prefix}{serial}", customer, rng.randint(3, 30)]  # id, customer, events left

    visits = [new_visit() for _ in range(ACTIVE_VISITS)]
    bodies = []
    for _ in range(count):
        events = []
        for _ in range(size):
            slot = rng.randrange(len(visits))
            session_id, customer, left = visits[slot]
            kind = rng.choices(kinds, weights)[0]
            clock += timedelta(milliseconds=rng.randint(1, 40))
            event = {"session_id": session_id, "event_type": kind, "ts": clock.isoformat().replace("+00:00", "Z")}
            if customer is not None:
                event["customer_id"] = customer
            if kind != "search":
                event["item_id"] = (f"unknown-{rng.randrange(10**6)}" if rng.random() < UNKNOWN_ITEM_SHARE
                                    else rng.choice(items))
            events.append(event)
            visits[slot] = new_visit() if left <= 1 else [session_id, customer, left - 1]
        bodies.append(json.dumps({"events": events}, separators=(",", ":")).encode())
    return bodies


def _accepted(answer: bytes) -> str:
    body = json.loads(answer)
    return f"{body['accepted']},{body['unknown_items']}"


@dataclass
class EventsCell:
    """One /events run as the load process measured it, with what the server acknowledged."""

    cell: bench_serving.Cell
    acknowledged: int
    """Events in 200 answers (``accepted``), warm-up included: what the log must hold."""
    unknown_items: int
    measured_events: int
    """Events acknowledged in the measured phase alone."""


def drive_events(url: str, items: list[str], customers: list[str], prefix: str, seed: int, warmup: int, batches: int,
                 size: int, concurrency: int, server_pids: list[int], warmup_s: float, max_s: float) -> EventsCell:
    """Runs in the spawned load process: builds the bodies, then a warm-up and the measured run."""
    rng = random.Random(seed)
    bodies = event_batches(rng, items, customers, prefix, warmup + batches, size)
    return asyncio.run(_drive_events(url, bodies[:warmup], bodies[warmup:], concurrency, server_pids, warmup_s, max_s))


async def _drive_events(url: str, warmup: list[bytes], payloads: list[bytes], concurrency: int,
                        server_pids: list[int], warmup_s: float, max_s: float) -> EventsCell:
    async with loadgen.session(url, concurrency) as client:
        warm = await loadgen.closed_loop(client, (("/events", b) for b in warmup), concurrency, warmup_s,
                                         inspect=_accepted)
        server_cpu, client_cpu = bench_serving.cpu_seconds(server_pids), time.process_time()
        started = time.perf_counter()
        measured = await loadgen.closed_loop(client, (("/events", b) for b in payloads), concurrency, max_s,
                                             inspect=_accepted)
        seconds = time.perf_counter() - started
        server_cpu = bench_serving.cpu_seconds(server_pids) - server_cpu
        client_cpu = time.process_time() - client_cpu
    errors = [o.error for o in (*warm, *measured) if o.error]
    counts = [tuple(map(int, o.tag.split(","))) for o in (*warm, *measured) if not o.error]
    cell = bench_serving.Cell(requests=len(measured), errors=len(errors), first_error=errors[0] if errors else "",
                              seconds=seconds, latencies_ms=[o.latency_ms for o in measured],
                              server_cpu_s=server_cpu, client_cpu_s=client_cpu)
    return EventsCell(cell, acknowledged=sum(c[0] for c in counts), unknown_items=sum(c[1] for c in counts),
                      measured_events=sum(int(o.tag.split(",")[0]) for o in measured if not o.error))


@dataclass
class ReadYourWrites:
    sessions: int
    misses: int = 0
    """Cross-sells right after an acknowledged event that did not reflect it."""
    errors: int = 0
    acknowledged: int = 0
    first_problem: str = ""
    read_ms: list[float] = field(default_factory=list)
    """From the event's acknowledgement to the end of the cross-sell's answer."""


def read_your_writes(url: str, items: list[str], prefix: str, sessions: int, seed: int) -> ReadYourWrites:
    """Runs in the load process: per new session, one event, then at once a cross-sell with its session_id."""
    return asyncio.run(_read_your_writes(url, items, prefix, sessions, seed))


async def _read_your_writes(url: str, items: list[str], prefix: str, sessions: int, seed: int) -> ReadYourWrites:
    rng = random.Random(seed)
    plan = iter([(f"{prefix}{n}", rng.choice(items)) for n in range(sessions)])
    result = ReadYourWrites(sessions)

    def problem(text: str) -> None:
        result.first_problem = result.first_problem or text

    async def post(client, path: str, body: dict) -> dict | None:  # noqa: ANN001 - aiohttp.ClientSession
        try:
            async with client.post(path, data=json.dumps(body), headers=loadgen.HEADERS) as response:
                answer = await response.read()
                if response.status == 200:
                    return json.loads(answer)
                problem(f"{path}: HTTP {response.status}: {answer[:200].decode(errors='replace')}")
        except Exception as failure:  # noqa: BLE001 - counted and reported
            problem(f"{path}: {type(failure).__name__}: {failure}")
        result.errors += 1
        return None

    async def one_client(client) -> None:  # noqa: ANN001
        for session_id, item in plan:
            ack = await post(client, "/events", {"events": [{"session_id": session_id, "event_type": "view",
                                                             "item_id": item}]})
            if ack is None:
                continue
            result.acknowledged += ack["accepted"]
            acked = time.perf_counter()
            answer = await post(client, "/cross_sell", {"cart": [], "session_id": session_id, "k": 5})
            if answer is None:
                continue
            result.read_ms.append((time.perf_counter() - acked) * 1000)
            returned = [i["item_id"] for i in answer["items"]]
            if answer["session_items"] != 1 or item in returned:
                result.misses += 1
                problem(f"{session_id}: viewed {item}, cross-sell read session_items={answer['session_items']}, "
                        f"returned {returned}")

    async with loadgen.session(url, RYW_CLIENTS) as client:
        await asyncio.gather(*(one_client(client) for _ in range(RYW_CLIENTS)))
    return result


# ---- the log and the store ----------------------------------------------------------------------


def logged_events(folder: Path) -> tuple[int, int, int]:
    """Rows in ``events/`` Parquet parts, lines in ``wal/`` segments, number of parts."""
    import pyarrow.parquet as pq

    parts = sorted((folder / "events").glob("part-*.parquet"))
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    wal = sum(p.read_bytes().count(b"\n") for p in (folder / "wal").glob("*.jsonl"))
    return rows, wal, len(parts)


@contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Set (or, for None, remove) variables for the block: running_server passes os.environ on."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def count_keys(redis_url: str, pattern: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return sum(1 for _ in client.scan_iter(pattern, count=1000))
    finally:
        client.close()


def delete_run_keys(redis_url: str, run: str) -> int:
    """The run's session keys, and the customer keys of database ``redis_url`` (this benchmark's own)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = [*client.scan_iter(f"shoprec:session:{run}-*", count=1000), *client.scan_iter("shoprec:customer:*",
                                                                                            count=1000)]
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start:start + 1000])
        return len(keys)
    finally:
        client.close()


# ---- the report -----------------------------------------------------------------------------------


@dataclass
class Row:
    store: str
    concurrency: int
    noop: bench_serving.Cell
    events: EventsCell

    @staticmethod
    def rate(cell: bench_serving.Cell) -> float:
        return cell.requests / cell.seconds if cell.seconds else float("nan")


@dataclass
class StoreRun:
    store: str
    description: str
    rows: list[Row]
    ryw: ReadYourWrites
    acknowledged: int
    logged: tuple[int, int, int]
    exit_line: str


def print_report(runs: list[StoreRun]) -> None:
    header = (f"{'store':<7} {'clients':>7} {'batches':>7} {'errors':>6} {'events/s':>9} {'p50 ms':>7} "
              f"{'p95 ms':>7} {'p99 ms':>7} {'noop req/s':>10} {'noop p50':>8} {'batch/s / noop':>14} "
              f"{'p50 / noop':>10} {'srv CPU ms/batch':>16}")
    print(header)
    print("-" * len(header))
    for run in runs:
        for r in run.rows:
            e = r.events.cell
            p50 = loadgen.percentile(e.latencies_ms, 50)
            noop_p50 = loadgen.percentile(r.noop.latencies_ms, 50)
            events_s = r.events.measured_events / e.seconds if e.seconds else float("nan")
            print(f"{run.store:<7} {r.concurrency:>7} {e.requests:>7} {e.errors + r.noop.errors:>6} {events_s:>9,.0f} "
                  f"{p50:>7.2f} {loadgen.percentile(e.latencies_ms, 95):>7.2f} "
                  f"{loadgen.percentile(e.latencies_ms, 99):>7.2f} {Row.rate(r.noop):>10.0f} {noop_p50:>8.2f} "
                  f"{Row.rate(e) / Row.rate(r.noop):>13.2f}x {p50 / noop_p50:>9.2f}x "
                  f"{e.server_cpu_s / e.requests * 1000 if e.requests else float('nan'):>16.2f}")
    print()
    for run in runs:
        rows, wal, parts = run.logged
        ryw = run.ryw
        read = loadgen.percentile(ryw.read_ms, 50), loadgen.percentile(ryw.read_ms, 99)
        print(f"{run.store}: {run.description}")
        print(f"  read-your-writes: {ryw.sessions} sessions, {ryw.misses} misses, {ryw.errors} errors; "
              f"ack -> cross-sell answer p50 {read[0]:.2f} ms, p99 {read[1]:.2f} ms"
              + (f"; first problem: {ryw.first_problem}" if ryw.first_problem else ""))
        print(f"  events acknowledged {run.acknowledged:,}; in the log after a clean stop {rows + wal:,} "
              f"({rows:,} in {parts} Parquet part(s), {wal:,} in WAL segments): "
              f"{'equal' if rows + wal == run.acknowledged else 'DIFFERENT'}; {run.exit_line}")
        for r in run.rows:
            for label, cell in (("/noop", r.noop), ("/events", r.events.cell)):
                if cell.errors:
                    print(f"  ERRORS {label} x{r.concurrency}: {cell.errors}, first: {cell.first_error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="A SHOPREC_HOME with a registered champion (skips training).")
    parser.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="The Redis the 'redis' store uses.")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--batches", type=int, default=1500, help="Measured batches per cell, at most.")
    parser.add_argument("--seconds", type=float, default=5.0, help="Measured seconds per cell, at most.")
    parser.add_argument("--warmup-batches", type=int, default=40)
    parser.add_argument("--warmup-seconds", type=float, default=1.0)
    parser.add_argument("--noop-requests", type=int, default=4000, help="Measured /noop requests per cell, at most.")
    parser.add_argument("--ryw-sessions", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    load_before = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, python {platform.python_version()}; "
          f"load average {load_before}", flush=True)
    started = time.perf_counter()
    run_id = uuid.uuid4().hex[:8]
    runs: list[StoreRun] = []
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        root = Path(tmp)
        home = args.home.resolve() if args.home else bench_serving.train_home(root)
        recommender, ids = bench_serving.load_served(home)
        print(f"serving {recommender.model_version} from {home}: {len(ids.customers):,} known customers, "
              f"{len(ids.items):,} in-stock items", flush=True)
        del recommender
        rng = random.Random(args.seed)
        noop_bodies = [json.dumps({"customer_id": rng.choice(ids.customers)}).encode()
                       for _ in range(args.warmup_batches + args.noop_requests)]
        try:
            for store in args.stores:
                log_dir, server_log = root / f"event-log-{store}", root / f"server-{store}.log"
                redis_url = args.redis_url if store == "redis" else None
                rows: list[Row] = []
                acknowledged = 0
                with environment(SHOPREC_REDIS_URL=redis_url, SHOPREC_EVENT_LOG=str(log_dir)), \
                        bench_serving.running_server(home, server_log) as (url, server_pids), \
                        ProcessPoolExecutor(1, mp_context=get_context("spawn")) as load:
                    print(f"[{store}] server ready at {url}; load average {os.getloadavg()}", flush=True)
                    for concurrency in CONCURRENCY:
                        noop = load.submit(bench_serving.drive, url, "/noop", noop_bodies[:args.warmup_batches],
                                           noop_bodies[args.warmup_batches:], concurrency, server_pids,
                                           args.warmup_seconds, args.seconds).result()
                        events = load.submit(drive_events, url, ids.items, ids.customers,
                                             f"{run_id}-{store}-c{concurrency}-", args.seed + concurrency,
                                             args.warmup_batches, args.batches, args.batch_size, concurrency,
                                             server_pids, args.warmup_seconds, args.seconds).result()
                        acknowledged += events.acknowledged
                        rows.append(Row(store, concurrency, noop, events))
                        print(f"  x{concurrency}: /noop {Row.rate(noop):.0f} req/s; /events {events.cell.requests} "
                              f"batches in {events.cell.seconds:.1f} s = "
                              f"{events.measured_events / events.cell.seconds:,.0f} events/s, "
                              f"{events.cell.errors} errors", flush=True)
                    ryw = load.submit(read_your_writes, url, ids.items, f"{run_id}-{store}-ryw-", args.ryw_sessions,
                                      args.seed).result()
                    acknowledged += ryw.acknowledged
                    print(f"  read-your-writes: {ryw.misses} misses of {ryw.sessions}", flush=True)
                problems = [line for line in server_log.read_text().splitlines() if "Traceback" in line]
                in_redis = count_keys(args.redis_url, f"shoprec:session:{run_id}-{store}-*")
                description = (f"{'Redis ' + args.redis_url if redis_url else 'in-process memory'} "
                               f"({in_redis:,} of the run's sessions in that Redis)")
                runs.append(StoreRun(store, description, rows, ryw, acknowledged, logged_events(log_dir),
                                     f"{len(problems)} tracebacks in the server log"))
        finally:
            if "redis" in args.stores:
                print(f"deleted {delete_run_keys(args.redis_url, run_id)} keys of this run from {args.redis_url}")
        print()
        print_report(runs)
    print(f"\nload average {load_before} before, {os.getloadavg()} at the end; "
          f"{time.perf_counter() - started:.0f} s in all")
    if any(r.events.cell.errors or r.noop.errors for run in runs for r in run.rows) or \
            any(run.ryw.misses or run.ryw.errors or sum(run.logged[:2]) != run.acknowledged for run in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
