"""FakePoco: the aiohttp server around the state, with auth, recording and fault controls."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiohttp import web

from tests.fakes.poco.executor import ExecutorSide
from tests.fakes.poco.files import S3_PREFIX, FileRoutes
from tests.fakes.poco.routes_new import NewRoutes
from tests.fakes.poco.wire import (
    BASE,
    CURRENT_CALL,
    CURRENT_USER,
    DEFAULT_INTERNAL_TOKEN,
    GEN_OLD,
    AppError,
    Call,
    Failure,
    Handler,
    Invalid,
    Json,
    PostedTask,
    decode_json,
    envelope_error,
    failure_response,
    http_status,
    json_object,
    ok,
    trace_headers,
)

AUTH_MODES = ("oauth_required", "single_user")  # the backend's AUTH_MODE
SINGLE_USER_ID = "default"  # SINGLE_USER_ID's default
PUBLIC_ROUTES = (f"{BASE}/health",)  # every other route is a user route
SESSION = f"{BASE}/sessions/{{session_id}}"
QUEUED = f"{SESSION}/queued-queries"


class FakePoco(FileRoutes, NewRoutes, ExecutorSide):
    """A fake Poco backend of one generation: `GEN_OLD` (98d6fb0f, the default) or
    `GEN_NEW` (619c546b). The new one wants `X-Internal-Token: <internal_token>` plus a
    non-empty `X-User-Id` on every user route; with `auth_mode="single_user"` a request
    without them is the user `default` instead of a 401."""

    def __init__(
        self,
        *,
        generation: str = GEN_OLD,
        internal_token: str = DEFAULT_INTERNAL_TOKEN,
        auth_mode: str = "oauth_required",
        default_expires_in: float = 60.0,
    ) -> None:
        super().__init__(generation=generation, default_expires_in=default_expires_in)
        if auth_mode not in AUTH_MODES:
            raise ValueError(f"unknown auth_mode {auth_mode!r}; one of {AUTH_MODES}")
        self.internal_token = internal_token
        self.auth_mode = auth_mode
        self.tasks_held = 0  # POST /tasks requests waiting at the hold
        self._hold_before_create = False
        self._gate = asyncio.Event()
        self._gate.set()
        self._held: set[asyncio.Task[Any]] = set()
        self._failures: list[Failure] = []
        self._delay = 0.0
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving; after a `stop()` it comes back on the same port with its state."""
        app = web.Application(middlewares=[self._middleware])
        self._routes(app)
        app.on_response_prepare.append(trace_headers)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port, reuse_address=True)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop serving. A POST /tasks still held is cut off (its connection drops); what
        it already created stays. Holding ends."""
        for task in list(self._held):
            task.cancel()
        self._gate.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._drain_notifiers()

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

    def count_by_route(self, since: float | None = None) -> Counter[str]:
        """Recorded requests per route, keyed `METHOD /template` without /api/v1, e.g.
        `GET /sessions/{session_id}/messages/delta`; `most_common()` gives the top ones."""
        return Counter(c.route_key for c in self.requests if since is None or c.at >= since)

    # -- fault and timing controls -------------------------------------------------------

    def fail_next(
        self, status: int, *, count: int = 1, path_prefix: str | None = None, body: Any = None
    ) -> None:
        """Answer the next `count` requests (matching `path_prefix`) with `status` and `body`
        instead of handling them. `body` may be a dict (JSON) or a str (sent as text/html)."""
        self._failures.append(Failure(status, count, path_prefix, body))

    def set_delay(self, seconds: float) -> None:
        """Make every request wait this long before it is handled (a slow backend)."""
        self._delay = seconds

    def hold_tasks(self, *, create: bool = True) -> None:
        """Hold every POST /tasks that arrives from now on: it is recorded and validated,
        and its answer waits for `release_tasks()`. With `create` the task is created first
        (the backend has the prompt, the client has no answer); without it, nothing is
        created until the release (a backend that takes that long to commit). While held,
        `tasks_held` counts the waiting requests."""
        self._hold_before_create = not create
        self._gate.clear()

    def release_tasks(self) -> None:
        """Let held POST /tasks requests go on (create if not yet, then answer)."""
        self._gate.set()

    # -- the web UI ----------------------------------------------------------------------

    def post_task_from_web(
        self,
        prompt: str,
        session_id: str | None = None,
        *,
        user_id: str = "default",
        client_request_id: str | None = None,
    ) -> Json:
        """A task typed in Poco's web UI (not recorded in `tasks_posted`): the POST /tasks
        answer's data, by the same rules as the HTTP route."""
        body = {"prompt": prompt, "session_id": session_id, "client_request_id": client_request_id}
        try:
            return self._enqueue(body, user_id)
        finally:
            self._poke()

    def send_queued_now_sync(self, session_id: str) -> Json:
        """The web UI's "send now" on the oldest waiting query (a failed run paused the
        queue): with no run in the way it becomes a run at once; returns the item."""
        item = self._active_items(session_id)[0]
        item.update(status="queued", updated_at=self._clock.stamp())
        if self._blocking_run(session_id) is None:
            self._promote_item(session_id, item)
        self._poke()
        return item

    # -- HTTP plumbing -------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(f"{BASE}/health", self._health)
        r.add_post(f"{BASE}/tasks", self._post_task)
        r.add_get(f"{BASE}/sessions", self._list_sessions)
        r.add_get(SESSION, self._get_session)
        r.add_get(f"{SESSION}/state", self._get_state)
        r.add_get(f"{SESSION}/messages", self._get_messages)
        r.add_get(f"{SESSION}/messages-with-files", self._get_messages_files)
        r.add_post(f"{SESSION}/cancel", self._cancel)
        r.add_get(f"{BASE}/runs/session/{{session_id}}", self._list_runs)
        r.add_get(f"{BASE}/user-input-requests", self._list_input_requests)
        r.add_post(f"{BASE}/user-input-requests/{{request_id}}/answer", self._post_answer)
        self._file_routes(app)
        if not self.is_new:
            return
        r.add_get(f"{SESSION}/messages/delta", self._messages_delta)
        r.add_get(f"{SESSION}/messages-with-files/delta", self._messages_files_delta)
        r.add_get(QUEUED, self._list_queued)
        r.add_patch(f"{QUEUED}/{{item_id}}", self._patch_queued)
        r.add_delete(f"{QUEUED}/{{item_id}}", self._delete_queued)
        r.add_post(f"{QUEUED}/{{item_id}}/send-now", self._send_now)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(S3_PREFIX):  # the object store, not the API
            return await handler(request)
        call = await self._record(request)
        CURRENT_CALL.set(call)
        try:
            if self._delay:
                await asyncio.sleep(self._delay)
            failure = self._take_failure(call)
            if failure is not None:
                return failure
            response = await self._dispatch(request, handler)
            if isinstance(response, web.Response) and response.body is not None:
                call.response_bytes = len(bytes(response.body))  # type: ignore[arg-type]
            return response
        finally:
            await self._notify()

    async def _dispatch(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.match_info.http_exception is None:
                CURRENT_USER.set(await self._authenticate(request))
            return await handler(request)
        except AppError as exc:
            return envelope_error(http_status(exc.code, self.generation), exc.code, exc.message)
        except Invalid as exc:
            return web.json_response({"detail": exc.errors}, status=422)
        except web.HTTPNotFound:
            return web.json_response({"detail": "Not Found"}, status=404)
        except web.HTTPMethodNotAllowed:
            return web.json_response({"detail": "Method Not Allowed"}, status=405)
        except asyncio.CancelledError:
            raise
        except Exception:  # the real backend's catch-all handler
            return envelope_error(500, 50000, "Internal server error")

    async def _authenticate(self, request: web.Request) -> str:
        """The caller's user id. Old generation: `X-User-Id`, blank means `default`. New
        generation (619c546b core/deps.py): a session cookie or bearer token wins (this fake
        knows none, so 401), else a valid internal token with a non-empty `X-User-Id`, else
        the single user in `single_user` mode."""
        user = request.headers.get("X-User-Id", "").strip()
        if not self.is_new:
            return user or "default"
        if request.path in PUBLIC_ROUTES:
            return user
        if request.body_exists and not _is_form(request):
            decode_json(await request.read())  # FastAPI decodes the body before auth
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        bearer = scheme.lower() == "bearer" and token.strip()
        if request.cookies.get("poco_session") or bearer:
            raise AppError(401, "Authentication required")
        given = request.headers.get("X-Internal-Token")
        if self.internal_token and given == self.internal_token and user:
            return user
        if self.auth_mode == "single_user":
            return SINGLE_USER_ID
        raise AppError(401, "Authentication required")

    async def _record(self, request: web.Request) -> Call:
        # A form (an upload) is streamed to its route, never recorded whole.
        raw = b"" if _is_form(request) else await request.read()
        try:
            body = decode_json(raw)
        except Invalid:
            body = raw.decode(errors="replace")
        resource = request.match_info.route.resource
        template = resource.canonical.removeprefix(BASE) if resource is not None else ""
        call = Call(
            request.method,
            request.path,
            dict(request.query),
            body,
            dict(request.headers),
            template=template,
        )
        self.requests.append(call)
        return call

    def _take_failure(self, call: Call) -> web.Response | None:
        for failure in self._failures:
            if failure.path_prefix is None or call.matches(failure.path_prefix):
                failure.count -= 1
                if failure.count <= 0:
                    self._failures.remove(failure)
                return failure_response(failure)
        return None

    async def _post_task(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        if self._hold_before_create:
            await self._hold()
        data = self._enqueue(body, CURRENT_USER.get())
        posted = PostedTask(body)
        posted.at = CURRENT_CALL.get().at
        self.tasks_posted.append(posted)
        if not self._hold_before_create:
            await self._hold()
        return ok(data, "Task enqueued successfully")

    async def _hold(self) -> None:
        if self._gate.is_set():
            return
        task = asyncio.current_task()
        assert task is not None
        self._held.add(task)
        self.tasks_held += 1
        await self._notify()
        try:
            await self._gate.wait()
        finally:
            self._held.discard(task)
            self.tasks_held -= 1
            self._poke()


def _is_form(request: web.Request) -> bool:
    return request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded")
