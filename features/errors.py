"""The project's errors and how one reads in a one-line message (a CLI error, a 503 body, a log line).

Two kinds, because they call for different answers:

- :class:`UserError`: the input is wrong (a file, a row, a column, an option, a model URI, a
  setting). Whoever runs shoprec can fix it; the CLI prints it as one line and exits 2.
- anything else, a bare ``ValueError`` included, is a bug or an outage: the CLI lets the
  traceback through (exit 1), so it is reported rather than mistaken for bad input.
"""

from __future__ import annotations

from pydantic import ValidationError


class ShoprecError(Exception):
    """Base of every error shoprec raises on purpose."""


class UserError(ShoprecError, ValueError):
    """Bad input, told in one line that names what to fix (the file and column, the option, the field).

    Also a ``ValueError``, so pydantic validators report it as a field error and callers that
    expect a ``ValueError`` for a bad value keep working.
    """


USER_ERRORS: tuple[type[Exception], ...] = (UserError, ValidationError, FileNotFoundError, NotADirectoryError,
                                            PermissionError)
"""What a command tells as bad input, in one line with exit 2 (a bad config is a pydantic
ValidationError; a missing file an OSError of its own). Anything else is a bug and keeps its traceback."""


def first_line(error: BaseException) -> str:
    """The first line of the exception's message, or its type's name when it has none: drivers
    and libraries append tracebacks, hints and URLs on further lines."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def one_line(error: BaseException, limit: int | None = None, *, kind: bool = False) -> str:
    """The whole message on one line: a pydantic ``ValidationError`` as ``invalid Model: field:
    problem; ...``, any other message with its line breaks and runs of spaces collapsed.

    ``kind`` puts the exception's type name first (a log line or a 503 body, where the reader
    did not raise it). With ``limit``, at most that many characters, keeping both ends: MLflow's
    messages span many lines and the cause, such as "Connection refused", comes last.
    """
    if isinstance(error, ValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in error.errors())
        text = f"invalid {error.title}: {problems}"
    else:
        text = " ".join(str(error).split())
    if kind:
        text = f"{type(error).__name__}: {text}"
    if limit is None or len(text) <= limit:
        return text
    return f"{text[:limit // 2 - 3]} ... {text[-(limit // 2 - 2):]}"
