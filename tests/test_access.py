"""Access control end to end: pairing from another shell, expiry, revoke, allowlist.

`pair approve/revoke` run as another process (another shell) while the agent runs: the
agent must see the change before its next decision, with no time-based cache.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from agent.chats.base import OutboundMessage
from agent.core import access
from agent.store import db, queries
from agent.store.models import Binding, Outbox, Watch
from tests.conftest import agent_environment, run_agent, subprocess_env
from tests.fakes.poco import FakePoco
from tests.fakes.telegram import FakeTelegram
from tests.test_e2e_telegram import say, texts_to

CODE = re.compile(r"[A-Z2-9]{4}-[A-Z2-9]{4}")


def pair(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`poco-im-agent pair ...` from another shell, while the agent runs."""
    return subprocess.run(
        [sys.executable, "-m", "agent", "pair", *args],
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def journal_drained() -> None:
    """Until every journaled message has been handled (refused ones included)."""
    while queries.inbound_rows("pending") or queries.inbound_rows("started"):
        await asyncio.sleep(0.05)


def backend_calls(poco: FakePoco) -> list[str]:
    """What chats caused: not the agent's own listings (`kind=all`) or health checks."""
    return [
        c.route
        for c in poco.requests
        if c.route != "/health" and not (c.route == "/sessions" and c.query.get("kind") == "all")
    ]


async def test_pair_approve_and_revoke_from_another_shell(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco, IM_ACCESS_POLICY="pairing")
    async with run_agent(env):
        code = CODE.search(await say(telegram_api, 11, "/new sneaky")).group(0)
        assert backend_calls(poco) == []
        listing = await asyncio.to_thread(pair, env, "list")
        assert (
            listing.returncode == 0 and code in listing.stdout and "telegram:11" in listing.stdout
        )

        assert (await asyncio.to_thread(pair, env, "approve", code.lower())).returncode == 0
        await telegram_api.wait_for(
            lambda f: any("now allowed" in t for t in texts_to(f, 11)), timeout=15
        )
        await say(telegram_api, 11, "/new now allowed")
        assert [t["prompt"] for t in poco.tasks_posted] == ["now allowed"]
        assert (await asyncio.to_thread(pair, env, "approve", code)).returncode == 1  # used

        revoked = await asyncio.to_thread(pair, env, "revoke", "telegram:11")
        assert revoked.returncode == 0
        update_id = telegram_api.inject_message(11, "/new after revoke")
        # Journaled once the agent confirmed it; then wait until it was handled (refused).
        await telegram_api.wait_for(lambda f: f.confirmed_offset > update_id, timeout=10)
        await asyncio.wait_for(journal_drained(), timeout=10)
        assert [t["prompt"] for t in poco.tasks_posted] == ["now allowed"]


async def test_allowlist_lets_only_listed_chats_in(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(
        data_dir,
        telegram=telegram_api,
        poco=poco,
        IM_ACCESS_POLICY="allowlist",
        IM_ALLOWLIST="telegram:21",
    )
    async with run_agent(env):
        telegram_api.inject_message(22, "/list")
        assert "/new" in await say(telegram_api, 21, "/help")
        await say(telegram_api, 21, "/new listed")
        assert texts_to(telegram_api, 22) == []
        assert [t["prompt"] for t in poco.tasks_posted] == ["listed"]
        # Chat 22's /list (10 sessions) never reached the backend; /new read the newest
        # session first, and the notifier lists sessions on its own.
        listings = [c.query for c in poco.requests if c.route == "/sessions"]
        chat_listings = [q for q in listings if q["kind"] == "chat"]
        assert chat_listings == [{"limit": "1", "offset": "0", "kind": "chat"}]


async def until(condition: Callable[[], bool]) -> None:
    """Until a condition on the store holds (it has no change events to wait on)."""
    while not condition():
        await asyncio.sleep(0.05)


async def outbox_settled() -> None:
    await until(lambda: not queries.outbox_pending_count())


def held_back() -> bool:
    """A row waits for a retry after a failed send."""
    return bool(
        Outbox.select().where((Outbox.status == "pending") & (Outbox.attempts > 0)).exists()
    )


def session_of_last_task(poco: FakePoco) -> str:
    return str(poco.tasks_posted[-1].get("session_id") or list(poco.sessions)[-1])


async def test_approve_and_revoke_count_at_once(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    """The recipe of issue 10 item 1: approve, /new, revoke, /new again at once, a text."""
    env = agent_environment(
        data_dir,
        telegram=telegram_api,
        poco=poco,
        IM_ACCESS_POLICY="pairing",
        IM_ALLOWLIST="telegram:12",  # a bystander that sees what the revoked chat must not
    )
    async with run_agent(env):
        code = CODE.search(await say(telegram_api, 11, "hello")).group(0)
        assert (await asyncio.to_thread(pair, env, "approve", code)).returncode == 0
        telegram_api.inject_message(11, "/new first")  # at once: no wait for "now allowed"
        await poco.wait_for(lambda p: len(p.tasks_posted) == 1, timeout=10)
        session_id = session_of_last_task(poco)
        await telegram_api.wait_for(
            lambda f: any("Session created" in t for t in texts_to(f, 11)), timeout=10
        )

        # A notification queued before the revoke, held back by a 429 until after it.
        telegram_api.fail_next("sendMessage", 429, retry_after=5)
        poco.add_assistant_text(session_id, "queued before the revoke")
        await asyncio.wait_for(until(held_back), timeout=10)

        revoked = await asyncio.to_thread(pair, env, "revoke", "telegram:11")
        assert revoked.returncode == 0, revoked.stderr
        assert "1 binding(s), 1 watch(es), 1 queued message(s)" in revoked.stdout
        update_id = telegram_api.inject_message(11, "/new again")
        await telegram_api.wait_for(lambda f: f.confirmed_offset > update_id, timeout=10)
        await asyncio.wait_for(journal_drained(), timeout=10)
        assert [t["prompt"] for t in poco.tasks_posted] == ["first"]

        poco.add_assistant_text(session_id, "after the revoke")
        await say(telegram_api, 12, f"/watch {session_id}")
        await telegram_api.wait_for(
            lambda f: any("after the revoke" in t for t in texts_to(f, 12)), timeout=10
        )
        await asyncio.wait_for(outbox_settled(), timeout=15)
        told = " ".join(texts_to(telegram_api, 11))
        assert "queued before" not in told and "after the revoke" not in told
        assert not Binding.select().exists() or all(
            b.channel.chat_id != "11" for b in Binding.select()
        )


async def test_revoked_while_its_task_is_being_created(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    """A revoke that lands while the chat's /new waits for the backend: the reply is queued
    after the revoke, and the binding made after it, yet neither outlives it."""
    env = agent_environment(
        data_dir,
        telegram=telegram_api,
        poco=poco,
        IM_ACCESS_POLICY="pairing",
        POLL_HTTP_TIMEOUT_SECONDS="30",
    )
    async with run_agent(env):
        code = CODE.search(await say(telegram_api, 13, "hello")).group(0)
        assert (await asyncio.to_thread(pair, env, "approve", code)).returncode == 0
        await telegram_api.wait_for(
            lambda f: any("now allowed" in t for t in texts_to(f, 13)), timeout=15
        )
        told_before = len(texts_to(telegram_api, 13))
        poco.set_delay(4)
        telegram_api.inject_message(13, "/new slow")
        # (FakePoco's wait_for wakes when a request is answered; this one is not yet.)
        await asyncio.wait_for(until(lambda: poco.count("POST", "/tasks") == 1), timeout=10)
        revoked = await asyncio.to_thread(pair, env, "revoke", "telegram:13")
        assert revoked.returncode == 0, revoked.stderr
        assert poco.tasks_posted == []  # the backend has not answered yet
        await poco.wait_for(lambda p: len(p.tasks_posted) == 1, timeout=10)
        await asyncio.wait_for(journal_drained(), timeout=10)
        poco.set_delay(0)
        await asyncio.wait_for(outbox_settled(), timeout=15)
        assert len(texts_to(telegram_api, 13)) == told_before  # no "Session created"
        assert not Binding.select().exists() and not Watch.select().exists()


async def test_leaving_the_allowlist_revokes_at_start(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(
        data_dir,
        telegram=telegram_api,
        poco=poco,
        IM_ACCESS_POLICY="allowlist",
        IM_ALLOWLIST="telegram:21,telegram:22",
    )
    async with run_agent(env):
        await say(telegram_api, 21, "/new listed")
        session_id = session_of_last_task(poco)
        await say(telegram_api, 22, f"/watch {session_id}")

    env["IM_ALLOWLIST"] = "telegram:22"
    async with run_agent(env):
        poco.add_assistant_text(session_id, "after the restart")
        await telegram_api.wait_for(
            lambda f: any("after the restart" in t for t in texts_to(f, 22)), timeout=10
        )
        await asyncio.wait_for(outbox_settled(), timeout=15)
        assert not any("after the restart" in t for t in texts_to(telegram_api, 21))
        update_id = telegram_api.inject_message(21, "/new unlisted now")
        await telegram_api.wait_for(lambda f: f.confirmed_offset > update_id, timeout=10)
        await asyncio.wait_for(journal_drained(), timeout=10)
        assert [t["prompt"] for t in poco.tasks_posted] == ["listed"]
        listing = await asyncio.to_thread(pair, env, "list")
        assert "telegram:21" not in listing.stdout
        assert "telegram:22" in listing.stdout and "IM_ALLOWLIST" in listing.stdout


def test_an_approved_chat_stays_when_the_allowlist_drops_it(tmp_path: Path) -> None:
    db.open_database(tmp_path / "im.db")
    try:
        pairing = access.AccessPolicy("pairing", (), "en")
        code = CODE.search(pairing.decide(queries.ensure_channel("telegram", "41")).reply.text)
        assert access.approve(code.group(0), "en") is not None
        access.AccessPolicy("pairing", ("telegram:41", "telegram:42"), "en").apply_at_start()
        access.AccessPolicy("pairing", (), "en").apply_at_start()
        allowed = {c.address for c in access.allowed_channels()}
        assert allowed == {"telegram:41"}
    finally:
        db.close_database()


def test_chats_let_in_while_open_lose_their_state_when_it_closes(tmp_path: Path) -> None:
    db.open_database(tmp_path / "im.db")
    try:
        access.AccessPolicy("open", (), "en").apply_at_start()
        channel = queries.ensure_channel("telegram", "51")
        queries.bind(channel, "session-1")
        queries.enqueue(channel, OutboundMessage("a notification"))
        access.AccessPolicy("pairing", (), "en").apply_at_start()
        assert not Binding.select().exists() and not Watch.select().exists()
        assert queries.outbox_pending_count() == 0
    finally:
        db.close_database()


def test_codes_expire_and_are_rate_limited(tmp_path: Path) -> None:
    db.open_database(tmp_path / "im.db")
    try:
        policy = access.AccessPolicy("pairing", (), "en")
        channel = queries.ensure_channel("telegram", "31")
        first = policy.decide(channel, now=1000.0)
        assert first.reply is not None and CODE.search(first.reply.text)
        code = CODE.search(first.reply.text).group(0)
        assert policy.decide(channel, now=1001.0).reply is None  # no flood of codes
        assert access.approve(code, "en", now=1000.0 + access.CODE_TTL_SECONDS + 1) is None
        assert access.pending_pairings(now=time.time()) == []
    finally:
        db.close_database()
