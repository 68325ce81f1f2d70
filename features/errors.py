"""The project's errors and how one reads in a one-line message (a CLI error, a 503 body, a log line).

Two kinds, because they call for different answers:

- :class:`UserError`: the input is wrong (a file, a row, a column, an option, a model URI, a
  setting). Whoever runs shoprec can fix it; the CLI prints it as one line and exits 2.
- anything else, a bare ``ValueError`` included, is a bug or an outage: the CLI lets the
  traceback through (exit 1), so it is reported rather than mistaken for bad input.
"""

from __future__ import annotations


class ShoprecError(Exception):
    """Base of every error shoprec raises on purpose."""


class UserError(ShoprecError, ValueError):
    """Bad input, told in one line that names what to fix (the file and column, the option, the field).

    Also a ``ValueError``, so pydantic validators report it as a field error and callers that
    expect a ``ValueError`` for a bad value keep working.
    """


def first_line(error: BaseException) -> str:
    """The first line of the exception's message, or its type's name when it has none: drivers
    and libraries append tracebacks, hints and URLs on further lines."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
