"""End to end: the real agent against the fake Telegram and the fake Poco backend."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from agent.core import access
from tests.conftest import agent_environment, run_agent
from tests.fakes.poco import GENERATIONS, FakePoco
from tests.fakes.telegram import FakeTelegram

# Every test here runs against both backend generations (Feb and April 2026).
pytestmark = pytest.mark.parametrize("poco_generation", GENERATIONS, ids=lambda g: f"poco-{g}")

CHAT = 1001


def texts_to(fake: FakeTelegram, chat_id: int) -> list[str]:
    return [m["text"] for m in fake.sent if str(m["chat_id"]) == str(chat_id)]


async def say(fake: FakeTelegram, chat_id: int, text: str, count: int = 1, **kwargs) -> str:
    """Send a message and return the newest reply once `count` more replies arrived."""
    before = len(texts_to(fake, chat_id))
    fake.inject_message(chat_id, text, **kwargs)
    await fake.wait_for(lambda f: len(texts_to(f, chat_id)) >= before + count, timeout=10)
    return texts_to(fake, chat_id)[-1]


async def continue_session(fake: FakeTelegram, poco: FakePoco, chat_id: int, text: str) -> None:
    """Plain text in a bound chat: Telegram shows typing, the backend gets the prompt."""
    fake.inject_message(chat_id, text)
    await poco.wait_for(lambda p: text in posted_prompts(p), timeout=10)


def continued_reply(poco: FakePoco) -> str:
    """How a follow-up to a session whose run waits for an executor is answered: the April
    2026 backend queues it behind that run, the older one adds a run."""
    return "Queued" if poco.is_new else "Sent to session"


def posted_prompts(poco: FakePoco) -> list[str]:
    return [body["prompt"] for body in poco.tasks_posted]


async def test_help_and_every_command(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        assert "/new" in await say(telegram_api, CHAT, "/help")
        assert "/list" in await say(telegram_api, CHAT, "/start")
        assert "not connected" in await say(telegram_api, CHAT, "hello there")
        assert poco.tasks_posted == []

        reply = await say(telegram_api, CHAT, "/new Summarise README please")
        assert posted_prompts(poco) == ["Summarise README please"]
        session_id = poco.tasks_posted[0]["session_id"] or next(iter(poco.sessions))
        assert f"http://localhost:3000/zh/chat/{session_id}" in reply

        await continue_session(telegram_api, poco, CHAT, "and make it short")
        assert posted_prompts(poco)[-1] == "and make it short"
        if poco.is_new:  # queued behind the first run: said in words
            await telegram_api.wait_for(lambda f: "Queued" in texts_to(f, CHAT)[-1])
        await telegram_api.wait_for(
            lambda f: any(c[0] == "sendChatAction" for c in f.calls), timeout=10
        )
        assert poco.tasks_posted[-1]["session_id"] == session_id

        assert session_id in await say(telegram_api, CHAT, "/link")
        assert session_id in await say(telegram_api, CHAT, "/current")
        listing = await say(telegram_api, CHAT, "/list")
        assert "1." in listing and session_id[:8] in listing and "🔗" in listing

        other = poco.create_session(prompt="another one")
        listing = await say(telegram_api, CHAT, "/list 5")
        assert other[:8] in listing
        assert other in await say(telegram_api, CHAT, "/connect 1")
        assert other in await say(telegram_api, CHAT, "/link")

        third = poco.create_session(prompt="a third one")
        assert "Watching" in await say(telegram_api, CHAT, f"/watch {third}")
        assert "Already" in await say(telegram_api, CHAT, f"/watch {third}")
        watches = await say(telegram_api, CHAT, "/watches")
        assert session_id in watches and other in watches and third in watches
        assert "Stopped watching" in await say(telegram_api, CHAT, "/unwatch 1")
        assert "Disconnected" in await say(telegram_api, CHAT, "/clear")
        assert "not connected" in await say(telegram_api, CHAT, "/disconnect")
        assert "not connected" in await say(telegram_api, CHAT, "/link")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/connect not-a-session", "is not a session id"),
        ("/connect 99", "no session number 99"),
        ("/connect 00000000-0000-0000-0000-000000000000", "was not found"),
        ("/watch 12345678-1234-1234-1234-123456789abc", "was not found"),
        ("/list lots", "is not a number"),
        ("/unwatch", "Usage"),
        ("/new", "Usage"),
        ("/answer", "Usage"),
        ("/answer 12345678-1234-1234-1234-123456789abc {not json", "JSON object"),
        ("/answer 12345678-1234-1234-1234-123456789abc [1,2]", "JSON object"),
        ('/answer 12345678-1234-1234-1234-123456789abc {"q":"a"}', "No input request"),
        ("/frobnicate", "Unknown command"),
        ("/", "Unknown command"),
        ("x" * 100_000, "too long"),
        ("🤖\u0000\u200b\u202e", "not connected"),
    ],
)
async def test_bad_input_gets_a_clear_reply(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path, text: str, expected: str
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        reply = await say(telegram_api, CHAT, text)
        assert expected in reply
        # The agent is alive and still answers.
        assert "/new" in await say(telegram_api, CHAT, "/help")
    assert poco.tasks_posted == []


async def test_backend_down_gives_a_short_reply(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await say(telegram_api, CHAT, "/new first task")
        await poco.stop()
        reply = await say(telegram_api, CHAT, "continue please")
        assert "cannot be reached" in reply
        assert "Traceback" not in reply
        await poco.start()
        await continue_session(telegram_api, poco, CHAT, "continue again")


async def test_pairing_refuses_without_backend_calls(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco, IM_ACCESS_POLICY="pairing")
    async with run_agent(env):
        calls_before = len(poco.requests)
        reply = await say(telegram_api, CHAT, "/list")
        assert "Pairing code" in reply
        code = re.search(r"[A-Z2-9]{4}-[A-Z2-9]{4}", reply).group(0)
        fake_before = len(texts_to(telegram_api, CHAT))
        telegram_api.inject_message(CHAT, "/new please run")
        await telegram_api.wait_for(lambda f: f.confirmed_offset > 2, timeout=5)
        assert len(texts_to(telegram_api, CHAT)) == fake_before  # rate-limited: no new code
        own = ("/api/v1/health", "/api/v1/sessions")  # the agent's own probes and listings
        assert [r for r in poco.requests[calls_before:] if r["path"] not in own] == []

        assert access.approve(code, "en") is not None
        await telegram_api.wait_for(
            lambda f: any("now allowed" in t for t in texts_to(f, CHAT)), timeout=10
        )
        await say(telegram_api, CHAT, "/new now it works")
        assert posted_prompts(poco) == ["now it works"]


async def test_health_endpoint(telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env) as agent:
        await say(telegram_api, CHAT, "/help")
        async with httpx.AsyncClient() as client:
            health = (await client.get(agent.health_url)).json()
        assert health["status"] == "ok"
        assert health["providers"]["telegram"]["state"] == "connected"
        assert health["providers"]["dingtalk"]["state"] == "disabled"
        assert health["backend"]["state"] == "reachable"
        assert health["outbox_pending"] == 0
        assert telegram_api.token not in json.dumps(health)
        assert str(CHAT) not in json.dumps(health)
        assert (data_dir / "agent.port").read_text() == str(agent.runtime.port)


async def test_replies_in_chinese(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco, IM_LANG="zh")
    async with run_agent(env):
        assert "新建会话" in await say(telegram_api, CHAT, "/help")
        assert "尚未连接会话" in await say(telegram_api, CHAT, "你好")
        assert "未知命令" in await say(telegram_api, CHAT, "/什么")
