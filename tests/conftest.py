"""Shared fixtures: each fake server runs on 127.0.0.1 port 0 and yields itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# PTB ≥ 22.2 warns on every RetryAfter unless told to use timedelta; warnings are errors here.
os.environ.setdefault("PTB_TIMEDELTA", "true")

from agent.config import build_settings  # noqa: E402
from agent.runtime import Runtime  # noqa: E402
from tests.fakes.dingtalk import FakeDingTalk  # noqa: E402
from tests.fakes.poco import GEN_OLD, GENERATIONS, FakePoco  # noqa: E402
from tests.fakes.telegram import FakeTelegram  # noqa: E402


@pytest.fixture
async def telegram_api() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@contextlib.asynccontextmanager
async def running_poco(generation: str) -> AsyncIterator[FakePoco]:
    fake = FakePoco(generation=generation)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def poco_generation() -> str:
    """The backend generation `poco` plays. Override it to run a module or test against
    both, e.g. `@pytest.mark.parametrize("poco_generation", GENERATIONS)`."""
    return GEN_OLD


@pytest.fixture
async def poco(poco_generation: str) -> AsyncIterator[FakePoco]:
    async with running_poco(poco_generation) as fake:
        yield fake


@pytest.fixture(params=GENERATIONS, ids=lambda g: f"poco-{g}")
async def poco_any(request: pytest.FixtureRequest) -> AsyncIterator[FakePoco]:
    """A fake Poco of each generation in turn (`poco_any.generation`); the agent reaches
    the new one with `agent_environment(..., poco=poco_any)` (it sets the token)."""
    async with running_poco(request.param) as fake:
        yield fake


@pytest.fixture
async def dingtalk_api() -> AsyncIterator[FakeDingTalk]:
    fake = FakeDingTalk()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


AGENT_VARIABLE_PREFIXES = ("TELEGRAM_", "DINGTALK_", "IM_", "BACKEND_", "POLL_")


def subprocess_env(**variables: str) -> dict[str, str]:
    """This process's environment without any agent variable, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(AGENT_VARIABLE_PREFIXES)}
    env.update(variables)
    return env


def agent_environment(
    data_dir: Path,
    *,
    telegram: FakeTelegram | None = None,
    poco: FakePoco | None = None,
    dingtalk: FakeDingTalk | None = None,
    **overrides: str,
) -> dict[str, str]:
    """The variables that point an agent at the fakes, in a private data dir."""
    env = {
        "IM_DATA_DIR": str(data_dir),
        "IM_HTTP_PORT": "0",
        "IM_LANG": "en",
        "IM_ACCESS_POLICY": "open",
        "BACKEND_URL": poco.url if poco else "http://127.0.0.1:9",
        "POLL_SESSION_MESSAGES_INTERVAL_SECONDS": "0.2",
        "POLL_USER_INPUT_INTERVAL_SECONDS": "0.2",
        "POLL_SESSIONS_RECENT_INTERVAL_SECONDS": "0.5",
        "POLL_HTTP_TIMEOUT_SECONDS": "3",
        "TELEGRAM_POLL_TIMEOUT_SECONDS": "1",
        # Progress messages (and their edits) would interleave with the replies and texts
        # other tests count: only the tests about progress turn them on.
        "IM_PROGRESS": "off",
    }
    if poco is not None:
        # The new generation's INTERNAL_API_TOKEN; the old one ignores X-Internal-Token.
        env["BACKEND_INTERNAL_TOKEN"] = poco.internal_token
    if telegram is not None:
        env["TELEGRAM_BOT_TOKEN"] = telegram.token
        env["TELEGRAM_API_BASE_URL"] = telegram.url
    if dingtalk is not None:
        env["DINGTALK_CLIENT_ID"] = dingtalk.client_id
        env["DINGTALK_CLIENT_SECRET"] = dingtalk.client_secret
        env["DINGTALK_ROBOT_CODE"] = dingtalk.robot_code
        env["DINGTALK_OPEN_BASE_URL"] = dingtalk.url
    env.update(overrides)
    return env


class RunningAgent:
    """An in-process agent: its runtime, its port, and a way to stop it."""

    def __init__(self, runtime: Runtime, task: asyncio.Task[None]) -> None:
        self.runtime = runtime
        self.task = task

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.runtime.port}/api/v1/health"

    async def stop(self) -> None:
        self.runtime.request_stop()
        await asyncio.wait_for(self.task, timeout=20)


@contextlib.asynccontextmanager
async def run_agent(env: dict[str, str]) -> AsyncIterator[RunningAgent]:
    settings = build_settings(env)
    runtime = Runtime(settings)
    task = asyncio.create_task(runtime.run())
    ready = asyncio.create_task(runtime.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # raises the start-up error
    assert ready in done, "agent did not start"
    agent = RunningAgent(runtime, task)
    try:
        yield agent
    finally:
        if not task.done():
            await agent.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
