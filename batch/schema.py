"""The one declaration of the email-picks output: one row per customer and rank.

Every sink (files, SQL), the Spark engine's DDL and the pandas dtypes that both engines'
frames are conformed to derive from :data:`PICKS_SCHEMA`; nothing else spells the columns.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

PICKS_SCHEMA = pa.schema([
    pa.field("customer_id", pa.string(), nullable=False),
    ("canonical_id", pa.string()),
    pa.field("rank", pa.int32(), nullable=False),
    pa.field("item_id", pa.string(), nullable=False),
    ("score", pa.float64()),
    ("reason", pa.string()),
    ("send", pa.bool_()),
    ("send_reason", pa.string()),
    ("send_hour", pa.int32()),
    ("trigger", pa.string()),
    ("trigger_detail", pa.string()),
    ("open_propensity", pa.float64()),
    ("model_version", pa.string()),
])
"""``customer_id`` is the id as listed, ``canonical_id`` the id it was scored as (an alias resolved);
``send_reason`` says why ``send`` is what it is (serving.answers.SEND_REASONS) and ``send_hour`` is
the hour of the day (UTC) to mail at (-1 when the shop has no email data); ``trigger`` the lifecycle
trigger that makes a mail worth sending now and ``trigger_detail`` its detail (features.triggers;
null when none fired)."""
PICKS_COLUMNS: list[str] = PICKS_SCHEMA.names

_SPARK_TYPES = {pa.string(): ("string", "str"), pa.int32(): ("int", "int32"), pa.float64(): ("double", "float64"),
                pa.bool_(): ("boolean", "bool")}
SPARK_DDL = ", ".join(f"{f.name} {_SPARK_TYPES[f.type][0]}" for f in PICKS_SCHEMA)
"""The schema as Spark DDL (``mapInPandas``' output schema)."""
PICKS_DTYPES = {f.name: _SPARK_TYPES[f.type][1] for f in PICKS_SCHEMA}
"""The schema as pandas dtypes, in column order."""


NULLABLE_TEXT = [f.name for f in PICKS_SCHEMA if f.nullable and f.type == pa.string()]


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """A picks frame in the schema's column order and dtypes; a missing text value stays missing
    (pandas 2 would cast it to the text "None")."""
    out = frame[PICKS_COLUMNS].astype(PICKS_DTYPES).reset_index(drop=True)
    for column in NULLABLE_TEXT:
        out[column] = out[column].mask(frame[column].isna().to_numpy())
    return out
