"""The HTTP guard without BentoML: admin switch, token check and the error body shape."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.guard import ADMIN_TOKEN_ENV, HttpGuard, normalise_error


def _client(max_body: int = 1000) -> TestClient:
    async def ok(_request: object) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def bad(_request: object) -> JSONResponse:
        return JSONResponse([{"error": "nope"}], status_code=422)

    app = Starlette(routes=[Route("/admin/reload", ok, methods=["POST"]), Route("/bad", bad, methods=["POST"])])
    return TestClient(HttpGuard(app, max_body_bytes=max_body))


def test_admin_is_disabled_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    response = _client().post("/admin/reload", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 404 and ADMIN_TOKEN_ENV in response.json()["error"]


def test_admin_token_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "s3cret")
    client = _client()
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"Authorization": "Basic s3cret"}).status_code == 401
    assert client.post("/admin/reload", headers={"Authorization": "Bearer s3cret"}).json() == {"ok": True}


def test_every_4xx_gets_the_one_error_shape() -> None:
    client = _client(max_body=10)
    assert client.post("/bad").json() == {"error": "nope", "detail": []}
    assert client.post("/missing").json() == {"error": "Not Found", "detail": []}
    assert client.post("/bad", content=b"x" * 11).status_code == 413
    assert normalise_error(400, b"plain words").error == "plain words"
