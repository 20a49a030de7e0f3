"""Forged or replayed DingTalk calls cannot redirect a chat or make the agent POST elsewhere."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.chats.base import ProviderState
from agent.chats.dingtalk_webhook import sign
from agent.core import access
from agent.store import queries
from tests.conftest import RunningAgent, agent_environment, run_agent
from tests.fakes.dingtalk import FakeDingTalk
from tests.fakes.poco import FakePoco

CHAT = "conv-victim"
DT_TOKEN = "dt-webhook-token-forgery-1"


@pytest.fixture
async def elsewhere() -> AsyncIterator[FakeDingTalk]:
    """Another server on 127.0.0.1 that records any POST: where a forger wants replies."""
    fake = FakeDingTalk()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def eventually(predicate: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def webhook_env(data_dir: Path, dingtalk: FakeDingTalk, poco: FakePoco, **more: str):
    env = agent_environment(data_dir, dingtalk=dingtalk, poco=poco, DINGTALK_STREAM_ENABLED="false")
    return env | more


def signed(secret: str, timestamp_ms: int | None = None) -> dict[str, str]:
    timestamp = str(timestamp_ms or int(time.time() * 1000))
    return {"timestamp": timestamp, "sign": sign(timestamp, secret)}


async def post(
    client: httpx.AsyncClient, agent: RunningAgent, payload: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    url = f"http://127.0.0.1:{agent.runtime.port}/api/v1/webhooks/dingtalk"
    return await client.post(url, content=json.dumps(payload), headers=headers)


async def connected(agent: RunningAgent) -> None:
    await eventually(
        lambda: agent.runtime.status.providers["dingtalk"].state is ProviderState.CONNECTED
    )


def texts(fake: FakeDingTalk) -> list[str]:
    return [s.markdown.get("text", "") for s in fake.sent]


@pytest.mark.parametrize(
    "where",
    [
        "loopback",  # a server the forger runs (here: the other fake on another port)
        "https://oapi.dingtalk.com.attacker.example/robot/sendBySession?session=x",
        "https://attacker.example/robot/sendBySession?session=x",
        "https://oapi.dingtalk.com/robot/send?access_token=attacker-group",
    ],
)
async def test_a_forged_call_cannot_redirect_an_allowed_chat(
    dingtalk_api: FakeDingTalk,
    elsewhere: FakeDingTalk,
    poco: FakePoco,
    data_dir: Path,
    where: str,
) -> None:
    """The token leaked (a proxy log): a forged message names the forger's sessionWebhook."""
    headers = {"X-DingTalk-Token": DT_TOKEN, "Content-Type": "application/json"}
    env = webhook_env(data_dir, dingtalk_api, poco, DINGTALK_WEBHOOK_TOKEN=DT_TOKEN)
    async with run_agent(env) as agent, httpx.AsyncClient() as client:
        await connected(agent)
        genuine = dingtalk_api.message_payload(CHAT, "/new victim task")
        assert (await post(client, agent, genuine, headers)).status_code == 200
        await dingtalk_api.wait_for(lambda: len(dingtalk_api.sent) == 1, 10)
        session_id = list(poco.sessions)[-1]

        forged = dingtalk_api.message_payload(CHAT, "/help")
        forged["sessionWebhook"] = (
            elsewhere.message_payload("x", "x")["sessionWebhook"] if where == "loopback" else where
        )
        forged["sessionWebhookExpiredTime"] = int(time.time() * 1000) + 10 * 365 * 86400_000
        answer = await post(client, agent, forged, headers)
        assert answer.status_code == 403
        channel = queries.find_channel("dingtalk", CHAT)
        assert channel is not None and forged["sessionWebhook"] not in channel.route

        poco.start_run(session_id)
        poco.add_assistant_text(session_id, "secret result for the victim")
        await dingtalk_api.wait_for(
            lambda: any("secret result" in t for t in texts(dingtalk_api)), 10
        )
    assert elsewhere.sent == []
    assert [s.route for s in dingtalk_api.sent] == ["session_webhook", "session_webhook"]


async def test_a_replayed_signature_is_refused(
    dingtalk_api: FakeDingTalk, elsewhere: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    """The signature covers only the timestamp: the same one again is a replay."""
    async with run_agent(webhook_env(data_dir, dingtalk_api, poco)) as agent:
        await connected(agent)
        headers = signed(dingtalk_api.client_secret) | {"Content-Type": "application/json"}
        async with httpx.AsyncClient() as client:
            first = dingtalk_api.message_payload(CHAT, "/help")
            assert (await post(client, agent, first, headers)).status_code == 200
            replay = dingtalk_api.message_payload(CHAT, "/new replayed task")
            assert (await post(client, agent, replay, headers)).status_code == 403
            # A fresh signature (DingTalk's next call) is fine.
            fresh = signed(dingtalk_api.client_secret, int(time.time() * 1000) + 1)
            later = dingtalk_api.message_payload(CHAT, "/new real task")
            answer = await post(client, agent, later, fresh | {"Content-Type": "application/json"})
            assert answer.status_code == 200
        await poco.wait_for(lambda p: len(p.tasks_posted) == 1, 10)
    assert [t["prompt"] for t in poco.tasks_posted] == ["real task"]


async def test_a_refused_chat_gets_its_code_but_its_route_is_not_kept(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco, IM_ACCESS_POLICY="pairing")
    async with run_agent(env):
        await dingtalk_api.wait_for(lambda: dingtalk_api.open_connections >= 1, 10)
        await dingtalk_api.push_message(CHAT, "/help", sender_staff_id="staff-x")
        await dingtalk_api.wait_for(lambda: len(dingtalk_api.sent) == 1, 10)
        # The code went back over that message's own sessionWebhook...
        assert dingtalk_api.sent[0].route == "session_webhook"
        assert "Pairing code" in texts(dingtalk_api)[0]
        # ...which the chat does not keep: a later notice cannot go to where it pointed.
        channel = queries.find_channel("dingtalk", CHAT)
        assert channel is not None and json.loads(channel.route) == {}

        pairing = access.pending_pairings()[0]
        assert access.approve(pairing.code, "en") is not None
        await dingtalk_api.push_message(CHAT, "/help", sender_staff_id="staff-x")
        await dingtalk_api.wait_for(lambda: any("/new" in t for t in texts(dingtalk_api)), 15)
        channel = queries.find_channel("dingtalk", CHAT)
        assert channel is not None
        assert json.loads(channel.route)["sender_staff_id"] == "staff-x"
