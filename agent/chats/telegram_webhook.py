"""Telegram in webhook mode: the agent sets its own webhook and takes updates over HTTP.

The local HTTP server hands each POST to `TelegramWebhookProvider.handle_webhook`. An update
is answered 200 only after the sink stored it (Telegram forgets an update once it got a
2xx), so a failure answers 500 and Telegram delivers it again; the journal dedups by
`telegram:<update_id>`. Sending is the polling provider's.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from telegram import Update

from agent.chats.base import InboundSink, ProviderState
from agent.chats.telegram import ALLOWED_UPDATES, TelegramProvider
from agent.config import TelegramSettings
from agent.retry import sleep_or_stop

WEBHOOK_PATH = "/api/v1/webhooks/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name)

log = logging.getLogger(__name__)

WebhookAnswer = tuple[int, dict[str, Any]]


class TelegramWebhookProvider(TelegramProvider):
    """The ChatProvider for Telegram in webhook mode (TELEGRAM_MODE=webhook)."""

    def __init__(
        self, settings: TelegramSettings, *, commands: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(settings, commands=commands)
        self._sink: InboundSink | None = None

    @property
    def webhook_url(self) -> str:
        return self.settings.webhook_url.rstrip("/") + WEBHOOK_PATH

    async def run(self, sink: InboundSink) -> None:
        """Set the webhook (retrying until it sticks), then accept updates until stopped."""
        self.status.set(ProviderState.CONNECTING)
        self._sink = sink
        try:
            while not self._stop.is_set():
                try:
                    if not self._ready:
                        await self._connect()
                except Exception as exc:  # retried like a failed poll
                    if await sleep_or_stop(self._failure_delay(exc, self.backoff), self._stop):
                        return
                    continue
                self.backoff.reset()
                self.status.set(ProviderState.CONNECTED)  # also after a pause: nothing to redo
                await self._stop.wait()
        finally:
            self._sink = None

    async def _claim_updates(self) -> None:
        # Keep what is pending: Telegram delivers it to the new webhook.
        await self.bot.set_webhook(
            url=self.webhook_url,
            secret_token=self.settings.webhook_secret,
            allowed_updates=ALLOWED_UPDATES,
            drop_pending_updates=False,
        )
        log.info("Telegram webhook set to %s", self.webhook_url)

    async def handle_webhook(
        self, headers: Mapping[str, str], query: Mapping[str, str], body: bytes
    ) -> WebhookAnswer:
        """One POST from Telegram: (HTTP status, JSON body)."""
        given = headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.settings.webhook_secret.encode()):
            log.warning("Telegram webhook call with a wrong or missing secret refused")
            return 403, {"error": "forbidden"}
        sink = self._sink
        if sink is None or not self._ready:
            # Paused, stopping or not yet connected: Telegram retries later.
            return 503, {"error": "not ready"}
        try:
            data = json.loads(body)
            if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
                raise ValueError("no update_id")
            message = self._convert(Update.de_json(data, self.bot))
        except (ValueError, TypeError, KeyError, AttributeError):
            return 400, {"error": "not a Telegram update"}
        if message is not None:
            try:
                await sink([message])
            except Exception:
                log.exception("storing Telegram update %s failed; Telegram retries", message.key)
                return 500, {"error": "not stored"}
            self._stop_spinners([message])
        self.status.last_ok_at = time.time()
        return 200, {}
