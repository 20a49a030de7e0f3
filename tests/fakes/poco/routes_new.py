"""The new generation's routes and rules (poco-agent 619c546b): POST /tasks with queued
queries and `client_request_id`, cancel through `canceling`, the message delta routes and
the queued-query routes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes.poco.routes import Routes
from tests.fakes.poco.wire import (
    CURRENT_USER,
    PERMISSION_MODES,
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
)

DELTA_DEFAULT_LIMIT = 200
DELTA_MAX_LIMIT = 1000
PER_RUN_CONFIG = ("input_files", "mcp_config", "skill_config", "plugin_config")
ID_LISTS = ("mcp_server_ids", "skill_ids", "plugin_ids", "subagent_ids")


class NewRoutes(Routes):
    # -- POST /tasks ---------------------------------------------------------------------

    def _enqueue(self, body: Json, user: str) -> Json:
        if not self.is_new:
            return super()._enqueue(body, user)
        fields = _task_fields(body)
        schedule_mode = fields["schedule_mode"].strip()
        if not schedule_mode:
            raise AppError(40000, "schedule_mode cannot be empty")
        prompt = fields["prompt"].strip()
        if not prompt:
            raise AppError(40000, "Prompt cannot be empty")
        mode = fields["permission_mode"].strip() or "default"
        if mode not in PERMISSION_MODES:
            raise AppError(40000, f"Invalid permission_mode: {mode}")
        request_id = (fields["client_request_id"] or "").strip() or None
        session_id, config = fields["session_id"], fields["config"]
        if session_id is None:
            session_id = self._new_session(user, None, "chat", self._clock.stamp())
            run = self._materialize_run(session_id, prompt, mode, _run_snapshot({}, config))
            return self._run_answer(session_id, run)
        session = self._owned_session(session_id, user)
        if session["status"] == "canceling":
            raise AppError(40000, "Session cancellation is still in progress")
        if schedule_mode != "immediate" or session["kind"] != "chat":
            snapshot = _run_snapshot(session["config_snapshot"], config)
            return self._run_answer(
                session_id, self._materialize_run(session_id, prompt, mode, snapshot)
            )
        earlier = self._answer_again(session_id, request_id)
        if earlier is not None:
            return earlier
        if self._blocking_run(session_id) is None:
            snapshot = _run_snapshot(session["config_snapshot"], config)
            return self._run_answer(
                session_id, self._materialize_run(session_id, prompt, mode, snapshot)
            )
        active = self._active_items(session_id)
        base = active[-1]["run_config_snapshot"] if active else session["config_snapshot"]
        items = self.queue_items[session_id]
        if request_id is not None and any(i["client_request_id"] == request_id for i in items):
            # a canceled item keeps its id: the real insert fails on the unique key (a 500)
            raise RuntimeError("duplicate key value violates unique constraint")
        item = self._enqueue_item(session_id, prompt, mode, _run_snapshot(base, config), request_id)
        return self._queued_answer(item)

    def _answer_again(self, session_id: str, request_id: str | None) -> Json | None:
        """619c546b SessionQueueService.get_existing_enqueue_response: only queued queries
        remember their client_request_id."""
        if request_id is None:
            return None
        items = self.queue_items[session_id]
        item = next((i for i in items if i["client_request_id"] == request_id), None)
        if item is None:
            return None
        if item["status"] in ("queued", "paused"):
            return self._queued_answer(item)
        if item["status"] == "promoted" and item["linked_run_id"]:
            run = next(r for r in self.runs[session_id] if r["run_id"] == item["linked_run_id"])
            return self._run_answer(session_id, run)
        return None

    def _run_answer(self, session_id: str, run: Json) -> Json:
        return {
            "session_id": session_id,
            "accepted_type": "run",
            "run_id": run["run_id"],
            "queue_item_id": None,
            "status": run["status"],
            "queued_query_count": len(self._active_items(session_id)),
        }

    def _queued_answer(self, item: Json) -> Json:
        return {
            "session_id": item["session_id"],
            "accepted_type": "queued_query",
            "run_id": None,
            "queue_item_id": item["queue_item_id"],
            "status": item["status"],
            "queued_query_count": len(self._active_items(item["session_id"])),
        }

    # -- cancel --------------------------------------------------------------------------

    async def _cancel(self, request: web.Request) -> web.Response:
        if not self.is_new:
            return await super()._cancel(request)
        await json_object(request)
        data = self._cancel_new(self._session_of(request))
        return ok(data, "Session cancellation requested successfully")

    def _cancel_new(self, session: Json) -> Json:
        """619c546b SessionService.cancel_session: queued runs are canceled at once; a
        claimed or running run leaves the session `canceling` until the executor-manager
        reports back (`complete_cancellation`)."""
        session_id = session["session_id"]
        stamp = self._clock.stamp()
        unfinished = [
            r
            for r in self.runs[session_id]
            if r["status"] in ("queued", "claimed", "running", "canceling")
        ]
        active = [r for r in reversed(unfinished) if r["status"] != "queued"]
        canceled_runs = 0
        for run in unfinished:
            if run["status"] == "queued":
                run.update(
                    status="canceled",
                    finished_at=stamp,
                    claimed_by=None,
                    lease_expires_at=None,
                    updated_at=stamp,
                )
                canceled_runs += 1
            elif run["status"] != "canceling":
                run.update(status="canceling", updated_at=stamp)
        canceled_items = self._set_items(session_id, ("queued", "paused"), "canceled")
        expired = self._expire_pending_requests(session_id, stamp)
        pending = session["status"] == "canceling"
        needs_executor = (
            bool(active)
            or pending
            or (not unfinished and session["status"] in ("pending", "running"))
        )
        if needs_executor:
            if not pending:
                workers = [r["claimed_by"] for r in active if r["claimed_by"]]
                session["cancel_target_worker_id"] = workers[0] if workers else None
            self._touch_session(session_id, status="canceling")
        else:
            session["cancel_target_worker_id"] = None
            self._touch_session(session_id, status="canceled")
        return {
            "session_id": session_id,
            "status": session["status"],
            "canceled_runs": canceled_runs,
            "canceled_queued_queries": canceled_items,
            "expired_user_input_requests": expired,
            "executor_cancel_status": "pending" if needs_executor else "not_required",
            "executor_cancel_target_worker_id": session.get("cancel_target_worker_id"),
            "executor_cancelled": False,
        }

    # -- message deltas ------------------------------------------------------------------

    async def _messages_delta(self, request: web.Request) -> web.Response:
        return ok(self._delta(request, with_files=False), "Messages delta retrieved successfully")

    async def _messages_files_delta(self, request: web.Request) -> web.Response:
        return ok(self._delta(request, with_files=True), "Messages delta retrieved successfully")

    def _delta(self, request: web.Request, *, with_files: bool) -> Json:
        """619c546b MessageService.get_messages_delta: id order, `limit + 1` fetched to
        tell `has_more`; the cursor stays where it was when nothing is new (null at 0)."""
        session_id = path_uuid(request, "session_id")
        after = int_query(request, "after_message_id", 0, ge=0)
        limit = int_query(request, "limit", DELTA_DEFAULT_LIMIT, ge=1, le=DELTA_MAX_LIMIT)
        self._owned_session(session_id, CURRENT_USER.get())
        newer = [m for m in self.messages[session_id] if m["id"] > after]
        items = [{**m, "attachments": []} if with_files else dict(m) for m in newer[:limit]]
        return {
            "items": items,
            "next_after_message_id": items[-1]["id"] if items else (after or None),
            "has_more": len(newer) > limit,
        }

    # -- queued queries ------------------------------------------------------------------

    async def _list_queued(self, request: web.Request) -> web.Response:
        session = self._session_of(request)
        items = self.queued_queries(session["session_id"])
        return ok(items, "Queued queries retrieved successfully")

    async def _patch_queued(self, request: web.Request) -> web.Response:
        session = self._session_of(request)
        item = self._queued_item(session["session_id"], path_uuid(request, "item_id"))
        body = await json_object(request)
        prompt, attachments = body.get("prompt"), body.get("attachments")
        if prompt is not None:
            if not isinstance(prompt, str):
                raise Invalid(string_error(["body", "prompt"], prompt))
            if not prompt.strip():
                raise AppError(40000, "Prompt cannot be empty")
            item["prompt"] = prompt.strip()
        if attachments is not None:
            snapshot = dict(item["run_config_snapshot"] or {})
            snapshot.pop("input_files", None)
            if attachments:
                snapshot["input_files"] = attachments
            item["run_config_snapshot"] = snapshot or None
        item["updated_at"] = self._clock.stamp()
        return ok(self._public_item(item), "Queued query updated successfully")

    async def _delete_queued(self, request: web.Request) -> web.Response:
        session = self._session_of(request)
        item = self._queued_item(session["session_id"], path_uuid(request, "item_id"))
        item.update(status="canceled", updated_at=self._clock.stamp())
        return ok(self._public_item(item), "Queued query deleted successfully")

    async def _send_now(self, request: web.Request) -> web.Response:
        """619c546b SessionQueueService.send_now: behind a blocking run the item moves to
        the head of the queue; otherwise it becomes a run at once."""
        session = self._session_of(request)
        session_id = session["session_id"]
        item = self._queued_item(session_id, path_uuid(request, "item_id"))
        active = self._active_items(session_id)
        item.update(status="queued", updated_at=self._clock.stamp())
        if self._blocking_run(session_id) is not None:
            if active[0] is not item:
                lowest = min(i["sequence_no"] for i in self.queue_items[session_id])
                item["sequence_no"] = lowest - 1
            return ok(self._queued_answer(item), "Queued query updated successfully")
        run = self._promote_item(session_id, item)
        return ok(self._run_answer(session_id, run), "Queued query updated successfully")

    def _queued_item(self, session_id: str, item_id: str) -> Json:
        for item in self._active_items(session_id):
            if item["queue_item_id"] == item_id:
                return item
        raise AppError(40400, f"Queued query not found: {item_id}")


def _task_fields(body: Json) -> dict[str, Any]:
    """TaskEnqueueRequest's validation: every error at once, as pydantic reports them."""
    errors: list[Json] = []
    fields: dict[str, Any] = {}
    if "prompt" not in body:
        errors.append(missing("prompt", body))
    for name, default in (
        ("prompt", ""),
        ("permission_mode", "default"),
        ("schedule_mode", "immediate"),
    ):
        value = body.get(name, default)
        if not isinstance(value, str):
            if name in body:
                errors.append(string_error(["body", name], value))
            value = default
        fields[name] = value
    request_id = body.get("client_request_id")
    if request_id is not None and not isinstance(request_id, str):
        errors.append(string_error(["body", "client_request_id"], request_id))
    fields["client_request_id"] = request_id if isinstance(request_id, str) else None
    raw_id = body.get("session_id")
    try:
        fields["session_id"] = None if raw_id is None else as_uuid(raw_id, ["body", "session_id"])
    except Invalid as exc:
        errors.extend(exc.errors)
    config = body.get("config")
    if config is not None and not isinstance(config, dict):
        errors.append(
            {
                "type": "model_type",
                "loc": ["body", "config"],
                "msg": "Input should be a valid dictionary or instance of TaskConfig",
                "input": config,
            }
        )
    fields["config"] = config if isinstance(config, dict) else None
    if errors:
        raise Invalid(*errors)
    return fields


def _run_snapshot(base: Json | None, config: Json | None) -> Json:
    """A cheap TaskService._build_config_snapshot: the base without per-run keys, the
    request's settings over it (a null removes a key), the id lists always present, the
    request's input_files on the run only."""
    merged = {k: v for k, v in (base or {}).items() if k not in PER_RUN_CONFIG}
    for key, value in (config or {}).items():
        if key in PER_RUN_CONFIG:
            continue
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    merged["memory_enabled"] = False  # the fake runs with MEM0_ENABLED off
    for key in ID_LISTS:
        if not isinstance(merged.get(key), list):
            merged[key] = []
    files = (config or {}).get("input_files")
    if isinstance(files, list) and files:
        merged["input_files"] = files
    return merged
