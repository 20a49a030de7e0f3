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

A store write that fails (the database locked by another process, disk full) is retried,
and the chat's later messages wait behind it, while the agent runs. Access is read from
the store for each message: `pair approve/revoke` in another shell counts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from agent.chats.base import InboundMessage, OutboundMessage
from agent.core import i18n
from agent.core.access import AccessPolicy, Decision
from agent.core.handlers import Handlers
from agent.core.intents import PromptInDoubt
from agent.errors import BackendUnauthorized, BackendUnavailable, StoreError
from agent.retry import Backoff, sleep_or_stop
from agent.store import allowed, queries, writes
from agent.store.db import WRITE_AT_ONCE, store_errors
from agent.store.models import Channel, Inbound, database_proxy

log = logging.getLogger(__name__)

T = TypeVar("T")

STOP_GRACE_SECONDS = 10.0
# A journal write waits this long for a lock held elsewhere; then the provider is told it
# failed and leaves the messages unconfirmed (its platform delivers them again).
JOURNAL_WAIT_SECONDS = 10.0
# A failed store write is retried after this long, growing up to the maximum.
STORE_RETRY_SECONDS = 0.2
STORE_RETRY_MAX_SECONDS = 10.0


class _Stopping(Exception):
    """The agent stops while a store write still fails, or a cut-off message cannot be
    settled yet: the row stays for the next start."""


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
        self._stopping = asyncio.Event()

    async def accept(self, messages: Sequence[InboundMessage]) -> None:
        """The providers' sink: durable once this returns (a lock held elsewhere is waited
        out for a while; then the provider leaves the messages unconfirmed, to come again)."""
        record = functools.partial(queries.record_inbound, messages)
        journaled = "journaling inbound messages"
        for row in await writes.write(record, journaled, give_up_after=JOURNAL_WAIT_SECONDS):
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
        if chat not in self._workers and not self._stopping.is_set():
            self._workers[chat] = asyncio.create_task(self._work(chat, queue), name=f"chat {chat}")

    async def _work(self, chat: tuple[str, str], queue: asyncio.Queue[Inbound]) -> None:
        try:
            while not queue.empty() and not self._stopping.is_set():
                row = queue.get_nowait()
                try:
                    await self._handle(row)
                except _Stopping:
                    break
                except Exception:
                    # A bug: the row stays in the journal for the next start.
                    log.exception("inbound %s could not be handled", row.key)
        finally:
            # Idle chats cost nothing: the worker ends and the next message starts a new one.
            del self._workers[chat]
            if queue.empty() or self._stopping.is_set():
                self._queues.pop(chat, None)
            else:
                self._workers[chat] = asyncio.create_task(self._work(chat, queue))

    async def _handle(self, row: Inbound) -> None:
        """Admit (retried), run the handler (once) or settle a cut-off message, record the
        outcome (retried)."""
        message = queries.inbound_message(row)
        cut_off = row.status == "started"
        channel, decision = await self._retrying(row, lambda: self._admit(row, message))
        if not decision.allowed:
            replies = [decision.reply] if decision.reply else []
        elif cut_off:
            replies = await self._settle(row, message, channel, wait=False)
        else:
            replies = await self._replies(row, message, channel)
        await self._retrying(row, lambda: self._finish(row, message, channel, decision, replies))
        self.handled += 1
        # Also without replies: handling may have queued edits (a prompt closed in every
        # chat, a card's selection shown), which must not wait for the next rescan.
        self.wake_delivery()

    async def _replies(
        self, row: Inbound, message: InboundMessage, channel: Channel
    ) -> list[OutboundMessage]:
        try:
            with store_errors():
                return await self.handlers.handle(message, channel)
        except (PromptInDoubt, StoreError) as exc:
            # A prompt may have gone out without its outcome recorded: settle it.
            log.warning("message %s: %s; settling it", row.key, exc)
            return await self._settle(row, message, channel, wait=True)
        except Exception:
            # A bug must not kill the chat's worker; the trace goes to the log only.
            log.exception("handling %s failed", row.key)
            return [OutboundMessage(i18n.text(self.handlers.settings.lang, "backend_down"))]

    async def _settle(
        self, row: Inbound, message: InboundMessage, channel: Channel, *, wait: bool
    ) -> list[OutboundMessage]:
        """Replies to a message whose prompt may have gone out, retried while the backend
        (or the store) cannot answer; raises _Stopping if the agent stops first."""
        backoff = Backoff()
        # After a lost answer the backend may still be committing: give it a moment.
        if wait and await sleep_or_stop(backoff.next_delay(), self._stopping):
            raise _Stopping
        while True:
            try:
                with store_errors():
                    replies = await self.handlers.settle(message, channel)
                    if replies is None:  # no prompt went out: handle it as new
                        replies = await self.handlers.handle(message, channel)
                return replies
            except (BackendUnavailable, PromptInDoubt, StoreError) as exc:
                log.warning("message %s not settled yet: %s", row.key, exc)
            except BackendUnauthorized as exc:
                log.warning("message %s not settled yet: %s", row.key, exc)
                self._tell_once(channel, f"unauthorized:{row.key}", "backend_unauthorized")
            except Exception:
                log.exception("settling %s failed", row.key)
                return [OutboundMessage(i18n.text(self.handlers.settings.lang, "backend_down"))]
            if await sleep_or_stop(backoff.next_delay(), self._stopping):
                raise _Stopping

    def _tell_once(self, channel: Channel, dedup_key: str, text_key: str) -> None:
        reply = OutboundMessage(i18n.text(self.handlers.settings.lang, text_key))
        with contextlib.suppress(StoreError), store_errors():
            if queries.enqueue(channel, reply, dedup_key=dedup_key) is not None:
                self.wake_delivery()

    def _admit(self, row: Inbound, message: InboundMessage) -> tuple[Channel, Decision]:
        # The channel is read fresh: another process may have approved or revoked it.
        channel = queries.channel_for(message)
        decision = self.access.decide(channel)
        if decision.allowed:
            queries.keep_route(channel, message)
            queries.mark_inbound(row, "started")
        return channel, decision

    def _finish(
        self,
        row: Inbound,
        message: InboundMessage,
        channel: Channel,
        decision: Decision,
        replies: list[OutboundMessage],
    ) -> None:
        with database_proxy.atomic(WRITE_AT_ONCE):
            if not decision.allowed:
                # A refused chat's route is never kept: its reply carries the message's own.
                extra = {allowed.ACCESS_REPLY: True}
                for reply in replies:
                    queries.enqueue(channel, reply, extra=extra, route=message.route)
            else:
                queries.enqueue_many(channel, replies)
                if not allowed.channel_allowed(channel.id):
                    # Revoked while its handler ran: what the handler bound goes too.
                    allowed.cut_off(channel)
            queries.mark_inbound(row, "done")

    async def _retrying(self, row: Inbound, write: Callable[[], T]) -> T:
        """Run a store step until it succeeds; the chat's next messages wait behind it."""
        backoff = Backoff(STORE_RETRY_SECONDS, STORE_RETRY_MAX_SECONDS)
        while True:
            try:
                with store_errors():
                    return write()
            except StoreError as exc:
                delay = backoff.next_delay()
                log.warning("inbound %s: %s; retrying in %.1fs", row.key, exc, delay)
            if await sleep_or_stop(delay, self._stopping):
                raise _Stopping

    @property
    def busy(self) -> bool:
        return bool(self._workers)

    async def stop(self) -> None:
        """Let running handlers finish (bounded); unstarted rows stay for the next start."""
        self._stopping.set()
        workers = list(self._workers.values())
        if not workers:
            return
        _, pending = await asyncio.wait(workers, timeout=STOP_GRACE_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
