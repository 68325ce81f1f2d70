"""The closed-loop HTTP load driver shared by bench_serving.py and load_test.py.

``concurrency`` clients over one keep-alive aiohttp pool each send their next request as
soon as the previous one has answered, until the requests run out or the time is up,
whichever comes first; every request is recorded with its start and end times (seconds
since a common origin), its status and, when asked, one tag read from its body (the
``model_version`` during a champion swap). Percentiles are computed here too, so both
scripts report them the same way.

aiohttp, not httpx: on this machine httpx's async client spent 1.1 ms of CPU per request
at 1 and 8 clients and 3.4 ms at 32, where it, not the server, set the throughput;
aiohttp spends about 0.25 ms, which leaves the cores to the server.

Light on purpose (aiohttp, asyncio, numpy): it runs in load processes that should not
carry pandas, MLflow or the models.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import aiohttp
import numpy as np

HEADERS = {"content-type": "application/json"}
REQUEST_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request as the client saw it."""

    path: str
    start_s: float
    """Seconds since the origin given to :func:`closed_loop` when the request was sent."""
    end_s: float
    """Seconds since the origin when the whole response had been read (or the request failed)."""
    status: int
    """HTTP status; 0 when it failed before an answer (connection error, timeout)."""
    error: str
    """Empty for a 200; else the status and the start of the body, or the exception."""
    tag: str = ""
    """What ``inspect`` read from a 200 body; empty without ``inspect``."""

    @property
    def latency_ms(self) -> float:
        return (self.end_s - self.start_s) * 1000


def session(url: str, concurrency: int, timeout_s: float = REQUEST_TIMEOUT_S) -> aiohttp.ClientSession:
    """A keep-alive pool of ``concurrency`` connections to ``url`` (use as ``async with``)."""
    return aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=concurrency),
                                 timeout=aiohttp.ClientTimeout(total=timeout_s))


async def closed_loop(client: aiohttp.ClientSession, requests: Iterable[tuple[str, bytes]], concurrency: int,
                      seconds: float, *, origin: float | None = None,
                      inspect: Callable[[bytes], str] | None = None) -> list[Outcome]:
    """Send ``(path, body)`` requests from ``concurrency`` closed-loop clients.

    ``requests`` is shared: each one is sent once, by whichever client is free; the loop
    ends when it is exhausted or ``seconds`` have passed (a client checks the clock after
    each answer), so pass a finite iterable or a generator bounded by count. ``origin``
    is the ``time.perf_counter()`` the outcome times count from (default: now). An
    ``inspect`` that raises marks that answer as an error.
    """
    origin = time.perf_counter() if origin is None else origin
    queue: Iterator[tuple[str, bytes]] = iter(requests)
    deadline = time.perf_counter() + seconds
    outcomes: list[Outcome] = []

    async def one_client() -> None:
        for path, body in queue:
            sent = time.perf_counter()
            status, error, tag = 0, "", ""
            try:
                async with client.post(path, data=body, headers=HEADERS) as response:
                    status = response.status
                    answer = await response.read()
                if status != 200:
                    error = f"HTTP {status}: {answer[:200].decode(errors='replace')}"
                elif inspect is not None:
                    tag = inspect(answer)
            except (TimeoutError, aiohttp.ClientError) as failure:
                error = f"{type(failure).__name__}: {failure}"
            except Exception as failure:  # noqa: BLE001 - an answer inspect could not read
                error = f"unreadable answer: {type(failure).__name__}: {failure}"
            done = time.perf_counter()
            outcomes.append(Outcome(path, sent - origin, done - origin, status, error, tag))
            if done >= deadline:
                return

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return outcomes


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (linear interpolation, numpy's default); NaN when there are none."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


def latency_summary(outcomes: Sequence[Outcome]) -> dict[str, float | int]:
    """Count, errors and p50/p95/p99/max latency (ms) of some outcomes."""
    latencies = [o.latency_ms for o in outcomes]
    return {"requests": len(outcomes), "errors": sum(1 for o in outcomes if o.error),
            "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99), "max_ms": max(latencies, default=float("nan"))}
