"""Access control end to end: pairing from another shell, expiry, revoke, allowlist."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

from agent.core import access
from agent.store import db, queries
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
        await asyncio.sleep(5.5)  # the agent re-reads a chat's access every 5 s
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
