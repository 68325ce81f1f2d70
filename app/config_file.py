"""Reading a ``--config FILE.json`` for any command: one line naming the file when it cannot be read."""

from __future__ import annotations

from pathlib import Path

from features.errors import UserError, first_line


def read_config(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:  # missing, a folder, unreadable, not UTF-8
        raise UserError(f"--config {path}: cannot read it ({first_line(error)})") from None
