"""Numbers the serving side reads from the environment, checked the same way everywhere."""

from __future__ import annotations

from collections.abc import Mapping

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


WORKERS_ENV = "SHOPREC_WORKERS"
"""Worker processes of the service: a positive integer, or unset for :func:`workers`' default."""


def workers(env: Mapping[str, str], cores: int, shared_sessions: bool) -> tuple[int, str]:
    """How many worker processes to serve with, and why, from ``SHOPREC_WORKERS``.

    One worker uses one core (one request is one small product; BLAS runs single-threaded),
    so the default is one per core, but only where the live sessions are shared
    (``SHOPREC_REDIS_URL``): with the in-process store a visitor's events would reach one
    worker and their next request another, which would not know them. An explicit count
    wins either way. A value that is not a positive integer raises a one-line UserError naming it."""
    text = env.get(WORKERS_ENV, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise UserError(f"{WORKERS_ENV}={text!r}: expected a whole number of workers >= 1")
        return int(text), f"{WORKERS_ENV}={text}"
    if shared_sessions:
        return max(cores, 1), f"one per core ({cores}), live sessions shared in Redis"
    return 1, "one: live sessions are kept in the worker's memory (set SHOPREC_REDIS_URL to share them)"
