"""Numbers the serving side reads from the environment, checked the same way everywhere."""

from __future__ import annotations

from collections.abc import Mapping


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
