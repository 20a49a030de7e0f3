"""A Telegram group upgraded to a supergroup keeps its approval, session and queue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import build_settings
from agent.store import db, queries
from agent.store.models import Channel, Outbox
from tests.conftest import agent_environment, run_agent
from tests.fakes.poco import FakePoco
from tests.fakes.telegram import FakeTelegram

GROUP = -5005


def texts_to(fake: FakeTelegram, chat_id: int) -> list[str]:
    return [m["text"] for m in fake.sent if m["chat_id"] == chat_id]


async def say(fake: FakeTelegram, chat_id: int, text: str) -> str:
    before = len(texts_to(fake, chat_id))
    fake.inject_message(chat_id, text, chat_type="group" if chat_id == GROUP else None)
    await fake.wait_for(lambda f: len(texts_to(f, chat_id)) > before, timeout=10)
    return texts_to(fake, chat_id)[-1]


async def eventually(predicate: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def approve_group(env: dict[str, str]) -> None:
    """The owner approved the group before this run (pairing policy)."""
    db.open_database(build_settings(env).database_path)
    try:
        channel = queries.ensure_channel("telegram", str(GROUP))
        Channel.update(allowed=True, is_group=True).where(Channel.id == channel.id).execute()
    finally:
        db.close_database()


@pytest.mark.parametrize("announced", [True, False], ids=["service-messages", "send-error"])
async def test_upgraded_group_keeps_its_session_and_queue(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path, announced: bool
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco, IM_ACCESS_POLICY="pairing")
    approve_group(env)
    async with run_agent(env):
        await say(telegram_api, GROUP, "/new group task")
        session_id = str(poco.tasks_posted[-1].get("session_id") or list(poco.sessions)[-1])

        new_id = telegram_api.migrate_group(GROUP, announce=announced)
        if announced:
            await telegram_api.wait_for(lambda f: f.confirmed_offset > max(f.updates_available_at))
        poco.start_run(session_id)
        poco.add_assistant_text(session_id, "text after the upgrade")
        # Sent to the supergroup (directly, or retried there after Telegram's 400).
        await telegram_api.wait_for(
            lambda f: any("text after the upgrade" in t for t in texts_to(f, new_id)), 10
        )

        # The supergroup is the same chat: approved, bound, no pairing code.
        prompts_before = len(poco.tasks_posted)
        telegram_api.inject_message(new_id, "follow-up in the supergroup")
        await poco.wait_for(lambda p: len(p.tasks_posted) > prompts_before, 10)
        assert poco.tasks_posted[-1]["prompt"] == "follow-up in the supergroup"
        assert poco.tasks_posted[-1]["session_id"] == session_id
        assert not any("Pairing code" in t for t in texts_to(telegram_api, new_id))

        channel = queries.find_channel("telegram", str(new_id))
        assert channel is not None and channel.allowed
        assert queries.find_channel("telegram", str(GROUP)) == channel
        assert queries.bound_session(channel) == session_id
        assert session_id in queries.watched_session_ids(channel)


async def test_a_move_to_the_same_id_gives_up_instead_of_looping(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    telegram_api.migrated_chats[GROUP] = GROUP  # a broken answer: "moved" to itself
    async with run_agent(env):
        telegram_api.inject_message(GROUP, "/help", chat_type="group")
        await eventually(lambda: Outbox.select().where(Outbox.status == "failed").exists())
    sends = [c for c in telegram_api.calls if c[0] == "sendMessage"]
    assert len(sends) == 1
