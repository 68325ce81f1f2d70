"""Serving needs no fitting library: with scikit-learn, implicit and lightfm made unimportable,
the service module imports and a saved bundle (propensity models included) loads and answers
every endpoint's question, with the same answers as in a process that has them all."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from serving.recommender import ShopRecommender
from training.bundle import Bundle

FITTING_LIBRARIES = ("sklearn", "implicit", "lightfm")
PROBE = r'''
import json, sys
from pathlib import Path

BLOCKED = set(sys.argv[2].split(","))


class Blocked:
    """Refuse the fitting libraries before any other finder can find them."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: serving must not need it")
        return None


sys.meta_path.insert(0, Blocked())
import serving.service  # noqa: F401 - the BentoML service module itself
from serving.recommender import ShopRecommender
from tests.serving.test_lean_imports import answers
from training.bundle import Bundle

rec = ShopRecommender(Bundle.load(Path(sys.argv[1])), "lean")
print("ANSWERS " + json.dumps(answers(rec, json.loads(sys.argv[3])), default=str))
print("LOADED " + json.dumps(sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)))
'''


def answers(rec: ShopRecommender, ask: dict) -> dict:
    """What each endpoint's logic answers for one customer, one cart item and one live session."""
    return {
        "cross_sell": [p.item_id for p in rec.cross_sell([ask["item"]], ask["customer"], 5).items],
        "email_picks": [[p.item_id for p in e.items] for e in rec.email_picks([ask["customer"], "nobody"], 5)],
        "offers": [p.item_id for p in rec.offers(ask["customer"], 5).items],
        "propensity": asdict(rec.propensity(ask["customer"], ask["session"])),
    }


def test_the_service_loads_and_answers_without_the_fitting_libraries(bundle_with_propensity: Bundle,
                                                                     tmp_path: Path) -> None:
    bundle = bundle_with_propensity
    folder = bundle.save(tmp_path / "bundle")
    item = str(bundle.items.external_ids[int(bundle.catalogue["in_stock"].to_numpy().argmax())])
    customer = str(bundle.customers.external_ids[int(bundle.has_history.argmax())])
    ask = {"item": item, "customer": customer,
           "session": [{"event_type": "cart", "item_id": item, "ts": "2025-06-01T10:00:00Z"}]}
    run = subprocess.run([sys.executable, "-c", PROBE, str(folder), ",".join(FITTING_LIBRARIES), json.dumps(ask)],
                         capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines() if line.startswith(("ANSWERS", "LOADED")))
    assert json.loads(lines["LOADED"]) == []
    expected = json.loads(json.dumps(answers(ShopRecommender(Bundle.load(folder), "lean"), ask), default=str))
    assert json.loads(lines["ANSWERS"]) == expected
    assert expected["propensity"]["session"] is not None and all(expected["email_picks"])


def test_the_bento_ships_no_fitting_library() -> None:
    listed = (Path(__file__).resolve().parents[2] / "bentofile.yaml").read_text()
    assert not [name for name in ("scikit-learn", "implicit", "lightfm") if f'"{name}' in listed]
