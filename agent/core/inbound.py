"""The inbound journal's consumer: chats run concurrently, each chat strictly in order.

Providers hand messages to `InboundDispatcher.accept`, which persists them (deduplicated by
key) before returning, so the provider may then confirm them to the platform.

A message whose handling was cut off (journal row left `started` by a crash, or a
`POST /tasks` that got no answer) is settled before its chat's later messages: a prompt
that may have gone out is looked for at the backend and sent only if it is not there
(core/intents), and the chat gets the usual reply, once; a message that never got as far
as a prompt is handled again. While the backend cannot be asked, this is retried (the
chat's later messages wait); at a stop the row stays for the next start. Only where the
backend cannot tell is the chat told the message may not have reached Poco.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from agent.chats.base import InboundMessage, OutboundMessage
from agent.core import i18n
from agent.core.access import AccessPolicy
from agent.core.handlers import Handlers
from agent.core.intents import PromptInDoubt
from agent.errors import BackendUnauthorized, BackendUnavailable
from agent.retry import Backoff, sleep_or_stop
from agent.store import queries
from agent.store.models import Channel, Inbound, database_proxy

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 10.0
# Channels are re-read this often, so `pair approve/revoke` from another shell takes effect.
CHANNEL_CACHE_SECONDS = 5.0


class InboundDispatcher:
    def __init__(
        self,
        handlers: Handlers,
        access: AccessPolicy,
        wake_delivery: Callable[[], None],
    ) -> None:
        self.handlers = handlers
        self.access = access
        self.wake_delivery = wake_delivery
        self._queues: dict[tuple[str, str], asyncio.Queue[Inbound]] = {}
        self._workers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.handled = 0
        self._channels: dict[tuple[str, str], tuple[Channel, float]] = {}
        self._stopping = False
        self._stop_event = asyncio.Event()

    async def accept(self, messages: Sequence[InboundMessage]) -> None:
        """The providers' sink: durable once this returns."""
        for row in queries.record_inbound(messages):
            self._schedule(row)

    def resume(self) -> None:
        """At start: queue messages cut off by a crash (each first in its chat, settled
        before the rest), then what was never handled."""
        self.handlers.sender.prune()
        for row in queries.inbound_rows("started"):
            self._schedule(row)
        for row in queries.inbound_rows("pending"):
            self._schedule(row)

    def _schedule(self, row: Inbound) -> None:
        chat = (row.provider, row.chat_id)
        queue = self._queues.get(chat)
        if queue is None:
            queue = self._queues[chat] = asyncio.Queue()
        queue.put_nowait(row)
        if chat not in self._workers and not self._stopping:
            self._workers[chat] = asyncio.create_task(self._work(chat, queue), name=f"chat {chat}")

    async def _work(self, chat: tuple[str, str], queue: asyncio.Queue[Inbound]) -> None:
        try:
            while not queue.empty() and not self._stopping:
                row = queue.get_nowait()
                try:
                    await self._handle(row)
                except Exception:
                    # E.g. the store failed: the row stays in the journal for the next start.
                    log.exception("inbound %s could not be handled", row.key)
        finally:
            # Idle chats cost nothing: the worker ends and the next message starts a new one.
            del self._workers[chat]
            if queue.empty() or self._stopping:
                self._queues.pop(chat, None)
            else:
                self._workers[chat] = asyncio.create_task(self._work(chat, queue))

    async def _handle(self, row: Inbound) -> None:
        message = queries.inbound_message(row)
        channel = self._channel(message)
        decision = self.access.decide(channel)
        if not decision.allowed:
            replies = [decision.reply] if decision.reply else []
        else:
            handled = await self._replies(row, message, channel)
            if handled is None:
                return  # stopping while it could not be settled: kept for the next start
            replies = handled
        with database_proxy.atomic():
            queries.enqueue_many(channel, replies)
            queries.mark_inbound(row, "done")
        self.handled += 1
        if replies:
            self.wake_delivery()

    async def _replies(
        self, row: Inbound, message: InboundMessage, channel: Channel
    ) -> list[OutboundMessage] | None:
        if row.status == "started":  # cut off by a crash
            return await self._settle(row, message, channel, wait=False)
        queries.mark_inbound(row, "started")
        try:
            return await self.handlers.handle(message, channel)
        except PromptInDoubt as exc:
            log.warning("message %s: no answer to POST /tasks (%s); looking again", row.key, exc)
            return await self._settle(row, message, channel, wait=True)
        except Exception:
            # A bug must not kill the chat's worker; the trace goes to the log only.
            log.exception("handling %s failed", row.key)
            return [OutboundMessage(i18n.text(self.handlers.settings.lang, "backend_down"))]

    async def _settle(
        self, row: Inbound, message: InboundMessage, channel: Channel, *, wait: bool
    ) -> list[OutboundMessage] | None:
        """Replies to a message whose prompt may have gone out, retried while the backend
        cannot be asked; None if the dispatcher stops first."""
        backoff = Backoff()
        # After a lost answer the backend may still be committing: give it a moment.
        if wait and await sleep_or_stop(backoff.next_delay(), self._stop_event):
            return None
        while True:
            try:
                replies = await self.handlers.settle(message, channel)
                if replies is None:  # no prompt went out: handle it as new
                    replies = await self.handlers.handle(message, channel)
                return replies
            except (BackendUnavailable, PromptInDoubt) as exc:
                log.warning("message %s not settled yet, backend: %s", row.key, exc)
            except BackendUnauthorized as exc:
                log.warning("message %s not settled yet, backend: %s", row.key, exc)
                self._tell_once(channel, f"unauthorized:{row.key}", "backend_unauthorized")
            except Exception:
                log.exception("settling %s failed", row.key)
                return [OutboundMessage(i18n.text(self.handlers.settings.lang, "backend_down"))]
            if await sleep_or_stop(backoff.next_delay(), self._stop_event):
                return None

    def _tell_once(self, channel: Channel, dedup_key: str, text_key: str) -> None:
        reply = OutboundMessage(i18n.text(self.handlers.settings.lang, text_key))
        if queries.enqueue(channel, reply, dedup_key=dedup_key) is not None:
            self.wake_delivery()

    def _channel(self, message: InboundMessage) -> Channel:
        chat = (message.provider, message.chat_id)
        cached = self._channels.get(chat)
        now = time.monotonic()
        if cached is not None and cached[1] > now and not message.route:
            return cached[0]
        channel = queries.channel_for(message)
        self._channels[chat] = (channel, now + CHANNEL_CACHE_SECONDS)
        return channel

    @property
    def busy(self) -> bool:
        return bool(self._workers)

    async def stop(self) -> None:
        """Let running handlers finish (bounded); unstarted rows stay for the next start."""
        self._stopping = True
        self._stop_event.set()
        workers = list(self._workers.values())
        if not workers:
            return
        _, pending = await asyncio.wait(workers, timeout=STOP_GRACE_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
