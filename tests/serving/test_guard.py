"""The HTTP guard without BentoML: admin switch, token check and the error body shape."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import json
import logging

from pydantic import BaseModel, ValidationError

from serving.guard import (ADMIN_TOKEN_ENV, BENTOML_REQUEST_LOGGER, MAX_DETAILS, HttpGuard, normalise_error,
                           quiet_client_errors)


def _client(max_body: int = 1000) -> TestClient:
    async def ok(_request: object) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def bad(_request: object) -> JSONResponse:
        return JSONResponse([{"error": "nope"}], status_code=422)

    app = Starlette(routes=[Route("/admin/reload", ok, methods=["POST"]), Route("/bad", bad, methods=["POST"]),
                            Route("/echo", ok, methods=["POST"])])
    routes = {"/admin/reload": False, "/echo": True}
    return TestClient(HttpGuard(app, max_body_bytes=max_body, json_routes=routes))


def test_json_routes_refuse_other_methods_media_types_and_a_missing_body(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "s3cret")
    client = _client()
    multipart = client.post("/echo", content=b'{"cart": []}', headers={"Content-Type": "multipart/form-data"})
    assert multipart.status_code == 415 and multipart.json()["error"].startswith("content-type: multipart/form-data")
    traced = client.request("TRACE", "/admin/reload")  # no token: the method is refused first
    assert traced.status_code == 405 and traced.headers["allow"] == "POST"
    assert client.post("/echo").json()["error"].startswith("body: required")
    assert client.post("/echo", content=b"  ").status_code == 400
    assert client.post("/echo", content=b"{}", headers={"Content-Type": "application/json; charset=utf-8"}).json() \
        == {"ok": True}
    assert client.post("/echo", content=b"{}").json() == {"ok": True}  # no Content-Type: read as JSON
    bearer = {"Authorization": "Bearer s3cret"}
    assert client.post("/admin/reload", headers=bearer).json() == {"ok": True}  # no body needed there


def test_an_error_for_a_thousand_bad_ids_stays_short() -> None:
    details = [{"loc": ["customer_ids", i], "msg": "String should have at most 128 characters", "type": "x"}
               for i in range(1000)]
    error = normalise_error(400, json.dumps({"error": "1000 validation errors", "detail": details}).encode())
    assert error.error.endswith("; and 995 more") and error.error.count("customer_ids.") == 5
    assert len(error.detail) == MAX_DETAILS and len(error.model_dump_json()) < 6000


def test_client_errors_are_one_log_line_and_server_errors_keep_their_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    class Body(BaseModel):
        k: int

    quiet_client_errors()
    logger = logging.getLogger(BENTOML_REQUEST_LOGGER)
    with caplog.at_level(logging.INFO, logger=BENTOML_REQUEST_LOGGER):
        try:
            Body.model_validate({"k": "many"})
        except ValidationError:
            logger.error("Exception on %s [%s]", "/cross_sell", "POST", exc_info=True)
        try:
            raise RuntimeError("a real fault")
        except RuntimeError:
            logger.error("Exception on %s [%s]", "/cross_sell", "POST", exc_info=True)
    client_error, server_error = caplog.records
    assert client_error.levelno == logging.INFO and client_error.exc_info is None
    assert client_error.getMessage().startswith("client error on POST /cross_sell: k: Input should be a valid integer")
    assert server_error.levelno == logging.ERROR and server_error.exc_info is not None


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
