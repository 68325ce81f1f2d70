"""The serving rules' knobs (:class:`ServingConfig`), and where a deployment sets them.

``SHOPREC_SERVING_CONFIG`` holds the config as JSON, inline (``{"cf_weight": 0.3}``) or as the
path of a JSON file. The service reads it once per worker at start-up and refuses to start,
in one line naming the field, when it is not valid: a typo must not silently serve defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.errors import UserError, one_line
from features.profiles import RECENT_SENDS

SERVING_CONFIG_ENV = "SHOPREC_SERVING_CONFIG"


class ServingConfig(BaseModel):
    """Knobs of the serving rules; defaults are what the tests and docs assume."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cf_weight: float = Field(0.5, ge=0, description="Weight of the customer's own CF scores in cross-sell.")
    cross_sell_partners: int | None = Field(100, ge=1, description=(
        "Partners kept per item for cross-sell, the best by co-occurrence (None: all); deep enough that "
        "cross-sells keep the lists all partners would give (measured in the tests)."))
    session_anchor_weight: float = Field(0.5, ge=0, description="Weight of items touched in the live session "
                                                                "next to cart items (1) as cross-sell anchors.")
    session_weight: float = Field(0.5, ge=0, le=1, description="Share of the live session's scores when a known "
                                                               "customer's own scores are blended with them.")
    session_items: int = Field(20, ge=1, description="Most recent distinct session items read.")
    send_min_open_propensity: float = Field(0.15, ge=0, le=1,
                                            description="Email is sent only at or above this open propensity.")
    send_min_personal_share: float = Field(0.5, ge=0, le=1,
                                           description="...and when at least this share of picks is personal.")
    sunset_after_unopened: int = Field(6, ge=0, description="Sunset rule: no mail to a customer who got this many "
                                                            "mails and opened none (0: off).")
    max_mails: int = Field(2, ge=1, le=RECENT_SENDS, description="Frequency cap: no mail to a customer who already "
                                                                    "got this many in the last max_mails_days.")
    max_mails_days: float = Field(7.0, gt=0, description="...days before the bundle's end of data.")
    middle_band: tuple[float, float] = Field((0.25, 0.75), description="Catalogue price quantiles for strangers.")


def serving_config(env: Mapping[str, str] | None = None) -> ServingConfig:
    """The config ``SHOPREC_SERVING_CONFIG`` gives (inline JSON or a JSON file), the defaults when unset.

    A file that cannot be read or a config that does not validate is one :class:`UserError` line.
    """
    text = (os.environ if env is None else env).get(SERVING_CONFIG_ENV, "").strip()
    if not text:
        return ServingConfig()
    source = "inline JSON"
    if not text.startswith("{"):
        source = text
        try:
            text = Path(text).expanduser().read_text()
        except OSError as error:
            raise UserError(f"{SERVING_CONFIG_ENV}={source}: cannot read it ({error.strerror})") from None
    try:
        return ServingConfig.model_validate_json(text)
    except ValidationError as error:
        raise UserError(f"{SERVING_CONFIG_ENV} ({source}): {one_line(error)}") from None
