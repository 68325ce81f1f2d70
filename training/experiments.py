"""Online experiments: which registered versions share live traffic, and who sees which.

An experiment names two or more versions of one registered model, each with a traffic share,
and a unit (``customer``: the customer id, else the session id; ``session``: the session id,
else the customer id). It is kept in the MLflow registry next to the versions it names, as
tags on the registered model:

- ``shoprec.experiments.<name>``: the definition (JSON: variants with their resolved version
  numbers and shares, the unit, the salt, start and stop times), kept after it stops so the
  report can still read it;
- ``shoprec.experiment``: the name of the one running now (absent when none runs).

Variants are resolved to version numbers when the experiment starts: ``champion:90`` means
"the version that was champion then". A promotion meanwhile does not change what either arm
serves, so the comparison stays between two fixed models.

Assignment is a stable hash of the unit with the experiment's salt (BLAKE2b, not Python's
``hash``, which differs per process): every endpoint, every worker and every restart puts a
visitor in the same variant, and a new experiment (a new salt) reshuffles everyone.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from features.errors import UserError
from training.registry import promote

RUNNING_TAG = "shoprec.experiment"
DEFINITION_TAG_PREFIX = "shoprec.experiments."
UNITS = ("customer", "session")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Variant:
    """One arm: a name (``champion``, ``challenger``, ``v7`` ...), the version it serves, its share (0-1)."""

    name: str
    version: str
    share: float


@dataclass(frozen=True)
class Experiment:
    name: str
    model: str
    unit: str
    salt: str
    variants: tuple[Variant, ...]
    started: str
    """UTC ISO time the experiment started."""
    stopped: str | None = None
    winner: str | None = None
    """The variant promoted when it stopped, if any."""

    def assign(self, unit_id: str) -> Variant:
        """The variant ``unit_id`` sees: the same for the same id on every worker and restart."""
        digest = hashlib.blake2b(f"{self.salt}\x1f{unit_id}".encode(), digest_size=8).digest()
        point = int.from_bytes(digest, "big") / 2.0**64
        edge = 0.0
        for variant in self.variants:
            edge += variant.share
            if point < edge:
                return variant
        return self.variants[-1]  # the shares' float sum may fall a hair short of 1

    def unit_of(self, customer_id: str | None, session_id: str | None) -> str | None:
        """The id a request is assigned by (None when it carries neither)."""
        first, second = (customer_id, session_id) if self.unit == "customer" else (session_id, customer_id)
        return first if first else second

    @property
    def identity(self) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        """What a worker compares to tell whether it must rebuild its arms."""
        return self.name, self.salt, tuple((v.name, v.version) for v in self.variants)

    def describe(self) -> str:
        arms = ", ".join(f"{v.name} (v{v.version}) {v.share:.0%}" for v in self.variants)
        return f"experiment {self.name} on {self.model}: {arms}; unit {self.unit}"

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "variants": [asdict(v) for v in self.variants]}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Experiment:
        data: dict[str, Any] = json.loads(text)
        return cls(**{**data, "variants": tuple(Variant(**v) for v in data["variants"])})


def parse_variants(text: str) -> list[tuple[str, float]]:
    """``champion:90,challenger:10`` -> [(name, share)], shares normalised to sum to 1.

    A name is an alias of the registered model or a version number (``7`` or ``v7``).
    """
    parsed: list[tuple[str, float]] = []
    for part in (p.strip() for p in text.split(",")):
        name, sep, share_text = part.rpartition(":")
        if not sep or not name.strip():
            raise UserError(f"--variants: {part!r} is not NAME:SHARE (e.g. champion:90,challenger:10)")
        try:
            share = float(share_text)
        except ValueError:
            raise UserError(f"--variants: share {share_text!r} of {name.strip()} is not a number") from None
        if not share > 0 or share != share:
            raise UserError(f"--variants: share of {name.strip()} must be > 0, not {share_text}")
        parsed.append((name.strip(), share))
    names = [n for n, _ in parsed]
    if len(parsed) < 2:
        raise UserError("--variants: an experiment needs at least two variants")
    if len(set(names)) != len(names):
        raise UserError(f"--variants: a variant is named twice ({', '.join(names)})")
    total = sum(s for _, s in parsed)
    return [(n, s / total) for n, s in parsed]


def _resolve(client: MlflowClient, model: str, name: str) -> str:
    """An alias or a version number -> the version number it names now."""
    number = name[1:] if name[:1] in ("v", "V") and name[1:].isdigit() else name
    try:
        if number.isdigit():
            return str(client.get_model_version(model, number).version)
        return str(client.get_model_version_by_alias(model, name).version)
    except MlflowException as error:
        raise UserError(f"--variants: {model} has no version or alias {name!r} ({error.message})") from None


def _tags(client: MlflowClient, model: str) -> dict[str, str]:
    try:
        return dict(client.get_registered_model(model).tags or {})
    except MlflowException as error:
        raise UserError(f"no registered model {model!r} ({error.message}); train one first") from None


def running(client: MlflowClient, model: str) -> Experiment | None:
    """The experiment running on ``model`` now, or None."""
    tags = _tags(client, model)
    name = tags.get(RUNNING_TAG)
    return Experiment.from_json(tags[DEFINITION_TAG_PREFIX + name]) if name else None


def named(client: MlflowClient, model: str, name: str) -> Experiment:
    """A running or stopped experiment by its name (UserError naming the known ones when absent)."""
    tags = _tags(client, model)
    if (text := tags.get(DEFINITION_TAG_PREFIX + name)) is None:
        known = sorted(k[len(DEFINITION_TAG_PREFIX):] for k in tags if k.startswith(DEFINITION_TAG_PREFIX))
        raise UserError(f"no experiment {name!r} on {model} (known: {', '.join(known) or 'none'})")
    return Experiment.from_json(text)


def start(client: MlflowClient, model: str, name: str, variants: str, unit: str = "customer") -> Experiment:
    """Record a new experiment and make it the running one (one at a time per model).

    Two variants may name the same version: that is an A/A test, which checks the assignment,
    the logging and the report before a real comparison relies on them."""
    if not NAME_PATTERN.match(name):
        raise UserError(f"experiment name {name!r}: letters, digits, '-' and '_', at most 64, starting with a "
                        f"letter or digit")
    if unit not in UNITS:
        raise UserError(f"--unit must be one of {', '.join(UNITS)}, not {unit!r}")
    shares = parse_variants(variants)
    tags = _tags(client, model)
    if current := tags.get(RUNNING_TAG):
        raise UserError(f"experiment {current!r} is running on {model}; stop it first "
                        f"(shoprec experiment stop {current})")
    if DEFINITION_TAG_PREFIX + name in tags:
        raise UserError(f"experiment name {name!r} was used before on {model}; choose another")
    resolved = [Variant(n, _resolve(client, model, n), s) for n, s in shares]
    experiment = Experiment(name=name, model=model, unit=unit, salt=uuid.uuid4().hex, variants=tuple(resolved),
                            started=datetime.now(UTC).isoformat(timespec="seconds"))
    client.set_registered_model_tag(model, DEFINITION_TAG_PREFIX + name, experiment.to_json())
    client.set_registered_model_tag(model, RUNNING_TAG, name)
    return experiment


def stop(client: MlflowClient, model: str, name: str, winner: str | None = None) -> Experiment:
    """End a running experiment; with ``winner`` (a variant's name) promote its version to champion."""
    experiment = named(client, model, name)
    if experiment.stopped is not None:
        raise UserError(f"experiment {name!r} already stopped at {experiment.stopped}")
    chosen = None
    if winner is not None:
        chosen = next((v for v in experiment.variants if v.name == winner), None)
        if chosen is None:
            raise UserError(f"--promote: {winner!r} is not a variant of {name} "
                            f"({', '.join(v.name for v in experiment.variants)})")
    ended = Experiment(**{**asdict(experiment), "variants": experiment.variants,
                          "stopped": datetime.now(UTC).isoformat(timespec="seconds"), "winner": winner})
    client.set_registered_model_tag(model, DEFINITION_TAG_PREFIX + name, ended.to_json())
    if _tags(client, model).get(RUNNING_TAG) == name:
        client.delete_registered_model_tag(model, RUNNING_TAG)
    if chosen is not None:
        promote(client, model, chosen.version)
    return ended

