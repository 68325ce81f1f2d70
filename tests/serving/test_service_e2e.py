"""End to end over real HTTP against the `server` fixture (tests/serving/live_server.py):
every endpoint, fallback and 4xx, then champion swaps under load."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from features.sample import SampleShop
from serving.recommender import ShopRecommender
from tests.serving.live_server import REPO, TOKEN, Server, free_port, train_into
from training.bundle import Bundle
from training.pipeline import TrainConfig

@pytest.fixture(scope="module")
def served(server: Server) -> Bundle:
    return server.trained.bundle


def test_cross_sell_returns_a_planted_partner(server: Server, served: Bundle, sample_shop: SampleShop) -> None:
    cat = served.catalogue.set_index("item_id")
    pairs = sample_shop.truth["pairs"]
    pairs = pairs[pairs["partner_item_id"].map(lambda i: bool(cat["in_stock"].get(i, False)))]
    hits = 0
    for anchor, partner in zip(pairs["anchor_item_id"][:20], pairs["partner_item_id"][:20], strict=True):
        body = server.post("/cross_sell", {"cart": [anchor], "k": 5}).json()
        assert body["model_version"] == "shoprec/v1"
        assert anchor not in {i["item_id"] for i in body["items"]}
        hits += {"item_id": partner} in [{"item_id": i["item_id"]} for i in body["items"]
                                          if i["reason"] == f"bought_together:{anchor}"]
    assert hits >= 14


def test_offers_lie_inside_the_band(server: Server, served: Bundle) -> None:
    cat = served.catalogue.set_index("item_id")
    for customer in served.profiles["customers"]["customer_id"][:20]:
        body = server.post("/offers", {"customer_id": customer, "k": 5}).json()
        assert body["band"]["source"] == "customer" and body["customer_known"]
        prices = cat.loc[[i["item_id"] for i in body["items"]], "price"]
        assert len(prices) == 5 and prices.between(body["band"]["lo"], body["band"]["hi"]).all()


def test_email_picks_do_not_send_to_never_openers(server: Server, served: Bundle, sample_shop: SampleShop) -> None:
    rates = served.profiles["email_open_rates"].merge(sample_shop.truth["customers"], on="customer_id")
    never = rates[rates["never_open"] & (rates["sends"] >= 6)]["customer_id"].tolist()
    body = server.post("/email_picks", {"customer_ids": never, "k": 3}).json()
    assert len(body["picks"]) == len(never) > 20
    assert not any(p["send"] for p in body["picks"])
    assert {p["send_reason"] for p in body["picks"]} <= {"unengaged", "opted_out"}
    assert all(len(p["items"]) == 3 for p in body["picks"])


def test_a_durable_just_bought_is_not_reoffered(server: Server, served: Bundle) -> None:
    rec = ShopRecommender(served, "local")
    cat = served.catalogue.set_index("item_id")
    checked = 0
    for customer in served.profiles["customers"]["customer_id"][:300]:
        idx = served.customers.to_index([customer])[0]
        bought = served.items.external_ids[served.purchases[idx].indices]
        durables = [i for i in bought if cat.loc[i, "durable"]]
        recent = [i for i in durables if cat.loc[i, "repurchase_days"] > rec.profiles.recency_days[idx]]
        if not recent:
            continue
        same_category = set(cat.index[cat["durable"] & (cat["category"] == cat.loc[recent[0], "category"])])
        for path, body in (("/cross_sell", {"cart": [], "customer_id": customer, "k": 30}),
                           ("/offers", {"customer_id": customer, "k": 30, "category": cat.loc[recent[0], "category"]}),
                           ("/email_picks", {"customer_ids": [customer], "k": 30})):
            answer = server.post(path, body).json()
            items = answer["picks"][0]["items"] if path == "/email_picks" else answer["items"]
            assert not {i["item_id"] for i in items} & same_category, (path, customer)
        checked += 1
        if checked == 10:
            break
    assert checked == 10


def test_fallbacks_for_unknown_customers_items_and_categories(server: Server, served: Bundle) -> None:
    body = server.post("/cross_sell", {"cart": ["ghost-item"], "customer_id": "ghost", "k": 4}).json()
    assert body["unknown_items"] == ["ghost-item"] and not body["customer_known"]
    assert [i["reason"] for i in body["items"]] == ["popular"] * 4
    body = server.post("/cross_sell", {"cart": [], "k": 3}).json()
    assert len(body["items"]) == 3
    offers = server.post("/offers", {"customer_id": "ghost", "k": 3}).json()
    assert offers["band"]["source"] == "catalogue" and len(offers["items"]) == 3
    odd = server.post("/offers", {"customer_id": "ghost", "k": 3, "category": "spaceships"}).json()
    assert odd["unknown_category"] and len(odd["items"]) == 3
    picks = server.post("/email_picks", {"customer_ids": ["ghost"], "k": 2}).json()["picks"][0]
    assert not picks["customer_known"] and len(picks["items"]) == 2
    metrics = server.client.get(f"{server.url}/metrics").text
    assert 'shoprec_unknown_ids_total{endpoint="cross_sell",kind="item"}' in metrics
    assert "shoprec_fallbacks_total" in metrics


BAD = [
    ("/cross_sell", {"cart": ["a"], "k": 0}, "k"),
    ("/cross_sell", {"cart": ["a"], "k": 101}, "k"),
    ("/cross_sell", {"cart": ["a"], "k": "5"}, "k"),
    ("/cross_sell", {"cart": [""]}, "cart.0"),
    ("/cross_sell", {"cart": "a"}, "cart"),
    ("/cross_sell", {"k": 3}, "cart"),
    ("/cross_sell", {"cart": [], "customer_id": ""}, "customer_id"),
    ("/cross_sell", {"cart": [], "kk": 3}, "kk"),
    ("/email_picks", {"customer_ids": [f"c{i}" for i in range(1001)]}, "customer_ids"),
    ("/email_picks", {"customer_ids": []}, "customer_ids"),
    ("/email_picks", {"customer_ids": [1, 2]}, "customer_ids.0"),
    ("/offers", {"k": 3}, "customer_id"),
    ("/offers", {"customer_id": "c", "category": ""}, "category"),
    ("/offers", [1, 2], ""),
    ("/propensity", {}, ""),
    ("/propensity", {"session_events": [{"event_type": "view", "ts": "2025-06-01T10:00:00Z"}]}, "session_events.0"),
    ("/propensity", {"session_events": [{"event_type": "teleport", "item_id": "i", "ts": "2025-06-01"}]},
     "session_events.0.event_type"),
    ("/propensity", {"session_events": [{"event_type": "view", "item_id": "i", "ts": "yesterday"}]},
     "session_events.0.ts"),
    ("/propensity", {"session_events": [{"event_type": "view", "item_id": "i", "ts": 1717236000}]},
     "session_events.0.ts"),
    ("/propensity", {"customer_id": "c", "session_events": "view"}, "session_events"),
    ("/cross_sell", {"cart": ["i\x00"]}, "cart.0"),
    ("/cross_sell", {"cart": [], "customer_id": "c\x1b[31m"}, "customer_id"),
    ("/email_picks", {"customer_ids": ["c1", "c\u200b1"]}, "customer_ids.1"),
    ("/offers", {"customer_id": " c1"}, "customer_id"),
    ("/offers", {"customer_id": "c1\x07"}, "customer_id"),
    ("/events", {"events": [{"session_id": "s\x00", "event_type": "view", "item_id": "i"}]}, "events.0.session_id"),
    ("/events", {"events": [{"session_id": "s", "event_type": "view", "item_id": "i\ufeff"}]}, "events.0.item_id"),
    ("/events", {"events": [{"session_id": "s", "event_type": "view", "item_id": "i", "request_id": ""}]},
     "events.0.request_id"),
    ("/events", {"events": [{"session_id": "s", "event_type": "view", "item_id": "i", "request_id": 7}]},
     "events.0.request_id"),
]


@pytest.mark.parametrize(("path", "body", "field"), BAD)
def test_bad_input_is_a_400_naming_the_field(server: Server, path: str, body: object, field: str) -> None:
    response = server.post(path, body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert set(error) == {"error", "detail"}
    if field:
        assert error["error"].startswith(f"{field}:") or f"; {field}:" in error["error"]
        assert any(".".join(map(str, d["loc"])) == field for d in error["detail"])


def test_propensity_needs_a_customer_or_session(server: Server) -> None:
    error = server.post("/propensity", {}).json()["error"]
    assert "customer_id" in error and "session_events" in error


def test_propensity_for_customers_and_live_sessions(server: Server, served: Bundle, sample_shop: SampleShop) -> None:
    local = ShopRecommender(served, "local")
    customer = str(served.profiles["customers"]["customer_id"].iloc[0])
    items = sample_shop.tables["items"]
    # a consumable: in the sample most carted durables are abandoned, most carted refills bought
    item = str(items.loc[~items["durable"], "item_id"].iloc[0])
    views = [{"event_type": "view", "item_id": item, "ts": f"2025-06-01T10:0{i}:00Z"} for i in range(2)]
    carted = [*views, {"event_type": "cart", "item_id": item, "ts": "2025-06-01T10:03:00+02:00"},
              {"event_type": "purchase", "item_id": item, "ts": "2025-06-01T10:09:00Z"},
              {"event_type": "search", "ts": "2025-06-01T10:10:00Z"}]
    body = server.post("/propensity", {"customer_id": customer, "session_events": carted}).json()
    expected = local.propensity(customer, carted)
    assert body["model_version"] == "shoprec/v1" and body["customer_known"]
    assert body["customer_propensity"] == pytest.approx(expected.customer)
    assert body["session_propensity"] == pytest.approx(expected.session)
    assert body["session_events_used"] == 3  # the cart at 08:03 UTC comes first; nothing after the purchase
    cart = {"event_type": "cart", "item_id": item, "ts": "2025-06-01T10:05:00Z"}
    browsing = server.post("/propensity", {"customer_id": customer, "session_events": views[:1]}).json()
    in_cart = server.post("/propensity", {"customer_id": customer, "session_events": [*views, cart]}).json()
    assert 0.0 <= browsing["session_propensity"] < in_cart["session_propensity"] <= 1.0
    anonymous = server.post("/propensity", {"session_events": [*views, cart]}).json()
    assert anonymous["customer_propensity"] is None and anonymous["customer_id"] is None
    assert anonymous["session_propensity"] == pytest.approx(local.propensity(None, [*views, cart]).session)
    stranger = server.post("/propensity", {"customer_id": "ghost"}).json()
    assert not stranger["customer_known"] and 0.0 < stranger["customer_propensity"] < 1.0
    assert stranger["session_propensity"] is None and stranger["session_events_used"] == 0
    assert 'shoprec_unknown_ids_total{endpoint="propensity",kind="customer"}' in \
        server.client.get(f"{server.url}/metrics").text


def test_malformed_and_oversized_bodies_are_4xx(server: Server) -> None:
    bad_json = server.client.post(f"{server.url}/cross_sell", content=b"{nope",
                                  headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and "Invalid JSON" in bad_json.json()["error"]
    huge = server.client.post(f"{server.url}/email_picks", content=b" " * 300_000,
                              headers={"content-type": "application/json"})
    assert huge.status_code == 413 and huge.json()["error"].startswith("body:")


def test_openapi_declares_the_error_body(server: Server) -> None:
    spec = server.client.get(f"{server.url}/docs.json").json()
    assert {"/cross_sell", "/email_picks", "/offers", "/admin/reload", "/readyz", "/metrics"} <= set(spec["paths"])
    responses = spec["paths"]["/cross_sell"]["post"]["responses"]
    assert responses["400"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ErrorResponse"
    assert "413" in responses and "401" in spec["paths"]["/admin/reload"]["post"]["responses"]
    assert spec["paths"]["/propensity"]["post"]["responses"]["503"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/ErrorResponse"}


def test_a_merged_duplicate_id_is_answered_as_its_canonical_customer(server: Server, served: Bundle) -> None:
    """The sample's aliases (guest ids training merged) reach the service as the front end knows
    them: every endpoint answers as for the canonical id and names both; /events files a visit
    logged in under the alias where the canonical id finds it."""
    aliases = served.profiles["customer_aliases"]
    has_history = set(served.profiles["customers"]["customer_id"])
    alias, canonical = next((a, c) for a, c in zip(aliases["alias_id"], aliases["customer_id"], strict=True)
                            if c in has_history)
    picks = server.post("/email_picks", {"customer_ids": [alias, canonical], "k": 5}).json()["picks"]
    assert [(p["customer_id"], p["canonical_id"], p["customer_known"]) for p in picks] == \
        [(alias, canonical, True), (canonical, canonical, True)]
    assert picks[0]["items"] == picks[1]["items"] and picks[0]["send"] == picks[1]["send"]
    for path, body in (("/cross_sell", {"cart": [], "k": 5}), ("/offers", {"k": 5}), ("/propensity", {})):
        by_alias = server.post(path, {**body, "customer_id": alias}).json()
        by_canonical = server.post(path, {**body, "customer_id": canonical}).json()
        assert (by_alias["customer_id"], by_alias["canonical_id"]) == (alias, canonical), path
        assert {k: v for k, v in by_alias.items() if k not in ("customer_id", "request_id")} == \
            {k: v for k, v in by_canonical.items() if k not in ("customer_id", "request_id")}, path
    item = str(served.items.external_ids[3])
    server.post("/events", {"events": [{"session_id": "alias-visit", "customer_id": alias, "event_type": "view",
                                        "item_id": item}]})
    assert server.post("/cross_sell", {"cart": [], "customer_id": canonical, "k": 5}).json()["session_items"] == 1
    metrics = server.client.get(f"{server.url}/metrics").text
    for endpoint in ("email_picks", "cross_sell", "offers", "propensity", "events"):
        assert f'shoprec_alias_ids_total{{endpoint="{endpoint}"}}' in metrics, endpoint


def test_openapi_names_the_service_and_its_version(server: Server) -> None:
    from importlib.metadata import version

    info = server.client.get(f"{server.url}/docs.json").json()["info"]
    assert info["version"] == version("shoprec") and "BentoML Slack" not in info["description"]
    assert "recommendations" in info["description"].lower()


def test_other_media_types_and_methods_are_refused_in_the_error_shape(server: Server) -> None:
    for path in ("/cross_sell", "/email_picks", "/offers", "/propensity", "/events", "/admin/reload"):
        response = server.client.post(f"{server.url}{path}", content=b'{"cart": [], "k": 5}',
                                      headers={"content-type": "multipart/form-data"})
        assert response.status_code == 415 and response.json()["error"].startswith("content-type:"), path
    traced = server.client.request("TRACE", f"{server.url}/admin/reload")
    assert traced.status_code == 405 and set(traced.json()) == {"error", "detail"}
    empty = server.client.post(f"{server.url}/noop")
    assert empty.status_code == 400 and empty.json()["error"].startswith("body: required")


def test_events_from_a_broken_clock_are_kept_at_the_receive_time(server: Server, served: Bundle) -> None:
    item = str(served.items.external_ids[0])
    events = [{"session_id": "clock-skew", "event_type": "view", "item_id": item, "ts": ts}
              for ts in ("2099-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2025-06-01T10:00:00Z")]
    answer = server.post("/events", {"events": events}).json()
    assert answer["accepted"] == 3 and answer["future_ts_clamped"] == 2
    inline = [{"event_type": "cart", "item_id": item, "ts": "2099-01-01T00:00:00Z"}]
    session = server.post("/propensity", {"session_events": inline}).json()
    assert session["session_events_used"] == 1 and 0.0 <= session["session_propensity"] <= 1.0


def test_admin_reload_needs_the_token(server: Server) -> None:
    assert server.post("/admin/reload", {}).status_code == 401
    assert server.post("/admin/reload", {}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = server.post("/admin/reload", {}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.json() == {"model_version": "shoprec/v1", "changed": False}


def test_noop_is_the_recommender_free_ceiling(server: Server) -> None:
    assert server.post("/noop", {"customer_id": "ghost"}).json() == {"model_version": "shoprec/v1"}
    assert server.post("/noop", {"customer_id": ""}).status_code == 400


def _examples(text: str) -> list[tuple[str, dict, int, object]]:
    """(path, request, status, response) from ```json POST /path``` + ```json response N``` pairs."""
    blocks = re.findall(r"```json ([^\n]+)\n(.*?)```", text, flags=re.S)
    out = []
    for (req_info, req), (resp_info, resp) in zip(blocks[::2], blocks[1::2], strict=True):
        method, path = req_info.split()
        assert method == "POST" and resp_info.startswith("response ")
        out.append((path, json.loads(req), int(resp_info.split()[1]), json.loads(resp)))
    return out


NULLABLE = {"trigger", "trigger_detail"}
"""Fields an example may show filled for one customer that are null for another."""


def _same_shape(example: object, actual: object, key: str = "") -> bool:
    if isinstance(example, dict):
        return isinstance(actual, dict) and set(example) == set(actual) and all(
            _same_shape(v, actual[k], k) for k, v in example.items())
    if isinstance(example, list):
        return isinstance(actual, list) and all(_same_shape(example[0], a) for a in actual) if example else True
    if key in NULLABLE and (example is None or actual is None):
        return True
    return type(example) is type(actual) or {type(example), type(actual)} <= {int, float}


def test_docs_api_examples_run(server: Server) -> None:
    examples = _examples((REPO / "docs" / "api.md").read_text())
    assert {p for p, *_ in examples} >= {"/cross_sell", "/email_picks", "/offers", "/propensity"}
    for path, request, status, expected in examples:
        headers = {"Authorization": f"Bearer {TOKEN}"} if path.startswith("/admin/") else {}
        response = server.post(path, request, headers=headers)
        assert response.status_code == status, (path, response.text)
        assert _same_shape(expected, response.json()), (path, response.json())


def test_champion_swap_under_concurrent_requests(server: Server) -> None:
    """Runs last: trains v2 (promoted by the gate), reloads mid-traffic, and no request fails."""
    second = train_into(server.data, server.home)
    assert second.model_version == "2" and second.gate and second.gate.passed
    body = {"cart": [str(server.trained.bundle.items.external_ids[0])], "customer_id": "c000001", "k": 5}
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def hammer(_: int) -> tuple[int, str]:
        response = httpx.post(f"{server.url}/cross_sell", json=body, timeout=30)
        return response.status_code, response.json().get("model_version", "")

    with ThreadPoolExecutor(8) as pool:
        before = pool.map(hammer, range(100))
        reload = server.post("/admin/reload", {}, headers=headers)
        after = list(pool.map(hammer, range(100)))
        results = list(before) + after
    assert reload.status_code == 200 and reload.json() == {"model_version": "shoprec/v2", "changed": True}
    assert all(status == 200 for status, _ in results)
    assert {v for _, v in results} <= {"shoprec/v1", "shoprec/v2"}
    assert after[-1][1] == "shoprec/v2"
    current = json.loads((server.home / "serving-cache" / "current.json").read_text())
    assert current["version"] == "2" and Path(current["path"]).name.startswith("shoprec-v2-")
    assert Path(current["path"]).is_dir()


def test_propensity_is_a_503_naming_the_reason_when_the_champion_has_none(server: Server) -> None:
    """Runs after the swap: a champion trained without propensity answers 503, the rest keeps serving."""
    third = train_into(server.data, server.home, TrainConfig(families=["ease"], propensity={"enabled": False}))
    assert third.gate and third.gate.passed
    version = f"shoprec/v{third.model_version}"
    reload = server.post("/admin/reload", {}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert reload.json() == {"model_version": version, "changed": True}
    missing = server.post("/propensity", {"customer_id": "c000001"})
    assert missing.status_code == 503
    assert missing.json()["error"] == f"customer propensity: not trained (propensity disabled for this bundle) " \
                                      f"({version})"
    assert server.post("/cross_sell", {"cart": [], "customer_id": "c000001"}).status_code == 200


def test_registry_down_starts_from_the_cached_bundle(server: Server, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from serving.lifecycle import BundleCache

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    source = BundleCache("shoprec", server.home / "serving-cache")
    loaded = source.load_initial()
    assert loaded.version.startswith("shoprec/v") and len(loaded.bundle.items) > 0
    assert "REGISTRY UNREACHABLE" in caplog.text
