"""The outbox out to the chat providers: once, in order per chat, retried, never lost.

A row is marked sent only after the platform accepted it, and a send that succeeded is
never repeated: if the store refuses to record it (another process holds the lock), the
worker keeps the fact and retries the write before anything else goes to that chat. Each
part of a long message is recorded as it goes, so a crash resumes after the last one.
A 429 waits its `retry_after`; 5xx and network errors back off per chat and per platform
(see pacing); a permanent error (chat gone, bot blocked) is recorded and that row is given
up. Rows written by another process (e.g. `pair approve`) are found by a slow rescan.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agent.chats.base import ChatProvider, OutboundMessage
from agent.core.pacing import Pacing
from agent.errors import ChatMoved, PermanentDeliveryError, ProviderConflict, RetryLater
from agent.logs import SecretFilter
from agent.store import allowed, queries, writes
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
        self._pacing = Pacing()
        # Outbox row id -> what the store may not have yet: a send's platform id, the
        # parts of a long message delivered so far.
        self._unrecorded: dict[int, str] = {}
        self._parts: dict[int, int] = {}
        self.sent = 0
        for name, provider in providers.items():
            provider.status.on_ok = functools.partial(self.platform_ok, name)

    def wake(self) -> None:
        self._wake.set()

    def platform_ok(self, provider: str) -> None:
        """A sign of life from a platform (e.g. a successful poll): if delivery saw it
        down, its queue goes out now instead of at the next probe."""
        if self._pacing.platform_ok(provider):
            log.info("%s answers again: delivery resumes", provider)
            self._wake.set()

    def note_wake(self) -> None:
        """The machine woke: earlier failures say nothing about the network now."""
        self._pacing.clear()
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        stop_waiter = asyncio.create_task(stop.wait())
        stop_waiter.add_done_callback(lambda _: self._wake.set())  # stop promptly
        try:
            self._restore_retry_times()
            await self._loop(stop)
        finally:
            stop_waiter.cancel()

    def _restore_retry_times(self) -> None:
        try:
            for head in queries.outbox_heads():
                if head.next_attempt_at:
                    self._pacing.restore(head.channel_id, head.next_attempt_at)
        except Exception:  # they only spread out a restart's first sends
            log.exception("reading the outbox failed")

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                next_due = self._start_due_workers()
            except Exception:  # the store failed to list the queue: look again later
                log.exception("reading the outbox failed")
                next_due = None
            timeout = RESCAN_SECONDS if next_due is None else next_due - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), timeout=min(max(0.0, timeout), RESCAN_SECONDS)
                )
        await self._drain()

    def _start_due_workers(self) -> float | None:
        """Start a worker for each idle chat whose oldest row may go; return the next due time
        (monotonic) of those that wait."""
        now = time.monotonic()
        next_due: float | None = None
        for head in queries.outbox_heads():
            channel_id = head.channel_id
            name = head.channel.provider
            provider = self.providers.get(name)
            if channel_id in self._busy or provider is None:
                continue  # a platform that is off keeps its rows for when it is back
            go, probe = self._pacing.start(channel_id, name, now)
            if not go:
                until = self._pacing.until(channel_id, name)
                if until > now:
                    next_due = until if next_due is None else min(next_due, until)
                continue  # (else it waits for its platform's probe, whose end wakes us)
            worker = self._work(head.channel, provider, probe=probe)
            self._busy[channel_id] = asyncio.create_task(worker)
        return next_due

    async def _work(self, channel: Channel, provider: ChatProvider, *, probe: bool) -> None:
        name = channel.provider
        try:
            while (row := queries.outbox_head(channel.id)) is not None:
                go_on = await self._deliver(row, channel, provider, probe=probe)
                probe = False  # the probe's outcome has been told to pacing
                if not go_on or not self._pacing.may_continue(channel.id, name, time.monotonic()):
                    break
        except Exception:  # a bug or the store: this chat waits, the others go on
            log.exception("delivery to %s failed", channel.address)
            self._pacing.chat_failed(channel.id, time.monotonic())
        finally:
            if probe:
                self._pacing.release_probe(name)
            self._busy.pop(channel.id, None)
            self._wake.set()

    async def _deliver(
        self, row: Outbox, channel: Channel, provider: ChatProvider, *, probe: bool
    ) -> bool:
        """Try one row; True when the chat may go on with its next row."""
        message_id = self._unrecorded.get(row.id)
        if message_id is None and not allowed.may_deliver(row):  # access read fresh: revoked
            await self._record(allowed.drop, row)
            self._no_news(channel.provider, probe)
            return True
        if message_id is None:
            try:
                message_id = await self._send(row, channel, provider)
            except Exception as exc:
                return await self._failed(exc, row, channel, probe=probe)
            # Sent. From here on it is never sent again, whatever the store says: the fact
            # stays in memory until the store has it, and the chat's next row waits for that.
            self._unrecorded[row.id] = message_id
        await self._record(queries.mark_sent, row, message_id)
        del self._unrecorded[row.id]
        self._parts.pop(row.id, None)
        if row.kind == "edit" and not message_id:
            self._no_news(channel.provider, probe)  # its target never went out: no call made
        elif self._pacing.succeeded(channel.id, channel.provider):
            self._wake.set()  # the platform's other chats were waiting for this probe
        self.sent += 1
        return True

    def _no_news(self, provider: str, probe: bool) -> None:
        """A row done without asking the platform: if it held the probe, another chat may."""
        if probe:
            self._pacing.release_probe(provider)
            self._wake.set()

    async def _failed(self, exc: Exception, row: Outbox, channel: Channel, *, probe: bool) -> bool:
        """Note a failed try; True when the chat may go on with its next row."""
        name, now = channel.provider, time.monotonic()
        if probe and not isinstance(exc, RetryLater):
            self._pacing.release_probe(name)  # no news of the platform: another chat probes
        if isinstance(exc, ChatMoved):
            # The chat lives on under a new id: move it, and the rescan sends there.
            log.info("%s moved to %s: %s", channel.address, exc.new_chat_id, exc)
            self.platform_ok(name)
            if exc.new_chat_id == channel.chat_id:  # nowhere to go: do not loop
                await self._give_up(row, str(exc))
                return True
            await writes.write(
                lambda: queries.migrate_channel(channel.provider, channel.chat_id, exc.new_chat_id),
                f"move of {channel.address}",
            )
            return False
        if isinstance(exc, PermanentDeliveryError):
            log.warning("send to %s failed for good: %s", channel.address, exc)
            self.platform_ok(name)
            await self._give_up(row, str(exc))
            return True
        if isinstance(exc, RetryLater):
            await self._note_parts(row, exc.parts_sent)
            if exc.retry_after is None:  # 5xx, network: the platform may be down
                delay = self._pacing.platform_failed(channel.id, name, now, probe=probe)
            else:  # the platform answered: this chat must wait
                delay = self._pacing.chat_failed(channel.id, now, exc.retry_after)
                self.platform_ok(name)
            log.info("send to %s retried in %.1fs: %s", channel.address, delay, exc)
        elif isinstance(exc, ProviderConflict):
            delay = self._pacing.chat_failed(channel.id, now, CONFLICT_RETRY_SECONDS)
        else:
            log.error("unexpected error sending to %s", channel.address, exc_info=exc)
            delay = self._pacing.chat_failed(channel.id, now)
            if row.attempts + 1 >= MAX_UNEXPECTED_ATTEMPTS:
                await self._give_up(row, repr(exc))
                return True
        await self._record(queries.mark_retry, row, delay, str(exc) or repr(exc))
        return False

    async def _give_up(self, row: Outbox, error: str) -> None:
        await self._record(queries.mark_failed, row, error)
        self._parts.pop(row.id, None)

    async def _send(self, row: Outbox, channel: Channel, provider: ChatProvider) -> str:
        """Deliver one row; return the platform's id of what was sent (or edited)."""
        chat = queries.chat_ref(channel, row)
        message = queries.outbox_message(row)
        message = dataclasses.replace(message, text=self._masker.mask(message.text))
        if row.kind == "edit":
            message_id = self._edit_target(row, channel)
            if message_id and await provider.edit(chat, message_id, message):
                return message_id
            # Not editable (a DingTalk prompt that went out as text): say it anew, if asked.
            fallback = queries.outbox_payload(row).get("fallback")
            if not fallback:
                return message_id
            message = OutboundMessage.from_dict(fallback)
            message = dataclasses.replace(message, text=self._masker.mask(message.text))
        first_part = self._parts_sent(row)
        return await provider.send(
            chat, message, first_part=first_part, on_part=functools.partial(self._note_parts, row)
        )

    def _parts_sent(self, row: Outbox) -> int:
        stored = int(queries.outbox_payload(row).get("parts_sent", 0))
        return max(stored, self._parts.get(row.id, 0))

    async def _note_parts(self, row: Outbox, parts_sent: int) -> None:
        """Of a long message, these parts are delivered: durable before the next one goes."""
        if parts_sent > self._parts_sent(row):
            self._parts[row.id] = parts_sent
            await self._record(queries.note_parts_sent, row, parts_sent)

    @staticmethod
    async def _record(write: Callable[..., None], row: Outbox, *args: Any) -> None:
        """A write about a row that must hold before the chat goes on (retried meanwhile)."""
        what = f"{write.__name__} of outbox row {row.id}"
        await writes.write(lambda: write(row, *args), what)

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
