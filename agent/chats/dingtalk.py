"""DingTalk in Stream mode: robot messages in over the Stream websocket, markdown out.

Inbound: our own connect loop (the SDK's `start()` blocks on `requests`, sleeps 10 s, swallows
errors and even cancellation). The gateway `open` call is async and goes to
DINGTALK_OPEN_BASE_URL; the websocket is aiohttp's with `trust_env=False`, so it never goes
through a system or environment proxy. websockets >= 15 connects through any proxy the OS or
`https_proxy`/`all_proxy` names (a SOCKS one fails without python-socks) and the SDK hides the
error: dingtalk-stream-sdk-python issue 65. The SDK is used for its frames and ChatbotMessage;
a robot message becomes an InboundMessage in chats/dingtalk_messages.

Outbound: chats/dingtalk_send (sessionWebhook, robot OpenAPI, custom robot). A message's
sessionWebhook is kept only if chats/dingtalk_route trusts it: the websocket is
authenticated, but the check is cheap and a stored URL is what the agent POSTs to later.

Cards (DINGTALK_CARD_TEMPLATE_ID): chats/dingtalk_cards. A prompt goes out as a card when
it can, else (no template, or any card API error) as today's text prompt; presses come in
on the card callback topic, journaled before their ACK like messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
from dingtalk_stream import (
    AckMessage,
    CallbackMessage,
    ChatbotMessage,
    Credential,
    DingTalkStreamClient,
    SystemMessage,
)
from dingtalk_stream.handlers import CallbackHandler, EventHandler
from yarl import URL

from agent.chats.base import (
    Attachment,
    ChatRef,
    InboundSink,
    IncomingFile,
    OutboundMessage,
    OutgoingFile,
    PartsSent,
    ProviderState,
    ProviderStatus,
)
from agent.chats.dingtalk_cards import (
    CARD_CALLBACK_TOPIC,
    DingTalkCards,
    is_card,
    press_from_callback,
)
from agent.chats.dingtalk_files import MAX_DOWNLOAD_BYTES, DingTalkFiles
from agent.chats.dingtalk_messages import to_inbound
from agent.chats.dingtalk_route import SessionWebhookPolicy
from agent.chats.dingtalk_send import NAME, TEXT_LIMIT, DingTalkSender, describe
from agent.config import DingTalkSettings
from agent.errors import DeliveryError, PermanentDeliveryError
from agent.retry import Backoff, Restartable, sleep_or_stop

log = logging.getLogger(__name__)

RECONNECT_MAX_DELAY = 1.5
HTTP_TIMEOUT = 15.0
# A socket with no frame and no pong for this long is dead even if TCP says otherwise.
SILENCE_LIMIT = 90.0
PING_INTERVAL = 20.0


class _GatewayClient(DingTalkStreamClient):  # type: ignore[misc]
    """The SDK client, kept for its subscription bookkeeping; it never runs its own I/O."""

    def get_host_ip(self) -> str:
        # The SDK UDP-connects to 8.8.8.8 to learn it; the gateway does not need it.
        return ""

    def open_connection(self) -> None:
        raise NotImplementedError("blocking; DingTalkProvider opens the gateway itself")

    async def start(self) -> None:
        raise NotImplementedError("DingTalkProvider runs its own connect loop")

    def open_body(self) -> dict[str, Any]:
        topics: list[dict[str, str]] = []
        if self._is_event_required:
            topics.append({"type": "EVENT", "topic": "*"})
        topics += [{"type": "CALLBACK", "topic": t} for t in self.callback_handler_map]
        return {
            "clientId": self.credential.client_id,
            "clientSecret": self.credential.client_secret,
            "subscriptions": topics,
            "ua": "poco-im-agent",
            "localIp": self.get_host_ip(),
        }


class _Reconnect(Exception):
    """The gateway asked us to move to a new connection (`disconnect` frame)."""


class DingTalkProvider:
    """DingTalk robot in Stream mode (see the module docstring)."""

    name = NAME
    text_limit = TEXT_LIMIT
    max_download_bytes = MAX_DOWNLOAD_BYTES
    max_upload_bytes = 0  # no robot file messages yet: core sends a link

    def __init__(
        self,
        settings: DingTalkSettings,
        *,
        silence_limit: float = SILENCE_LIMIT,
        ping_interval: float = PING_INTERVAL,
        initial_backoff: float = 1.0,
    ) -> None:
        self.settings = settings
        self.status = ProviderStatus(enabled=settings.enabled, mode="stream")
        self.silence_limit = silence_limit
        self.ping_interval = ping_interval
        self._backoff = Backoff(initial=initial_backoff)
        # A lost link (laptop asleep, network gone) is retried quickly: attempts fail fast
        # and cheaply while offline, and the stream is back within ~2 s of the network.
        self._reconnect = Backoff(
            initial=min(initial_backoff, RECONNECT_MAX_DELAY), maximum=RECONNECT_MAX_DELAY
        )
        self._base = settings.open_base_url.rstrip("/")
        self._client = _GatewayClient(Credential(settings.client_id, settings.client_secret), log)
        self._client.register_callback_handler(ChatbotMessage.TOPIC, CallbackHandler())
        if settings.cards_enabled:
            self._client.register_callback_handler(CARD_CALLBACK_TOPIC, CallbackHandler())
        if settings.subscribe_events:
            self._client.register_all_event_handler(EventHandler())
        self._session: aiohttp.ClientSession | None = None
        self._stop = asyncio.Event()
        self.session_webhooks = SessionWebhookPolicy(settings.open_base_url)
        self._sender = DingTalkSender(settings, self._http, self.session_webhooks)
        self._cards = DingTalkCards(settings, self._sender)
        self._link = Restartable()
        self._files = DingTalkFiles(settings, self._http, self._sender)

    # -- lifecycle -----------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # trust_env=False: DingTalk never goes through a proxy (contract, section 3).
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT), trust_env=False
            )
        return self._session

    async def close(self) -> None:
        self._stop.set()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- inbound -------------------------------------------------------------------------

    async def run(self, sink: InboundSink) -> None:
        """Connect, receive and ACK until cancelled or closed; reconnect after any loss."""
        self._stop.clear()
        while not self._stop.is_set():
            if self.status.state is not ProviderState.ERROR:
                # After a failure the ERROR detail stays visible until a connection succeeds.
                self.status.set(ProviderState.CONNECTING)
            try:
                finished, _ = await self._link.run(lambda: self._connect_once(sink))
                if not finished:
                    log.info("DingTalk stream reconnecting now (after a wake)")
                    continue
            except _Reconnect:
                log.info("DingTalk gateway asked to reconnect")
                continue
            except _OpenRejected as exc:
                self.status.set(ProviderState.ERROR, str(exc))
                delay = self._backoff.next_delay()
            except (
                aiohttp.ClientError,
                ConnectionError,
                TimeoutError,
                _Dropped,
                ValueError,
            ) as exc:
                self.status.set(ProviderState.ERROR, f"stream connection lost: {describe(exc)}")
                delay = self._reconnect.next_delay()
            else:
                continue
            log.warning("%s; reconnecting in %.1f s", self.status.detail, delay)
            if await sleep_or_stop(delay, self._stop):
                break
        self.status.set(ProviderState.DISABLED, "stopped")

    async def _open_gateway(self) -> str:
        url = f"{self._base}/v1.0/gateway/connections/open"
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        async with self._http().post(url, json=self._client.open_body(), headers=headers) as resp:
            body = await resp.text()
            if resp.status in (400, 401, 403):
                raise _OpenRejected(
                    f"gateway refused DINGTALK_CLIENT_ID/DINGTALK_CLIENT_SECRET ({resp.status}): "
                    f"{body[:200]}; check the app's appKey/appSecret and that Stream mode is on"
                )
            if resp.status != 200:
                raise _Dropped(f"gateway open failed with HTTP {resp.status}")
            data = json.loads(body)
        endpoint, ticket = data.get("endpoint"), data.get("ticket")
        if not endpoint or not ticket:
            raise _Dropped("gateway open answered without endpoint/ticket")
        return str(URL(endpoint).update_query(ticket=ticket))

    async def _connect_once(self, sink: InboundSink) -> None:
        ws_url = await self._open_gateway()
        async with self._http().ws_connect(
            ws_url, autoping=False, timeout=aiohttp.ClientWSTimeout(ws_close=5.0)
        ) as ws:
            self.status.set(ProviderState.CONNECTED)
            pinger = asyncio.create_task(self._ping_loop(ws))
            try:
                await self._receive_loop(ws, sink)
            finally:
                pinger.cancel()
                await asyncio.gather(pinger, return_exceptions=True)

    async def _ping_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while not ws.closed:
            await asyncio.sleep(self.ping_interval)
            try:
                await ws.ping()
            except (aiohttp.ClientError, ConnectionError, RuntimeError):
                return

    async def _receive_loop(self, ws: aiohttp.ClientWebSocketResponse, sink: InboundSink) -> None:
        got_any = False
        while True:
            try:
                msg = await ws.receive(timeout=self.silence_limit)
            except TimeoutError:
                raise _Dropped(f"no frame or pong for {self.silence_limit:.0f} s") from None
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                raise _Dropped(f"websocket closed ({msg.type.name}, {msg.data!r})")
            self.status.last_ok_at = time.time()
            if not got_any:
                got_any = True
                self._backoff.reset()
                self._reconnect.reset()
            if msg.type is aiohttp.WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type is aiohttp.WSMsgType.TEXT:
                await self._on_frame(ws, json.loads(msg.data), sink)

    async def _on_frame(
        self, ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any], sink: InboundSink
    ) -> None:
        kind = frame.get("type", "")
        if kind == SystemMessage.TYPE:
            system = SystemMessage.from_dict(frame)
            if system.headers.topic == SystemMessage.TOPIC_DISCONNECT:
                raise _Reconnect()
            await _ack(ws, system.headers.message_id, system.data)  # ping and the rest
            return
        if kind != CallbackMessage.TYPE:
            # EVENT frames (DINGTALK_STREAM_SUBSCRIBE_EVENTS): confirmed, not handled yet.
            await _ack(ws, frame.get("headers", {}).get("messageId"), {"status": "SUCCESS"})
            return
        callback = CallbackMessage.from_dict(frame)
        inbound = None
        response: Any = "OK"
        if callback.headers.topic == ChatbotMessage.TOPIC:
            inbound = to_inbound(callback.data, self.session_webhooks)
        elif callback.headers.topic == CARD_CALLBACK_TOPIC and self.settings.cards_enabled:
            # A press on a card not ours (or unreadable) is confirmed and ignored.
            inbound = press_from_callback(callback)
            response = {}  # no card change in the answer: the agent updates it later
        if inbound is not None:
            try:
                await sink([inbound])
            except Exception:
                # Not confirmed: DingTalk delivers it again, the sink dedups by key.
                log.exception("could not store DingTalk message %s; not acknowledged", inbound.key)
                return
        await _ack(ws, callback.headers.message_id, {"response": response})

    # -- outbound ------------------------------------------------------------------------

    async def send(
        self,
        chat: ChatRef,
        message: OutboundMessage,
        *,
        first_part: int = 0,
        on_part: PartsSent | None = None,
    ) -> str:
        if message.progress:
            # A run's progress is a streamed card or nothing (a robot cannot edit a text).
            if not self._cards.carries_progress(chat):
                raise PermanentDeliveryError("no progress card for this chat", provider=NAME)
            return await self._cards.create_progress(chat, message)
        if first_part == 0 and self._cards.carries(chat, message):
            try:
                return await self._cards.create(chat, message)
            except DeliveryError as exc:
                # Never lose a prompt to a card error: it goes as today's text prompt.
                log.warning("DingTalk card not sent, the prompt goes as text: %s", exc)
        return await self._sender.send(chat, message, first_part=first_part, on_part=on_part)

    async def edit(self, chat: ChatRef, message_id: str, message: OutboundMessage) -> bool:
        """Update one of our cards for everyone; False for anything else (a robot cannot
        edit a sent message) or a card the app may no longer update."""
        if not (self.settings.cards_enabled and is_card(message_id)):
            return False  # without a template no card API is called at all
        if message.progress:
            # Errors go to the progress sender: it retries 429/5xx at its pace, a 403 ends
            # this card's progress.
            await self._cards.stream(message_id, message)
            return True
        try:
            await self._cards.update(message_id, message)
        except PermanentDeliveryError as exc:
            log.warning("DingTalk card %s not updated: %s", message_id, exc)
            return False
        return True

    async def reconnect(self) -> None:
        """After a wake the websocket is likely dead: drop it and connect again now."""
        self._link.restart()

    def open_file(
        self, chat: ChatRef, attachment: Attachment
    ) -> AbstractAsyncContextManager[IncomingFile]:
        return self._files.open(chat, attachment)

    async def send_file(self, chat: ChatRef, file: OutgoingFile) -> str:
        raise PermanentDeliveryError("this agent sends DingTalk files as links", provider=NAME)

    # -- no-ops --------------------------------------------------------------------------

    async def show_typing(self, chat: ChatRef) -> None:
        """DingTalk has no typing indicator for robots."""

    async def acknowledge_button(self, callback_id: str, text: str = "") -> None:
        """A card press is confirmed (ACK) once journaled: nothing more to answer."""


class _Dropped(Exception):
    """The stream connection failed or went silent."""


class _OpenRejected(Exception):
    """The gateway refused our credentials."""


async def _ack(ws: aiohttp.ClientWebSocketResponse, message_id: Any, data: Any) -> None:
    ack = AckMessage()
    ack.code = AckMessage.STATUS_OK
    ack.headers.message_id = message_id
    ack.headers.content_type = "application/json"
    ack.message = "OK"
    ack.data = data
    await ws.send_str(json.dumps(ack.to_dict()))
