"""Experiments in the registry: the definition round trip, the rules of starting and stopping, and
an assignment that is stable across processes, follows the shares and reshuffles per experiment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from features.errors import UserError
from training import experiments, registry, tracking
from training.experiments import Experiment, Variant


def _experiment(shares: tuple[float, ...] = (0.9, 0.1), salt: str = "salt-1", unit: str = "customer") -> Experiment:
    variants = tuple(Variant(f"arm{i}", str(i + 1), share) for i, share in enumerate(shares))
    return Experiment("exp", "shoprec", unit, salt, variants, "2026-12-06T00:00:00+00:00")


def test_assignment_follows_the_shares() -> None:
    experiment = _experiment((0.9, 0.1))
    counts = {"arm0": 0, "arm1": 0}
    for number in range(20_000):
        counts[experiment.assign(f"customer-{number}").name] += 1
    assert counts["arm1"] / 20_000 == pytest.approx(0.1, abs=0.01)  # 3 standard errors is 0.0064


def test_assignment_is_stable_and_reshuffles_with_a_new_experiment() -> None:
    ids = [f"c{n}" for n in range(2_000)]
    first = [_experiment((0.5, 0.5)).assign(i).name for i in ids]
    assert first == [_experiment((0.5, 0.5)).assign(i).name for i in ids]
    other = [_experiment((0.5, 0.5), salt="salt-2").assign(i).name for i in ids]
    moved = sum(a != b for a, b in zip(first, other, strict=True)) / len(ids)
    assert moved == pytest.approx(0.5, abs=0.05)  # independent of the last experiment's split


def test_assignment_is_the_same_in_another_process() -> None:
    """Python's own hash() differs per process; the assignment must not."""
    ids = [f"c{n}" for n in range(200)]
    here = [_experiment((0.5, 0.5)).assign(i).name for i in ids]
    code = ("from tests.training.test_experiments import _experiment; "
            f"print(','.join(_experiment((0.5, 0.5)).assign(f'c{{n}}').name for n in range({len(ids)})))")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=Path(__file__).resolve().parents[2], env={"PYTHONHASHSEED": "123"})
    assert there.stdout.strip().split(",") == here


def test_the_unit_falls_back_to_the_other_id() -> None:
    by_customer, by_session = _experiment(), _experiment(unit="session")
    assert by_customer.unit_of("c1", "s1") == "c1" and by_customer.unit_of(None, "s1") == "s1"
    assert by_session.unit_of("c1", "s1") == "s1" and by_session.unit_of("c1", None) == "c1"
    assert by_customer.unit_of(None, None) is None


@pytest.mark.parametrize(("text", "message"), [
    ("champion", "NAME:SHARE"), ("champion:90", "at least two"), ("a:1,a:2", "named twice"),
    ("a:x,b:1", "not a number"), ("a:0,b:1", "must be > 0"), (":5,b:5", "NAME:SHARE")])
def test_bad_variants_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        experiments.parse_variants(text)


def test_shares_are_normalised() -> None:
    assert experiments.parse_variants("champion:9, challenger:1") == [("champion", 0.9), ("challenger", 0.1)]


def _two_versions(client) -> None:  # noqa: ANN001
    client.create_registered_model("shoprec")
    for _ in range(2):
        client.create_model_version("shoprec", source="file:///nowhere")
    registry.promote(client, "shoprec", "1")
    client.set_registered_model_alias("shoprec", registry.CHALLENGER, "2")


def test_start_stop_and_promote_through_the_registry(mlflow_home: Path) -> None:
    client = tracking.configure()
    _two_versions(client)
    assert experiments.running(client, "shoprec") is None
    started = experiments.start(client, "shoprec", "ab-1", "champion:90,challenger:10", "customer")
    assert [(v.name, v.version) for v in started.variants] == [("champion", "1"), ("challenger", "2")]
    assert experiments.running(client, "shoprec") == started  # what a worker reads on its poll

    with pytest.raises(UserError, match="'ab-1' is running"):
        experiments.start(client, "shoprec", "ab-2", "champion:50,v2:50")
    with pytest.raises(UserError, match="not a variant"):
        experiments.stop(client, "shoprec", "ab-1", "v9")

    registry.promote(client, "shoprec", "2")  # the alias moves; the experiment keeps the versions it named
    assert experiments.running(client, "shoprec").variants[0].version == "1"
    registry.promote(client, "shoprec", "1")

    stopped = experiments.stop(client, "shoprec", "ab-1", "challenger")
    assert stopped.stopped is not None and stopped.winner == "challenger"
    assert experiments.running(client, "shoprec") is None
    assert registry.champion_version(client, "shoprec") == "2"
    assert experiments.named(client, "shoprec", "ab-1") == stopped  # kept for the report
    with pytest.raises(UserError, match="already stopped"):
        experiments.stop(client, "shoprec", "ab-1")
    with pytest.raises(UserError, match="used before"):
        experiments.start(client, "shoprec", "ab-1", "champion:50,v1:50")
    with pytest.raises(UserError, match=r"known: ab-1"):
        experiments.named(client, "shoprec", "nope")


def test_start_refuses_what_it_cannot_serve(mlflow_home: Path) -> None:
    client = tracking.configure()
    with pytest.raises(UserError, match="no registered model 'shoprec'"):
        experiments.start(client, "shoprec", "ab", "champion:1,challenger:1")
    _two_versions(client)
    with pytest.raises(UserError, match="no version or alias 'v7'"):
        experiments.start(client, "shoprec", "ab", "champion:1,v7:1")
    with pytest.raises(UserError, match="--unit"):
        experiments.start(client, "shoprec", "ab", "champion:1,v2:1", unit="visitor")
    with pytest.raises(UserError, match="experiment name"):
        experiments.start(client, "shoprec", "a b", "champion:1,v2:1")
    assert experiments.running(client, "shoprec") is None  # nothing half-started
    a_a = experiments.start(client, "shoprec", "aa", "champion:1,v1:1")  # an A/A test names one version twice
    assert {v.version for v in a_a.variants} == {"1"}
