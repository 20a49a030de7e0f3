"""A fake Poco backend: a real aiohttp server speaking the wire format of poco-backend-api.md.

HTTP side (base `/api/v1`): the `{code, message, data}` envelope; app errors as 400 with
40400/40300/40000; FastAPI-style 422 `{"detail": [...]}` without envelope; 404
`{"detail": "Not Found"}` for unknown routes; 500/50000 for unhandled errors. The traps are
kept: `/messages` returns only the oldest 100 and ignores its parameters, the pending list
does not check `expires_at`, a terminal session status can be temporary.

Executor side: plain methods (`start_run`, `add_assistant_text`, `finish_run`, ...) that
change the state as the executor's callbacks would. The test plays the executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

BASE = "/api/v1"
MESSAGES_LIMIT = 100
MESSAGES_WITH_FILES_LIMIT = 1000
TERMINAL = ("completed", "failed", "canceled")
ACTIVE_RUN = ("claimed", "running")
UNFINISHED_RUN = ("queued", "claimed", "running")
PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions")
SDK_MODEL = "claude-sonnet-4-5"

Json = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AppError(Exception):
    """An app error: HTTP 400 (or `http`) with an envelope."""

    def __init__(self, code: int, message: str, http: int = 400) -> None:
        self.code, self.message, self.http = code, message, http
        super().__init__(message)


class Invalid(Exception):
    """A request validation error: FastAPI's 422 without envelope."""

    def __init__(self, *errors: Json) -> None:
        self.errors = list(errors)
        super().__init__(errors)


@dataclass
class Call:
    """One request the fake received. Subscriptable too: `call["path"]`."""

    method: str
    path: str  # the full path, e.g. /api/v1/sessions
    query: dict[str, str]
    json: Any
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)

    @property
    def route(self) -> str:
        """The path without the /api/v1 base."""
        return self.path.removeprefix(BASE) or "/"

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def matches(self, prefix: str) -> bool:
        return self.path.startswith(prefix) or self.route.startswith(prefix)


class PostedTask(dict[str, Any]):
    """A POST /tasks body the backend accepted; `at` is its arrival (monotonic)."""

    at: float = 0.0


@dataclass
class _Failure:
    status: int
    count: int
    path_prefix: str | None
    body: Any


class _Clock:
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


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _uuid_error(value: Any, loc: list[Any]) -> Json:
    return {
        "type": "uuid_parsing",
        "loc": loc,
        "msg": "Input should be a valid UUID, invalid character: expected an optional prefix "
        "of `urn:uuid:` followed by [0-9a-fA-F-]",
        "input": value,
    }


def _as_uuid(value: Any, loc: list[Any]) -> str:
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
        raise Invalid(_uuid_error(value, loc)) from None


def _int_query(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise Invalid(
            {
                "type": "int_parsing",
                "loc": ["query", name],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": raw,
            }
        ) from None


def _text_preview(content: Json) -> str | None:
    blocks = content.get("content")
    if isinstance(blocks, list):
        for block in blocks:
            if isinstance(block, dict) and "TextBlock" in str(block.get("_type", "")):
                return str(block.get("text", ""))[:500]
    return None


def _ok(data: Any, message: str = "Success") -> web.Response:
    return web.json_response({"code": 0, "message": message, "data": data})


def _envelope_error(http: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message, "data": None}, status=http)


class FakePoco:
    def __init__(self, *, default_expires_in: float = 60.0) -> None:
        self.default_expires_in = default_expires_in
        self.sessions: dict[str, Json] = {}  # insertion order = creation order
        self.runs: dict[str, list[Json]] = {}  # session id -> runs, oldest first
        self.messages: dict[str, list[Json]] = {}  # session id -> messages, oldest first
        self.input_requests: dict[str, Json] = {}
        self.requests: list[Call] = []
        self.tasks_posted: list[PostedTask] = []
        self._next_message_id = 1
        self._clock = _Clock()
        self._failures: list[_Failure] = []
        self._delay = 0.0
        self._cond = asyncio.Condition()
        self._notifiers: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving; after a `stop()` it comes back on the same port with its state."""
        app = web.Application(middlewares=[self._middleware])
        self._routes(app)
        app.on_response_prepare.append(_trace_headers)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port, reuse_address=True)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in list(self._notifiers):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def url(self) -> str:
        """The BACKEND_URL form: without /api/v1."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    # -- inspection ----------------------------------------------------------------------

    def count(
        self, method: str | None = None, path_prefix: str | None = None, since: float | None = None
    ) -> int:
        """Recorded requests matching the method, path prefix (with or without /api/v1) and
        arrival time (`time.monotonic()` value)."""
        return sum(
            1
            for c in self.requests
            if (method is None or c.method == method.upper())
            and (path_prefix is None or c.matches(path_prefix))
            and (since is None or c.at >= since)
        )

    async def wait_for(self, predicate: Callable[..., bool], timeout: float = 5) -> None:
        """Wait until `predicate()` (or `predicate(fake)`) holds; re-checked on every change."""
        check = (lambda: predicate(self)) if _takes_arg(predicate) else predicate
        async with asyncio.timeout(timeout), self._cond:
            await self._cond.wait_for(check)

    def messages_of(self, session_id: str) -> list[Json]:
        return self.messages.get(session_id, [])

    def runs_of(self, session_id: str) -> list[Json]:
        return self.runs.get(session_id, [])

    def latest_run(self, session_id: str) -> Json:
        return self.runs[session_id][-1]

    # -- fault controls ------------------------------------------------------------------

    def fail_next(
        self, status: int, *, count: int = 1, path_prefix: str | None = None, body: Any = None
    ) -> None:
        """Answer the next `count` requests (matching `path_prefix`) with `status` and `body`
        instead of handling them. `body` may be a dict (JSON) or a str (sent as text/html)."""
        self._failures.append(_Failure(status, count, path_prefix, body))

    def set_delay(self, seconds: float) -> None:
        """Make every request wait this long before it is handled (a slow backend)."""
        self._delay = seconds

    # -- seeding -------------------------------------------------------------------------

    def create_session(
        self,
        prompt: str = "Summarise README please",
        status: str = "pending",
        *,
        user_id: str = "default",
        title: str | None = None,
        kind: str = "chat",
    ) -> str:
        """A session with its first user message and a run whose status matches `status`."""
        stamp = self._clock.stamp()
        session_id = self._new_session(user_id, title, kind, stamp)
        run = self._new_run(session_id, self._add_user_prompt(session_id, prompt, stamp), stamp)
        if status != "pending":
            run.update(status=status, claimed_by="executor-sim", attempts=1, started_at=stamp)
            if status in TERMINAL:
                run.update(finished_at=stamp, progress=100 if status == "completed" else 0)
            self.sessions[session_id]["status"] = status
        self._poke()
        return session_id

    # -- executor side -------------------------------------------------------------------

    def claim_run(self, session_id: str) -> Json:
        """The oldest queued run becomes `claimed`; the session stays `pending`."""
        runs = self.runs[session_id]
        if any(r["status"] in ACTIVE_RUN for r in runs):
            raise ValueError(f"session {session_id} already has an active run")
        run = next((r for r in runs if r["status"] == "queued"), None)
        if run is None:
            raise ValueError(f"session {session_id} has no queued run")
        stamp = self._clock.stamp()
        run.update(
            status="claimed",
            claimed_by="executor-sim",
            attempts=run["attempts"] + 1,
            updated_at=stamp,
        )
        self._poke()
        return run

    def start_run(self, session_id: str) -> Json:
        """Claim (if needed) and start the next run: run and session become `running`."""
        runs = self.runs[session_id]
        run = next((r for r in runs if r["status"] == "claimed"), None) or self.claim_run(
            session_id
        )
        stamp = self._clock.stamp()
        run.update(status="running", started_at=stamp, updated_at=stamp, progress=0)
        self._touch_session(session_id, status="running")
        self._poke()
        return run

    def add_message(self, session_id: str, role: str, content: Json) -> int:
        """Store one callback `new_message`; its id. -1 when the session is canceled (a
        callback after a cancel is ignored, as on the real backend)."""
        if self.sessions[session_id]["status"] == "canceled":
            return -1
        stamp = self._clock.stamp()
        message_id = self._store_message(session_id, role, content, stamp)
        self._poke()
        return message_id

    def add_assistant_text(
        self, session_id: str, text: str, *, parent_tool_use_id: str | None = None
    ) -> int:
        content = {
            "_type": "AssistantMessage",
            "content": [{"_type": "TextBlock", "text": text}],
            "model": SDK_MODEL,
            "parent_tool_use_id": parent_tool_use_id,
        }
        return self.add_message(session_id, "assistant", content)

    def add_tool_use(self, session_id: str, name: str, tool_input: Json) -> int:
        block = {
            "_type": "ToolUseBlock",
            "id": f"toolu_{uuid.uuid4().hex[:12]}",
            "name": name,
            "input": tool_input,
        }
        content = {
            "_type": "AssistantMessage",
            "content": [block],
            "model": SDK_MODEL,
            "parent_tool_use_id": None,
        }
        return self.add_message(session_id, "assistant", content)

    def add_tool_result(self, session_id: str, tool_use_id: str, result: str) -> int:
        block = {
            "_type": "ToolResultBlock",
            "tool_use_id": tool_use_id,
            "content": result,
            "is_error": False,
        }
        content = {"_type": "UserMessage", "content": [block], "parent_tool_use_id": None}
        return self.add_message(session_id, "user", content)

    def add_system_init(self, session_id: str) -> int:
        sdk_id = self.sessions[session_id]["sdk_session_id"] or str(uuid.uuid4())
        data = {
            "type": "system",
            "subtype": "init",
            "session_id": sdk_id,
            "cwd": "/workspace",
            "model": SDK_MODEL,
            "tools": ["Read", "Write", "Bash"],
        }
        message_id = self.add_message(
            session_id, "system", {"_type": "SystemMessage", "subtype": "init", "data": data}
        )
        if message_id > 0 and self.sessions[session_id]["sdk_session_id"] != sdk_id:
            self._touch_session(session_id, sdk_session_id=sdk_id)
        return message_id

    def add_result(self, session_id: str, result_text: str, is_error: bool = False) -> int:
        """A ResultMessage (stored as role `assistant`); fills the run's `usage`."""
        session = self.sessions[session_id]
        usage = {"input_tokens": 10, "output_tokens": 20}
        content = {
            "_type": "ResultMessage",
            "subtype": "error_during_execution" if is_error else "success",
            "duration_ms": 1234,
            "duration_api_ms": 1000,
            "is_error": is_error,
            "num_turns": 1,
            "session_id": session["sdk_session_id"] or str(uuid.uuid4()),
            "total_cost_usd": 0.0012,
            "usage": usage,
            "result": result_text,
        }
        message_id = self.add_message(session_id, "assistant", content)
        run = self._active_run(session_id)
        if message_id > 0 and run is not None:
            run["usage"] = {
                "total_cost_usd": 0.0012,
                "total_duration_ms": 1234,
                "usage_json": usage,
            }
        return message_id

    def finish_run(
        self, session_id: str, status: str = "completed", error: str | None = None
    ) -> Json | None:
        """A terminal callback: sets the session and its latest active run."""
        if status not in TERMINAL:
            raise ValueError(f"not a terminal status: {status}")
        if self.sessions[session_id]["status"] == "canceled":
            return None
        run = self._active_run(session_id) or next(
            (r for r in reversed(self.runs[session_id]) if r["status"] == "queued"), None
        )
        stamp = self._clock.stamp()
        if run is not None:
            run.update(
                status=status,
                finished_at=stamp,
                updated_at=stamp,
                last_error=error if status == "failed" else None,
                progress=100 if status == "completed" else run["progress"],
            )
        self._touch_session(session_id, status=status)
        self._poke()
        return run

    def set_state_patch(self, session_id: str, state_patch: Json | None) -> None:
        """A callback's state_patch: `updated_at` moves only when it differs."""
        if self.sessions[session_id]["state_patch"] != state_patch:
            self._touch_session(session_id, state_patch=state_patch)
        self._poke()

    def add_question(
        self,
        session_id: str,
        question: str,
        options: list[str | tuple[str, str]],
        *,
        header: str = "",
        multi_select: bool = False,
        expires_in: float = 60.0,
    ) -> str:
        """An AskUserQuestion request with one question, in the executor's exact shape."""
        choices = [(o, "") if isinstance(o, str) else o for o in options]
        tool_input = {
            "questions": [
                {
                    "question": question,
                    "header": header,
                    "multiSelect": multi_select,
                    "options": [{"label": label, "description": text} for label, text in choices],
                }
            ]
        }
        return self.add_input_request(
            session_id, "AskUserQuestion", tool_input, expires_in=expires_in
        )

    def add_input_request(
        self, session_id: str, tool_name: str, tool_input: Json, *, expires_in: float = 60.0
    ) -> str:
        now = self._clock.now()
        request_id = str(uuid.uuid4())
        self.input_requests[request_id] = {
            "id": request_id,
            "session_id": session_id,
            "tool_name": tool_name,
            "tool_input": tool_input,
            "status": "pending",
            "answers": None,
            "expires_at": iso(now + timedelta(seconds=expires_in)),
            "answered_at": None,
            "created_at": iso(now),
            "updated_at": iso(now),
        }
        self._poke()
        return request_id

    def answer_from_web(self, request_id: str, answers: dict[str, str]) -> Json:
        """Answer as the web UI would (same rules as the HTTP endpoint)."""
        try:
            return self._answer(request_id, answers)
        finally:
            self._poke()

    def expire_request(self, request_id: str) -> None:
        """What the executor's polling does once the time is up."""
        request = self.input_requests[request_id]
        request.update(status="expired", updated_at=self._clock.stamp())
        self._poke()

    # -- state helpers -------------------------------------------------------------------

    def _new_session(self, user_id: str, title: str | None, kind: str, stamp: str) -> str:
        session_id = str(uuid.uuid4())
        self.sessions[session_id] = {
            "session_id": session_id,
            "user_id": user_id,
            "project_id": None,
            "sdk_session_id": None,
            "title": title,
            "config_snapshot": {
                "mcp_server_ids": [],
                "skill_ids": [],
                "plugin_ids": [],
                "subagent_ids": [],
            },
            "workspace_archive_url": None,
            "state_patch": None,
            "workspace_export_status": None,
            "status": "pending",
            "created_at": stamp,
            "updated_at": stamp,
            "kind": kind,
        }
        self.runs[session_id] = []
        self.messages[session_id] = []
        return session_id

    def _new_run(
        self, session_id: str, message_id: int, stamp: str, permission_mode: str = "default"
    ) -> Json:
        run = {
            "run_id": str(uuid.uuid4()),
            "session_id": session_id,
            "user_message_id": message_id,
            "status": "queued",
            "permission_mode": permission_mode,
            "progress": 0,
            "schedule_mode": "immediate",
            "scheduled_task_id": None,
            "scheduled_at": stamp,
            "config_snapshot": self.sessions[session_id]["config_snapshot"],
            "claimed_by": None,
            "lease_expires_at": None,
            "attempts": 0,
            "last_error": None,
            "started_at": None,
            "finished_at": None,
            "created_at": stamp,
            "updated_at": stamp,
            "usage": None,
        }
        self.runs[session_id].append(run)
        return run

    def _add_user_prompt(self, session_id: str, prompt: str, stamp: str) -> int:
        content = {
            "_type": "UserMessage",
            "content": [{"_type": "TextBlock", "text": prompt}],
            "parent_tool_use_id": None,
        }
        return self._store_message(session_id, "user", content, stamp)

    def _store_message(self, session_id: str, role: str, content: Json, stamp: str) -> int:
        message_id = self._next_message_id
        self._next_message_id += 1
        self.messages[session_id].append(
            {
                "id": message_id,
                "role": role,
                "content": content,
                "text_preview": _text_preview(content),
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
        return message_id

    def _touch_session(self, session_id: str, **changes: Any) -> None:
        self.sessions[session_id].update(changes, updated_at=self._clock.stamp())

    def _active_run(self, session_id: str) -> Json | None:
        runs = self.runs[session_id]
        return next((r for r in reversed(runs) if r["status"] in ACTIVE_RUN), None)

    def _answer(self, request_id: str, answers: dict[str, str], user_id: str | None = None) -> Json:
        request = self.input_requests.get(request_id)
        if request is None:
            raise AppError(40400, f"User input request not found: {request_id}")
        if user_id is not None:
            self._owned_session(request["session_id"], user_id)
        if request["status"] != "pending":
            raise AppError(40000, f"Request is not pending: {request['status']}")
        now = self._clock.now()
        if _parse_iso(request["expires_at"]) <= now:
            request.update(status="expired", updated_at=iso(now))
            raise AppError(40000, "Request expired")
        request.update(
            status="answered", answers=dict(answers), answered_at=iso(now), updated_at=iso(now)
        )
        return request

    def _owned_session(self, session_id: str, user_id: str) -> Json:
        session = self.sessions.get(session_id)
        if session is None:
            raise AppError(40400, f"Session not found: {session_id}")
        if session["user_id"] != user_id:
            raise AppError(40300, "Session does not belong to the user")
        return session

    def _poke(self) -> None:
        """Wake `wait_for` callers after a synchronous change."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._notify())
        self._notifiers.add(task)
        task.add_done_callback(self._notifiers.discard)

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    # -- HTTP plumbing -------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(f"{BASE}/health", self._health)
        r.add_post(f"{BASE}/tasks", self._post_task)
        r.add_get(f"{BASE}/sessions", self._list_sessions)
        r.add_get(f"{BASE}/sessions/{{session_id}}", self._get_session)
        r.add_get(f"{BASE}/sessions/{{session_id}}/state", self._get_state)
        r.add_get(f"{BASE}/sessions/{{session_id}}/messages", self._get_messages)
        r.add_get(f"{BASE}/sessions/{{session_id}}/messages-with-files", self._get_messages_files)
        r.add_post(f"{BASE}/sessions/{{session_id}}/cancel", self._cancel)
        r.add_get(f"{BASE}/runs/session/{{session_id}}", self._list_runs)
        r.add_get(f"{BASE}/user-input-requests", self._list_input_requests)
        r.add_post(f"{BASE}/user-input-requests/{{request_id}}/answer", self._post_answer)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        call = await self._record(request)
        try:
            if self._delay:
                await asyncio.sleep(self._delay)
            failure = self._take_failure(call)
            if failure is not None:
                return failure
            return await self._dispatch(request, handler)
        finally:
            await self._notify()

    async def _dispatch(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except AppError as exc:
            return _envelope_error(exc.http, exc.code, exc.message)
        except Invalid as exc:
            return web.json_response({"detail": exc.errors}, status=422)
        except web.HTTPNotFound:
            return web.json_response({"detail": "Not Found"}, status=404)
        except web.HTTPMethodNotAllowed:
            return web.json_response({"detail": "Method Not Allowed"}, status=405)
        except Exception:  # the real backend's catch-all handler
            return _envelope_error(500, 50000, "Internal server error")

    async def _record(self, request: web.Request) -> Call:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        call = Call(request.method, request.path, dict(request.query), body, dict(request.headers))
        self.requests.append(call)
        return call

    def _take_failure(self, call: Call) -> web.Response | None:
        for failure in self._failures:
            if failure.path_prefix is None or call.matches(failure.path_prefix):
                failure.count -= 1
                if failure.count <= 0:
                    self._failures.remove(failure)
                return _failure_response(failure)
        return None

    # -- handlers ------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return _ok({"service": "OpenCoWork Backend", "status": "healthy"})

    async def _post_task(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        prompt = _string_field(body, "prompt")
        raw_id = body.get("session_id")
        session_id = None if raw_id is None else _as_uuid(raw_id, ["body", "session_id"])
        mode = body.get("permission_mode") or "default"
        if mode not in PERMISSION_MODES:
            raise AppError(40000, f"Invalid permission_mode: {mode}")
        if not prompt.strip():
            raise AppError(40000, "Prompt cannot be empty")
        user = _user(request)
        stamp = self._clock.stamp()
        if session_id is None:
            session_id = self._new_session(user, None, "chat", stamp)
        else:
            self._owned_session(session_id, user)
            self.sessions[session_id].update(status="pending", state_patch=None, updated_at=stamp)
        run = self._new_run(
            session_id, self._add_user_prompt(session_id, prompt, stamp), stamp, mode
        )
        posted = PostedTask(body)
        posted.at = self.requests[-1].at if self.requests else time.monotonic()
        self.tasks_posted.append(posted)
        data = {"session_id": session_id, "run_id": run["run_id"], "status": "queued"}
        return _ok(data, "Task enqueued successfully")

    async def _list_sessions(self, request: web.Request) -> web.Response:
        limit = _int_query(request, "limit", 100)
        offset = _int_query(request, "offset", 0)
        if limit < 0 or offset < 0:
            raise RuntimeError("LIMIT must not be negative")
        kind = request.query.get("kind", "chat")
        project = request.query.get("project_id")
        user = _user(request)
        rows = [
            s
            for s in self.sessions.values()
            if s["user_id"] == user
            and (kind in ("", "all") or s["kind"] == kind)
            and (project is None or s["project_id"] == project)
        ]
        ranked = sorted(enumerate(rows), key=lambda p: (p[1]["created_at"], p[0]), reverse=True)
        return _ok([_public_session(s) for _, s in ranked[offset : offset + limit]])

    async def _get_session(self, request: web.Request) -> web.Response:
        return _ok(_public_session(self._session_of(request)))

    async def _get_state(self, request: web.Request) -> web.Response:
        s = self._session_of(request)
        keys = ("session_id", "status", "state_patch", "workspace_export_status", "updated_at")
        return _ok({k: s[k] for k in keys})

    async def _get_messages(self, request: web.Request) -> web.Response:
        session = self._session_of(request)
        items = self.messages[session["session_id"]][:MESSAGES_LIMIT]
        return _ok([dict(m) for m in items])

    async def _get_messages_files(self, request: web.Request) -> web.Response:
        session = self._session_of(request)
        items = self.messages[session["session_id"]][:MESSAGES_WITH_FILES_LIMIT]
        return _ok([{**m, "attachments": []} for m in items])

    async def _list_runs(self, request: web.Request) -> web.Response:
        session = self._session_of(request)
        limit = _int_query(request, "limit", 100)
        offset = _int_query(request, "offset", 0)
        if limit < 0 or offset < 0:
            raise RuntimeError("LIMIT must not be negative")
        runs = sorted(
            self.runs[session["session_id"]], key=lambda r: (r["scheduled_at"], r["created_at"])
        )
        return _ok([dict(r) for r in runs[offset : offset + limit]])

    async def _cancel(self, request: web.Request) -> web.Response:
        session = self._session_of(request)
        if request.can_read_body:
            await _json_object(request)
        session_id = session["session_id"]
        stamp = self._clock.stamp()
        canceled = 0
        for run in self.runs[session_id]:
            if run["status"] in UNFINISHED_RUN:
                run.update(status="canceled", finished_at=stamp, updated_at=stamp)
                canceled += 1
        expired = 0
        for item in self.input_requests.values():
            if item["session_id"] == session_id and item["status"] == "pending":
                item.update(status="expired", updated_at=stamp)
                expired += 1
        session.update(status="canceled", updated_at=stamp)
        return _ok(
            {
                "session_id": session_id,
                "status": "canceled",
                "canceled_runs": canceled,
                "expired_user_input_requests": expired,
                "executor_cancelled": False,
            }
        )

    async def _list_input_requests(self, request: web.Request) -> web.Response:
        raw = request.query.get("session_id")
        wanted = None if raw is None else _as_uuid(raw, ["query", "session_id"])
        user = _user(request)
        items = [
            dict(r)
            for r in self.input_requests.values()
            if r["status"] == "pending"
            and (wanted is None or r["session_id"] == wanted)
            and self.sessions.get(r["session_id"], {}).get("user_id") == user
        ]
        items.sort(key=lambda r: r["created_at"])
        return _ok(items)

    async def _post_answer(self, request: web.Request) -> web.Response:
        request_id = _as_uuid(request.match_info["request_id"], ["path", "request_id"])
        body = await _json_object(request)
        if "answers" not in body:
            raise Invalid(_missing("answers", body))
        answers = body["answers"]
        if not isinstance(answers, dict):
            raise Invalid(
                {
                    "type": "dict_type",
                    "loc": ["body", "answers"],
                    "msg": "Input should be a valid dictionary",
                    "input": answers,
                }
            )
        bad = [(k, v) for k, v in answers.items() if not isinstance(v, str)]
        if bad:
            raise Invalid(*(_string_error(["body", "answers", k], v) for k, v in bad))
        return _ok(dict(self._answer(request_id, answers, _user(request))))

    def _session_of(self, request: web.Request) -> Json:
        session_id = _as_uuid(request.match_info["session_id"], ["path", "session_id"])
        return self._owned_session(session_id, _user(request))


def _takes_arg(predicate: Callable[..., bool]) -> bool:
    try:
        params = inspect.signature(predicate).parameters.values()
    except (TypeError, ValueError):
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(p.kind in kinds and p.default is p.empty for p in params)


def _user(request: web.Request) -> str:
    return request.headers.get("X-User-Id", "").strip() or "default"


def _missing(name: str, body: Any) -> Json:
    return {"type": "missing", "loc": ["body", name], "msg": "Field required", "input": body}


def _string_error(loc: list[Any], value: Any) -> Json:
    return {
        "type": "string_type",
        "loc": loc,
        "msg": "Input should be a valid string",
        "input": value,
    }


def _string_field(body: Json, name: str) -> str:
    if name not in body:
        raise Invalid(_missing(name, body))
    value = body[name]
    if not isinstance(value, str):
        raise Invalid(_string_error(["body", name], value))
    return value


async def _json_object(request: web.Request) -> Json:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else None
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


def _public_session(session: Json) -> Json:
    return {k: v for k, v in session.items() if k != "kind"}


def _failure_response(failure: _Failure) -> web.Response:
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


async def _trace_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["x-request-id"] = uuid.uuid4().hex
    response.headers["x-trace-id"] = uuid.uuid4().hex
