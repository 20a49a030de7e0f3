"""Watching a run work and stopping it: one progress message per run per chat, edited in
place (coalesced, paced, durable), a Stop button and /stop that cancel once, /status."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.core.progress_sender import PROGRESS_EDIT_SECONDS
from tests.conftest import agent_environment, run_agent
from tests.fakes.dingtalk import FakeDingTalk
from tests.fakes.poco import GENERATIONS, FakePoco
from tests.fakes.telegram import FakeTelegram
from tests.test_e2e_telegram import continue_session

# Every test here runs against both backend generations (Feb and April 2026).
pytestmark = pytest.mark.parametrize("poco_generation", GENERATIONS, ids=lambda g: f"poco-{g}")

CHAT = 4004
WATCHER = 4005
TODOS = [
    {"content": "Read the README", "status": "completed", "active_form": "Reading the README"},
    {"content": "Write a summary", "status": "in_progress", "active_form": "Writing a summary"},
    {"content": "Check links", "status": "pending", "active_form": "Checking links"},
]


def progress_env(data_dir: Path, telegram: FakeTelegram, poco: FakePoco, **extra: str) -> dict:
    return agent_environment(
        data_dir, telegram=telegram, poco=poco, **{"IM_PROGRESS": "on", **extra}
    )


def stop_data(entry: dict[str, Any]) -> str:
    """The Stop button's callback data of a sent message ('' without one)."""
    rows = (entry.get("reply_markup") or {}).get("inline_keyboard", [])
    data = [b.get("callback_data", "") for row in rows for b in row]
    return next((d for d in data if d.startswith("stop:")), "")


def progress_sends(fake: FakeTelegram, chat: int) -> list[dict[str, Any]]:
    """The progress messages sent to a chat (each carries a Stop button when sent)."""
    return [
        m
        for m in fake.sent
        if m["method"] == "sendMessage" and m["chat_id"] == chat and stop_data(m)
    ]


def replies(fake: FakeTelegram, chat: int) -> list[str]:
    """What the chat was sent as messages of their own (no edits, no progress messages)."""
    return [
        m["text"]
        for m in fake.sent
        if m["method"] == "sendMessage" and m["chat_id"] == chat and not stop_data(m)
    ]


async def ask(fake: FakeTelegram, chat: int, text: str, count: int = 1) -> str:
    """Send a message; the newest reply once `count` more replies arrived."""
    before = len(replies(fake, chat))
    fake.inject_message(chat, text)
    await fake.wait_for(lambda f: len(replies(f, chat)) >= before + count, timeout=10)
    return replies(fake, chat)[-1]


def progress_call_times(fake: FakeTelegram, chat: int) -> list[float]:
    """When each progress send or edit to the chat reached Telegram, failed or not."""
    return sorted(
        at
        for method, params, at in fake.calls
        if params.get("chat_id") == chat
        and (
            method == "editMessageText"
            or (method == "sendMessage" and stop_data({"reply_markup": params.get("reply_markup")}))
        )
    )


def shown(fake: FakeTelegram, chat: int, message_id: int) -> str:
    return str(fake.messages.get((chat, message_id), {}).get("text", ""))


def edit_calls(fake: FakeTelegram, chat: int, message_id: int | None = None) -> list[float]:
    """When each editMessageText of the chat (and message) reached Telegram, failed or not."""
    return [
        at
        for method, params, at in fake.calls
        if method == "editMessageText"
        and params.get("chat_id") == chat
        and (message_id is None or params.get("message_id") == message_id)
    ]


def cancels(poco: FakePoco, session_id: str) -> int:
    return poco.count("POST", f"/sessions/{session_id}/cancel")


async def start_watched_run(
    fake: FakeTelegram, poco: FakePoco, chat: int = CHAT
) -> tuple[str, int]:
    """/new, the executor starts the run: the chat's progress message appears."""
    await ask(fake, chat, "/new summarise the README")
    session_id = list(poco.sessions)[-1]
    poco.start_run(session_id)
    await fake.wait_for(lambda f: len(progress_sends(f, chat)) == 1, timeout=10)
    return session_id, progress_sends(fake, chat)[0]["message_id"]


async def wait_shown(fake: FakeTelegram, chat: int, message_id: int, needle: str) -> str:
    await fake.wait_for(lambda f: needle in shown(f, chat, message_id), timeout=15)
    return shown(fake, chat, message_id)


async def test_state_changes_edit_one_message_coalesced_and_paced(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(progress_env(data_dir, telegram_api, poco)):
        session_id, message_id = await start_watched_run(telegram_api, poco)
        assert "running" in shown(telegram_api, CHAT, message_id)

        poco.set_state_patch(session_id, {"current_step": "step 1", "todos": TODOS})
        text = await wait_shown(telegram_api, CHAT, message_id, "step 1")
        assert "1/3 done · Writing a summary" in text
        # Five changes, each seen by a poll, all within the bound after the last edit: only
        # the last is shown.
        for step in range(2, 7):
            poco.set_state_patch(session_id, {"current_step": f"step {step}", "todos": TODOS})
            await asyncio.sleep(0.15)  # paces the backend's changes (polls every 0.2 s)
        await wait_shown(telegram_api, CHAT, message_id, "step 6")
        shown_steps = [m["text"] for m in telegram_api.sent if m["method"] == "editMessageText"]
        assert not any(f"step {n}" in t for t in shown_steps for n in range(2, 6))

        # Nothing shown changes: no edit. The next real change is exactly one more edit.
        edits_before = len(edit_calls(telegram_api, CHAT))
        for _ in range(3):
            poco.set_state_patch(session_id, {"current_step": "step 6", "todos": TODOS})
        poco.add_assistant_text(session_id, "halfway there")
        await telegram_api.wait_for(lambda f: "halfway there" in replies(f, CHAT)[-1], timeout=10)
        poco.add_tool_use(session_id, "Bash", {"command": "pytest -q tests/\necho second"})
        text = await wait_shown(telegram_api, CHAT, message_id, "Bash")
        assert "🔧 Bash: pytest -q tests/" in text and "second" not in text
        assert len(edit_calls(telegram_api, CHAT)) == edits_before + 1

        poco.add_result(session_id, "All done.")
        poco.finish_run(session_id, "completed")
        text = await wait_shown(telegram_api, CHAT, message_id, "completed")
        assert "turns: 1" in text and "$0.0012" in text and "⏱" in text
        assert telegram_api.messages[(CHAT, message_id)].get("reply_markup") is None
        # The run's notice still comes once, as its own message; one progress message.
        await telegram_api.wait_for(lambda f: "completed.\n" in replies(f, CHAT)[-1], timeout=10)
        sends = [m["text"] for m in telegram_api.sent if m["method"] == "sendMessage"]
        assert sum("completed.\n" in t for t in sends) == 1
        assert len(progress_sends(telegram_api, CHAT)) == 1

    # Never two progress calls to the chat within the bound (as Telegram received them).
    times = progress_call_times(telegram_api, CHAT)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps and min(gaps) >= PROGRESS_EDIT_SECONDS, gaps


async def test_a_429_on_an_edit_is_waited_out_and_the_final_state_shown(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(progress_env(data_dir, telegram_api, poco)):
        session_id, message_id = await start_watched_run(telegram_api, poco)
        telegram_api.fail_next("editMessageText", 429, retry_after=3)
        poco.set_state_patch(session_id, {"current_step": "about to fail"})
        await telegram_api.wait_for(lambda f: len(edit_calls(f, CHAT, message_id)) == 1)
        poco.finish_run(session_id, "failed", error="RuntimeError: model overloaded")
        text = await wait_shown(telegram_api, CHAT, message_id, "failed")
        assert "RuntimeError: model overloaded" in text
        refused, *retried = edit_calls(telegram_api, CHAT, message_id)
        assert retried and retried[0] - refused >= 3
        assert len(retried) == 1  # straight to the final state
        assert len(progress_sends(telegram_api, CHAT)) == 1


async def test_after_a_restart_the_same_message_is_edited(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = progress_env(data_dir, telegram_api, poco)
    async with run_agent(env):
        session_id, message_id = await start_watched_run(telegram_api, poco)
        poco.add_tool_use(session_id, "Read", {"file_path": "/work/docs/README.md"})
        await wait_shown(telegram_api, CHAT, message_id, "Read: README.md")
    poco.set_state_patch(session_id, {"current_step": "while the agent was stopped"})
    async with run_agent(env):
        text = await wait_shown(telegram_api, CHAT, message_id, "while the agent was stopped")
        assert "Read: README.md" in text  # what it knew before the restart is kept
        poco.finish_run(session_id, "completed")
        await wait_shown(telegram_api, CHAT, message_id, "completed")
    assert len(progress_sends(telegram_api, CHAT)) == 1


async def test_a_deleted_progress_message_is_replaced_by_a_new_one(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(progress_env(data_dir, telegram_api, poco)):
        session_id, first = await start_watched_run(telegram_api, poco)
        telegram_api.delete_message(CHAT, first)
        poco.set_state_patch(session_id, {"current_step": "after the delete"})
        await telegram_api.wait_for(lambda f: len(progress_sends(f, CHAT)) == 2, timeout=15)
        second = progress_sends(telegram_api, CHAT)[1]["message_id"]
        await wait_shown(telegram_api, CHAT, second, "after the delete")
        telegram_api.uneditable.add((CHAT, second))  # too old to edit
        poco.set_state_patch(session_id, {"current_step": "after it aged"})
        await telegram_api.wait_for(lambda f: len(progress_sends(f, CHAT)) == 3, timeout=15)
        third = progress_sends(telegram_api, CHAT)[2]["message_id"]
        poco.finish_run(session_id, "completed")
        await wait_shown(telegram_api, CHAT, third, "completed")
        assert len(progress_sends(telegram_api, CHAT)) == 3


async def test_stop_button_and_stop_command_cancel_once(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(progress_env(data_dir, telegram_api, poco)):
        session_id, message_id = await start_watched_run(telegram_api, poco)
        data = stop_data(progress_sends(telegram_api, CHAT)[0])
        assert data == f"stop:{poco.latest_run(session_id)['run_id']}"
        telegram_api.inject_callback(CHAT, message_id, data)
        telegram_api.inject_callback(CHAT, message_id, data)
        # April 2026: the second press finds the run stopping (nothing to say, the progress
        # shows it); Feb 2026: canceled at once, so the second press is told it is over.
        reply = await ask(telegram_api, CHAT, "/stop", count=1 if poco.is_new else 2)
        if poco.is_new:
            # The executor has not confirmed yet: the run is stopping, not stopped.
            assert "already stopping" in reply
            text = await wait_shown(telegram_api, CHAT, message_id, "stopping…")
            assert telegram_api.messages[(CHAT, message_id)].get("reply_markup") is None
            assert "canceled" not in text
            poco.complete_cancellation(session_id)
        else:
            assert "Nothing to stop" in reply and "canceled" in reply
        await wait_shown(telegram_api, CHAT, message_id, "canceled")
        await telegram_api.wait_for(
            lambda f: any("was canceled" in t for t in replies(f, CHAT)), timeout=10
        )
        assert "Nothing to stop" in await ask(telegram_api, CHAT, "/cancel")
        assert cancels(poco, session_id) == 1
        # A Stop left on a finished run's message says so, and posts nothing.
        telegram_api.inject_callback(CHAT, message_id, data)
        await telegram_api.wait_for(lambda f: "already finished" in replies(f, CHAT)[-1])
        assert cancels(poco, session_id) == 1


async def test_stop_pressed_in_two_chats_at_once_cancels_once(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(progress_env(data_dir, telegram_api, poco)):
        await ask(telegram_api, CHAT, "/new two chats stop it")
        session_id = list(poco.sessions)[-1]
        await ask(telegram_api, WATCHER, f"/watch {session_id}")
        poco.start_run(session_id)
        for chat in (CHAT, WATCHER):
            await telegram_api.wait_for(lambda f, c=chat: len(progress_sends(f, c)) == 1)
        poco.set_delay(0.5)  # both presses are handled while the other's cancel is on its way
        for chat in (CHAT, WATCHER):
            sent = progress_sends(telegram_api, chat)[0]
            telegram_api.inject_callback(chat, sent["message_id"], stop_data(sent))
        await poco.wait_for(lambda p: cancels(p, session_id) == 1, timeout=10)
        if poco.is_new:
            for chat in (CHAT, WATCHER):
                message_id = progress_sends(telegram_api, chat)[0]["message_id"]
                await wait_shown(telegram_api, chat, message_id, "stopping…")
            poco.complete_cancellation(session_id)
        for chat in (CHAT, WATCHER):
            message_id = progress_sends(telegram_api, chat)[0]["message_id"]
            await wait_shown(telegram_api, chat, message_id, "canceled")
        assert cancels(poco, session_id) == 1


async def test_stop_command_and_status_name_the_session(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(progress_env(data_dir, telegram_api, poco)):
        assert "not connected" in await ask(telegram_api, CHAT, "/stop")
        session_id, _ = await start_watched_run(telegram_api, poco)
        await continue_session(telegram_api, poco, CHAT, "and then the tests")
        if poco.is_new:  # queued behind the run, and told so
            await telegram_api.wait_for(lambda f: "Queued" in replies(f, CHAT)[-1])
        poco.set_state_patch(session_id, {"current_step": "Reading", "todos": TODOS})
        status = await ask(telegram_api, WATCHER, f"/status {session_id}")
        assert "running" in status and "📍 Reading" in status and "1/3 done" in status
        assert "1 follow-up(s) waiting" in status
        stop = await ask(telegram_api, WATCHER, f"/stop {session_id}")
        expected = "Stopping the run" if poco.is_new else "was canceled"
        assert expected in stop
        assert cancels(poco, session_id) == 1
        if poco.is_new:
            assert "stopping…" in await ask(telegram_api, CHAT, "/progress")
            poco.complete_cancellation(session_id)
        await telegram_api.wait_for(
            lambda f: any("was canceled" in t for t in replies(f, CHAT)), timeout=10
        )
        assert "canceled" in await ask(telegram_api, CHAT, "/status")


async def test_a_watching_chat_gets_its_own_progress_message(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(progress_env(data_dir, telegram_api, poco)):
        await ask(telegram_api, CHAT, "/new two chats")
        session_id = list(poco.sessions)[-1]
        await ask(telegram_api, WATCHER, f"/watch {session_id}")
        poco.start_run(session_id)
        for chat in (CHAT, WATCHER):
            await telegram_api.wait_for(lambda f, c=chat: len(progress_sends(f, c)) == 1)
        poco.set_state_patch(session_id, {"current_step": "shared step"})
        watcher_message = progress_sends(telegram_api, WATCHER)[0]["message_id"]
        await wait_shown(telegram_api, WATCHER, watcher_message, "shared step")
        # A chat that stops watching mid-run still sees how the run ended.
        assert "Stopped watching" in await ask(telegram_api, WATCHER, f"/unwatch {session_id}")
        poco.finish_run(session_id, "completed")
        for chat in (CHAT, WATCHER):
            message_id = progress_sends(telegram_api, chat)[0]["message_id"]
            text = await wait_shown(telegram_api, chat, message_id, "completed")
            assert "running" not in text


async def test_progress_off_sends_none_and_reads_no_state(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(progress_env(data_dir, telegram_api, poco, IM_PROGRESS="off")):
        await ask(telegram_api, CHAT, "/new quietly")
        session_id = list(poco.sessions)[-1]
        poco.start_run(session_id)
        poco.set_state_patch(session_id, {"current_step": "unseen", "todos": TODOS})
        poco.add_tool_use(session_id, "Bash", {"command": "ls"})
        poco.add_assistant_text(session_id, "a text")
        poco.finish_run(session_id, "completed")
        await telegram_api.wait_for(
            lambda f: any("completed" in t for t in replies(f, CHAT)), timeout=10
        )
        # /stop and /status still work without progress messages.
        assert "Nothing to stop" in await ask(telegram_api, CHAT, "/stop")
    assert progress_sends(telegram_api, CHAT) == []
    assert edit_calls(telegram_api, CHAT) == []
    assert poco.count("GET", f"/sessions/{session_id}/state") == 0


async def test_dingtalk_stops_and_shows_status_by_command_without_progress_messages(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco, IM_PROGRESS="on")
    async with run_agent(env):
        await ding(dingtalk_api, "/new plan the trip")
        session_id = list(poco.sessions)[-1]
        poco.start_run(session_id)
        poco.set_state_patch(session_id, {"current_step": "Booking", "todos": TODOS})
        poco.add_assistant_text(session_id, "looking at trains")
        await dingtalk_api.wait_for(lambda: "looking at trains" in ding_texts(dingtalk_api)[-1])
        status = await ding(dingtalk_api, "/status")
        assert "running" in status and "📍 Booking" in status and "1/3 done" in status
        reply = await ding(dingtalk_api, "/stop")
        assert ("Stopping the run" if poco.is_new else "was canceled") in reply
        assert ("already stopping" if poco.is_new else "Nothing to stop") in await ding(
            dingtalk_api, "/cancel"
        )
        assert cancels(poco, session_id) == 1
    # No progress message (DingTalk cannot edit one), and so no state read but /status's.
    assert sum("running" in t for t in ding_texts(dingtalk_api)) == 1
    assert poco.count("GET", f"/sessions/{session_id}/state") == 1


def ding_texts(fake: FakeDingTalk) -> list[str]:
    return [s.markdown.get("text", "") for s in fake.sent]


async def ding(fake: FakeDingTalk, text: str) -> str:
    before = len(fake.sent)
    await fake.push_message("cid-progress-1", text)
    await fake.wait_for(lambda: len(fake.sent) > before, timeout=10)
    return ding_texts(fake)[-1]
