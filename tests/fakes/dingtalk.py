"""A fake DingTalk: Stream gateway (HTTP open + websocket), OAuth token, robot send APIs.

Speaks the wire format the dingtalk-stream SDK and the OpenAPI docs describe:

* `POST /v1.0/gateway/connections/open` {clientId, clientSecret, subscriptions, ua, localIp}
  -> {endpoint, ticket}; the client then opens `<endpoint>?ticket=<ticket>`.
* Frames server -> client: {specVersion, type: CALLBACK|EVENT|SYSTEM, headers: {appId,
  connectionId, contentType, messageId, time, topic}, data: "<JSON string>"}.
* Frames client -> server (ACK): {code, headers: {contentType, messageId}, message, data}.
* `POST /v1.0/oauth2/accessToken` {appKey, appSecret} -> {accessToken, expireIn}.
* `POST /v1.0/robot/groupMessages/send` / `oToMessages/batchSend` with header
  `x-acs-dingtalk-access-token`; 401 {code: InvalidAuthentication, message, requestid}.
* sessionWebhook (`/robot/sendBySession?session=…`, as DingTalk hands it out on
  oapi.dingtalk.com) and custom robot webhook (`/robot/send?access_token=…`):
  {msgtype: markdown, markdown: {title, text}} -> {errcode: 0, errmsg: "ok"}.
* Interactive cards (create and deliver, update, streaming) and presses on them pushed
  over the websocket: tests/fakes/dingtalk_cards, as `FakeDingTalk.cards`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.dingtalk_cards import FakeCards
from tests.fakes.dingtalk_files import FileDownloads

ROBOT_TOPIC = "/v1.0/im/bot/messages/get"
CHATBOT_USER_ID = "$:LWCP_v1:$fakeRobotUserId"
ROBOT_CODE = "dingfakerobotcode"
SESSION_WEBHOOK_TTL_MS = 90 * 60 * 1000


@dataclass
class Sent:
    """One outbound message the fake received."""

    route: str  # session_webhook | group | oto | custom_webhook
    body: dict[str, Any]
    path: str = ""
    at: float = field(default_factory=time.monotonic)

    @property
    def markdown(self) -> dict[str, Any]:
        """{title, text} whatever the route."""
        if self.route in ("group", "oto"):
            return dict(json.loads(self.body["msgParam"]))
        return dict(self.body.get("markdown") or {})


@dataclass
class _Conn:
    ws: web.WebSocketResponse
    request: web.Request
    connection_id: str
    draining: bool = False  # got a `disconnect` frame: no more deliveries


class FakeDingTalk(FileDownloads):
    def __init__(
        self, client_id: str = "fake-client-id", client_secret: str = "fake-secret"
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.robot_code = ROBOT_CODE
        self.chatbot_user_id = CHATBOT_USER_ID
        self.app_id = str(uuid.uuid4())
        self.custom_webhook_token = "custom-robot-token"
        self.token_ttl = 7200

        self.sent: list[Sent] = []
        self.acks: dict[str, float] = {}  # robot msgId -> monotonic time of the first ACK
        self.ack_frames: list[dict[str, Any]] = []
        self.pushed_at: dict[str, float] = {}  # robot msgId -> monotonic time of the push
        self.open_calls: list[dict[str, Any]] = []  # accepted open requests (their bodies)
        self.open_attempts = 0
        self.token_calls = 0
        self.connections_total = 0
        self.ping_acks: dict[str, float] = {}
        self.pings_received = 0
        self.answer_pings = True  # False: a half-dead link that never answers websocket pings

        self._gateway_available = True
        self.tickets_issued: list[str] = []
        self.refused_handshakes = 0
        self.handshake_refusal: int | None = None  # an HTTP status: every handshake fails
        self._tickets: set[str] = set()
        self._tokens: set[str] = set()
        self._conns: list[_Conn] = []
        self._frames: dict[str, dict[str, Any]] = {}  # robot msgId -> last frame pushed
        self._stream_ids: dict[str, str] = {}  # stream messageId -> robot msgId
        self._pending: list[dict[str, Any]] = []  # frames waiting for a connection
        self._sessions: dict[str, int] = {}  # session id -> expiry (ms epoch)
        self._failures: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._cond = asyncio.Condition()
        self.cards = FakeCards(self)
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._init_files()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1.0/gateway/connections/open", self._open)
        app.router.add_get("/connect", self._connect)
        app.router.add_post("/v1.0/oauth2/accessToken", self._token)
        app.router.add_post("/v1.0/robot/groupMessages/send", self._group_send)
        app.router.add_post("/v1.0/robot/oToMessages/batchSend", self._oto_send)
        app.router.add_post("/robot/sendBySession", self._session_send)
        app.router.add_post("/robot/send", self._custom_send)
        app.router.add_post("/v1.0/robot/messageFiles/download", self._message_file)
        app.router.add_get("/oss/{token}", self._oss)
        self.cards.add_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self._port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for conn in list(self._conns):
            await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def webhook_url(self) -> str:
        """A custom group robot webhook (DINGTALK_WEBHOOK_URL)."""
        return f"{self.url}/robot/send?access_token={self.custom_webhook_token}"

    @property
    def open_connections(self) -> int:
        return sum(1 for c in self._conns if not c.ws.closed)

    # -- test controls -------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5) -> None:
        async with self._cond:
            await asyncio.wait_for(self._cond.wait_for(predicate), timeout)

    async def notify(self) -> None:
        """Wake `wait_for` callers (also for test code whose own state changed)."""
        async with self._cond:
            self._cond.notify_all()

    def set_gateway_available(self, available: bool) -> None:
        self._gateway_available = available

    def expire_tokens(self) -> None:
        self._tokens.clear()

    def expire_session_webhooks(self) -> None:
        self._sessions = {k: 0 for k in self._sessions}

    def fail_next(self, route: str, status: int, body: dict[str, Any] | None = None) -> None:
        """Answer the next request on `route` (group, oto, session_webhook, custom_webhook,
        token, open, connect: the websocket handshake, download: messageFiles/download,
        card_create, card_update, card_streaming) with `status` and `body`."""
        payload = body if body is not None else {"code": "ServiceUnavailable", "message": "fake"}
        self._failures.setdefault(route, []).append((status, payload))

    def message_payload(
        self,
        conversation_id: str,
        text: str,
        *,
        conversation_type: str = "1",
        sender_staff_id: str = "staff-1",
        sender_nick: str = "Alice",
        at_bot: bool = False,
        msg_id: str | None = None,
        msgtype: str = "text",
        session_webhook_ttl_ms: int = SESSION_WEBHOOK_TTL_MS,
        sender_id: str | None = None,
        content: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A robot message as DingTalk puts it (JSON-encoded) in a CALLBACK frame's `data`."""
        msg_id = msg_id or f"msg{uuid.uuid4().hex}"
        session = uuid.uuid4().hex
        now_ms = int(time.time() * 1000)
        self._sessions[session] = now_ms + session_webhook_ttl_ms
        payload: dict[str, Any] = {
            "conversationId": conversation_id,
            "chatbotCorpId": "dingcorp",
            "chatbotUserId": self.chatbot_user_id,
            "msgId": msg_id,
            "senderNick": sender_nick,
            "isAdmin": False,
            "senderStaffId": sender_staff_id,
            "sessionWebhookExpiredTime": now_ms + session_webhook_ttl_ms,
            "createAt": now_ms,
            "senderCorpId": "dingcorp",
            "conversationType": conversation_type,
            "senderId": sender_id or f"$:LWCP_v1:${sender_staff_id}",
            # DingTalk's shape: https://oapi.dingtalk.com/robot/sendBySession?session=…
            "sessionWebhook": f"{self.url}/robot/sendBySession?session={session}",
            "robotCode": self.robot_code,
            "msgtype": msgtype,
        }
        if conversation_type == "2":
            payload["conversationTitle"] = "Fake group"
            payload["isInAtList"] = at_bot
            if at_bot:
                payload["atUsers"] = [{"dingtalkId": self.chatbot_user_id}]
        else:
            payload["isInAtList"] = True
        if msgtype == "text":
            payload["text"] = {"content": text}
        elif msgtype == "picture":
            payload["content"] = {"downloadCode": "fake-download-code"}
        elif msgtype == "richText":
            payload["content"] = {"richText": [{"text": text}]}
        else:
            payload["content"] = {}
        if content is not None:  # a file message's (see media_content, rich_text)
            payload["content"] = content
        return payload

    async def push_message(
        self,
        conversation_id: str,
        text: str,
        *,
        conversation_type: str = "1",
        sender_staff_id: str = "staff-1",
        at_bot: bool = False,
        msg_id: str | None = None,
        msgtype: str = "text",
        **kwargs: Any,
    ) -> str:
        """Deliver a robot message as a CALLBACK frame; returns its msgId."""
        payload = self.message_payload(
            conversation_id,
            text,
            conversation_type=conversation_type,
            sender_staff_id=sender_staff_id,
            at_bot=at_bot,
            msg_id=msg_id,
            msgtype=msgtype,
            **kwargs,
        )
        frame = self._callback_frame(payload)
        self._frames[payload["msgId"]] = frame
        self.pushed_at[payload["msgId"]] = time.monotonic()
        await self.push_raw(frame)
        return str(payload["msgId"])

    async def redeliver(self, msg_id: str) -> None:
        """Push the same robot message again (DingTalk does this when it got no ACK)."""
        old = self._frames[msg_id]
        frame = self._callback_frame(json.loads(old["data"]))
        self._frames[msg_id] = frame
        await self.push_raw(frame)

    async def push_raw(self, frame: dict[str, Any]) -> None:
        """Send a frame to the newest live connection, or queue it until one opens."""
        conn = self._live()
        if conn is None:
            self._pending.append(frame)
            return
        try:
            await conn.ws.send_str(json.dumps(frame))
        except ConnectionResetError:
            self._pending.append(frame)

    async def send_system_ping(self) -> str:
        message_id = uuid.uuid4().hex
        frame = self._frame("SYSTEM", "ping", message_id, {"opaque": uuid.uuid4().hex})
        conn = self._live()
        assert conn is not None, "no live connection"
        await conn.ws.send_str(json.dumps(frame))
        return message_id

    async def send_system_disconnect(self) -> None:
        """Ask every client to reconnect; like DingTalk, keep the socket open meanwhile."""
        for conn in self._conns:
            if conn.ws.closed or conn.draining:
                continue
            conn.draining = True
            frame = self._frame(
                "SYSTEM",
                "disconnect",
                uuid.uuid4().hex,
                {"reason": "persistent connection is timeout"},
            )
            await conn.ws.send_str(json.dumps(frame))
        await self.notify()

    async def disconnect_all(self) -> None:
        """Drop every socket without a close handshake (network loss)."""
        for conn in self._conns:
            transport = conn.request.transport
            if transport is not None:
                transport.abort()
        await self.notify()

    # -- frames --------------------------------------------------------------------------

    def _frame(
        self, type_: str, topic: str, message_id: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "specVersion": "1.0",
            "type": type_,
            "headers": {
                "appId": self.app_id,
                "connectionId": self._conns[-1].connection_id if self._conns else "",
                "contentType": "application/json",
                "messageId": message_id,
                "time": str(int(time.time() * 1000)),
                "topic": topic,
            },
            "data": json.dumps(data, ensure_ascii=False),
        }

    def _callback_frame(self, payload: dict[str, Any]) -> dict[str, Any]:
        stream_id = f"{uuid.uuid4().hex[:8]}_{len(self._stream_ids)}"
        self._stream_ids[stream_id] = payload["msgId"]
        return self._frame("CALLBACK", ROBOT_TOPIC, stream_id, payload)

    def _live(self) -> _Conn | None:
        for conn in reversed(self._conns):
            transport = conn.request.transport
            if transport is None or transport.is_closing():
                continue
            if not conn.ws.closed and not conn.draining:
                return conn
        return None

    # -- handlers ------------------------------------------------------------------------

    def _injected(self, route: str) -> web.Response | None:
        queue = self._failures.get(route)
        if queue:
            status, body = queue.pop(0)
            return web.json_response(body, status=status)
        return None

    async def _open(self, request: web.Request) -> web.Response:
        self.open_attempts += 1
        await self.notify()
        if (failure := self._injected("open")) is not None:
            return failure
        if not self._gateway_available:
            return web.json_response(
                {"code": "ServiceUnavailable", "message": "gateway unavailable"}, status=503
            )
        body = await request.json()
        self.open_calls.append(body)
        await self.notify()
        if body.get("clientId") != self.client_id or body.get("clientSecret") != self.client_secret:
            return web.json_response(
                {
                    "code": "InvalidAuthentication",
                    "message": "clientId or clientSecret is wrong",
                    "requestid": uuid.uuid4().hex,
                },
                status=401,
            )
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        self.tickets_issued.append(ticket)
        return web.json_response(
            {"endpoint": f"ws://127.0.0.1:{self._port}/connect", "ticket": ticket}
        )

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        failure = self._injected("connect")
        if failure is None and self.handshake_refusal is not None:
            failure = web.json_response(
                {"code": "Forbidden", "message": "connection refused"},
                status=self.handshake_refusal,
            )
        if failure is None and (not self._gateway_available or ticket not in self._tickets):
            failure = web.json_response(
                {"code": "InvalidTicket", "message": "bad ticket"}, status=401
            )
        if failure is not None:
            self.refused_handshakes += 1
            await self.notify()
            return failure
        self._tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        conn = _Conn(ws=ws, request=request, connection_id=str(uuid.uuid4()))
        self._conns.append(conn)
        self.connections_total += 1
        await self.notify()
        pending, self._pending = self._pending, []
        for frame in pending:
            await ws.send_str(json.dumps(frame))
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await self._on_client_frame(json.loads(msg.data))
            elif msg.type is WSMsgType.PING:
                self.pings_received += 1
                if self.answer_pings:
                    await ws.pong(msg.data)
            elif msg.type is WSMsgType.CLOSE:
                await ws.close()
        await self.notify()
        return ws

    async def _on_client_frame(self, frame: dict[str, Any]) -> None:
        self.ack_frames.append(frame)
        message_id = frame.get("headers", {}).get("messageId", "")
        now = time.monotonic()
        if message_id in self._stream_ids:
            if frame.get("code") == 200:
                self.acks.setdefault(self._stream_ids[message_id], now)
        elif not self.cards.note_ack(message_id, frame):
            self.ping_acks.setdefault(message_id, now)
        await self.notify()

    async def _token(self, request: web.Request) -> web.Response:
        if (failure := self._injected("token")) is not None:
            return failure
        body = await request.json()
        self.token_calls += 1
        if body.get("appKey") != self.client_id or body.get("appSecret") != self.client_secret:
            return web.json_response(
                {
                    "code": "invalidClientIdOrSecret",
                    "message": "无效的clientId或者clientSecret",
                    "requestid": uuid.uuid4().hex,
                },
                status=400,
            )
        token = uuid.uuid4().hex
        self._tokens.add(token)
        return web.json_response({"accessToken": token, "expireIn": self.token_ttl})

    async def _check_token(self, request: web.Request) -> web.Response | None:
        if request.headers.get("x-acs-dingtalk-access-token", "") not in self._tokens:
            return web.json_response(
                {
                    "requestid": uuid.uuid4().hex,
                    "code": "InvalidAuthentication",
                    "message": "不合法的access_token",
                },
                status=401,
            )
        return None

    def _bad_request(self, message: str) -> web.Response:
        return web.json_response(
            {"code": "InvalidParameter", "message": message, "requestid": uuid.uuid4().hex},
            status=400,
        )

    async def _robot_send(self, request: web.Request, route: str, target: str) -> web.Response:
        if (denied := await self._check_token(request)) is not None:
            return denied
        if (failure := self._injected(route)) is not None:
            return failure
        body = await request.json()
        if body.get("robotCode") != self.robot_code:
            return self._bad_request("robotCode is wrong")
        if not body.get(target):
            return self._bad_request(f"{target} is missing")
        if body.get("msgKey") != "sampleMarkdown":
            return self._bad_request("unsupported msgKey in this fake")
        param = json.loads(body.get("msgParam") or "{}")
        if not param.get("text") or not param.get("title"):
            return self._bad_request("msgParam needs title and text")
        self.sent.append(Sent(route, body, request.path))
        await self.notify()
        result: dict[str, Any] = {"processQueryKey": uuid.uuid4().hex}
        if route == "oto":
            result |= {"invalidStaffIdList": [], "flowControlledStaffIdList": []}
        return web.json_response(result)

    async def _group_send(self, request: web.Request) -> web.Response:
        return await self._robot_send(request, "group", "openConversationId")

    async def _oto_send(self, request: web.Request) -> web.Response:
        return await self._robot_send(request, "oto", "userIds")

    async def _webhook_send(self, request: web.Request, route: str) -> web.Response:
        if (failure := self._injected(route)) is not None:
            return failure
        body = await request.json()
        if body.get("msgtype") != "markdown" or not body.get("markdown", {}).get("text"):
            return web.json_response({"errcode": 40035, "errmsg": "缺少参数 markdown"})
        self.sent.append(Sent(route, body, request.path_qs))
        await self.notify()
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def _session_send(self, request: web.Request) -> web.Response:
        expires = self._sessions.get(request.query.get("session", ""))
        if expires is None or expires < time.time() * 1000:
            return web.json_response({"errcode": 300001, "errmsg": "session is expired"})
        return await self._webhook_send(request, "session_webhook")

    async def _custom_send(self, request: web.Request) -> web.Response:
        if request.query.get("access_token") != self.custom_webhook_token:
            return web.json_response({"errcode": 300001, "errmsg": "token is not exist"})
        return await self._webhook_send(request, "custom_webhook")
