"""Delivery under trouble: platform outages, a locked store, kills between parts, clock steps."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from agent.chats.base import OutboundMessage, ProviderState
from agent.chats.telegram import TelegramProvider
from agent.core.delivery import Delivery
from agent.store import db, queries
from agent.store.models import Channel, Outbox
from tests.conftest import agent_environment, run_agent
from tests.fakes.poco import FakePoco
from tests.fakes.telegram import FakeTelegram
from tests.test_chats_telegram import settings_for
from tests.test_cli import start_agent, wait_healthy
from tests.test_e2e_telegram import say, texts_to

CHAT = 3003


def count(fake: FakeTelegram, chat_id: int, needle: str) -> int:
    return sum(needle in text for text in texts_to(fake, chat_id))


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition the fakes cannot signal (the agent's store, its process)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def queue(chat_id: int, text: str) -> Outbox:
    """What the notifier does: a row in the outbox of a known chat."""
    channel = queries.find_channel("telegram", str(chat_id))
    assert channel is not None
    row = queries.enqueue(channel, OutboundMessage(text, markdown=False))
    assert row is not None
    return row


def allowed_chat(chat_id: int) -> None:
    """A chat access control let in (only those are sent anything)."""
    channel = queries.ensure_channel("telegram", str(chat_id))
    Channel.update(allowed=True).where(Channel.id == channel.id).execute()


def attempts_of(row: Outbox) -> int:
    return int(Outbox.get_by_id(row.id).attempts)


@contextlib.asynccontextmanager
async def delivering(telegram_api: FakeTelegram, tmp_path: Path) -> AsyncIterator[Delivery]:
    """Delivery alone, with the real Telegram provider sending to the fake."""
    db.open_database(tmp_path / "im.db")
    provider = TelegramProvider(settings_for(telegram_api))
    await provider.bot.initialize()
    delivery = Delivery({"telegram": provider})
    stop = asyncio.Event()
    task = asyncio.create_task(delivery.run(stop))
    try:
        yield delivery
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await provider.close()
        db.close_database()


# --- issue 10: back off per chat and per platform, resume at once -------------------------


async def test_an_outage_is_probed_not_hammered(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    chats = [CHAT + i for i in range(5)]
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env) as agent:
        for chat in chats:
            await say(telegram_api, chat, "/help")
        telegram_api.outage = True
        start = len(telegram_api.calls)

        def during(method: str) -> int:
            return sum(call[0] == method for call in telegram_api.calls[start:])

        for chat in chats:
            queue(chat, "news")
        agent.runtime.delivery.wake()
        # The agent's own getUpdates retries (1 s, 1.5 s, 2.25 s...) measure out the outage.
        await telegram_api.wait_for(lambda f: during("getUpdates") >= 4, timeout=30)
        attempts = during("sendMessage")
        telegram_api.outage = False
        await telegram_api.wait_for(lambda f: all(count(f, c, "news") for c in chats), timeout=30)
    # Each chat retrying every second made ~5 attempts per chat; the platform's circuit
    # lets the first sends fail, then one probe at growing intervals.
    assert attempts <= 10, f"{attempts} sendMessage calls while Telegram was down"
    assert all(count(telegram_api, chat, "news") == 1 for chat in chats)


async def test_a_sign_of_life_resumes_delivery_at_once(
    telegram_api: FakeTelegram, tmp_path: Path
) -> None:
    async with delivering(telegram_api, tmp_path) as delivery:
        allowed_chat(CHAT)
        telegram_api.fail_next("sendMessage", 502, count=4)
        row = queue(CHAT, "back again")
        delivery.wake()
        # After 4 failures the next probe is at least 2.7 s away (3.4 s, -20% jitter).
        await wait_until(lambda: attempts_of(row) >= 4, 30, "four failed attempts")
        provider = delivery.providers["telegram"]
        provider.status.set(ProviderState.CONNECTED)  # what a successful getUpdates does
        await telegram_api.wait_for(lambda f: count(f, CHAT, "back again") == 1, timeout=2)


async def test_retry_after_is_waited_out_even_when_the_platform_answers(
    telegram_api: FakeTelegram, tmp_path: Path
) -> None:
    async with delivering(telegram_api, tmp_path) as delivery:
        allowed_chat(CHAT)
        telegram_api.fail_next("sendMessage", 429, retry_after=2)
        row = queue(CHAT, "patience")
        delivery.wake()
        await wait_until(lambda: attempts_of(row) >= 1, 10, "the flood-controlled attempt")
        delivery.providers["telegram"].status.set(ProviderState.CONNECTED)
        await telegram_api.wait_for(lambda f: count(f, CHAT, "patience") == 1, timeout=10)
    sends = [at for method, _, at in telegram_api.calls if method == "sendMessage"]
    assert len(sends) == 2
    assert sends[1] - sends[0] >= 1.9


# --- issue 11: a locked store neither repeats a send nor freezes the agent ----------------


async def test_a_locked_store_never_repeats_a_send_nor_freezes_the_agent(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env) as agent:
        await say(telegram_api, CHAT, "/help")
        queue(CHAT, "exactly once")
        # Another process (a DB browser, a backup) takes the write lock before delivery
        # runs: no await between the two, so the agent cannot send first.
        browser = sqlite3.connect(data_dir / "im.db", isolation_level=None)
        browser.execute("BEGIN IMMEDIATE")
        try:
            agent.runtime.delivery.wake()
            await telegram_api.wait_for(lambda f: count(f, CHAT, "exactly once") == 1, 10)
            telegram_api.inject_message(CHAT + 1, "/help")  # its journal write waits too
            # The loop answers meanwhile: asked from a thread, as the agent shares this loop.
            health = await asyncio.to_thread(httpx.get, agent.health_url, timeout=3)
            assert health.json()["outbox_pending"] == 1
            # Before, the worker died on the failed write and sent again after each 5 s.
            with pytest.raises(TimeoutError):
                await telegram_api.wait_for(lambda f: count(f, CHAT, "exactly once") > 1, 6)
        finally:
            browser.execute("ROLLBACK")
            browser.close()
        await telegram_api.wait_for(lambda f: count(f, CHAT + 1, "/new") == 1, timeout=15)
        await wait_until(lambda: queries.outbox_pending_count() == 0, 10, "the row marked sent")
    assert count(telegram_api, CHAT, "exactly once") == 1
    assert count(telegram_api, CHAT + 1, "/new") == 1


# --- issue 12: a kill between parts resumes after the last delivered part ------------------


def parts_recorded(database: Path) -> int:
    """Of the long message still pending, how many parts the store says went out."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        rows = connection.execute("SELECT payload FROM outbox WHERE status = 'pending'")
        return max((json.loads(p).get("parts_sent", 0) for (p,) in rows), default=0)


async def test_kill_9_between_parts_resumes_after_the_last_delivered_part(
    tmp_path: Path, telegram_api: FakeTelegram, poco: FakePoco
) -> None:
    group = -1005001
    data_dir = tmp_path / "data"
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    lines = [f"line {i:04d} of a long answer" for i in range(700)]  # 5 parts
    process = await start_agent(tmp_path, env)
    try:
        await wait_healthy(data_dir / "agent.port")
        telegram_api.inject_message(group, "/new a long answer", chat_type="supergroup")
        await telegram_api.wait_for(lambda f: bool(texts_to(f, group)), timeout=10)
        session_id = list(poco.sessions)[-1]
        poco.start_run(session_id)
        poco.add_assistant_text(session_id, "\n".join(lines))
        # A group gets 20 messages a minute: after its burst the parts go out 3 s apart.
        # Kill the agent in such a gap, once the store holds the parts already sent.
        await wait_until(lambda: parts_recorded(data_dir / "im.db") >= 2, 30, "parts recorded")
        process.kill()
        await process.wait()
        process = await start_agent(tmp_path, env)
        await wait_healthy(data_dir / "agent.port")
        await telegram_api.wait_for(lambda f: count(f, group, lines[-1]) == 1, timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=20)
    sent = "".join(texts_to(telegram_api, group))
    assert [line for line in lines if sent.count(line) != 1] == []


# --- issue 15: waits on the monotonic clock ------------------------------------------------


async def test_a_backward_clock_step_does_not_freeze_a_chat(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env) as agent:
        await say(telegram_api, CHAT, "/help")
        telegram_api.fail_next("sendMessage", 502)
        row = queue(CHAT, "after the step")
        agent.runtime.delivery.wake()
        await wait_until(lambda: attempts_of(row) >= 1, 10, "the failed attempt")
        wall = time.time
        monkeypatch.setattr(time, "time", lambda: wall() - 3600)  # NTP steps back an hour
        await telegram_api.wait_for(lambda f: count(f, CHAT, "after the step") == 1, 10)


async def test_a_stored_retry_time_is_not_trusted_at_start(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await say(telegram_api, CHAT, "/help")
    # Stored by a run whose clock was an hour ahead (stepped back since).
    db.open_database(data_dir / "im.db")
    queries.mark_retry(queue(CHAT, "kept for later"), 3600, "Bad Gateway")
    db.close_database()
    async with run_agent(env):
        await telegram_api.wait_for(lambda f: count(f, CHAT, "kept for later") == 1, 15)


async def test_a_revoked_chat_holding_the_probe_does_not_stall_the_platform(
    telegram_api: FakeTelegram, tmp_path: Path
) -> None:
    revoked_chat, other_chat = CHAT + 70, CHAT + 71
    async with delivering(telegram_api, tmp_path) as delivery:
        allowed_chat(revoked_chat)
        allowed_chat(other_chat)
        telegram_api.fail_next("sendMessage", 502, count=1)  # the platform looks down
        row = queue(revoked_chat, "never")
        delivery.wake()
        await wait_until(lambda: attempts_of(row) >= 1, 10, "the failed attempt")
        Channel.update(allowed=False).where(Channel.chat_id == str(revoked_chat)).execute()
        queue(other_chat, "still delivered")
        delivery.wake()
        # The revoked chat's row is dropped when its probe comes up; the next chat probes.
        await telegram_api.wait_for(
            lambda f: count(f, other_chat, "still delivered") == 1, timeout=15
        )
    assert count(telegram_api, revoked_chat, "never") == 0
