"""Numbers the serving side reads from the environment, checked the same way everywhere."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from features.errors import UserError


def positive_number(env: Mapping[str, str], name: str, default: float, error: type[Exception]) -> float:
    """``env[name]`` as a number > 0, ``default`` when unset or blank; anything else raises
    ``error`` with one line naming the variable, the value and the default."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise error(f"{name}={text!r}: expected a number > 0 (default {default:g})")
    return value


def choice(env: Mapping[str, str], name: str, options: tuple[str, ...], error: type[Exception]) -> str:
    """``env[name]`` as one of ``options`` (case-insensitive), the first when unset or blank; anything
    else raises ``error`` with one line naming the variable, the value and the options."""
    text = env.get(name, "").strip().lower()
    if not text:
        return options[0]
    if text not in options:
        raise error(f"{name}={text!r}: expected one of {', '.join(options)} (default {options[0]})")
    return text


WORKERS_ENV = "SHOPREC_WORKERS"
"""Worker processes of the service: a positive integer, or unset for :func:`workers`' default."""
PER_CPU: Literal["cpu_count"] = "cpu_count"
"""BentoML's own count: one worker per CPU this process may use (container limits honoured)."""


def workers(env: Mapping[str, str], shared_sessions: bool) -> tuple[int | Literal["cpu_count"], str]:
    """How many worker processes to serve with, and why, from ``SHOPREC_WORKERS``.

    One worker uses one core (one request is one small product; BLAS runs single-threaded),
    so the default is one per CPU the process may use (BentoML counts them, honouring a
    container's CPU limit; each worker holds its own copy of the bundle), but only where the
    live sessions are shared (``SHOPREC_REDIS_URL``): with the in-process store a visitor's
    events would reach one worker and their next request another, which would not know them.
    An explicit count wins either way. A value that is not a positive integer raises a one-line
    UserError naming it."""
    text = env.get(WORKERS_ENV, "").strip()
    if text:
        try:
            count = int(text)
        except ValueError:
            count = 0
        if count < 1:
            raise UserError(f"{WORKERS_ENV}={text!r}: expected a whole number of workers >= 1")
        why = f"{WORKERS_ENV}={count}"
        if count > 1 and not shared_sessions:
            why += ("; live sessions are kept in each worker's memory, so a visitor's events reach one "
                    "worker only (set SHOPREC_REDIS_URL to share them)")
        return count, why
    if shared_sessions:
        return PER_CPU, "one per CPU this process may use, live sessions shared in Redis"
    return 1, "one: live sessions are kept in the worker's memory (set SHOPREC_REDIS_URL to share them)"
