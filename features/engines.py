"""Which engine loads a shop: this process, or Spark for the rows of the long tables (the same result).

The one switch between :func:`features.loading.load_shop` and
:func:`features.spark_loading.load_shop_spark`: it lives here because the Spark engine builds on
``features.loading``, which therefore cannot import it (tests/test_layers.py refuses the cycle).
"""

from __future__ import annotations

import os
from typing import Literal

import pandas as pd

from features.errors import UserError
from features.loading import Progress, ShopData, load_shop
from features.schema import ContractConfig

Engine = Literal["local", "spark"]
ENGINES: tuple[Engine, ...] = ("local", "spark")


def engine_named(name: str) -> Engine:
    """An ``--engine`` value, checked: validate, train, evaluate and picks take the same two."""
    for known in ENGINES:
        if name == known:
            return known
    raise UserError(f"--engine {name}: use {' or '.join(ENGINES)}")


def load_shop_with(engine: Engine, location: str | os.PathLike[str], *, now: pd.Timestamp | None = None,
                   progress: Progress | None = None, config: ContractConfig | None = None) -> ShopData:
    """:func:`features.loading.load_shop` on ``engine``; pyspark is imported only for ``spark``."""
    if engine == "spark":
        from features.spark_loading import load_shop_spark

        return load_shop_spark(location, now=now, progress=progress, config=config)
    return load_shop(location, now=now, progress=progress, config=config)
