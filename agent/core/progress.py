"""What a run's progress message shows, and how it reads: the model and its text. Pure.

A `RunView` gathers what the backend tells of one run: its status and times (runs), the
step and todos (`state_patch`), the tool in use (the latest ToolUseBlock), follow-ups
waiting, and at the end the ResultMessage's turns, cost and duration. `render` turns it
into one short plain-text message (agent-written text never goes through Markdown).
Elapsed time is shown in whole minutes while the run goes on, so the clock alone edits
the message at most once a minute.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from agent.backend.models import (
    RUN_CANCELING,
    RUN_FAILED,
    RUN_QUEUED,
    TERMINAL_RUN_STATUSES,
    Message,
    Run,
    parse_time,
)
from agent.chats.base import Button, OutboundMessage
from agent.core import i18n
from agent.core.notices import MAX_ERROR_CHARS, NoticeContext

STOP_PREFIX = "stop:"
# The Stop button's name on a DingTalk progress card (a press reports only it).
STOP_ACTION = "stop"
# A hint is a file name or the head of a command: enough to recognise, never a wall.
HINT_CHARS = 48
STEP_CHARS = 120
TODO_CHARS = 80
ERROR_CHARS = min(MAX_ERROR_CHARS, 300)
# Tool inputs, in the order their value makes the best hint; paths show their file name.
HINT_KEYS = (
    "file_path",
    "notebook_path",
    "command",
    "pattern",
    "path",
    "url",
    "query",
    "description",
    "prompt",
)
PATH_KEYS = frozenset({"file_path", "notebook_path", "path"})


@dataclass
class RunView:
    """One run as its progress message shows it (stored as JSON between polls)."""

    run_id: str
    session_id: str
    label: str = ""
    status: str = RUN_QUEUED
    started_at: float | None = None  # epoch seconds
    finished_at: float | None = None
    step: str = ""
    todos_done: int = 0
    todos_total: int = 0
    todo_now: str = ""
    tool: str = ""
    tool_hint: str = ""
    queued: int = 0
    stopping: bool = False  # a Stop was posted and the backend has not confirmed yet
    error: str = ""
    duration_ms: int | None = None
    turns: int | None = None
    cost: float | None = None

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL_RUN_STATUSES

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunView:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    # --- what the backend says ---

    def take_run(self, run: Run) -> None:
        self.status = run.status
        started = parse_time(run.started_at)
        if started is not None:
            self.started_at = started.timestamp()
        finished = parse_time(run.finished_at)
        if finished is not None and run.status in TERMINAL_RUN_STATUSES:
            self.finished_at = finished.timestamp()
        if run.status == RUN_FAILED:
            self.error = run.last_error or self.error
        if run.total_cost_usd is not None and self.cost is None:
            self.cost = run.total_cost_usd
        if run.duration_ms is not None and self.duration_ms is None:
            self.duration_ms = run.duration_ms
        if run.status in TERMINAL_RUN_STATUSES:
            self.stopping = False

    def take_state_patch(self, patch: dict[str, Any]) -> None:
        step = patch.get("current_step")
        self.step = _one_line(step, STEP_CHARS) if isinstance(step, str) else ""
        todos = [t for t in patch.get("todos") or [] if isinstance(t, dict)]
        self.todos_total = len(todos)
        self.todos_done = sum(1 for t in todos if t.get("status") == "completed")
        current = next((t for t in todos if t.get("status") == "in_progress"), None)
        text = ""
        if current is not None:
            text = str(current.get("active_form") or current.get("content") or "")
        self.todo_now = _one_line(text, TODO_CHARS)

    def take_messages(self, messages: list[Message]) -> None:
        """The latest tool in use, and the turns, cost and duration of a ResultMessage."""
        for message in messages:
            if message.is_result:
                content = message.content
                self.turns = _number(content.get("num_turns"), int) or self.turns
                cost = _number(content.get("total_cost_usd"), float)
                self.cost = cost if cost is not None else self.cost
                self.duration_ms = _number(content.get("duration_ms"), int) or self.duration_ms
                continue
            for name, tool_input in tool_uses(message):
                self.tool, self.tool_hint = name, tool_hint(tool_input)


def tool_uses(message: Message) -> list[tuple[str, dict[str, Any]]]:
    """(name, input) of each ToolUseBlock of an assistant message (the agent's or a
    sub-agent's: either is what is going on)."""
    if message.role != "assistant" or "AssistantMessage" not in message.type_name:
        return []
    blocks = message.content.get("content")
    uses = []
    for block in blocks if isinstance(blocks, list) else []:
        if isinstance(block, dict) and "ToolUseBlock" in str(block.get("_type") or ""):
            tool_input = block.get("input")
            name = _one_line(str(block.get("name") or "?"), HINT_CHARS)
            uses.append((name, tool_input if isinstance(tool_input, dict) else {}))
    return uses


def tool_hint(tool_input: dict[str, Any]) -> str:
    """A file name, the head of a command, a pattern...: what the tool works on."""
    for key in HINT_KEYS:
        value = tool_input.get(key)
        if not isinstance(value, str) or not value.strip():
            continue
        if key in PATH_KEYS:
            value = PurePosixPath(value.strip().replace("\\", "/")).name or value
        return _one_line(value.strip().splitlines()[0], HINT_CHARS)
    return ""


# --- the text ---


def render(
    ctx: NoticeContext, view: RunView, now: float, *, stop_button: bool = True
) -> OutboundMessage:
    """The progress message: a head line (status and time), then what goes on, or at the
    end the outcome. Plain text; the Stop button while the run can still be stopped."""
    status = RUN_CANCELING if view.stopping and not view.ended else view.status
    key = f"progress.status.{status}"
    word = ctx.t(key) if key in i18n.TEXTS["en"] else status
    head = f"{i18n.STATUS_EMOJI.get(status, '•')} {view.label} · {word}"
    lines: list[str] = []
    if view.ended:
        lines.append(head)
        if view.status == RUN_FAILED and view.error:
            lines.append(_one_line(view.error, ERROR_CHARS))
        stats = _final_stats(ctx, view)
        if stats:
            lines.append(stats)
        return OutboundMessage("\n".join(lines), markdown=False, progress=True, final=True)
    if view.started_at is not None:
        head += " · " + minutes(ctx, max(0.0, now - view.started_at))
    lines.append(head)
    if view.step:
        lines.append(f"📍 {view.step}")
    if view.todos_total:
        todos = ctx.t("progress.todos", done=view.todos_done, total=view.todos_total)
        lines.append(f"📋 {todos}" + (f" · {view.todo_now}" if view.todo_now else ""))
    if view.tool:
        lines.append(f"🔧 {view.tool}" + (f": {view.tool_hint}" if view.tool_hint else ""))
    if view.queued:
        lines.append("⏳ " + ctx.t("progress.follow_ups", count=view.queued))
    buttons = []
    if stop_button and status != RUN_CANCELING:
        buttons = [[Button(ctx.t("button.stop"), f"{STOP_PREFIX}{view.run_id}", STOP_ACTION)]]
    return OutboundMessage("\n".join(lines), markdown=False, buttons=buttons, progress=True)


def _final_stats(ctx: NoticeContext, view: RunView) -> str:
    parts = []
    seconds: float | None = None
    if view.duration_ms is not None:
        seconds = view.duration_ms / 1000
    elif view.started_at is not None and view.finished_at is not None:
        seconds = max(0.0, view.finished_at - view.started_at)
    if seconds is not None:
        parts.append("⏱ " + duration(ctx, seconds))
    if view.turns:
        parts.append(ctx.t("progress.turns", count=view.turns))
    if view.cost is not None:
        parts.append(cost(view.cost))
    return " · ".join(parts)


def minutes(ctx: NoticeContext, seconds: float) -> str:
    """Elapsed while running: whole minutes (the message changes once a minute at most)."""
    whole = int(seconds // 60)
    if whole < 1:
        return ctx.t("progress.under_minute")
    if whole < 60:
        return ctx.t("progress.minutes", m=whole)
    return ctx.t("progress.hours", h=whole // 60, m=whole % 60)


def duration(ctx: NoticeContext, seconds: float) -> str:
    """A finished run's duration, to the second under an hour."""
    whole = round(seconds)
    if whole < 60:
        return ctx.t("progress.seconds", s=whole)
    if whole < 3600:
        return ctx.t("progress.min_sec", m=whole // 60, s=whole % 60)
    return ctx.t("progress.hours", h=whole // 3600, m=whole % 3600 // 60)


def cost(usd: float) -> str:
    return f"${usd:.2f}" if usd >= 1 else f"${usd:.4f}"


def _one_line(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _number(value: Any, kind: type[int] | type[float]) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return kind(value)
