"""The fake Poco's data and the transitions both its HTTP side and its executor side share."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from tests.fakes.poco import shapes
from tests.fakes.poco.wire import (
    ACTIVE_RUN,
    GEN_NEW,
    GEN_OLD,
    GENERATIONS,
    AppError,
    Call,
    Clock,
    Json,
    PostedTask,
    iso,
    parse_iso,
)

# 619c546b: a run in one of these blocks the session (a follow-up is queued behind it);
# a `queued` run blocks too once it is due (fake runs are always due).
BLOCKING_RUN = ("running", "claimed", "canceling", "queued")
ACTIVE_ITEM = ("queued", "paused")
CLAIM_LEASE_SECONDS = 30
RUN_WORKSPACE_KEYS = (
    "workspace_archive_url",
    "workspace_files_prefix",
    "workspace_manifest_key",
    "workspace_archive_key",
    "workspace_export_status",
)


class PocoState:
    """Sessions, runs, messages, user-input requests and (new generation) queued queries."""

    def __init__(self, *, generation: str = GEN_OLD, default_expires_in: float = 60.0) -> None:
        if generation not in GENERATIONS:
            raise ValueError(f"unknown backend generation {generation!r}; one of {GENERATIONS}")
        self.generation = generation
        self.default_expires_in = default_expires_in
        self.sessions: dict[str, Json] = {}  # insertion order = creation order
        self.runs: dict[str, list[Json]] = {}  # session id -> runs, oldest first
        self.messages: dict[str, list[Json]] = {}  # session id -> messages, oldest first
        self.input_requests: dict[str, Json] = {}
        self.queue_items: dict[str, list[Json]] = {}  # session id -> queued queries, any status
        self.requests: list[Call] = []
        self.tasks_posted: list[PostedTask] = []
        self._next_message_id = 1
        self._clock = Clock()
        self._cond = asyncio.Condition()
        self._notifiers: set[asyncio.Task[None]] = set()

    @property
    def is_new(self) -> bool:
        return self.generation == GEN_NEW

    # -- inspection ----------------------------------------------------------------------

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

    def queued_queries(self, session_id: str, *, all_statuses: bool = False) -> list[Json]:
        """The session's queued queries as `GET .../queued-queries` lists them (queued and
        paused, head first); with `all_statuses`, promoted and canceled ones too."""
        items = self.queue_items.get(session_id, [])
        if not all_statuses:
            items = self._active_items(session_id)
        return [self._public_item(i) for i in items]

    # -- change notification -------------------------------------------------------------

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

    async def _drain_notifiers(self) -> None:
        for task in list(self._notifiers):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- rows ----------------------------------------------------------------------------

    def _new_session(self, user_id: str, title: str | None, kind: str, stamp: str) -> str:
        session_id = str(uuid.uuid4())
        snapshot: Json = {
            "mcp_server_ids": [],
            "skill_ids": [],
            "plugin_ids": [],
            "subagent_ids": [],
        }
        if self.is_new:
            snapshot = {"memory_enabled": False, **snapshot}
        self.sessions[session_id] = {
            "session_id": session_id,
            "user_id": user_id,
            "project_id": None,
            "sdk_session_id": None,
            "title": title,
            "config_snapshot": snapshot,
            "workspace_archive_url": None,
            "state_patch": {} if self.is_new else None,
            "workspace_export_status": None,
            "status": "pending",
            "created_at": stamp,
            "updated_at": stamp,
            "kind": kind,
        }
        if self.is_new:
            self.sessions[session_id].update(is_pinned=False, pinned_at=None)
        self.runs[session_id] = []
        self.messages[session_id] = []
        self.queue_items[session_id] = []
        return session_id

    def _new_run(
        self,
        session_id: str,
        message_id: int,
        stamp: str,
        permission_mode: str = "default",
        config_snapshot: Json | None = None,
    ) -> Json:
        run: Json = {
            "run_id": str(uuid.uuid4()),
            "session_id": session_id,
            "user_message_id": message_id,
            "status": "queued",
            "permission_mode": permission_mode,
            "progress": 0,
            "schedule_mode": "immediate",
            "scheduled_task_id": None,
            "scheduled_at": stamp,
            "config_snapshot": config_snapshot or self.sessions[session_id]["config_snapshot"],
        }
        if self.is_new:
            run.update(state_patch=None, **dict.fromkeys(RUN_WORKSPACE_KEYS))
        run.update(
            claimed_by=None,
            lease_expires_at=None,
            attempts=0,
            last_error=None,
            started_at=None,
            finished_at=None,
            created_at=stamp,
            updated_at=stamp,
            usage=None,
        )
        self.runs[session_id].append(run)
        return run

    def _add_user_prompt(self, session_id: str, prompt: str, stamp: str) -> int:
        content: Json = {
            "_type": "UserMessage",
            "content": [{"_type": "TextBlock", "text": prompt}],
        }
        if not self.is_new:
            content["parent_tool_use_id"] = None
        return self._store_message(session_id, "user", content, stamp)

    def _store_message(self, session_id: str, role: str, content: Json, stamp: str) -> int:
        message_id = self._next_message_id
        self._next_message_id += 1
        preview = shapes.visible_text(content) if self.is_new else shapes.first_text(content)
        self.messages[session_id].append(
            {
                "id": message_id,
                "role": role,
                "content": content,
                "text_preview": preview[:500] if preview is not None else None,
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

    def _blocking_run(self, session_id: str) -> Json | None:
        """619c546b RunRepository.get_blocking_by_session: running, then claimed, then
        canceling, then the oldest queued run."""
        runs = self.runs[session_id]
        for status in BLOCKING_RUN:
            found = next((r for r in runs if r["status"] == status), None)
            if found is not None:
                return found
        return None

    def _owned_session(self, session_id: str, user_id: str) -> Json:
        session = self.sessions.get(session_id)
        if session is None:
            raise AppError(40400, f"Session not found: {session_id}")
        if session["user_id"] != user_id:
            raise AppError(40300, "Session does not belong to the user")
        return session

    def _answer(self, request_id: str, answers: dict[str, str], user_id: str | None = None) -> Json:
        request = self.input_requests.get(request_id)
        if request is None:
            raise AppError(40400, f"User input request not found: {request_id}")
        if user_id is not None:
            self._owned_session(request["session_id"], user_id)
        if request["status"] != "pending":
            raise AppError(40000, f"Request is not pending: {request['status']}")
        now = self._clock.now()
        if parse_iso(request["expires_at"]) <= now:
            request.update(status="expired", updated_at=iso(now))
            raise AppError(40000, "Request expired")
        request.update(
            status="answered", answers=dict(answers), answered_at=iso(now), updated_at=iso(now)
        )
        return request

    # -- queued queries and their promotion (new generation) ------------------------------

    def _active_items(self, session_id: str) -> list[Json]:
        items = [i for i in self.queue_items.get(session_id, []) if i["status"] in ACTIVE_ITEM]
        return sorted(items, key=lambda i: (i["sequence_no"], i["created_at"]))

    def _materialize_run(
        self, session_id: str, prompt: str, permission_mode: str, run_snapshot: Json | None
    ) -> Json:
        """The user message and a queued run; the session goes back to `pending` with its
        execution state cleared (619c546b SessionQueueService.materialize_run)."""
        stamp = self._clock.stamp()
        message_id = self._add_user_prompt(session_id, prompt, stamp)
        session = self.sessions[session_id]
        config = {k: v for k, v in (run_snapshot or {}).items() if k != "input_files"}
        run = self._new_run(session_id, message_id, stamp, permission_mode, run_snapshot)
        session.update(
            status="pending",
            state_patch={},
            workspace_archive_url=None,
            workspace_export_status=None,
            config_snapshot=config or None,
            updated_at=stamp,
        )
        return run

    def _enqueue_item(
        self,
        session_id: str,
        prompt: str,
        permission_mode: str,
        run_snapshot: Json | None,
        client_request_id: str | None,
    ) -> Json:
        stamp = self._clock.stamp()
        items = self.queue_items[session_id]
        item = {
            "queue_item_id": str(uuid.uuid4()),
            "session_id": session_id,
            "sequence_no": max((i["sequence_no"] for i in items), default=0) + 1,
            "status": "queued",
            "prompt": prompt,
            "permission_mode": permission_mode,
            "run_config_snapshot": run_snapshot,
            "client_request_id": client_request_id,
            "linked_run_id": None,
            "linked_user_message_id": None,
            "created_at": stamp,
            "updated_at": stamp,
        }
        items.append(item)
        return item

    def _promote_item(self, session_id: str, item: Json) -> Json:
        run = self._materialize_run(
            session_id, item["prompt"], item["permission_mode"], item["run_config_snapshot"]
        )
        item.update(
            status="promoted",
            linked_run_id=run["run_id"],
            linked_user_message_id=run["user_message_id"],
            updated_at=self._clock.stamp(),
        )
        return run

    def _promote_next(self, session_id: str) -> Json | None:
        """The oldest `queued` item becomes a run unless a run still blocks the session."""
        if self._blocking_run(session_id) is not None:
            return None
        head = next((i for i in self._active_items(session_id) if i["status"] == "queued"), None)
        return None if head is None else self._promote_item(session_id, head)

    def _set_items(self, session_id: str, old: tuple[str, ...], new: str) -> int:
        changed = 0
        for item in self._active_items(session_id):
            if item["status"] in old:
                item.update(status=new, updated_at=self._clock.stamp())
                changed += 1
        return changed

    # -- what the HTTP side shows --------------------------------------------------------

    def _public_session(self, session: Json) -> Json:
        return shapes.session(session, self._queue_summary(session["session_id"]), self.is_new)

    def _public_state(self, session: Json) -> Json:
        return shapes.state(session, self._queue_summary(session["session_id"]), self.is_new)

    def _public_run(self, run: Json) -> Json:
        return shapes.run(run, self.is_new)

    def _queue_summary(self, session_id: str) -> Json:
        active = self._active_items(session_id)
        return {
            "queued_query_count": len(active),
            "next_queued_query_preview": active[0]["prompt"][:200] if active else None,
        }

    _public_item = staticmethod(shapes.item)

    def _lease_until(self) -> str:
        return iso(self._clock.now() + timedelta(seconds=CLAIM_LEASE_SECONDS))


def _takes_arg(predicate: Callable[..., bool]) -> bool:
    try:
        params = inspect.signature(predicate).parameters.values()
    except (TypeError, ValueError):
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(p.kind in kinds and p.default is p.empty for p in params)
