"""ASGI middleware in front of BentoML: body size limit, admin bearer token, one error body shape.

BentoML answers validation errors with ``{"error", "detail": [pydantic errors]}`` but other
4xx as ``[{"error": ...}]`` or plain text; this rewrites every 4xx and 503 into
:class:`serving.schemas.ErrorResponse`, with ``error`` naming the offending fields, so the
declared schema and the bodies clients parse always agree.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
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
        error = "; ".join(f"{'.'.join(map(str, d.loc)) or 'body'}: {d.msg}" for d in details)
    else:
        error = str(data.get("error") or data.get("detail") or f"HTTP {status}")
    return ErrorResponse(error=error, detail=details)


async def _respond(send: Send, status: int, error: ErrorResponse, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = error.model_dump_json().encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class HttpGuard:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]],
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
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
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, _OpenApiRewriter(send) if scope["path"] == "/docs.json" else _ErrorRewriter(send))

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
                responses["413"] = {"description": "Request body too large", **error}
                responses["503"] = {"description": "Unavailable, `error` says why: the champion lacks the model "
                                                   "asked for, the registry failed a reload, the session store or "
                                                   "event log failed, or the service is overloaded", **error}
            if path.startswith(ADMIN_PREFIX):
                responses["401"] = {"description": "Missing or wrong bearer token", **error}
                responses["404"] = {"description": f"Disabled: {ADMIN_TOKEN_ENV} unset", **error}
    return spec


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
