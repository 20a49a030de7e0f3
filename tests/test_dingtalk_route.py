"""Which sessionWebhook a DingTalk message may hand the agent, for how long; signed replays."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import pytest

from agent.chats.base import ChatRef, InboundMessage, OutboundMessage, ProviderState
from agent.chats.dingtalk import DingTalkProvider
from agent.chats.dingtalk_messages import to_inbound
from agent.chats.dingtalk_route import SESSION_WEBHOOK_MAX_TTL, SessionWebhookPolicy
from agent.chats.dingtalk_webhook import DingTalkWebhookProvider, SeenSignatures, sign
from agent.config import DingTalkSettings
from tests.fakes.dingtalk import FakeDingTalk

DEFAULT_BASE = "https://api.dingtalk.com"
REAL = "https://oapi.dingtalk.com/robot/sendBySession?session=4f0c1d"


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        (REAL, True),  # what DingTalk hands out
        ("https://OAPI.dingtalk.com/robot/sendBySession?session=4f0c1d", True),
        ("https://oapi.dingtalk.com:443/robot/sendBySession?session=4f0c1d", True),
        ("https://api.dingtalk.com/robot/sendBySession?session=4f0c1d", True),  # the base URL
        ("http://oapi.dingtalk.com/robot/sendBySession?session=4f0c1d", False),
        ("https://oapi.dingtalk.com:8443/robot/sendBySession?session=4f0c1d", False),
        ("https://oapi.dingtalk.com.evil.example/robot/sendBySession?session=x", False),
        ("https://evil.example/robot/sendBySession?session=x", False),
        ("https://oapi.dingtalk.com@evil.example/robot/sendBySession?session=x", False),
        ("https://user@oapi.dingtalk.com/robot/sendBySession?session=x", False),
        ("https://oapi.dingtalk.com/robot/send?access_token=x", False),
        ("https://oapi.dingtalk.com/robot/sendBySession", False),
        ("https://oapi.dingtalk.com/robot/sendBySession?session=", False),
        ("https://oapi.dingtalk.com/robot/sendBySession?session=a&session=b", False),
        ("https://oapi.dingtalk.com/robot/sendBySession?session=a&next=https://x", False),
        ("https://oapi.dingtalk.com/robot/sendBySession?session=a#frag", False),
        ("https://oapi.dingtalk.com/robot/sendBySession/../send?session=a", False),
        ("https://[::1/robot/sendBySession?session=a", False),
        ("javascript:alert(1)", False),
        ("", False),
    ],
)
def test_only_dingtalk_shaped_session_webhooks_are_accepted(url: str, accepted: bool) -> None:
    assert SessionWebhookPolicy(DEFAULT_BASE).accepts(url) is accepted


def test_the_configured_base_url_origin_is_accepted_and_nothing_near_it() -> None:
    policy = SessionWebhookPolicy("http://127.0.0.1:8123")
    assert policy.accepts("http://127.0.0.1:8123/robot/sendBySession?session=a")
    assert policy.accepts(REAL)
    assert not policy.accepts("http://127.0.0.1:8124/robot/sendBySession?session=a")
    assert not policy.accepts("https://127.0.0.1:8123/robot/sendBySession?session=a")
    assert not policy.accepts("http://localhost:8123/robot/sendBySession?session=a")


def test_claimed_expiry_is_capped() -> None:
    now = 1_800_000_000.0
    far = (now + 10 * 365 * 86400) * 1000
    assert SessionWebhookPolicy.expires_at(far, now) == now + SESSION_WEBHOOK_MAX_TTL
    assert SessionWebhookPolicy.expires_at((now + 5400) * 1000, now) == now + 5400


def payload(fake: FakeDingTalk, **changes: Any) -> dict[str, Any]:
    return fake.message_payload("cid-1", "hi") | changes


async def test_stream_message_keeps_only_a_trusted_webhook_and_a_capped_expiry(
    dingtalk_api: FakeDingTalk,
) -> None:
    policy = SessionWebhookPolicy(dingtalk_api.url)
    now = time.time()
    far = int((now + 10 * 365 * 86400) * 1000)
    trusted = to_inbound(payload(dingtalk_api, sessionWebhookExpiredTime=far), policy, now)
    assert trusted is not None
    assert trusted.route["session_webhook"].startswith(dingtalk_api.url)
    assert trusted.route["session_webhook_expires_at"] == now + SESSION_WEBHOOK_MAX_TTL

    foreign = payload(
        dingtalk_api, sessionWebhook="https://evil.example/robot/sendBySession?session=x"
    )
    message = to_inbound(foreign, policy, now)
    assert message is not None and message.text == "hi"  # the message itself still counts
    assert message.route["session_webhook"] == ""
    assert message.route["session_webhook_expires_at"] == 0.0


def settings_for(fake: FakeDingTalk, **changes: Any) -> DingTalkSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "stream_enabled": True,
        "subscribe_events": False,
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "robot_code": fake.robot_code,
        "open_base_url": fake.url,
        "webhook_token": "",
        "webhook_url": "",
    }
    return DingTalkSettings(**(values | changes))


async def test_a_stored_route_past_the_cap_is_not_used(dingtalk_api: FakeDingTalk) -> None:
    """A route stored before the cap existed (or written by hand) is checked on use too."""
    provider = DingTalkProvider(settings_for(dingtalk_api))
    route = {
        "conversation_type": "1",
        "sender_staff_id": "staff-1",
        "session_webhook": dingtalk_api.message_payload("cid-1", "x")["sessionWebhook"],
        "session_webhook_expires_at": time.time() + 10 * 365 * 86400,
    }
    try:
        await provider.send(ChatRef("dingtalk", "cid-1", False, route), OutboundMessage("hello"))
    finally:
        await provider.close()
    assert [s.route for s in dingtalk_api.sent] == ["oto"]


def test_seen_signatures_refuse_a_replay_and_stay_bounded() -> None:
    seen = SeenSignatures(limit=3)
    now = 1_800_000_000.0
    stamp = str(int(now * 1000))
    assert seen.reserve(stamp, "s1", now) == ""
    assert seen.reserve(stamp, "s1", now) == "replayed"
    seen.release(stamp, "s1")  # that call was not accepted: DingTalk may send it again
    assert seen.reserve(stamp, "s1", now) == ""
    assert seen.reserve(stamp, "s2", now) == ""
    assert seen.reserve(stamp, "s3", now) == ""
    assert seen.reserve(stamp, "s4", now) == "full"
    # Once their timestamps are out of the window they are forgotten (and refused anyway).
    later = now + 3601
    assert seen.reserve(str(int(later * 1000)), "s5", later) == ""
    assert len(seen) == 1


class Sink:
    def __init__(self) -> None:
        self.messages: list[InboundMessage] = []

    async def __call__(self, batch: Sequence[InboundMessage]) -> None:
        self.messages.extend(batch)


async def test_a_signed_call_not_accepted_may_come_again(dingtalk_api: FakeDingTalk) -> None:
    provider = DingTalkWebhookProvider(settings_for(dingtalk_api, stream_enabled=False))
    timestamp = str(int(time.time() * 1000))
    headers = {"timestamp": timestamp, "sign": sign(timestamp, dingtalk_api.client_secret)}
    body = json.dumps(payload(dingtalk_api)).encode()
    # Not running yet (paused, starting): 503, and DingTalk retries with the same headers.
    assert (await provider.handle_webhook(headers, {}, body))[0] == 503
    sink = Sink()
    task = asyncio.create_task(provider.run(sink))
    try:
        async with asyncio.timeout(5):
            while provider.status.state is not ProviderState.CONNECTED:
                await asyncio.sleep(0)
        assert (await provider.handle_webhook(headers, {}, body))[0] == 200
        assert (await provider.handle_webhook(headers, {}, body))[0] == 403  # now a replay
    finally:
        await provider.close()
        await asyncio.gather(task, return_exceptions=True)
    assert [m.text for m in sink.messages] == ["hi"]
