"""End to end: the real agent with DingTalk Stream (and Telegram) against the fakes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import agent_environment, run_agent
from tests.fakes.dingtalk import FakeDingTalk
from tests.fakes.poco import GENERATIONS, FakePoco
from tests.fakes.telegram import FakeTelegram
from tests.test_e2e_telegram import continued_reply

# Every test here runs against both backend generations (Feb and April 2026).
pytestmark = pytest.mark.parametrize("poco_generation", GENERATIONS, ids=lambda g: f"poco-{g}")

PRIVATE = "cid-private-1"
GROUP = "cid-group-1"


def texts_to(fake: FakeDingTalk, route: str | None = None) -> list[str]:
    return [s.markdown.get("text", "") for s in fake.sent if route in (None, s.route)]


async def say(fake: FakeDingTalk, text: str, conversation: str = PRIVATE, **kwargs) -> str:
    before = len(fake.sent)
    await fake.push_message(conversation, text, **kwargs)
    await fake.wait_for(lambda: len(fake.sent) > before, timeout=10)
    return texts_to(fake)[-1]


async def test_private_commands_and_continuation(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco)
    async with run_agent(env):
        assert "/new" in await say(dingtalk_api, "/help")
        assert dingtalk_api.sent[-1].route == "session_webhook"
        reply = await say(dingtalk_api, "/new draft a plan")
        assert poco.tasks_posted[-1]["prompt"] == "draft a plan"
        session_id = list(poco.sessions)[-1]
        assert session_id in reply
        # DingTalk has no typing indicator: a continuation is acknowledged in words.
        assert continued_reply(poco) in await say(dingtalk_api, "more detail please")
        assert poco.tasks_posted[-1]["session_id"] == session_id
        assert "voice notes only" in await say(dingtalk_api, "", msgtype="chatRecord")


async def test_group_needs_a_mention_and_an_empty_mention_is_help(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco)
    async with run_agent(env):
        await dingtalk_api.push_message(GROUP, "/new ignored", conversation_type="2")
        assert "/new" in await say(dingtalk_api, "@Poco", GROUP, conversation_type="2", at_bot=True)
        assert "ignored" not in str(poco.tasks_posted)
        await say(
            dingtalk_api, "@Poco /new from the group", GROUP, conversation_type="2", at_bot=True
        )
        assert [t["prompt"] for t in poco.tasks_posted] == ["from the group"]


async def test_redelivered_frame_runs_once(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco)
    async with run_agent(env):
        msg_id = await dingtalk_api.push_message(PRIVATE, "/new only once")
        await poco.wait_for(lambda p: len(p.tasks_posted) == 1, timeout=10)
        await dingtalk_api.redeliver(msg_id)
        await dingtalk_api.wait_for(
            lambda: (
                len([f for f in dingtalk_api.ack_frames if f.get("headers", {}).get("messageId")])
                >= 2
            ),
            timeout=10,
        )
        await say(dingtalk_api, "/help")
        assert [t["prompt"] for t in poco.tasks_posted] == ["only once"]


async def test_notifications_to_group_and_private_through_openapi(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco)
    async with run_agent(env):
        await say(dingtalk_api, "/new private task")
        private_session = list(poco.sessions)[-1]
        await say(dingtalk_api, "@Poco /new group task", GROUP, conversation_type="2", at_bot=True)
        group_session = list(poco.sessions)[-1]
        dingtalk_api.expire_session_webhooks()
        for session_id, marker in ((private_session, "PRIV-TEXT"), (group_session, "GRP-TEXT")):
            poco.start_run(session_id)
            poco.add_assistant_text(session_id, marker)
            poco.finish_run(session_id, "completed")
        await dingtalk_api.wait_for(
            lambda: (
                any("GRP-TEXT" in t for t in texts_to(dingtalk_api, "group"))
                and any("PRIV-TEXT" in t for t in texts_to(dingtalk_api, "oto"))
            ),
            timeout=15,
        )
        await dingtalk_api.wait_for(
            lambda: sum("completed" in t for t in texts_to(dingtalk_api)) == 2, timeout=15
        )


async def test_answers_by_number_and_by_word(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco)
    async with run_agent(env):
        await say(dingtalk_api, "/new ask me")
        session_id = list(poco.sessions)[-1]
        poco.start_run(session_id)
        question = poco.add_question(
            session_id, "Which format?", ["Bullets", "Prose"], header="Format"
        )
        await dingtalk_api.wait_for(
            lambda: any("Which format?" in t for t in texts_to(dingtalk_api)), timeout=10
        )
        prompt = next(t for t in texts_to(dingtalk_api) if "Which format?" in t)
        assert "1. Bullets" in prompt and "2. Prose" in prompt
        assert "Answer sent" in await say(dingtalk_api, "2")
        assert poco.input_requests[question]["answers"] == {"Which format?": "Prose"}

        plan = poco.add_input_request(
            session_id, "ExitPlanMode", {"plan": "1. read\n2. write"}, expires_in=600
        )
        await dingtalk_api.wait_for(
            lambda: any("proposes a plan" in t for t in texts_to(dingtalk_api)), timeout=10
        )
        assert "Answer sent" in await say(dingtalk_api, "批准")
        assert poco.input_requests[plan]["answers"] == {"approved": "true"}
        # The same number again right after is a repeated answer, not a prompt for the
        # session (with no open or recently closed prompt it would be one).
        tasks = len(poco.tasks_posted)
        assert "already answered in this chat" in await say(dingtalk_api, "2")
        assert len(poco.tasks_posted) == tasks


async def test_telegram_and_dingtalk_in_one_process(
    telegram_api: FakeTelegram, dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, dingtalk=dingtalk_api, poco=poco)
    async with run_agent(env) as agent:
        assert "/new" in await say(dingtalk_api, "/help")
        telegram_api.inject_message(42, "/new from telegram")
        await poco.wait_for(lambda p: len(p.tasks_posted) == 1, timeout=10)
        await say(dingtalk_api, "/new from dingtalk")
        assert [t["prompt"] for t in poco.tasks_posted] == ["from telegram", "from dingtalk"]
        async with httpx.AsyncClient() as client:
            health = (await client.get(agent.health_url)).json()
        assert health["providers"]["telegram"]["state"] == "connected"
        assert health["providers"]["dingtalk"]["state"] == "connected"
        assert health["providers"]["dingtalk"]["last_ok_at"]
        assert health["status"] == "ok"


async def test_gateway_drop_and_disconnect_lose_nothing(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco)
    async with run_agent(env):
        await say(dingtalk_api, "/help")
        await dingtalk_api.disconnect_all()
        await dingtalk_api.push_message(PRIVATE, "/new after a drop")  # queued until reconnect
        await poco.wait_for(lambda p: len(p.tasks_posted) == 1, timeout=15)
        await dingtalk_api.send_system_disconnect()
        await dingtalk_api.push_message(PRIVATE, "/new after disconnect")
        await poco.wait_for(lambda p: len(p.tasks_posted) == 2, timeout=15)
