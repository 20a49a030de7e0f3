"""Typed, frozen shapes of the Poco backend API (see docs/poco-backend-api.md).

Timestamps of sessions, runs and messages stay the backend's ISO strings
(`2026-11-24T04:58:41.678488Z`): they are stored and compared as they come, and the
fixed format sorts as text. `parse_time` turns one into an aware datetime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

# Session statuses. A session is never queued or claimed; a terminal status can be
# temporary (a follow-up makes it pending again): decide "done" from the latest run.
SESSION_PENDING = "pending"
SESSION_RUNNING = "running"
TERMINAL_SESSION_STATUSES = frozenset({"completed", "failed", "canceled"})

# Run statuses.
RUN_QUEUED = "queued"
RUN_CLAIMED = "claimed"
RUN_RUNNING = "running"
RUN_COMPLETED = "completed"
RUN_FAILED = "failed"
RUN_CANCELED = "canceled"
# April 2026 on: a cancel of a claimed or running run waits for the executor (session and
# run both `canceling`), then becomes `canceled`. Still running, never an end.
RUN_CANCELING = "canceling"
TERMINAL_RUN_STATUSES = frozenset({RUN_COMPLETED, RUN_FAILED, RUN_CANCELED})
ACTIVE_RUN_STATUSES = frozenset({RUN_CLAIMED, RUN_RUNNING, RUN_CANCELING})
UNFINISHED_RUN_STATUSES = frozenset({RUN_QUEUED, RUN_CLAIMED, RUN_RUNNING, RUN_CANCELING})

# POST /tasks answers (April 2026 on): a run, or a query queued behind the running run.
ACCEPTED_RUN = "run"
ACCEPTED_QUEUED = "queued_query"

# User-input request statuses and tools.
INPUT_PENDING = "pending"
INPUT_ANSWERED = "answered"
INPUT_EXPIRED = "expired"
ASK_USER_QUESTION = "AskUserQuestion"
EXIT_PLAN_MODE = "ExitPlanMode"
PLAN_APPROVED = "true"  # {"approved": "true"} approves; any other string rejects

Json = dict[str, Any]


def parse_time(value: Any) -> datetime | None:
    """An aware UTC datetime from the backend's ISO text (`...Z`); None when absent."""
    if not value:
        return None
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Session:
    session_id: str
    title: str | None
    status: str
    created_at: str
    updated_at: str
    project_id: str | None = None
    # April 2026 on: follow-ups waiting behind the current run (0 on older backends).
    queued_query_count: int = 0

    @classmethod
    def from_api(cls, data: Json) -> Session:
        return cls(
            session_id=str(data["session_id"]),
            title=_opt_str(data.get("title")),
            status=str(data["status"]),
            created_at=str(data.get("created_at") or ""),
            updated_at=str(data.get("updated_at") or ""),
            project_id=_opt_str(data.get("project_id")),
            queued_query_count=int(data.get("queued_query_count") or 0),
        )

    @property
    def is_terminal(self) -> bool:
        """Terminal *for now*: a queued follow-up may still be waiting (see Run)."""
        return self.status in TERMINAL_SESSION_STATUSES


@dataclass(frozen=True)
class Run:
    run_id: str
    session_id: str
    status: str
    last_error: str | None
    created_at: str
    finished_at: str | None
    # The prompt that started the run: its messages are the ones after this id (and
    # before the next run's prompt).
    user_message_id: int = 0
    # Workspace files changed as the run's state says (April 2026 runs carry
    # `state_patch.workspace_state.file_changes`; 0 where a run has no state).
    changed_files: int = 0

    @classmethod
    def from_api(cls, data: Json) -> Run:
        return cls(
            run_id=str(data["run_id"]),
            session_id=str(data["session_id"]),
            status=str(data["status"]),
            last_error=_opt_str(data.get("last_error")),
            created_at=str(data.get("created_at") or ""),
            finished_at=_opt_str(data.get("finished_at")),
            user_message_id=int(data.get("user_message_id") or 0),
            changed_files=_changed_files(data.get("state_patch")),
        )

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_RUN_STATUSES


def _changed_files(state_patch: Any) -> int:
    workspace = state_patch.get("workspace_state") if isinstance(state_patch, dict) else None
    changes = workspace.get("file_changes") if isinstance(workspace, dict) else None
    return len(changes) if isinstance(changes, list) else 0


@dataclass(frozen=True)
class Message:
    id: int
    role: str
    content: Json
    text_preview: str | None
    created_at: str

    @classmethod
    def from_api(cls, data: Json) -> Message:
        content = data.get("content")
        return cls(
            id=int(data["id"]),
            role=str(data["role"]),
            content=content if isinstance(content, dict) else {},
            text_preview=_opt_str(data.get("text_preview")),
            created_at=str(data.get("created_at") or ""),
        )

    @property
    def type_name(self) -> str:
        return str(self.content.get("_type") or "")

    @property
    def is_result(self) -> bool:
        return "ResultMessage" in self.type_name

    def assistant_text(self) -> str | None:
        """What a chat should read, or None: only the agent's own texts and the final result
        (no init, tool calls or results, user prompts, or sub-agent chatter)."""
        if self.role != "assistant":
            return None
        if self.is_result:
            result = self.content.get("result")
            return result if isinstance(result, str) and result.strip() else None
        if "AssistantMessage" not in self.type_name:
            return None
        if self.content.get("parent_tool_use_id") is not None:
            return None
        blocks = self.content.get("content")
        if not isinstance(blocks, list):
            return None
        texts = [
            str(b.get("text") or "")
            for b in blocks
            if isinstance(b, dict) and "TextBlock" in str(b.get("_type") or "")
        ]
        text = "\n\n".join(t for t in texts if t.strip())
        return text or None


class Option(NamedTuple):
    label: str
    description: str


@dataclass(frozen=True)
class Question:
    question: str
    header: str
    options: list[Option]
    multi_select: bool

    @classmethod
    def from_api(cls, data: Json) -> Question:
        options = [
            Option(str(o.get("label") or ""), str(o.get("description") or ""))
            for o in data.get("options") or []
            if isinstance(o, dict)
        ]
        return cls(
            question=str(data.get("question") or ""),
            header=str(data.get("header") or ""),
            options=options,
            multi_select=bool(data.get("multiSelect")),
        )


@dataclass(frozen=True)
class InputRequest:
    id: str
    session_id: str
    tool_name: str
    tool_input: Json
    status: str
    expires_at: datetime | None
    created_at: str
    raw: Json = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_api(cls, data: Json) -> InputRequest:
        tool_input = data.get("tool_input")
        return cls(
            id=str(data["id"]),
            session_id=str(data["session_id"]),
            tool_name=str(data.get("tool_name") or ""),
            tool_input=tool_input if isinstance(tool_input, dict) else {},
            status=str(data.get("status") or ""),
            expires_at=parse_time(data.get("expires_at")),
            created_at=str(data.get("created_at") or ""),
            raw=dict(data),
        )

    def is_expired(self, now: datetime | float | None = None) -> bool:
        """Past `expires_at` at `now` (an aware datetime or an epoch float; default: now).
        The pending list does not check this itself: stale requests stay listed."""
        if self.status == INPUT_EXPIRED:
            return True
        if self.expires_at is None:
            return False
        if now is None:
            now = datetime.now(UTC)
        elif not isinstance(now, datetime):
            now = datetime.fromtimestamp(now, UTC)
        return self.expires_at <= now

    @property
    def questions(self) -> list[Question]:
        """AskUserQuestion's questions; [] for other tools."""
        if self.tool_name != ASK_USER_QUESTION:
            return []
        items = self.tool_input.get("questions")
        if not isinstance(items, list):
            return []
        return [Question.from_api(q) for q in items if isinstance(q, dict)]

    @property
    def plan(self) -> str | None:
        """ExitPlanMode's plan text; None for other tools."""
        if self.tool_name != EXIT_PLAN_MODE:
            return None
        plan = self.tool_input.get("plan")
        return plan if isinstance(plan, str) else None


@dataclass(frozen=True)
class TaskRef:
    """What POST /tasks accepted: a run, or (April 2026 on) a query queued behind one."""

    session_id: str
    run_id: str | None
    status: str
    accepted_type: str = ACCEPTED_RUN
    queue_item_id: str | None = None
    queued_query_count: int = 0

    @classmethod
    def from_api(cls, data: Json) -> TaskRef:
        return cls(
            session_id=str(data["session_id"]),
            run_id=_opt_str(data.get("run_id")),
            status=str(data.get("status") or ""),
            accepted_type=str(data.get("accepted_type") or ACCEPTED_RUN),
            queue_item_id=_opt_str(data.get("queue_item_id")),
            queued_query_count=int(data.get("queued_query_count") or 0),
        )

    @property
    def queued(self) -> bool:
        return self.accepted_type == ACCEPTED_QUEUED


@dataclass(frozen=True)
class MessagePage:
    """Messages after a cursor, oldest first.

    `truncated`: an older backend without the delta routes lists at most 1000 messages,
    and this session has more, so newer ones cannot be seen at all.
    """

    items: list[Message]
    has_more: bool = False
    truncated: bool = False
