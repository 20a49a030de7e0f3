"""The httpx client for the Poco backend API; library errors become ours here.

Both backend generations are served by what they answer, never by a setting:
- Feb 2026 answers app errors with HTTP 400 and a `code`; April 2026 with 403/404/400/500
  and the same `code`. Errors are mapped by the body's code, whatever the status:
  transport error, timeout, 5xx, code >= 50000, non-JSON -> BackendUnavailable;
  401 -> BackendUnauthorized; 40400 -> BackendNotFound; 40300 -> BackendForbidden; other
  codes and 422 (FastAPI validation) -> BackendRejected; a 404 without an envelope (no
  such route on this generation) -> BackendRouteMissing.
- April 2026 wants `X-Internal-Token` with `X-User-Id` (Feb 2026 ignores it): sent when
  BACKEND_INTERNAL_TOKEN is set. No `Authorization` header is ever sent (an unrelated one
  is a 401 even with a valid token).
- Messages are read with the delta route where it exists; the first 404 for it switches
  this client to the full lists for good.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from agent.backend.files import FileRoutes
from agent.backend.models import InputRequest, Message, MessagePage, Run, Session, TaskRef
from agent.errors import (
    BackendError,
    BackendForbidden,
    BackendNotFound,
    BackendRejected,
    BackendRouteMissing,
    BackendUnauthorized,
    BackendUnavailable,
)

if TYPE_CHECKING:
    from agent.config import BackendSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

API_PREFIX = "/api/v1"
CODE_OK = 0
CODE_UNAUTHORIZED = 401
CODE_NOT_FOUND = 40400
CODE_FORBIDDEN = 40300
CODE_UPSTREAM = 50201  # the backend's call to S3 or the executor-manager failed
# GET /sessions/{id}/messages returns only the oldest 100 messages, whatever the query.
# /messages-with-files has the same items (plus attachments) up to 1000: past 1000
# messages the newest are not seen by any endpoint.
MESSAGES_LIMIT = 100
MESSAGES_WITH_FILES_LIMIT = 1000
DELTA_LIMIT = 1000  # the delta route's maximum page
RUNS_PAGE = 100
MAX_CONNECTIONS = 6
MAX_KEEPALIVE = 6


class BackendClient(FileRoutes):
    """One pooled connection to the Poco backend; close it with `aclose()`. The file
    routes (uploads, transcription, workspace) are in backend/files."""

    def __init__(self, settings: BackendSettings) -> None:
        self.base_url = settings.url.rstrip("/") + API_PREFIX
        limits = httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_KEEPALIVE
        )
        headers = {"X-User-Id": settings.user_id.strip() or "default"}
        if settings.internal_token:
            headers["X-Internal-Token"] = settings.internal_token
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(settings.timeout),
            transport=httpx.AsyncHTTPTransport(limits=limits, retries=1),
            follow_redirects=False,
        )
        # Answers received (any status): lets callers tell "no call made" from "reachable".
        self.responses = 0
        # None until the backend told us whether it has the delta routes (April 2026 on).
        self.has_delta: bool | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> BackendClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- endpoints -----------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return _object(await self._call("GET", "/health"))

    async def create_task(
        self,
        prompt: str,
        session_id: str | None = None,
        *,
        client_request_id: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> TaskRef:
        """Create a session (session_id None) or continue one: a run, or a query queued
        behind the running run. `client_request_id` (stable per inbound message) lets an
        April 2026 backend deduplicate a retried queued follow-up; older ones ignore it.
        `config` is the run's TaskConfig, e.g. `{"input_files": [InputFile, ...]}`."""
        if not prompt.strip():
            raise BackendRejected("Prompt cannot be empty")
        body: dict[str, Any] = {
            "prompt": prompt,
            "session_id": _session_id(session_id) if session_id else None,
        }
        if client_request_id:
            body["client_request_id"] = client_request_id
        if config:
            body["config"] = dict(config)
        return _parse(TaskRef.from_api, await self._call("POST", "/tasks", json=body))

    async def list_sessions(
        self, limit: int = 10, offset: int = 0, *, kind: str = "chat"
    ) -> list[Session]:
        """The newest sessions first; `kind` "chat" (the backend's default) or "all"."""
        _check_page(limit, offset)
        params = {"limit": limit, "offset": offset, "kind": kind}
        data = await self._call("GET", "/sessions", params=params)
        return _parse_list(Session.from_api, data)

    async def get_session(self, session_id: str) -> Session:
        data = await self._call("GET", f"/sessions/{_session_id(session_id)}")
        return _parse(Session.from_api, data)

    async def list_messages(self, session_id: str, *, known_count: int = 0) -> list[Message]:
        """All messages, oldest first, up to MESSAGES_WITH_FILES_LIMIT.

        `/messages` stops at the oldest 100; when it is full (or the caller already knew
        100 or more) `/messages-with-files` is read instead, so later messages are seen.
        """
        path = f"/sessions/{_session_id(session_id)}"
        if known_count < MESSAGES_LIMIT:
            messages = _parse_list(Message.from_api, await self._call("GET", f"{path}/messages"))
            if len(messages) < MESSAGES_LIMIT:
                return messages
        data = await self._call("GET", f"{path}/messages-with-files")
        messages = _parse_list(Message.from_api, data)
        return messages

    async def messages_after(
        self, session_id: str, after_id: int, *, known_count: int = 0
    ) -> MessagePage:
        """Messages with an id above `after_id`, oldest first: one request per call.

        With the delta route one page (up to DELTA_LIMIT; `has_more` says more wait); on an
        older backend the full list, filtered (`truncated` once it is past 1000).
        """
        if self.has_delta is not False:
            path = f"/sessions/{_session_id(session_id)}/messages/delta"
            params = {"after_message_id": max(after_id, 0), "limit": DELTA_LIMIT}
            try:
                data = await self._call("GET", path, params=params)
            except BackendRouteMissing:
                log.info("backend has no delta routes (older than April 2026): full lists")
                self.has_delta = False
            else:
                self.has_delta = True
                body = _object(data)
                items = _parse_list(Message.from_api, body.get("items"))
                return MessagePage(items, has_more=bool(body.get("has_more")))
        messages = await self.list_messages(session_id, known_count=known_count)
        newer = [m for m in messages if m.id > after_id]
        return MessagePage(newer, truncated=len(messages) >= MESSAGES_WITH_FILES_LIMIT)

    async def list_runs(
        self, session_id: str, *, offset: int = 0, limit: int = RUNS_PAGE
    ) -> list[Run]:
        """Runs in schedule order (ascending): the last is the latest immediate run."""
        _check_page(limit, offset)
        path = f"/runs/session/{_session_id(session_id)}"
        data = await self._call("GET", path, params={"limit": limit, "offset": offset})
        return _parse_list(Run.from_api, data)

    async def list_runs_from(self, session_id: str, offset: int) -> list[Run]:
        """Every run from index `offset` on, in schedule order (pages of RUNS_PAGE)."""
        runs: list[Run] = []
        while True:
            page = await self.list_runs(session_id, offset=offset, limit=RUNS_PAGE)
            runs.extend(page)
            offset += len(page)
            if len(page) < RUNS_PAGE:
                return runs

    async def latest_run(self, session_id: str, *, known_runs: int = 0) -> tuple[Run | None, int]:
        """(latest run, how many runs the session has), reading only from `known_runs - 1`
        on; a stale or wrong `known_runs` falls back to reading from the start."""
        start = max(known_runs - 1, 0)
        latest, total = await self._runs_from(session_id, start)
        if latest is None and start > 0:
            latest, total = await self._runs_from(session_id, 0)
        return latest, total

    async def list_input_requests(self, session_id: str | None = None) -> list[InputRequest]:
        """Pending requests, oldest first. Stale ones stay listed: check `is_expired()`."""
        params = {"session_id": _session_id(session_id)} if session_id else None
        data = await self._call("GET", "/user-input-requests", params=params)
        return _parse_list(InputRequest.from_api, data)

    async def answer_input_request(self, request_id: str, answers: dict[str, str]) -> InputRequest:
        """AskUserQuestion: {question text: label, labels joined by ", "};
        ExitPlanMode: {"approved": "true"} approves, any other string rejects."""
        request_id = _uuid(request_id, "request id")
        if not all(isinstance(v, str) for v in answers.values()):
            raise BackendRejected("Answers must be text")
        path = f"/user-input-requests/{request_id}/answer"
        data = await self._call("POST", path, json={"answers": answers})
        return _parse(InputRequest.from_api, data)

    async def cancel_session(self, session_id: str, reason: str | None = None) -> dict[str, Any]:
        """Cancel every unfinished run; pending requests expire."""
        body = {"reason": reason} if reason else {}
        path = f"/sessions/{_session_id(session_id)}/cancel"
        return _object(await self._call("POST", path, json=body))

    # -- plumbing ------------------------------------------------------------------------

    async def _runs_from(self, session_id: str, offset: int) -> tuple[Run | None, int]:
        latest: Run | None = None
        while True:
            page = await self.list_runs(session_id, offset=offset, limit=RUNS_PAGE)
            if page:
                latest = page[-1]
            offset += len(page)
            if len(page) < RUNS_PAGE:
                return latest, offset

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: AsyncIterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        http_timeout: httpx.Timeout | None = None,
    ) -> Any:
        """The `data` of a successful envelope; errors mapped to BackendError. `content`
        streams a request body (an upload); `http_timeout` replaces the default for this call."""
        extra: dict[str, Any] = {"timeout": http_timeout} if http_timeout is not None else {}
        try:
            response = await self._http.request(
                method, path, params=params, json=json, content=content, headers=headers, **extra
            )
            self.responses += 1
        except httpx.TimeoutException as exc:
            raise BackendUnavailable(f"backend timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"backend unreachable: {_describe(exc)}") from exc
        log.debug("%s %s -> %s", method, path, response.status_code)
        return _data(response, f"{method} {path}")


def _data(response: httpx.Response, what: str) -> Any:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("code"), int):
        raise _bare_error(status, body, what)
    code, message = body["code"], str(body.get("message") or "")
    if status == 200 and code == CODE_OK:
        return body.get("data")
    raise _envelope_error(status, code, message or what)


def _bare_error(status: int, body: Any, what: str) -> BackendError:
    """An answer without the app envelope: FastAPI's own errors, a proxy, not Poco."""
    if status == 401:
        return BackendUnauthorized(f"{what}: HTTP 401", status=status)
    if status == 404:
        return BackendRouteMissing(f"{what}: route not found; is this a Poco backend?", status=404)
    if status == 422 and body is not None:
        return BackendRejected(_validation_summary(body), status=422)
    if body is None:
        return BackendUnavailable(f"{what}: HTTP {status}, not JSON", status=status)
    if status >= 500:
        return BackendUnavailable(f"{what}: HTTP {status}, unexpected answer", status=status)
    return BackendRejected(f"{what}: HTTP {status}, unexpected answer", status=status)


def _envelope_error(status: int, code: int, message: str) -> BackendError:
    if status == 401 or code == CODE_UNAUTHORIZED:
        return BackendUnauthorized(message, status=status, code=code)
    if code >= 50000 or (status >= 500 and code < 40000):
        return BackendUnavailable(message, status=status, code=code)
    if code == CODE_NOT_FOUND:
        return BackendNotFound(message, status=status, code=code)
    if code == CODE_FORBIDDEN:
        return BackendForbidden(message, status=status, code=code)
    return BackendRejected(message, status=status, code=code)


def _validation_summary(body: Any) -> str:
    """A short line from FastAPI's {"detail": [{"loc": [...], "msg": ...}]}."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        loc = ".".join(str(part) for part in first.get("loc") or [] if part != "body")
        msg = str(first.get("msg") or "invalid request")
        return f"{loc}: {msg}" if loc else msg
    return f"invalid request: {str(detail)[:200]}" if detail else "invalid request"


def _describe(exc: httpx.HTTPError) -> str:
    return str(exc) or type(exc).__name__


def _uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value.strip()))
    except (ValueError, AttributeError):
        raise BackendRejected(f"Not a valid {what}: {str(value)[:40]!r}") from None


def _session_id(value: str | None) -> str:
    return _uuid(value or "", "session id")


def _check_page(limit: int, offset: int) -> None:
    # The backend answers a negative limit with a 500; refuse it here instead.
    if limit < 0 or offset < 0:
        raise BackendRejected("limit and offset must not be negative")


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BackendUnavailable("backend answered an unexpected shape")
    return data


def _parse(parse: Callable[[dict[str, Any]], T], data: Any) -> T:
    try:
        return parse(_object(data))
    except (KeyError, TypeError, ValueError) as exc:
        raise BackendUnavailable(f"backend answered an unexpected shape: {exc!r}") from exc


def _parse_list(parse: Callable[[dict[str, Any]], T], data: Any) -> list[T]:
    if not isinstance(data, list):
        raise BackendUnavailable("backend answered an unexpected shape: not a list")
    return [_parse(parse, item) for item in data]
