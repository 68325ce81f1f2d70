"""Reading a ``--config FILE.json`` for any command: one line naming the file when it cannot be read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from features.errors import UserError, first_line


def read_config(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:  # missing, a folder, unreadable, not UTF-8
        raise UserError(f"--config {path}: cannot read it ({first_line(error)})") from None


def train_config(config_file: Path | None, experiment: str | None, tune: int, tune_minutes: float) -> Any:
    """The TrainConfig of ``train``, ``evaluate`` (and the demo): the file's, with the options over it."""
    from training.pipeline import TrainConfig
    from training.tuning import TuneConfig

    config = TrainConfig() if config_file is None else TrainConfig.model_validate_json(read_config(config_file))
    if experiment:
        config = config.model_copy(update={"experiment": experiment})
    if tune:
        config = config.model_copy(update={"tune": TuneConfig(trials=tune, minutes=tune_minutes,
                                                               seed=config.tune.seed)})
    return config
