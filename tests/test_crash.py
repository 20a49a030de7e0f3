"""kill -9 while `POST /tasks` is in flight: after a restart the backend has the prompt
exactly once and the chat got its usual reply exactly once, on both backend generations.

The agent runs as the real `python -m agent run` subprocess; the fake Poco holds the
request (after creating the task, or before: then the backend never gets it).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.conftest import agent_environment
from tests.fakes.poco import GEN_NEW, GENERATIONS, FakePoco
from tests.fakes.telegram import FakeTelegram
from tests.test_cli import start_agent, wait_healthy
from tests.test_e2e_telegram import texts_to
from tests.test_intents import backend_prompts, sessions_starting_with

pytestmark = pytest.mark.parametrize("poco_generation", GENERATIONS)

CHAT = 777
PROMPT = "Count the lines of README"


class Agent:
    def __init__(self, tmp_path: Path, telegram: FakeTelegram, poco: FakePoco) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self.env = agent_environment(self.data_dir, telegram=telegram, poco=poco)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[asyncio.subprocess.Process]:
        (self.data_dir / "agent.port").unlink(missing_ok=True)
        process = await start_agent(self.tmp_path, self.env)
        try:
            await wait_healthy(self.data_dir / "agent.port")
            yield process
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), timeout=20)


async def kill_in_flight(
    agent: Agent, telegram: FakeTelegram, poco: FakePoco, text: str, *, create: bool
) -> None:
    """Send `text`, hold its POST /tasks at the backend, kill -9 the agent meanwhile."""
    poco.hold_tasks(create=create)
    async with agent.running() as process:
        telegram.inject_message(CHAT, text)
        await poco.wait_for(lambda p: p.tasks_held == 1, timeout=20)
        process.kill()
        await process.wait()
    if create:
        poco.release_tasks()  # the answer goes nowhere: the agent is gone
    else:
        await poco.stop()  # the request is cut off before the backend created anything
        await poco.start()
        poco.release_tasks()


async def bind(agent: Agent, telegram: FakeTelegram, session_id: str) -> None:
    async with agent.running():
        telegram.inject_message(CHAT, f"/connect {session_id}")
        await telegram.wait_for(lambda f: len(texts_to(f, CHAT)) >= 1, timeout=20)


@pytest.mark.parametrize("reached", [True, False], ids=["reached", "never-reached"])
async def test_new_killed_in_flight(
    tmp_path: Path, telegram_api: FakeTelegram, poco: FakePoco, reached: bool
) -> None:
    agent = Agent(tmp_path, telegram_api, poco)
    await kill_in_flight(agent, telegram_api, poco, f"/new {PROMPT}", create=reached)
    assert len(sessions_starting_with(poco, PROMPT)) == (1 if reached else 0)
    async with agent.running():
        await telegram_api.wait_for(lambda f: len(texts_to(f, CHAT)) >= 1, timeout=20)
        [session_id] = sessions_starting_with(poco, PROMPT)
    assert backend_prompts(poco, session_id) == [PROMPT]
    [reply] = texts_to(telegram_api, CHAT)
    assert "Session created" in reply and session_id in reply


@pytest.mark.parametrize("running", [True, False], ids=["while-running", "idle"])
async def test_follow_up_killed_in_flight(
    tmp_path: Path, telegram_api: FakeTelegram, poco: FakePoco, running: bool
) -> None:
    """While a run is going the April 2026 backend queues the follow-up (no user message
    yet); otherwise, and on the Feb 2026 backend, it is a user message and a run."""
    agent = Agent(tmp_path, telegram_api, poco)
    session_id = poco.create_session(prompt="start", status="running" if running else "completed")
    await bind(agent, telegram_api, session_id)
    replies_before = len(texts_to(telegram_api, CHAT))
    await kill_in_flight(agent, telegram_api, poco, PROMPT, create=True)
    assert backend_prompts(poco, session_id) == ["start", PROMPT]
    queued = running and poco.generation == GEN_NEW
    typing_before = sum(c[0] == "sendChatAction" for c in telegram_api.calls)
    async with agent.running():
        if queued:  # the reply to a queued follow-up says so
            await telegram_api.wait_for(
                lambda f: len(texts_to(f, CHAT)) > replies_before, timeout=20
            )
        else:  # Telegram's reply to a follow-up is the typing indicator
            await telegram_api.wait_for(
                lambda f: sum(c[0] == "sendChatAction" for c in f.calls) > typing_before, 20
            )
    assert backend_prompts(poco, session_id) == ["start", PROMPT]
    replies = texts_to(telegram_api, CHAT)[replies_before:]
    if queued:
        assert len(replies) == 1 and "Queued" in replies[0]
    else:
        assert not any("may not have reached" in text for text in replies)
        assert not any("Queued" in text or "Sent" in text for text in replies)


async def test_follow_up_the_backend_never_got_is_sent_once_after_restart(
    tmp_path: Path, telegram_api: FakeTelegram, poco: FakePoco
) -> None:
    agent = Agent(tmp_path, telegram_api, poco)
    session_id = poco.create_session(prompt="start", status="completed")
    await bind(agent, telegram_api, session_id)
    await kill_in_flight(agent, telegram_api, poco, PROMPT, create=False)
    assert backend_prompts(poco, session_id) == ["start"]
    async with agent.running():
        await poco.wait_for(lambda p: PROMPT in backend_prompts(p, session_id), timeout=20)
    assert backend_prompts(poco, session_id) == ["start", PROMPT]
