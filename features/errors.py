"""How an exception reads in a one-line message (a CLI error, a 503 body, a log line)."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first line of the exception's message, or its type's name when it has none: drivers
    and libraries append tracebacks, hints and URLs on further lines."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
