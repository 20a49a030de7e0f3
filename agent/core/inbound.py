"""The inbound journal's consumer: chats run concurrently, each chat strictly in order.

Providers hand messages to `InboundDispatcher.accept`, which persists them (deduplicated by
key) before returning, so the provider may then confirm them to the platform. A message
whose handling was interrupted by a crash (journal row left `started`) is not run again
(it may already have reached the backend); the chat is told so instead.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence

from agent.chats.base import InboundMessage, OutboundMessage
from agent.core import i18n
from agent.core.access import AccessPolicy
from agent.core.handlers import Handlers
from agent.store import queries, writes
from agent.store.models import Channel, Inbound, database_proxy

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 10.0
# A journal write waits this long for a lock held elsewhere; then the provider is told it
# failed and leaves the messages unconfirmed (its platform delivers them again).
JOURNAL_WAIT_SECONDS = 10.0
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

    async def accept(self, messages: Sequence[InboundMessage]) -> None:
        """The providers' sink: durable once this returns."""
        record = functools.partial(queries.record_inbound, messages)
        journaled = "journaling inbound messages"
        for row in await writes.write(record, journaled, give_up_after=JOURNAL_WAIT_SECONDS):
            self._schedule(row)

    def resume(self) -> None:
        """At start: tell chats about in-doubt messages, then queue what was never handled."""
        for row in queries.inbound_rows("started"):
            self._report_in_doubt(row)
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
        # First sight of a chat, or a new route (DingTalk's sessionWebhook): a write.
        lookup = functools.partial(self._channel, message)
        channel = await writes.write(lookup, f"recording the chat of {row.key}")
        decision = self.access.decide(channel)
        if not decision.allowed:
            replies = [decision.reply] if decision.reply else []
        else:
            started = functools.partial(queries.mark_inbound, row, "started")
            await writes.write(started, f"marking {row.key} started")
            try:
                replies = await self.handlers.handle(message, channel)
            except Exception:
                # A bug must not kill the chat's worker; the trace goes to the log only.
                log.exception("handling %s failed", row.key)
                replies = [OutboundMessage(i18n.text(self.handlers.settings.lang, "backend_down"))]
        finish = functools.partial(self._finish, row, channel, replies)
        await writes.write(finish, f"queueing the replies to {row.key}")
        self.handled += 1
        if replies:
            self.wake_delivery()

    @staticmethod
    def _finish(row: Inbound, channel: Channel, replies: list[OutboundMessage]) -> None:
        with database_proxy.atomic():
            queries.enqueue_many(channel, replies)
            queries.mark_inbound(row, "done")

    def _channel(self, message: InboundMessage) -> Channel:
        chat = (message.provider, message.chat_id)
        cached = self._channels.get(chat)
        now = time.monotonic()
        if cached is not None and cached[1] > now and not message.route:
            return cached[0]
        channel = queries.channel_for(message)
        self._channels[chat] = (channel, now + CHANNEL_CACHE_SECONDS)
        return channel

    def _report_in_doubt(self, row: Inbound) -> None:
        message = queries.inbound_message(row)
        channel = queries.channel_for(message)
        preview = " ".join(message.text.split())[:60]
        reply = OutboundMessage(
            i18n.text(self.handlers.settings.lang, "in_doubt", preview=preview), markdown=False
        )
        with database_proxy.atomic():
            queries.enqueue(channel, reply, dedup_key=f"in-doubt:{row.key}")
            queries.mark_inbound(row, "done")
        log.warning("message %s was interrupted by a stop; chat told to check", row.key)

    @property
    def busy(self) -> bool:
        return bool(self._workers)

    async def stop(self) -> None:
        """Let running handlers finish (bounded); unstarted rows stay for the next start."""
        self._stopping = True
        workers = list(self._workers.values())
        if not workers:
            return
        _, pending = await asyncio.wait(workers, timeout=STOP_GRACE_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
