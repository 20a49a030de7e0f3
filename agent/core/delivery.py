"""The outbox out to the chat providers: once, in order per chat, retried, never lost.

A row is marked sent only after the platform accepted it. A 429 waits its `retry_after`,
5xx and network errors back off, a permanent error (chat gone, bot blocked) is recorded
and that row is given up. Rows written by another process (e.g. `pair approve`) are found
by a slow rescan.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping

from agent.chats.base import ChatProvider
from agent.errors import ChatMoved, PermanentDeliveryError, ProviderConflict, RetryLater
from agent.logs import SecretFilter
from agent.retry import Backoff
from agent.store import allowed, queries
from agent.store.models import Channel, Outbox

log = logging.getLogger(__name__)

RESCAN_SECONDS = 5.0
CONFLICT_RETRY_SECONDS = 30.0
# An unexpected error (a bug, not the platform) is retried this often before giving up.
MAX_UNEXPECTED_ATTEMPTS = 8


class Delivery:
    def __init__(self, providers: Mapping[str, ChatProvider], secrets: Iterable[str] = ()) -> None:
        self.providers = providers
        # A secret pasted into a chat must not be echoed back (e.g. in "'…' is not an id").
        self._masker = SecretFilter(secrets)
        self._wake = asyncio.Event()
        self._busy: dict[int, asyncio.Task[None]] = {}
        self.sent = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        stop_waiter = asyncio.create_task(stop.wait())
        stop_waiter.add_done_callback(lambda _: self._wake.set())  # stop promptly
        try:
            await self._loop(stop)
        finally:
            stop_waiter.cancel()

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            next_due = self._start_due_workers()
            timeout = RESCAN_SECONDS if next_due is None else max(0.0, next_due - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(timeout, RESCAN_SECONDS))
        await self._drain()

    def _start_due_workers(self) -> float | None:
        """Start a worker for each idle chat whose oldest row is due; return the next due time."""
        now = time.time()
        next_due: float | None = None
        for head in queries.outbox_heads():
            channel_id = head.channel_id
            if channel_id in self._busy:
                continue
            if head.next_attempt_at > now:
                next_due = min(next_due or head.next_attempt_at, head.next_attempt_at)
                continue
            provider = self.providers.get(head.channel.provider)
            if provider is None:
                continue  # that platform is off: keep its rows for when it is back
            self._busy[channel_id] = asyncio.create_task(self._work(head.channel, provider))
        return next_due

    async def _work(self, channel: Channel, provider: ChatProvider) -> None:
        try:
            backoff = Backoff()
            while (row := queries.outbox_head(channel.id)) is not None:
                if row.next_attempt_at > time.time():
                    break
                if not allowed.may_deliver(row):  # access, read fresh: revoked since queued
                    allowed.drop(row)
                    continue
                if not await self._deliver(row, channel, provider, backoff):
                    break
        finally:
            self._busy.pop(channel.id, None)
            self._wake.set()

    async def _deliver(
        self, row: Outbox, channel: Channel, provider: ChatProvider, backoff: Backoff
    ) -> bool:
        """Try one row; True when the chat may go on with its next row."""
        try:
            chat = queries.chat_ref(channel, row)
            message = queries.outbox_message(row)
            message = dataclasses.replace(message, text=self._masker.mask(message.text))
            if row.kind == "edit":
                message_id = self._edit_target(row, channel)
                if message_id:
                    await provider.edit(chat, message_id, message)
            else:
                first_part = int(queries.outbox_payload(row).get("parts_sent", 0))
                message_id = await provider.send(chat, message, first_part=first_part)
        except RetryLater as exc:
            if exc.parts_sent:
                queries.note_parts_sent(row, exc.parts_sent)
            delay = backoff.next_delay(exc.retry_after)
            log.info("send to %s retried in %.1fs: %s", channel.address, delay, exc)
            queries.mark_retry(row, delay, str(exc))
            return False
        except ProviderConflict as exc:
            queries.mark_retry(row, CONFLICT_RETRY_SECONDS, str(exc))
            return False
        except ChatMoved as exc:
            # The chat lives on under a new id: move it, and the rescan sends there.
            log.info("%s moved to %s: %s", channel.address, exc.new_chat_id, exc)
            if exc.new_chat_id == channel.chat_id:  # nowhere to go: do not loop
                queries.mark_failed(row, str(exc))
                return True
            queries.migrate_channel(channel.provider, channel.chat_id, exc.new_chat_id)
            return False
        except PermanentDeliveryError as exc:
            log.warning("send to %s failed for good: %s", channel.address, exc)
            queries.mark_failed(row, str(exc))
            return True
        except Exception as exc:
            log.exception("unexpected error sending to %s", channel.address)
            if row.attempts + 1 >= MAX_UNEXPECTED_ATTEMPTS:
                queries.mark_failed(row, repr(exc))
                return True
            queries.mark_retry(row, backoff.next_delay(), repr(exc))
            return False
        queries.mark_sent(row, message_id)
        backoff.reset()
        self.sent += 1
        return True

    @staticmethod
    def _edit_target(row: Outbox, channel: Channel) -> str:
        """The platform id of the message an edit row replaces ('' if it never went out)."""
        key = queries.outbox_payload(row).get("target_dedup_key", "")
        target = queries.sent_row(channel, key) if key else None
        return str(target.platform_message_id) if target and target.status == "sent" else ""

    async def _drain(self) -> None:
        tasks = list(self._busy.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
