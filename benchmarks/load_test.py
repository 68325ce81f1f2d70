"""Load test with a champion swap in the middle: mixed traffic on every endpoint, zero errors expected.

Run against a running server whose registry already holds the new champion (train and
promote it first; the server keeps serving the old one until it reloads):

    SHOPREC_ADMIN_TOKEN=... .venv/bin/python benchmarks/load_test.py --url http://127.0.0.1:3000 \\
        --ids ids.json --clients 32 --seconds 120 --json load.json

``--ids`` is a JSON file ``{"customers": [...], "items": [...], "categories": [...]}`` of
the served shop's known customer ids and in-stock item ids (categories optional); the
test writes it from the bundle. ``make load`` runs the long form against a server the test
suite starts (tests/serving/test_load.py); the suite itself runs a short form on every CI
run.

What it does: ``--clients`` closed-loop clients (benchmarks/loadgen.py, one keep-alive
pool, this process only) send a mix of /cross_sell, /offers, /email_picks and /propensity
requests, each with its own body drawn from the ids (a share of unknown customers and items
to exercise the fallbacks), for ``--seconds`` or ``--max-requests``, whichever comes
first; every request has a 30 s timeout, so the run stops by itself. After ``--swap-after``
seconds it calls ``POST /admin/reload`` (bearer token from ``--token`` or
``SHOPREC_ADMIN_TOKEN``; prefer the variable, arguments show in ``ps``) over its own
connection. Requests are split by the swap: *warm-up* (started in the first
``--warmup`` seconds, reported but not in "before"), *before* (answered before the reload
was sent), *during* (in flight at some moment between the reload being sent and
``--settle`` seconds after it answered, so that the first requests on the new bundle and
the release of the old one count as part of the swap) and *after* (sent later). For each: requests, errors, p50/p95/p99/max latency, req/s
and the ``model_version`` values answered. It also checks that once any request was
answered by the new version, no request sent later was answered by the old one.

Exit status 0 only with zero errors, a 200 from the reload and no stale answer after the
new version was seen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, UTC
from pathlib import Path
from typing import Any

import aiohttp

import loadgen  # benchmarks/loadgen.py

ENDPOINTS = ("/cross_sell", "/offers", "/email_picks", "/propensity")
PHASES = ("warmup", "before", "during", "after")
TOKEN_ENV = "SHOPREC_ADMIN_TOKEN"


@dataclass(frozen=True)
class Ids:
    customers: list[str]
    items: list[str]
    categories: list[str]

    @classmethod
    def read(cls, path: Path) -> Ids:
        data = json.loads(path.read_text())
        ids = cls([str(c) for c in data["customers"]], [str(i) for i in data["items"]],
                  [str(c) for c in data.get("categories", [])])
        if not ids.customers or not ids.items:
            raise SystemExit(f"{path}: needs non-empty 'customers' and 'items' lists")
        return ids


class Bodies:
    """An endless, seeded mix of valid requests over the four endpoints."""

    def __init__(self, ids: Ids, seed: int, unknown_share: float) -> None:
        self.ids, self.rng, self.unknown_share = ids, random.Random(seed), unknown_share
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.serial = 0

    def customer(self) -> str:
        self.serial += 1
        return f"load-stranger-{self.serial}" if self.rng.random() < self.unknown_share \
            else self.rng.choice(self.ids.customers)

    def item(self) -> str:
        return "load-ghost-item" if self.rng.random() < self.unknown_share / 4 else self.rng.choice(self.ids.items)

    def session(self) -> list[dict[str, str]]:
        start = self.now - timedelta(minutes=self.rng.randint(5, 600))
        events = []
        for n in range(self.rng.randint(1, 6)):
            kind = self.rng.choices(["view", "cart", "wishlist", "search"], [6, 2, 1, 1])[0]
            event = {"event_type": kind, "ts": (start + timedelta(seconds=40 * n)).isoformat()}
            if kind != "search":
                event["item_id"] = self.item()
            events.append(event)
        return events

    def body(self, path: str) -> dict[str, Any]:
        rng = self.rng
        if path == "/cross_sell":
            body: dict[str, Any] = {"cart": [self.item() for _ in range(rng.randint(1, 3))]}
            if rng.random() < 0.8:
                body["customer_id"] = self.customer()
            return body
        if path == "/offers":
            body = {"customer_id": self.customer()}
            if self.ids.categories and rng.random() < 0.25:
                body["category"] = rng.choice(self.ids.categories)
            return body
        if path == "/email_picks":
            return {"customer_ids": [self.customer() for _ in range(rng.randint(1, 20))], "k": 5}
        shape = rng.randrange(3)  # /propensity: customer, session, or both
        body = {} if shape == 1 else {"customer_id": self.customer()}
        if shape > 0:
            body["session_events"] = self.session()
        return body

    def stream(self, limit: int) -> Iterator[tuple[str, bytes]]:
        for n in range(limit):
            path = ENDPOINTS[n % len(ENDPOINTS)]
            yield path, json.dumps(self.body(path)).encode()


def model_version(answer: bytes) -> str:
    return str(json.loads(answer)["model_version"])


@dataclass
class Swap:
    sent_s: float = float("nan")
    answered_s: float = float("nan")
    status: int = 0
    answer: str = ""


async def _swap(url: str, token: str, origin: float, after_s: float, swap: Swap) -> None:
    await asyncio.sleep(max(0.0, origin + after_s - time.perf_counter()))
    async with loadgen.session(url, 1) as admin:
        swap.sent_s = time.perf_counter() - origin
        try:
            async with admin.post("/admin/reload", data=b"{}", headers={
                    **loadgen.HEADERS, "authorization": f"Bearer {token}"}) as response:
                swap.status, swap.answer = response.status, (await response.read()).decode(errors="replace")
        except (TimeoutError, aiohttp.ClientError) as failure:
            swap.answer = f"{type(failure).__name__}: {failure}"
        swap.answered_s = time.perf_counter() - origin


async def _run(args: argparse.Namespace, ids: Ids, token: str) -> tuple[list[loadgen.Outcome], Swap]:
    bodies = Bodies(ids, args.seed, args.unknown_share)
    swap = Swap()
    origin = time.perf_counter()
    async with loadgen.session(args.url, args.clients) as client:
        load = loadgen.closed_loop(client, bodies.stream(args.max_requests), args.clients, args.seconds,
                                   origin=origin, inspect=model_version)
        tasks = [load] if args.no_swap else [load, _swap(args.url, token, origin, args.swap_after, swap)]
        outcomes, *_ = await asyncio.gather(*tasks)
    return outcomes, swap


def phase_of(o: loadgen.Outcome, warmup_s: float, swap: Swap | None, settle_s: float) -> str:
    if o.start_s < warmup_s:
        return "warmup"
    if swap is None or o.end_s < swap.sent_s:
        return "before"
    if o.start_s > swap.answered_s + settle_s:
        return "after"
    return "during"


def summarise(outcomes: list[loadgen.Outcome], args: argparse.Namespace, swap: Swap) -> dict[str, Any]:
    by_phase: dict[str, list[loadgen.Outcome]] = {p: [] for p in PHASES}
    for o in outcomes:
        by_phase[phase_of(o, args.warmup, None if args.no_swap else swap, args.settle)].append(o)
    phases = {}
    for name, group in by_phase.items():
        span = (max(o.end_s for o in group) - min(o.start_s for o in group)) if group else 0.0
        phases[name] = {**loadgen.latency_summary(group), "seconds": round(span, 3),
                        "req_per_s": round(len(group) / span, 1) if span else 0.0,
                        "versions": dict(Counter(o.tag for o in group if o.tag))}
    endpoints = {path: loadgen.latency_summary([o for o in outcomes if o.path == path]) for path in ENDPOINTS}
    try:
        new_version = json.loads(swap.answer)["model_version"] if swap.status == 200 else ""
    except ValueError:
        new_version = ""
    first_new = min((o.end_s for o in outcomes if new_version and o.tag == new_version), default=float("inf"))
    stale = sum(1 for o in outcomes if o.start_s > first_new and o.tag and o.tag != new_version)
    errors = [o.error for o in outcomes if o.error]
    return {
        "url": args.url, "clients": args.clients, "seconds": args.seconds, "max_requests": args.max_requests,
        "warmup_s": args.warmup, "swap_after_s": None if args.no_swap else args.swap_after, "settle_s": args.settle,
        "swap": {"sent_s": round(swap.sent_s, 3), "answered_s": round(swap.answered_s, 3),
                 "status": swap.status, "answer": swap.answer} if not args.no_swap else None,
        "new_version": new_version, "stale_after_new": stale,
        "requests": len(outcomes), "errors": len(errors), "first_errors": errors[:10],
        "statuses": {str(k): v for k, v in sorted(Counter(o.status for o in outcomes).items())},
        "phases": phases, "endpoints": endpoints,
    }


def print_table(report: dict[str, Any]) -> None:
    header = f"{'':<13} {'requests':>8} {'errors':>6} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} " \
             f"{'max ms':>8}  versions"
    print(header)
    print("-" * len(header))
    rows = [(name, report["phases"][name]) for name in PHASES] + [(p, report["endpoints"][p]) for p in ENDPOINTS]
    for name, row in rows:
        versions = ", ".join(f"{v}: {n}" for v, n in sorted(row.get("versions", {}).items()))
        rate = f"{row['req_per_s']:>7.0f}" if "req_per_s" in row else f"{'':>7}"
        print(f"{name:<13} {row['requests']:>8} {row['errors']:>6} {rate} {row['p50_ms']:>8.1f} "
              f"{row['p95_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['max_ms']:>8.1f}  {versions}")
    swap = report["swap"]
    if swap:
        print(f"swap: POST /admin/reload sent at {swap['sent_s']:.2f} s, answered {swap['status']} at "
              f"{swap['answered_s']:.2f} s: {swap['answer']}")
    print(f"{report['requests']} requests, {report['errors']} errors, statuses {report['statuses']}, "
          f"answers of the old version after the new one was seen: {report['stale_after_new']}")
    for error in report["first_errors"]:
        print(f"ERROR {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="Base URL of the running server.")
    parser.add_argument("--ids", type=Path, required=True, help="JSON file of customer and item ids to draw from.")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV, ""),
                        help=f"Admin bearer token (default: ${TOKEN_ENV}).")
    parser.add_argument("--clients", type=int, default=8, help="Concurrent closed-loop clients.")
    parser.add_argument("--seconds", type=float, default=15.0, help="Length of the run, warm-up included.")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="Stop after this many requests.")
    parser.add_argument("--warmup", type=float, default=1.0, help="First seconds reported apart from 'before'.")
    parser.add_argument("--swap-after", type=float, help="Seconds until POST /admin/reload (default: mid-run).")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="Seconds after the reload answered still counted as 'during'.")
    parser.add_argument("--no-swap", action="store_true", help="Load only, no reload.")
    parser.add_argument("--unknown-share", type=float, default=0.1, help="Share of unknown customer ids.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="Write the report here as JSON too.")
    args = parser.parse_args()
    if args.swap_after is None:
        args.swap_after = args.warmup + (args.seconds - args.warmup) / 2
    if not args.no_swap and not args.token:
        parser.error(f"the swap needs the admin token: --token or ${TOKEN_ENV}")
    if not args.no_swap and not args.warmup <= args.swap_after < args.seconds:
        parser.error("--swap-after must lie between --warmup and --seconds")
    ids = Ids.read(args.ids)
    load_before = os.getloadavg()
    started = datetime.now(UTC)
    outcomes, swap = asyncio.run(_run(args, ids, args.token))
    report = summarise(outcomes, args, swap)
    report.update(started_at=started.isoformat(timespec="seconds"), cpus=os.cpu_count(),
                  load_average_before=[round(x, 2) for x in load_before],
                  load_average_after=[round(x, 2) for x in os.getloadavg()])
    print(f"load test: {args.clients} clients, {args.seconds:g} s, {args.url}; load average "
          f"{report['load_average_before']} before, {report['load_average_after']} after, {os.cpu_count()} CPUs")
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    swap_ok = args.no_swap or swap.status == 200
    sys.exit(0 if report["errors"] == 0 and swap_ok and report["stale_after_new"] == 0 else 1)


if __name__ == "__main__":
    main()
