"""ASGI middleware in front of BentoML: methods, media type, body size and presence, admin
bearer token, one error body shape, and one log line per client error.

BentoML answers validation errors with ``{"error", "detail": [pydantic errors]}`` but other
4xx as ``[{"error": ...}]`` or plain text; this rewrites every 4xx and 503 into
:class:`serving.schemas.ErrorResponse`, with ``error`` naming the offending fields, so the
declared schema and the bodies clients parse always agree. What BentoML would answer with a
500 (a ``multipart/form-data`` body without a boundary) or let through (a POST without the
body its schema requires) is refused here first, in that same shape: 405 for a wrong method,
415 for a body that is not JSON, 400 for a missing body.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel

from serving import schemas
from serving.schemas import ErrorDetail, ErrorResponse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ADMIN_TOKEN_ENV = "SHOPREC_ADMIN_TOKEN"
ADMIN_PREFIX = "/admin/"
MAX_BODY_BYTES = 256 * 1024
"""1000 customer ids of 128 characters fit with room to spare."""
JSON = "application/json"
MAX_PROBLEMS = 5
"""Problems spelt out in an error's one line; the rest are counted ("and 995 more")."""
MAX_DETAILS = 50
"""Entries kept in an error's ``detail`` list: 1000 bad ids must not make a 60 KB answer."""


def normalise_error(status: int, body: bytes) -> ErrorResponse:
    """Any 4xx or 503 body BentoML or Starlette produce, as one ErrorResponse."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return ErrorResponse(error=body.decode("utf-8", "replace").strip() or f"HTTP {status}")
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict):
        return ErrorResponse(error=str(data))
    details = [ErrorDetail(loc=[str(p) if not isinstance(p, int) else p for p in d.get("loc", [])],
                           msg=str(d.get("msg", "")), type=str(d.get("type", "")))
               for d in data.get("detail") or [] if isinstance(d, dict)]
    if details:
        error = summarise([(d.loc, d.msg) for d in details])
    else:
        error = str(data.get("error") or data.get("detail") or f"HTTP {status}")
    return ErrorResponse(error=error, detail=details[:MAX_DETAILS])


BENTOML_REQUEST_LOGGER = "bentoml._internal.server.http_app"
"""Where BentoML logs ``Exception on <path> [<method>]`` with a traceback, for client errors too."""


class OneLineClientErrors(logging.Filter):
    """A request the input model rejects is the client's mistake, not the server's: BentoML logs
    each as an ERROR with a full traceback (57 tracebacks for 64 client errors in one fuzz run),
    which buries real faults. This turns those records into one INFO line naming the fields;
    server errors keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None or not _is_client_error(error):
            return True
        path, method = (record.args + ("?", "?"))[:2] if isinstance(record.args, tuple) else ("?", "?")
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.msg, record.args = "client error on %s %s: %s", (method, path, _problems(error))
        record.exc_info, record.exc_text = None, None
        return True


def _is_client_error(error: BaseException) -> bool:
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        return True
    return isinstance(error, BentoMLException) and 400 <= int(error.error_code.value) < 500


def _problems(error: BaseException) -> str:
    """The first :data:`MAX_PROBLEMS` problems of a validation error, as the 400 body says them."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return " ".join(str(error).split())[:300]
    return summarise([(e["loc"], e["msg"]) for e in error.errors(include_input=False, include_context=False)])


def summarise(problems: Sequence[tuple[Sequence[str | int], str]]) -> str:
    """``field.path: message; ...`` for the first :data:`MAX_PROBLEMS` problems, then ``and N more``."""
    text = "; ".join(f"{'.'.join(map(str, loc)) or 'body'}: {msg}" for loc, msg in problems[:MAX_PROBLEMS])
    return text + (f"; and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else "")


def quiet_client_errors() -> None:
    """Install :class:`OneLineClientErrors` on BentoML's request logger (once per process)."""
    target = logging.getLogger(BENTOML_REQUEST_LOGGER)
    if not any(isinstance(f, OneLineClientErrors) for f in target.filters):
        target.addFilter(OneLineClientErrors())


def media_type(headers: Mapping[bytes, bytes]) -> str | None:
    """The request's media type without parameters (``application/json; charset=utf-8`` ->
    ``application/json``), lower case; None when the client sent no Content-Type."""
    raw = headers.get(b"content-type")
    if raw is None:
        return None
    return raw.decode("latin-1").split(";", 1)[0].strip().lower()


async def _respond(send: Send, status: int, error: ErrorResponse, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = error.model_dump_json().encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class HttpGuard:
    """``json_routes`` maps each POST endpoint's path to whether its JSON body is required
    (:func:`json_routes` reads it off the service); other paths are BentoML's own."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]],
                 max_body_bytes: int = MAX_BODY_BYTES, json_routes: Mapping[str, bool] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.json_routes = dict(json_routes or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        body_required = self.json_routes.get(scope["path"])
        if body_required is not None and not await self._acceptable(scope["method"], headers, send):
            return
        if scope["path"].startswith(ADMIN_PREFIX) and not await self._authorised(headers, send):
            return
        body = bytearray()
        more = True
        while more:  # read it all (bounded) so chunked uploads are limited too
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                await _respond(send, 413, ErrorResponse(
                    error=f"body: request body exceeds {self.max_body_bytes} bytes"))
                return
        if body_required and not body.strip():
            await _respond(send, 400, ErrorResponse(error=f"body: required, a JSON object ({scope['path']} in "
                                                          f"/docs.json)"))
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, _OpenApiRewriter(send) if scope["path"] == "/docs.json" else _ErrorRewriter(send))

    async def _acceptable(self, method: str, headers: Mapping[bytes, bytes], send: Send) -> bool:
        """405 for any method but POST (before the admin check, so TRACE is a 405 there too),
        415 for a body declared as anything but JSON; no Content-Type at all is read as JSON."""
        if method != "POST":
            await _respond(send, 405, ErrorResponse(error=f"method: {method} not allowed, use POST"),
                           [(b"allow", b"POST")])
            return False
        given = media_type(headers)
        if given is not None and given != JSON:
            await _respond(send, 415, ErrorResponse(error=f"content-type: {given or 'empty'} is not supported; "
                                                          f"send {JSON}"))
            return False
        return True

    async def _authorised(self, headers: dict[bytes, bytes], send: Send) -> bool:
        """404 while no admin token is configured, 401 for a missing or wrong bearer token."""
        expected = os.environ.get(ADMIN_TOKEN_ENV, "")
        if not expected:
            await _respond(send, 404, ErrorResponse(error=f"admin endpoints are disabled ({ADMIN_TOKEN_ENV} unset)"))
            return False
        scheme, _, given = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
            await _respond(send, 401, ErrorResponse(error="authorization: missing or wrong bearer token"),
                           [(b"www-authenticate", b"Bearer")])
            return False
        return True


def patch_openapi(spec: dict[str, Any]) -> dict[str, Any]:
    """Make /docs.json say what the service really accepts and answers.

    BentoML writes OpenAPI 3.0 but flattens the request models, dropping optional fields'
    ``null`` and the cross-field rules, and it declares no 4xx body of ours. This swaps in
    each request and response model's own pydantic JSON Schema (so OpenAPI 3.1, whose
    schema dialect pydantic writes), marks request bodies required, and declares
    :class:`ErrorResponse` for every 4xx (plus 413 and 503 on POST, 401 on admin routes).
    """
    spec["openapi"] = "3.1.0"
    spec["info"] = service_info()
    components = spec.setdefault("components", {}).setdefault("schemas", {})

    def declare(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
        components.update(schema.pop("$defs", {}))
        return schema

    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    components["ErrorResponse"] = declare(ErrorResponse, "serialization")
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            for media in operation.get("requestBody", {}).get("content", {}).values():
                if (model := _own_model(media.get("schema", {}))) is not None:
                    media["schema"] = declare(model, "validation")
                    operation["requestBody"]["required"] = True
            responses = operation.setdefault("responses", {})
            for media in responses.get("200", {}).get("content", {}).values():
                if (model := _own_model(media.get("schema", {}))) is not None:
                    media["schema"] = declare(model, "serialization")
            for code in list(responses):
                if str(code).startswith("4"):
                    responses[code] = {"description": responses[code].get("description", ""), **error}
            if operation is operations.get("post"):
                responses["405"] = {"description": "Method not allowed: every endpoint here is a POST", **error}
                responses["413"] = {"description": "Request body too large", **error}
                responses["415"] = {"description": f"Content-Type is not {JSON}", **error}
                responses["503"] = {"description": "Unavailable, `error` says why: the champion lacks the model "
                                                   "asked for, the registry failed a reload, the session store or "
                                                   "event log failed, or the service is overloaded", **error}
            if path.startswith(ADMIN_PREFIX):
                responses["401"] = {"description": "Missing or wrong bearer token", **error}
                responses["404"] = {"description": f"Disabled: {ADMIN_TOKEN_ENV} unset", **error}
    return spec


def service_info() -> dict[str, str]:
    """OpenAPI ``info``: the installed package's version and summary (one place: pyproject.toml)."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        meta = metadata("shoprec")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return {"title": "shoprec", "version": "0+unknown", "description": "shoprec recommendation service"}
    return {"title": "shoprec", "version": meta["Version"],
            "description": f"{meta['Summary']} Every answer names the model version that gave it; every 4xx "
                           "and 503 has the one ErrorResponse body. Reference with examples: docs/api.md."}


def _own_model(schema: dict[str, Any]) -> type[BaseModel] | None:
    """The :mod:`serving.schemas` model behind one of BentoML's ``<Model>IODescriptor`` schemas."""
    if "$ref" in schema:
        return None
    name = str(schema.get("title", "")).removesuffix("IODescriptor")
    model = getattr(schemas, name, None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


class _Buffered:
    """Wraps ``send``: buffers the responses ``wants`` picks and hands them to ``rewrite``."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.start: Message | None = None
        self.body = bytearray()

    def wants(self, status: int) -> bool:
        raise NotImplementedError

    async def rewrite(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        raise NotImplementedError

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and self.wants(message["status"]):
            self.start = message
            return
        if message["type"] == "http.response.body" and self.start is not None:
            self.body += message.get("body", b"")
            if not message.get("more_body", False):
                kept = [(k, v) for k, v in self.start.get("headers", [])
                        if k.lower() not in (b"content-type", b"content-length")]
                await self.rewrite(self.start["status"], kept, bytes(self.body))
            return
        await self.send(message)


class _ErrorRewriter(_Buffered):
    def wants(self, status: int) -> bool:
        return 400 <= status < 500 or status == 503

    async def rewrite(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        await _respond(self.send, status, normalise_error(status, body), headers)


class _OpenApiRewriter(_Buffered):
    def wants(self, status: int) -> bool:
        return status == 200

    async def rewrite(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        patched = json.dumps(patch_openapi(json.loads(body))).encode()
        await self.send({"type": "http.response.start", "status": status,
                         "headers": [(b"content-type", b"application/json"),
                                     (b"content-length", str(len(patched)).encode()), *headers]})
        await self.send({"type": "http.response.body", "body": patched})
