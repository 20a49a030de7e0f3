"""What a progress message says: hints, todos, times, the final figures (pure)."""

from __future__ import annotations

import pytest

from agent.backend.models import Message, Run
from agent.core.notices import NoticeContext
from agent.core.progress import RunView, render, tool_hint

EN = NoticeContext("en", "http://localhost:3000", "en")
ZH = NoticeContext("zh", "http://localhost:3000", "zh")
NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("tool_input", "hint"),
    [
        ({"file_path": "/work/src/agent/core/progress.py"}, "progress.py"),
        ({"notebook_path": "C:\\\\data\\\\analysis.ipynb"}, "analysis.ipynb"),
        ({"command": "pytest -q tests/\nrm -rf /"}, "pytest -q tests/"),
        ({"command": "x" * 200}, "x" * 47 + "…"),
        ({"pattern": "TODO", "path": "src"}, "TODO"),
        ({"path": "/work/src/"}, "src"),
        ({"url": "https://example.org/a"}, "https://example.org/a"),
        ({"todos": []}, ""),
        ({"command": "   "}, ""),
    ],
)
def test_a_tool_hint_is_a_file_name_or_the_head_of_a_command(tool_input, hint) -> None:
    assert tool_hint(tool_input) == hint


def tool_message(message_id: int, name: str, tool_input: dict) -> Message:
    block = {"_type": "ToolUseBlock", "id": "toolu_1", "name": name, "input": tool_input}
    content = {"_type": "AssistantMessage", "content": [block], "parent_tool_use_id": None}
    return Message(message_id, "assistant", content, None, "")


def result_message(message_id: int, **fields: object) -> Message:
    return Message(message_id, "assistant", {"_type": "ResultMessage", **fields}, None, "")


def test_a_running_view_shows_step_todos_tool_time_and_follow_ups() -> None:
    view = RunView("run-1", "session-1", label="Trip", status="running", started_at=NOW - 185)
    view.take_state_patch(
        {
            "current_step": "Comparing   trains\nand buses",
            "todos": [
                {"content": "Find trains", "status": "completed"},
                {"content": "Book", "status": "in_progress", "active_form": "Booking"},
                {"content": "Pay", "status": "pending"},
            ],
        }
    )
    view.take_messages([tool_message(5, "Read", {"file_path": "/a/b/plan.md"})])
    view.queued = 2
    message = render(EN, view, NOW)
    assert message.text.splitlines() == [
        "🔄 Trip · running · 3 min",
        "📍 Comparing trains and buses",
        "📋 1/3 done · Booking",
        "🔧 Read: plan.md",
        "⏳ 2 follow-up(s) waiting",
    ]
    assert not message.markdown  # agent-written text is never parsed as Markdown
    assert [[b.data for b in row] for row in message.buttons] == [["stop:run-1"]]
    # Seconds do not show while running: the clock alone edits once a minute at most.
    assert render(EN, view, NOW + 30).text == message.text
    assert "4 min" in render(EN, view, NOW + 60).text
    assert "1 h 01 min" in render(EN, view, NOW + 3475).text


def test_stopping_has_no_stop_button() -> None:
    view = RunView("run-1", "s", label="Trip", status="running", stopping=True)
    message = render(EN, view, NOW)
    assert "stopping…" in message.text and not message.buttons
    assert "正在停止" in render(ZH, view, NOW).text


def test_a_final_view_shows_outcome_duration_turns_and_cost() -> None:
    view = RunView("run-1", "s", label="Trip", status="running", started_at=NOW - 100)
    view.take_messages([result_message(9, num_turns=4, total_cost_usd=0.01234, duration_ms=95_400)])
    run = Run("run-1", "s", "completed", None, "", "2027-01-15T08:00:00Z", started_at=None)
    view.take_run(run)
    message = render(EN, view, NOW)
    assert message.text == "✅ Trip · completed\n⏱ 1 min 35 s · turns: 4 · $0.0123"
    assert not message.buttons


def test_a_failed_run_shows_its_error_and_the_runs_usage() -> None:
    view = RunView("run-1", "s", label="Trip", started_at=NOW - 12)
    run = Run(
        "run-1",
        "s",
        "failed",
        "RuntimeError: model overloaded",
        "",
        None,
        total_cost_usd=2.5,
        duration_ms=12_000,
    )
    view.take_run(run)
    assert render(EN, view, NOW).text.splitlines() == [
        "❌ Trip · failed",
        "RuntimeError: model overloaded",
        "⏱ 12 s · $2.50",
    ]


def test_a_view_survives_its_json() -> None:
    view = RunView("run-1", "s", label="Trip", tool="Bash", tool_hint="ls", cost=0.5)
    assert RunView.from_json({**view.to_json(), "unknown": 1}) == view
