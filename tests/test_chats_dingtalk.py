"""DingTalkProvider against the fake DingTalk: Stream in, markdown out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from agent.chats.base import ChatRef, InboundMessage, OutboundMessage, ProviderState
from agent.chats.dingtalk import TEXT_LIMIT, DingTalkProvider
from agent.chats.dingtalk_messages import to_inbound
from agent.chats.dingtalk_route import SessionWebhookPolicy
from agent.config import DingTalkSettings
from agent.errors import PermanentDeliveryError, RetryLater, StoreError
from tests.fakes.dingtalk import FakeDingTalk


def settings_for(fake: FakeDingTalk, **overrides: Any) -> DingTalkSettings:
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
    values.update(overrides)
    return DingTalkSettings(**values)


class Sink:
    """Records what the provider hands over, like the journal would (without dedup)."""

    def __init__(self, fake: FakeDingTalk) -> None:
        self.fake = fake
        self.messages: list[InboundMessage] = []
        self.returned_at: dict[str, float] = {}
        self.calls = 0
        self.fail = False

    async def __call__(self, batch: Sequence[InboundMessage]) -> None:
        self.calls += 1
        await self.fake.notify()
        if self.fail:
            raise StoreError("disk full")
        self.messages.extend(batch)
        for msg in batch:
            self.returned_at[msg.message_id] = time.monotonic()
        await self.fake.notify()

    def texts(self) -> list[str]:
        return [m.text for m in self.messages]


@contextlib.asynccontextmanager
async def running(provider: DingTalkProvider, sink: Sink) -> AsyncIterator[DingTalkProvider]:
    task = asyncio.create_task(provider.run(sink))
    try:
        await sink.fake.wait_for(lambda: sink.fake.open_connections >= 1)
        yield provider
    finally:
        await provider.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
def sink(dingtalk_api: FakeDingTalk) -> Sink:
    return Sink(dingtalk_api)


@pytest.fixture
def provider(dingtalk_api: FakeDingTalk) -> DingTalkProvider:
    return DingTalkProvider(settings_for(dingtalk_api), initial_backoff=0.05)


# -- inbound ---------------------------------------------------------------------------


async def test_private_message_reaches_sink_then_is_acked(
    dingtalk_api: FakeDingTalk, provider: DingTalkProvider, sink: Sink
) -> None:
    async with running(provider, sink):
        assert provider.status.state is ProviderState.CONNECTED
        msg_id = await dingtalk_api.push_message("cid-private", "/list 3", sender_staff_id="u1")
        await dingtalk_api.wait_for(lambda: msg_id in dingtalk_api.acks)

    [msg] = sink.messages
    assert msg.key == f"dingtalk:{msg_id}"
    assert (msg.provider, msg.chat_id, msg.text, msg.is_group) == (
        "dingtalk",
        "cid-private",
        "/list 3",
        False,
    )
    assert msg.sender_id == "u1" and msg.sender_name == "Alice"
    assert msg.route["conversation_type"] == "1"
    assert msg.route["sender_staff_id"] == "u1"
    assert msg.route["session_webhook"].startswith(
        dingtalk_api.url + "/robot/sendBySession?session="
    )
    assert msg.route["session_webhook_expires_at"] > time.time()
    assert msg.route["robot_code"] == dingtalk_api.robot_code
    assert dingtalk_api.acks[msg_id] >= sink.returned_at[msg_id]
    ack = next(f for f in dingtalk_api.ack_frames if f["headers"]["messageId"] != "")
    assert ack["code"] == 200 and ack["headers"]["contentType"] == "application/json"
    # The open call subscribed to robot messages with our credentials.
    body = dingtalk_api.open_calls[0]
    assert body["subscriptions"] == [{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}]
    assert body["localIp"] == ""


async def test_group_needs_mention_and_strips_it(
    dingtalk_api: FakeDingTalk, provider: DingTalkProvider, sink: Sink
) -> None:
    async with running(provider, sink):
        ignored = await dingtalk_api.push_message("cid-g", "hello all", conversation_type="2")
        mentioned = await dingtalk_api.push_message(
            "cid-g", "@Poco /new fix the bug", conversation_type="2", at_bot=True
        )
        empty = await dingtalk_api.push_message(
            "cid-g", "@Poco  ", conversation_type="2", at_bot=True
        )
        await dingtalk_api.wait_for(lambda: {ignored, mentioned, empty} <= set(dingtalk_api.acks))

    assert sink.texts() == ["/new fix the bug", "/help"]
    assert all(m.is_group and m.chat_id == "cid-g" for m in sink.messages)


async def test_robot_own_message_ignored_and_non_text_marked(
    dingtalk_api: FakeDingTalk, provider: DingTalkProvider, sink: Sink
) -> None:
    async with running(provider, sink):
        own = await dingtalk_api.push_message(
            "cid-1", "echo", sender_id=dingtalk_api.chatbot_user_id
        )
        picture = await dingtalk_api.push_message("cid-1", "", msgtype="picture")
        record = await dingtalk_api.push_message("cid-1", "", msgtype="chatRecord")
        await dingtalk_api.wait_for(lambda: {own, picture, record} <= set(dingtalk_api.acks))

    image, forwarded = sink.messages
    assert image.message_id == picture and not image.unsupported and image.text == ""
    assert [(a.kind, a.ref) for a in image.attachments] == [("picture", "fake-download-code")]
    assert forwarded.message_id == record and forwarded.unsupported and forwarded.text == ""


async def test_sink_failure_means_no_ack_and_redelivery_keeps_key(
    dingtalk_api: FakeDingTalk, provider: DingTalkProvider, sink: Sink
) -> None:
    async with running(provider, sink):
        sink.fail = True
        lost = await dingtalk_api.push_message("cid-1", "first")
        await dingtalk_api.wait_for(lambda: sink.calls == 1)
        sink.fail = False
        # Frames are handled in order: once the next one is acked, the first had its chance.
        later = await dingtalk_api.push_message("cid-1", "second")
        await dingtalk_api.wait_for(lambda: later in dingtalk_api.acks)
        assert lost not in dingtalk_api.acks

        await dingtalk_api.redeliver(lost)
        await dingtalk_api.wait_for(lambda: lost in dingtalk_api.acks)
        await dingtalk_api.redeliver(lost)  # a duplicate after the ACK: the sink dedups
        await dingtalk_api.wait_for(lambda: len(sink.messages) == 3)

    assert [m.key for m in sink.messages] == [
        f"dingtalk:{later}",
        f"dingtalk:{lost}",
        f"dingtalk:{lost}",
    ]
    assert provider.status.state is not ProviderState.ERROR or "stopped" in provider.status.detail


async def test_system_ping_is_answered(
    dingtalk_api: FakeDingTalk, provider: DingTalkProvider, sink: Sink
) -> None:
    async with running(provider, sink):
        before = provider.status.last_ok_at
        ping_id = await dingtalk_api.send_system_ping()
        await dingtalk_api.wait_for(lambda: ping_id in dingtalk_api.ping_acks)
        assert provider.status.last_ok_at is not None and before is not None
        assert provider.status.last_ok_at >= before
    ack = next(f for f in dingtalk_api.ack_frames if f["headers"]["messageId"] == ping_id)
    assert ack["code"] == 200 and "opaque" in json.loads(ack["data"])


# -- reconnects --------------------------------------------------------------------------


async def test_reconnects_after_socket_drop(
    dingtalk_api: FakeDingTalk, provider: DingTalkProvider, sink: Sink
) -> None:
    async with running(provider, sink):
        await dingtalk_api.disconnect_all()
        await dingtalk_api.wait_for(lambda: dingtalk_api.connections_total == 2)
        msg_id = await dingtalk_api.push_message("cid-1", "after the drop")
        await dingtalk_api.wait_for(lambda: msg_id in dingtalk_api.acks)
        assert provider.status.state is ProviderState.CONNECTED
    assert sink.texts() == ["after the drop"]


async def test_reconnects_on_disconnect_frame(
    dingtalk_api: FakeDingTalk, provider: DingTalkProvider, sink: Sink
) -> None:
    async with running(provider, sink):
        await dingtalk_api.send_system_disconnect()
        # A new connection, and the old one closed by the client (the gateway keeps it open).
        await dingtalk_api.wait_for(
            lambda: dingtalk_api.connections_total == 2 and dingtalk_api.open_connections == 1
        )
        msg_id = await dingtalk_api.push_message("cid-1", "on the new socket")
        await dingtalk_api.wait_for(lambda: msg_id in dingtalk_api.acks)
    assert sink.texts() == ["on the new socket"]


async def test_gateway_down_then_back(
    dingtalk_api: FakeDingTalk, provider: DingTalkProvider, sink: Sink
) -> None:
    async with running(provider, sink):
        dingtalk_api.set_gateway_available(False)
        await dingtalk_api.disconnect_all()
        # A message sent meanwhile waits at DingTalk until the robot is back.
        msg_id = await dingtalk_api.push_message("cid-1", "sent while away")
        await dingtalk_api.wait_for(lambda: dingtalk_api.open_attempts >= 3)
        assert provider.status.state is ProviderState.ERROR
        assert "503" in provider.status.detail
        dingtalk_api.set_gateway_available(True)
        await dingtalk_api.wait_for(lambda: msg_id in dingtalk_api.acks)
        assert provider.status.state is ProviderState.CONNECTED
    assert sink.texts() == ["sent while away"]


async def test_silent_connection_is_replaced(dingtalk_api: FakeDingTalk, sink: Sink) -> None:
    provider = DingTalkProvider(
        settings_for(dingtalk_api), silence_limit=0.3, ping_interval=0.05, initial_backoff=0.05
    )
    async with running(provider, sink):
        dingtalk_api.answer_pings = False
        await dingtalk_api.wait_for(lambda: dingtalk_api.connections_total >= 2)
        dingtalk_api.answer_pings = True
        msg_id = await dingtalk_api.push_message("cid-1", "still here")
        await dingtalk_api.wait_for(lambda: msg_id in dingtalk_api.acks)
    assert sink.texts() == ["still here"]


async def test_bad_credentials_show_as_error(dingtalk_api: FakeDingTalk, sink: Sink) -> None:
    provider = DingTalkProvider(
        settings_for(dingtalk_api, client_secret="wrong"), initial_backoff=0.05
    )
    task = asyncio.create_task(provider.run(sink))
    try:
        await dingtalk_api.wait_for(lambda: dingtalk_api.open_attempts >= 2)
        assert provider.status.state is ProviderState.ERROR
        assert "DINGTALK_CLIENT_SECRET" in provider.status.detail
    finally:
        await provider.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_ignores_proxy_settings_websockets_15_regression(
    dingtalk_api: FakeDingTalk,
    provider: DingTalkProvider,
    sink: Sink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dingtalk-stream-sdk-python issue 65: websockets >= 15 routes the Stream socket through
    any OS/env proxy (a SOCKS one needs python-socks) and the SDK swallows the failure. Our
    Stream connection must ignore proxies (contract: DingTalk never uses one)."""
    dead_proxy = "socks5://127.0.0.1:9"
    for var in ("https_proxy", "http_proxy", "all_proxy", "ws_proxy", "wss_proxy"):
        monkeypatch.setenv(var, dead_proxy)
        monkeypatch.setenv(var.upper(), dead_proxy)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    async with running(provider, sink):
        msg_id = await dingtalk_api.push_message("cid-1", "/help")
        await dingtalk_api.wait_for(lambda: msg_id in dingtalk_api.acks)
        await provider.send(_private_chat(sink.messages[0], webhook=False), OutboundMessage("ok"))
    assert sink.texts() == ["/help"] and dingtalk_api.sent[-1].route == "oto"


async def test_never_uses_the_sdk_blocking_io(
    dingtalk_api: FakeDingTalk,
    provider: DingTalkProvider,
    sink: Sink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    import dingtalk_stream.stream
    import requests

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("blocking SDK I/O called")

    monkeypatch.setattr(requests, "post", forbidden)
    monkeypatch.setattr(dingtalk_stream.stream.websockets, "connect", forbidden)
    real_socket = socket.socket

    def no_udp(family: int = -1, type: int = -1, *args: Any, **kwargs: Any) -> socket.socket:
        if type == socket.SOCK_DGRAM:
            raise AssertionError("UDP probe to 8.8.8.8")
        return real_socket(family, type, *args, **kwargs)

    monkeypatch.setattr(dingtalk_stream.stream.socket, "socket", no_udp)
    async with running(provider, sink):
        msg_id = await dingtalk_api.push_message("cid-1", "hi")
        await dingtalk_api.wait_for(lambda: msg_id in dingtalk_api.acks)
        await provider.send(_private_chat(sink.messages[0]), OutboundMessage("hello"))
    assert dingtalk_api.sent[-1].route == "session_webhook"


# -- outbound --------------------------------------------------------------------------


def _private_chat(msg: InboundMessage, *, webhook: bool = True) -> ChatRef:
    route = dict(msg.route)
    if not webhook:
        route["session_webhook"] = ""
    return ChatRef("dingtalk", msg.chat_id, msg.is_group, route)


async def _inbound(fake: FakeDingTalk, **kwargs: Any) -> InboundMessage:
    """A robot message as the provider turns it into an InboundMessage (no socket needed)."""
    policy = SessionWebhookPolicy(fake.url)
    msg = to_inbound(fake.message_payload(kwargs.pop("chat", "cid-1"), "hi", **kwargs), policy)
    assert msg is not None
    return msg


async def test_send_via_session_webhook(
    dingtalk_api: FakeDingTalk, provider: DingTalkProvider
) -> None:
    chat = _private_chat(await _inbound(dingtalk_api))
    await provider.send(chat, OutboundMessage("## Done\nall **good**"))
    await provider.close()
    [sent] = dingtalk_api.sent
    assert sent.route == "session_webhook"
    assert sent.body["msgtype"] == "markdown"
    assert sent.markdown == {"title": "Done", "text": "## Done\nall **good**"}


async def test_send_group_via_openapi(
    dingtalk_api: FakeDingTalk, provider: DingTalkProvider
) -> None:
    msg = await _inbound(dingtalk_api, chat="cid-group", conversation_type="2", at_bot=True)
    chat = ChatRef("dingtalk", msg.chat_id, True, {})  # no sessionWebhook known
    key = await provider.send(chat, OutboundMessage("hello group"))
    await provider.close()
    [sent] = dingtalk_api.sent
    assert sent.route == "group" and key
    assert sent.body["openConversationId"] == "cid-group"
    assert sent.body["robotCode"] == dingtalk_api.robot_code
    assert sent.body["msgKey"] == "sampleMarkdown"
    assert json.loads(sent.body["msgParam"]) == {"title": "hello group", "text": "hello group"}


async def test_send_private_via_oto_and_token_refresh(
    dingtalk_api: FakeDingTalk, provider: DingTalkProvider
) -> None:
    chat = _private_chat(await _inbound(dingtalk_api, sender_staff_id="u42"), webhook=False)
    await provider.send(chat, OutboundMessage("one"))
    await provider.send(chat, OutboundMessage("two"))
    assert dingtalk_api.token_calls == 1  # cached
    dingtalk_api.expire_tokens()  # revoked early: 401, refreshed once
    await provider.send(chat, OutboundMessage("three"))
    await provider.close()
    assert dingtalk_api.token_calls == 2
    assert [s.route for s in dingtalk_api.sent] == ["oto"] * 3
    assert dingtalk_api.sent[-1].body["userIds"] == ["u42"]
    assert [s.markdown["text"] for s in dingtalk_api.sent] == ["one", "two", "three"]


async def test_expired_session_webhook_falls_back_to_openapi(
    dingtalk_api: FakeDingTalk, provider: DingTalkProvider
) -> None:
    msg = await _inbound(dingtalk_api)
    stale = ChatRef(
        "dingtalk", msg.chat_id, False, msg.route | {"session_webhook_expires_at": time.time() - 1}
    )
    await provider.send(stale, OutboundMessage("by expiry time"))
    # Valid by our clock, refused by DingTalk: still delivered.
    dingtalk_api.expire_session_webhooks()
    await provider.send(_private_chat(msg), OutboundMessage("by refusal"))
    await provider.close()
    assert [(s.route, s.markdown["text"]) for s in dingtalk_api.sent] == [
        ("oto", "by expiry time"),
        ("oto", "by refusal"),
    ]


async def test_fallback_custom_webhook(dingtalk_api: FakeDingTalk) -> None:
    provider = DingTalkProvider(
        settings_for(
            dingtalk_api, client_id="", client_secret="", webhook_url=dingtalk_api.webhook_url
        )
    )
    await provider.send(ChatRef("dingtalk", "cid-x", True, {}), OutboundMessage("notice"))
    await provider.close()
    [sent] = dingtalk_api.sent
    assert sent.route == "custom_webhook" and sent.markdown["text"] == "notice"


async def test_no_route_is_permanent(dingtalk_api: FakeDingTalk) -> None:
    provider = DingTalkProvider(settings_for(dingtalk_api, client_id="", client_secret=""))
    with pytest.raises(PermanentDeliveryError):
        await provider.send(ChatRef("dingtalk", "cid-x", True, {}), OutboundMessage("x"))
    await provider.close()


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, RetryLater), (500, RetryLater), (503, RetryLater), (400, PermanentDeliveryError)],
)
async def test_openapi_errors_are_mapped(
    dingtalk_api: FakeDingTalk, provider: DingTalkProvider, status: int, error: type[Exception]
) -> None:
    dingtalk_api.fail_next("group", status, {"code": "Fake", "message": "injected"})
    with pytest.raises(error):
        await provider.send(ChatRef("dingtalk", "cid-g", True, {}), OutboundMessage("x"))
    await provider.close()


async def test_network_error_is_retry_later(dingtalk_api: FakeDingTalk) -> None:
    unreachable = "http://127.0.0.1:9"
    provider = DingTalkProvider(settings_for(dingtalk_api, open_base_url=unreachable))
    with pytest.raises(RetryLater):
        await provider.send(ChatRef("dingtalk", "cid-g", True, {}), OutboundMessage("x"))
    await provider.close()


async def test_long_text_is_split_at_lines(
    dingtalk_api: FakeDingTalk, provider: DingTalkProvider
) -> None:
    text = "\n".join(f"line {i} " + "字" * 50 for i in range(200))
    assert len(text) > 2 * TEXT_LIMIT
    noted: list[tuple[int, int]] = []

    async def on_part(parts_sent: int) -> None:
        noted.append((parts_sent, len(dingtalk_api.sent)))

    chat = ChatRef("dingtalk", "cid-g", True, {})
    await provider.send(chat, OutboundMessage(text), on_part=on_part)
    await provider.close()
    parts = [s.markdown["text"] for s in dingtalk_api.sent]
    assert len(parts) >= 3
    assert noted == [(n, n) for n in range(1, len(parts))]
    assert all(len(p) <= TEXT_LIMIT for p in parts)
    assert "".join(parts) == text
