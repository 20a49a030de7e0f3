"""The fake Poco's wire vocabulary: constants, request records, errors, parsing, responses."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

BASE = "/api/v1"
GEN_OLD = "2026-02"  # poco-agent 98d6fb0f: no auth, app errors always HTTP 400
GEN_NEW = "2026-04"  # poco-agent 619c546b: internal token, real statuses, queued queries
GENERATIONS = (GEN_OLD, GEN_NEW)
DEFAULT_INTERNAL_TOKEN = "test-internal-token"
MESSAGES_LIMIT = 100
MESSAGES_WITH_FILES_LIMIT = 1000
TERMINAL = ("completed", "failed", "canceled")
ACTIVE_RUN = ("claimed", "running")
UNFINISHED_RUN = ("queued", "claimed", "running")
PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions")
SDK_MODEL = "claude-sonnet-4-5"
WORKER_ID = "executor-sim"

Json = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Set by the middleware for the request being handled (one task per request).
CURRENT_CALL: ContextVar[Call] = ContextVar("CURRENT_CALL")
CURRENT_USER: ContextVar[str] = ContextVar("CURRENT_USER", default="default")


class AppError(Exception):
    """An app error: an envelope with `code`; its HTTP status depends on the generation."""

    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message
        super().__init__(message)


class Invalid(Exception):
    """A request validation error: FastAPI's 422 without envelope."""

    def __init__(self, *errors: Json) -> None:
        self.errors = list(errors)
        super().__init__(errors)


def http_status(code: int, generation: str) -> int:
    """The old backend answers every app error with 400; the new one maps the code
    (619c546b core/errors/exception_handlers.py; HTTPException keeps its own status)."""
    if code == 401:
        return 401
    if generation == GEN_OLD:
        return 400
    return {40100: 401, 40300: 403, 40400: 404, 50000: 500, 50101: 500, 50201: 500}.get(code, 400)


@dataclass
class Call:
    """One request the fake received. Subscriptable too: `call["path"]`."""

    method: str
    path: str  # the full path, e.g. /api/v1/sessions
    query: dict[str, str]
    json: Any
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    template: str = ""  # the matched route, e.g. /sessions/{session_id}/state
    response_bytes: int = 0  # the answer's body size (for cost benchmarks)

    @property
    def route(self) -> str:
        """The path without the /api/v1 base."""
        return self.path.removeprefix(BASE) or "/"

    @property
    def route_key(self) -> str:
        """`METHOD /template`, e.g. `GET /sessions/{session_id}/messages/delta`."""
        return f"{self.method} {self.template or self.route}"

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def matches(self, prefix: str) -> bool:
        return self.path.startswith(prefix) or self.route.startswith(prefix)


class PostedTask(dict[str, Any]):
    """A POST /tasks body the backend accepted; `at` is its arrival (monotonic)."""

    at: float = 0.0


@dataclass
class Failure:
    status: int
    count: int
    path_prefix: str | None
    body: Any


class Clock:
    """UTC timestamps that never go backwards, formatted as the backend does."""

    def __init__(self) -> None:
        self._last = datetime.min.replace(tzinfo=UTC)

    def now(self) -> datetime:
        now = datetime.now(UTC)
        if now <= self._last:
            now = self._last + timedelta(microseconds=1)
        self._last = now
        return now

    def stamp(self) -> str:
        return iso(self.now())


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- request parsing (FastAPI's 422 shapes) ------------------------------------------------


def as_uuid(value: Any, loc: list[Any]) -> str:
    if not isinstance(value, str):
        raise Invalid(
            {
                "type": "uuid_type",
                "loc": loc,
                "msg": "UUID input should be a string, bytes or UUID object",
                "input": value,
            }
        )
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise Invalid(
            {
                "type": "uuid_parsing",
                "loc": loc,
                "msg": "Input should be a valid UUID, invalid character: expected an optional "
                "prefix of `urn:uuid:` followed by [0-9a-fA-F-]",
                "input": value,
            }
        ) from None


def path_uuid(request: web.Request, name: str) -> str:
    return as_uuid(request.match_info[name], ["path", name])


def int_query(
    request: web.Request,
    name: str,
    default: int,
    *,
    ge: int | None = None,
    le: int | None = None,
) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Invalid(
            {
                "type": "int_parsing",
                "loc": ["query", name],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": raw,
            }
        ) from None
    if ge is not None and value < ge:
        raise Invalid(_bound_error("greater_than_equal", "greater than or equal to", name, raw, ge))
    if le is not None and value > le:
        raise Invalid(_bound_error("less_than_equal", "less than or equal to", name, raw, le))
    return value


def _bound_error(kind: str, words: str, name: str, raw: str, bound: int) -> Json:
    key = "ge" if kind.startswith("greater") else "le"
    return {
        "type": kind,
        "loc": ["query", name],
        "msg": f"Input should be {words} {bound}",
        "input": raw,
        "ctx": {key: bound},
    }


def missing(name: str, body: Any) -> Json:
    return {"type": "missing", "loc": ["body", name], "msg": "Field required", "input": body}


def string_error(loc: list[Any], value: Any) -> Json:
    return {
        "type": "string_type",
        "loc": loc,
        "msg": "Input should be a valid string",
        "input": value,
    }


def string_field(body: Json, name: str) -> str:
    if name not in body:
        raise Invalid(missing(name, body))
    value = body[name]
    if not isinstance(value, str):
        raise Invalid(string_error(["body", name], value))
    return value


def optional_string(body: Json, name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise Invalid(string_error(["body", name], value))
    return value


def decode_json(raw: bytes) -> Any:
    """The body as JSON (None when empty); FastAPI's json_invalid 422 when it is not."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise Invalid(
            {
                "type": "json_invalid",
                "loc": ["body", 0],
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": "Expecting value"},
            }
        ) from None


async def json_object(request: web.Request) -> Json:
    body = decode_json(await request.read())
    if body is None:
        raise Invalid({"type": "missing", "loc": ["body"], "msg": "Field required", "input": None})
    if not isinstance(body, dict):
        raise Invalid(
            {
                "type": "model_attributes_type",
                "loc": ["body"],
                "msg": "Input should be a valid dictionary or object to extract fields from",
                "input": body,
            }
        )
    return body


# -- responses -----------------------------------------------------------------------------


def ok(data: Any, message: str = "Success") -> web.Response:
    return web.json_response({"code": 0, "message": message, "data": data})


def envelope_error(http: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message, "data": None}, status=http)


def failure_response(failure: Failure) -> web.Response:
    body = failure.body
    if isinstance(body, str):
        return web.Response(status=failure.status, text=body, content_type="text/html")
    if body is None:
        if failure.status >= 500:
            body = {"code": 50000, "message": "Internal server error", "data": None}
        elif failure.status == 404:
            body = {"detail": "Not Found"}
        else:
            body = {"code": 40000, "message": "Injected failure", "data": None}
    return web.json_response(body, status=failure.status)


async def trace_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["x-request-id"] = uuid.uuid4().hex
    response.headers["x-trace-id"] = uuid.uuid4().hex
