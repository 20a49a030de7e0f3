"""The user routes both generations have, and the old generation's POST /tasks and cancel."""

from __future__ import annotations

from aiohttp import web

from tests.fakes.poco.state import PocoState
from tests.fakes.poco.wire import (
    CURRENT_USER,
    MESSAGES_LIMIT,
    MESSAGES_WITH_FILES_LIMIT,
    PERMISSION_MODES,
    UNFINISHED_RUN,
    AppError,
    Invalid,
    Json,
    as_uuid,
    int_query,
    json_object,
    missing,
    ok,
    path_uuid,
    string_error,
    string_field,
)


class Routes(PocoState):
    async def _health(self, request: web.Request) -> web.Response:
        return ok({"service": "OpenCoWork Backend", "status": "healthy"})

    def _enqueue(self, body: Json, user: str) -> Json:
        """98d6fb0f TaskService.enqueue_task: a follow-up always adds a run."""
        prompt = string_field(body, "prompt")
        raw_id = body.get("session_id")
        session_id = None if raw_id is None else as_uuid(raw_id, ["body", "session_id"])
        mode = body.get("permission_mode") or "default"
        if mode not in PERMISSION_MODES:
            raise AppError(40000, f"Invalid permission_mode: {mode}")
        if not prompt.strip():
            raise AppError(40000, "Prompt cannot be empty")
        stamp = self._clock.stamp()
        if session_id is None:
            session_id = self._new_session(user, None, "chat", stamp)
        else:
            self._owned_session(session_id, user)
            self.sessions[session_id].update(status="pending", state_patch=None, updated_at=stamp)
        run = self._new_run(
            session_id, self._add_user_prompt(session_id, prompt, stamp), stamp, mode
        )
        return {"session_id": session_id, "run_id": run["run_id"], "status": "queued"}

    async def _list_sessions(self, request: web.Request) -> web.Response:
        limit = int_query(request, "limit", 100)
        offset = int_query(request, "offset", 0)
        if limit < 0 or offset < 0:
            raise RuntimeError("LIMIT must not be negative")
        kind = request.query.get("kind", "chat").strip().lower()
        project = request.query.get("project_id")
        user = CURRENT_USER.get()
        rows = [
            s
            for s in self.sessions.values()
            if s["user_id"] == user
            and (kind in ("", "all") or s["kind"] == kind)
            and (project is None or s["project_id"] == project)
        ]
        ranked = sorted(enumerate(rows), key=lambda p: (p[1]["created_at"], p[0]), reverse=True)
        page = [self._public_session(s) for _, s in ranked[offset : offset + limit]]
        return ok(page, "Sessions retrieved successfully")

    async def _get_session(self, request: web.Request) -> web.Response:
        return ok(self._public_session(self._session_of(request)), "Session retrieved successfully")

    async def _get_state(self, request: web.Request) -> web.Response:
        state = self._public_state(self._session_of(request))
        return ok(state, "Session state retrieved successfully")

    async def _get_messages(self, request: web.Request) -> web.Response:
        session = self._session_of(request)
        items = self.messages[session["session_id"]][:MESSAGES_LIMIT]
        return ok([dict(m) for m in items], "Messages retrieved successfully")

    async def _get_messages_files(self, request: web.Request) -> web.Response:
        session = self._session_of(request)
        items = self.messages[session["session_id"]][:MESSAGES_WITH_FILES_LIMIT]
        return ok([{**m, "attachments": []} for m in items], "Messages retrieved successfully")

    async def _list_runs(self, request: web.Request) -> web.Response:
        session = self._session_of(request)
        limit = int_query(request, "limit", 100)
        offset = int_query(request, "offset", 0)
        if limit < 0 or offset < 0:
            raise RuntimeError("LIMIT must not be negative")
        runs = sorted(
            self.runs[session["session_id"]], key=lambda r: (r["scheduled_at"], r["created_at"])
        )
        page = [self._public_run(r) for r in runs[offset : offset + limit]]
        return ok(page, "Runs retrieved successfully")

    async def _cancel(self, request: web.Request) -> web.Response:
        await json_object(request)  # `{}` at least: both generations want a body
        session = self._session_of(request)
        session_id = session["session_id"]
        stamp = self._clock.stamp()
        canceled = 0
        for run in self.runs[session_id]:
            if run["status"] in UNFINISHED_RUN:
                run.update(status="canceled", finished_at=stamp, updated_at=stamp)
                canceled += 1
        expired = self._expire_pending_requests(session_id, stamp)
        session.update(status="canceled", updated_at=stamp)
        data = {
            "session_id": session_id,
            "status": "canceled",
            "canceled_runs": canceled,
            "expired_user_input_requests": expired,
            "executor_cancelled": False,
        }
        return ok(data, "Session canceled successfully")

    def _expire_pending_requests(self, session_id: str, stamp: str) -> int:
        expired = 0
        for item in self.input_requests.values():
            if item["session_id"] == session_id and item["status"] == "pending":
                item.update(status="expired", updated_at=stamp)
                if self.is_new:  # 619c546b also moves expires_at to the cancel time
                    item["expires_at"] = stamp
                expired += 1
        return expired

    async def _list_input_requests(self, request: web.Request) -> web.Response:
        raw = request.query.get("session_id")
        wanted = None if raw is None else as_uuid(raw, ["query", "session_id"])
        user = CURRENT_USER.get()
        items = [
            dict(r)
            for r in self.input_requests.values()
            if r["status"] == "pending"
            and (wanted is None or r["session_id"] == wanted)
            and self.sessions.get(r["session_id"], {}).get("user_id") == user
        ]
        items.sort(key=lambda r: r["created_at"])
        return ok(items, "User input requests retrieved")

    async def _post_answer(self, request: web.Request) -> web.Response:
        request_id = path_uuid(request, "request_id")
        body = await json_object(request)
        if "answers" not in body:
            raise Invalid(missing("answers", body))
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
            raise Invalid(*(string_error(["body", "answers", k], v) for k, v in bad))
        answered = dict(self._answer(request_id, answers, CURRENT_USER.get()))
        return ok(answered, "User input request answered")

    def _session_of(self, request: web.Request) -> Json:
        return self._owned_session(path_uuid(request, "session_id"), CURRENT_USER.get())
