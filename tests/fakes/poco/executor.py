"""The executor's side of the fake Poco: plain methods that change the state as the
executor-manager's calls and the executor's callbacks would. The test plays the executor."""

from __future__ import annotations

import uuid
from datetime import timedelta

from tests.fakes.poco.shapes import visible_text
from tests.fakes.poco.state import PocoState
from tests.fakes.poco.wire import SDK_MODEL, TERMINAL, WORKER_ID, Json, iso

SILENCED = ("canceling", "canceled")  # 619c546b ignores callbacks for these sessions


class ExecutorSide(PocoState):
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
        """A session with its first user message and a run whose status matches `status`
        (`pending` leaves the run `queued`; new generation: `canceling` too)."""
        stamp = self._clock.stamp()
        session_id = self._new_session(user_id, title, kind, stamp)
        run = self._new_run(session_id, self._add_user_prompt(session_id, prompt, stamp), stamp)
        if status != "pending":
            run.update(status=status, claimed_by=WORKER_ID, attempts=1, started_at=stamp)
            if status in TERMINAL:
                run.update(finished_at=stamp, progress=100 if status == "completed" else 0)
            self.sessions[session_id]["status"] = status
        self._poke()
        return session_id

    # -- executor-manager ----------------------------------------------------------------

    def claim_run(self, session_id: str) -> Json:
        """The oldest queued run becomes `claimed`; the session stays `pending`."""
        runs = self.runs[session_id]
        if any(r["status"] in ("claimed", "running") for r in runs):
            raise ValueError(f"session {session_id} already has an active run")
        if self.is_new and self.sessions[session_id]["status"] in SILENCED:
            raise ValueError(f"session {session_id} is {self.sessions[session_id]['status']}")
        run = next((r for r in runs if r["status"] == "queued"), None)
        if run is None:
            raise ValueError(f"session {session_id} has no queued run")
        stamp = self._clock.stamp()
        run.update(status="claimed", claimed_by=WORKER_ID, updated_at=stamp)
        if self.is_new:  # 619c546b counts the attempt at start and leases the claim
            run["lease_expires_at"] = self._lease_until()
        else:
            run["attempts"] += 1
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
        if self.is_new:  # RunLifecycleService.mark_running
            run.update(attempts=run["attempts"] + 1, lease_expires_at=None)
            self._touch_session(
                session_id,
                status="running",
                state_patch={},
                workspace_archive_url=None,
                workspace_export_status=None,
            )
        else:
            self._touch_session(session_id, status="running")
        self._poke()
        return run

    def complete_cancellation(self, session_id: str) -> int:
        """New generation: the executor-manager reports the executor stopped
        (`POST /internal/sessions/{id}/cancellation-complete`, stop_status `stopped`):
        claimed, running and canceling runs and the session become `canceled`. Returns the
        number of runs canceled."""
        if self.sessions[session_id]["status"] != "canceling":
            raise ValueError(f"session {session_id} has no pending cancellation")
        stamp = self._clock.stamp()
        canceled = 0
        for run in self.runs[session_id]:
            if run["status"] in ("canceling", "claimed", "running"):
                run.update(
                    status="canceled",
                    finished_at=run["finished_at"] or stamp,
                    claimed_by=None,
                    lease_expires_at=None,
                    updated_at=stamp,
                )
                canceled += 1
        self._touch_session(session_id, status="canceled")
        self._poke()
        return canceled

    # -- executor callbacks --------------------------------------------------------------

    def add_message(self, session_id: str, role: str, content: Json) -> int:
        """Store one callback `new_message`; its id. -1 when it is not stored: the session
        is canceled (both generations) or canceling (new), or (new) it is a ResultMessage
        repeating the latest assistant text (619c546b skips those)."""
        status = self.sessions[session_id]["status"]
        if status == "canceled" or (self.is_new and status in SILENCED):
            return -1
        if self.is_new:
            self._take_sdk_session_id(session_id, content)
            if self._repeats_latest(session_id, content):
                self._poke()
                return -1
        message_id = self._store_message(session_id, role, content, self._clock.stamp())
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
        """A ResultMessage (stored as role `assistant`); fills the run's `usage` (even when
        the new generation does not store a repeated result)."""
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
        silenced = session["status"] in (SILENCED if self.is_new else ("canceled",))
        if not silenced and run is not None:
            run["usage"] = {
                "total_cost_usd": 0.0012,
                "total_duration_ms": 1234,
                "usage_json": usage,
            }
        return message_id

    def finish_run(
        self, session_id: str, status: str = "completed", error: str | None = None
    ) -> Json | None:
        """A terminal callback: sets the session and its latest active run. New generation:
        a completed run promotes the oldest queued query (session `pending`), a failed one
        pauses them; ignored while `canceling`."""
        if status not in TERMINAL:
            raise ValueError(f"not a terminal status: {status}")
        if self.sessions[session_id]["status"] in (SILENCED if self.is_new else ("canceled",)):
            return None
        if self.is_new:
            return self._finish_new(session_id, status, error)
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

    def _finish_new(self, session_id: str, status: str, error: str | None) -> Json | None:
        """619c546b CallbackService + RunLifecycleService.finalize_terminal."""
        run = self._blocking_run(session_id)
        stamp = self._clock.stamp()
        if run is None:
            if not any(r["status"] not in TERMINAL for r in self.runs[session_id]):
                self._touch_session(session_id, status=status)
            self._poke()
            return None
        run.update(status=status, finished_at=stamp, updated_at=stamp, lease_expires_at=None)
        if status == "completed":
            run.update(progress=100, last_error=None)
            if self._promote_next(session_id) is None:
                self._touch_session(session_id, status="completed")
        elif status == "failed":
            if error:
                run["last_error"] = error
            self._set_items(session_id, ("queued",), "paused")
            self._touch_session(session_id, status="failed")
        else:
            self._set_items(session_id, ("queued", "paused"), "canceled")
            self._touch_session(session_id, status="canceled")
        self._poke()
        return run

    def set_state_patch(self, session_id: str, state_patch: Json | None) -> None:
        """A callback's state_patch: `updated_at` moves only when it differs. New
        generation: the current run gets it too; ignored while canceling."""
        if self.is_new:
            if self.sessions[session_id]["status"] in SILENCED:
                return
            run = self._blocking_run(session_id)
            if run is not None:
                run["state_patch"] = state_patch
        if self.sessions[session_id]["state_patch"] != state_patch:
            self._touch_session(session_id, state_patch=state_patch)
        self._poke()

    def _take_sdk_session_id(self, session_id: str, content: Json) -> None:
        kind = str(content.get("_type", ""))
        sdk_id = None
        if "ResultMessage" in kind:
            sdk_id = content.get("session_id")
        elif "SystemMessage" in kind and content.get("subtype") == "init":
            data = content.get("data")
            sdk_id = data.get("session_id") if isinstance(data, dict) else None
        if isinstance(sdk_id, str) and sdk_id != self.sessions[session_id]["sdk_session_id"]:
            self._touch_session(session_id, sdk_session_id=sdk_id)

    def _repeats_latest(self, session_id: str, content: Json) -> bool:
        """619c546b CallbackService._should_skip_duplicate_result_message."""
        if "ResultMessage" not in str(content.get("_type", "")):
            return False
        if content.get("structured_output") is not None:
            return False
        text = (visible_text(content) or "").replace("\ufffd", "").strip()
        messages = self.messages[session_id]
        if not text or not messages or messages[-1]["role"] != "assistant":
            return False
        latest = messages[-1]["content"]
        latest_text = (visible_text(latest) or "").replace("\ufffd", "").strip()
        latest_type = str(latest.get("_type", ""))
        return latest_text == text and (
            "AssistantMessage" in latest_type or "ResultMessage" in latest_type
        )

    # -- user-input requests -------------------------------------------------------------

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
