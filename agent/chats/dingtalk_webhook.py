"""DingTalk in webhook mode (DINGTALK_STREAM_ENABLED=false): robot messages in over HTTP.

A POST to `/api/v1/webhooks/dingtalk` is accepted when it proves where it comes from:

* DINGTALK_WEBHOOK_TOKEN set: the query `token`, header `X-DingTalk-Token` or payload
  field `token` (first one present) must equal it;
* `timestamp` + `sign` headers present (DingTalk signs robot callbacks): the sign must be
  base64(HMAC-SHA256(app secret, timestamp + "\\n" + app secret)) and the timestamp (ms)
  within an hour of now.

Both apply when both are there. With no token configured and no signature a call is
refused (secure by default). The signature covers only the timestamp, so a signed call
seen once is refused if it comes again within the hour (see `SeenSignatures`). A call
naming a sessionWebhook that DingTalk would not give (chats/dingtalk_route) is refused:
it is forged. Messages go through the same journal as Stream mode (key
`dingtalk:<msgId>`); sending is the Stream provider's (sessionWebhook, OpenAPI, fallback).
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from agent.chats.base import InboundSink, ProviderState, ProviderStatus
from agent.chats.dingtalk import DingTalkProvider
from agent.chats.dingtalk_messages import to_inbound
from agent.config import DingTalkSettings

TOKEN_HEADER = "X-DingTalk-Token"  # noqa: S105 (a header name)
SIGN_MAX_AGE_MS = 3600 * 1000
# Signed calls remembered at once (each is kept until its timestamp is too old anyway).
# Far above what one robot receives in two hours; when full, new signed calls wait (503).
MAX_SEEN_SIGNATURES = 20_000

log = logging.getLogger(__name__)

WebhookAnswer = tuple[int, dict[str, Any]]


def sign(timestamp: str, secret: str) -> str:
    """DingTalk's callback signature for `timestamp` (ms, as sent) keyed with the app secret."""
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signature_ok(timestamp: str, given: str, secret: str, now: float | None = None) -> bool:
    """True for a fresh (within an hour) and correct signature."""
    if not secret or not timestamp.isdigit():
        return False
    now_ms = (time.time() if now is None else now) * 1000
    if abs(now_ms - int(timestamp)) > SIGN_MAX_AGE_MS:
        return False
    return hmac.compare_digest(given.encode(), sign(timestamp, secret).encode())


class SeenSignatures:
    """The signed calls accepted within their validity window, to refuse a replay.

    A signature is reserved while its call is handled and released if the call is not
    accepted (so DingTalk's own retry of a call we answered 5xx still gets in). Memory is
    bounded: entries leave once their timestamp is out of the window."""

    def __init__(self, limit: int = MAX_SEEN_SIGNATURES) -> None:
        self.limit = limit
        self._expiry: dict[str, float] = {}
        self._by_expiry: list[tuple[float, str]] = []

    def reserve(self, timestamp: str, given_sign: str, now: float) -> str:
        """'' when reserved; else why not ('replayed' or 'full')."""
        self._forget_expired(now)
        key = f"{timestamp}:{given_sign}"
        if key in self._expiry:
            return "replayed"
        if len(self._expiry) >= self.limit:
            return "full"
        # Valid while |now - timestamp| <= window: remember it until the window has passed.
        expiry = int(timestamp) / 1000 + SIGN_MAX_AGE_MS / 1000
        self._expiry[key] = expiry
        heapq.heappush(self._by_expiry, (expiry, key))
        return ""

    def release(self, timestamp: str, given_sign: str) -> None:
        self._expiry.pop(f"{timestamp}:{given_sign}", None)  # its heap entry ages out

    def __len__(self) -> int:
        return len(self._expiry)

    def _forget_expired(self, now: float) -> None:
        while self._by_expiry and self._by_expiry[0][0] < now:
            expiry, key = heapq.heappop(self._by_expiry)
            if self._expiry.get(key) == expiry:
                del self._expiry[key]


class DingTalkWebhookProvider(DingTalkProvider):
    """DingTalk robot in webhook mode (see the module docstring)."""

    def __init__(self, settings: DingTalkSettings) -> None:
        super().__init__(settings)
        self.status = ProviderStatus(enabled=self.settings.enabled, mode="webhook")
        self._sink: InboundSink | None = None
        self.seen_signatures = SeenSignatures()

    async def run(self, sink: InboundSink) -> None:
        """Accept callbacks until stopped: there is nothing to connect to."""
        self._stop.clear()
        self._sink = sink
        self.status.set(ProviderState.CONNECTED, "waiting for DingTalk callbacks")
        try:
            await self._stop.wait()
        finally:
            self._sink = None
        self.status.set(ProviderState.DISABLED, "stopped")

    async def handle_webhook(
        self, headers: Mapping[str, str], query: Mapping[str, str], body: bytes
    ) -> WebhookAnswer:
        """One POST from DingTalk: (HTTP status, JSON body)."""
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, {"error": "malformed JSON"}
        if not isinstance(payload, dict):
            return 400, {"error": "not a DingTalk robot message"}
        refusal = self._refusal(headers, query, payload)
        if refusal:
            log.warning("DingTalk webhook call refused: %s", refusal)
            return 403, {"error": "forbidden"}
        timestamp, given_sign = headers.get("timestamp", ""), headers.get("sign", "")
        if timestamp and given_sign:
            why = self.seen_signatures.reserve(timestamp, given_sign, time.time())
            if why:
                log.warning("DingTalk webhook call refused: signature %s", why)
                if why == "replayed":
                    return 403, {"error": "forbidden"}
                return 503, {"error": "busy"}
        answer = await self._take(payload)
        if answer[0] != 200 and timestamp and given_sign:
            self.seen_signatures.release(timestamp, given_sign)  # DingTalk may retry it
        return answer

    async def _take(self, payload: dict[str, Any]) -> WebhookAnswer:
        """Journal an authenticated robot message."""
        sink = self._sink
        if sink is None:
            return 503, {"error": "not ready"}  # paused or stopping: DingTalk retries
        if not payload.get("msgId"):
            return 400, {"error": "not a DingTalk robot message"}
        try:
            message = to_inbound(payload, self.session_webhooks)
        except (ValueError, TypeError, KeyError, AttributeError):
            return 400, {"error": "not a DingTalk robot message"}
        if message is not None:
            try:
                await sink([message])
            except Exception:
                log.exception("could not store DingTalk message %s", message.key)
                return 500, {"error": "not stored"}
        self.status.last_ok_at = time.time()
        return 200, {}

    def _refusal(
        self, headers: Mapping[str, str], query: Mapping[str, str], payload: dict[str, Any]
    ) -> str:
        """Why this call is not trusted, or '' when it is."""
        expected = self.settings.webhook_token
        timestamp, given_sign = headers.get("timestamp", ""), headers.get("sign", "")
        signed = bool(timestamp and given_sign)
        if not expected and not signed:
            return "no DINGTALK_WEBHOOK_TOKEN configured and no signature"
        if signed and not signature_ok(timestamp, given_sign, self.settings.client_secret):
            return "bad or stale signature"
        if expected:
            token = query.get("token") or headers.get(TOKEN_HEADER) or payload.get("token") or ""
            if not hmac.compare_digest(str(token).encode(), expected.encode()):
                return "wrong or missing token"
        session_webhook = payload.get("sessionWebhook")
        if session_webhook and not self.session_webhooks.accepts(str(session_webhook)):
            # DingTalk only hands out its own URLs: this call did not come from DingTalk.
            return "sessionWebhook outside DingTalk's hosts"
        return ""
