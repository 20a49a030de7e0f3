"""The inbound journal's consumer: each chat in order, also when a store write fails."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from agent.chats.base import InboundMessage
from agent.store.models import database_proxy
from tests.conftest import agent_environment, run_agent
from tests.fakes.poco import FakePoco
from tests.fakes.telegram import FakeTelegram
from tests.test_access import until
from tests.test_e2e_telegram import posted_prompts


def message(number: int, text: str) -> InboundMessage:
    """What the Telegram provider hands the dispatcher for an update of chat 77."""
    return InboundMessage("telegram", f"telegram:{900 + number}", "77", text, str(number))


async def test_a_failed_store_write_is_retried_in_order(
    telegram_api: FakeTelegram,
    poco: FakePoco,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env) as agent:
        dispatcher = agent.runtime.dispatcher
        # Another process (a DB browser, a backup) takes the write lock, and the agent
        # waits for it only briefly, so its next write fails.
        database_proxy.execute_sql("PRAGMA busy_timeout = 20")
        other = sqlite3.connect(data_dir / "im.db", isolation_level=None)
        try:
            # Journaled (the platform may be told), and the chat's worker not yet run:
            # `accept` returns without giving the loop a turn.
            await dispatcher.accept([message(1, "/new first"), message(2, "/new second")])
            other.execute("BEGIN IMMEDIATE")
            try:
                await asyncio.wait_for(until(lambda: "retrying" in caplog.text), timeout=10)
                assert poco.tasks_posted == []
            finally:
                other.execute("ROLLBACK")
            # A later message of the chat must not overtake the two held up.
            await dispatcher.accept([message(3, "/new third")])
            await poco.wait_for(lambda p: len(p.tasks_posted) == 3, timeout=10)
        finally:
            other.close()
        assert posted_prompts(poco) == ["first", "second", "third"]
        assert "Traceback" not in caplog.text  # a transient store error is one line
