"""Progress messages out to the chats: sent once, then edited in place, paced per chat.

Not through the outbox queue: a progress message is one slot per (chat, run) holding the
latest state, so it never holds up the chat's texts and intermediate states are simply
overwritten (coalesced). Each chat gets at most one progress call every
PROGRESS_EDIT_SECONDS (GROUP_PROGRESS_EDIT_SECONDS in groups), counted from the end of the
previous call, and the state is read only after that wait: what goes out is the latest.
Telegram counts these calls against the chat's limits (the provider's per-chat budget is
shared with the other messages). A 429 waits its `retry_after` and then sends the state
of that moment; a message that can no longer be edited (deleted, too old) is replaced by
a new one. The platform's message id is stored, so after a restart the same message is
edited.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping

from agent.chats.base import ChatProvider
from agent.core.delivery import CONFLICT_RETRY_SECONDS, MAX_UNEXPECTED_ATTEMPTS
from agent.errors import (
    ChatMoved,
    MessageGone,
    PermanentDeliveryError,
    ProviderConflict,
    RetryLater,
)
from agent.logs import SecretFilter
from agent.retry import Backoff, sleep_or_stop
from agent.store import allowed, queries
from agent.store import progress as store
from agent.store.models import Channel, ProgressMessage

log = logging.getLogger(__name__)

# At most one progress edit per chat this often (the bound) ...
PROGRESS_EDIT_SECONDS = 2.0
# ... and in groups, whose budget is 20 messages a minute (Telegram), a third of it.
GROUP_PROGRESS_EDIT_SECONDS = 6.0
RESCAN_SECONDS = 30.0


class ProgressSender:
    def __init__(self, providers: Mapping[str, ChatProvider], secrets: Iterable[str] = ()) -> None:
        self.providers = providers
        self._masker = SecretFilter(secrets)
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._busy: dict[int, asyncio.Task[None]] = {}
        # When each chat's last progress call ended (monotonic): the pace is kept from it.
        self._last_call: dict[int, float] = {}
        self._backoff: dict[int, Backoff] = {}
        self.calls = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        stop_waiter = asyncio.create_task(stop.wait())
        stop_waiter.add_done_callback(lambda _: self._wake.set())
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    next_due = self._start_due()
                except Exception:  # a store error must not end progress for good
                    log.exception("progress scan failed")
                    next_due = time.time() + RESCAN_SECONDS
                timeout = RESCAN_SECONDS if next_due is None else next_due - time.time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), timeout=min(max(timeout, 0.0), RESCAN_SECONDS)
                    )
        finally:
            stop_waiter.cancel()
            await self._drain()

    def _start_due(self) -> float | None:
        """A worker for each idle chat with a progress message due; the next due time."""
        now = time.time()
        next_due: float | None = None
        for channel_id, due in store.pending_channels().items():
            if channel_id in self._busy:
                continue
            if due > now:
                next_due = due if next_due is None else min(next_due, due)
                continue
            channel = Channel.get_or_none(Channel.id == channel_id)
            provider = self.providers.get(channel.provider) if channel is not None else None
            if channel is None or provider is None:
                continue  # that platform is off: its progress waits for it
            self._busy[channel_id] = asyncio.create_task(self._work(channel, provider))
        return next_due

    async def _work(self, channel: Channel, provider: ChatProvider) -> None:
        try:
            while not self._stop.is_set():
                # Wait for the chat's turn first, then take the latest state (coalesced).
                if await sleep_or_stop(self._wait_for_turn(channel), self._stop):
                    return
                row = store.next_pending(channel.id, time.time())
                if row is None:
                    return
                if not allowed.channel_allowed(channel.id):  # revoked since
                    store.give_up(row, "dropped", "chat no longer allowed")
                    continue
                go_on = await self._deliver(row, channel, provider)
                self._last_call[channel.id] = time.monotonic()
                if not go_on:
                    return
        except Exception:
            log.exception("progress to %s failed", channel.address)
        finally:
            self._busy.pop(channel.id, None)
            self._wake.set()

    def _wait_for_turn(self, channel: Channel) -> float:
        last = self._last_call.get(channel.id)
        if last is None:
            return 0.0
        pace = GROUP_PROGRESS_EDIT_SECONDS if _is_group(channel) else PROGRESS_EDIT_SECONDS
        return max(0.0, last + pace - time.monotonic())

    async def _deliver(
        self, row: ProgressMessage, channel: Channel, provider: ChatProvider
    ) -> bool:
        """One send or edit; True when the chat may go on with its next progress call."""
        payload = row.message
        message = store.message_of(row)
        message = dataclasses.replace(message, text=self._masker.mask(message.text))
        backoff = self._backoff.setdefault(channel.id, Backoff())
        try:
            chat = queries.chat_ref(channel)
            message_id = row.platform_message_id
            if message_id:
                await provider.edit(chat, message_id, message)
            else:
                message_id = await provider.send(chat, message)
        except MessageGone as exc:
            log.info("progress message in %s is gone (%s): sending a new one", channel.address, exc)
            store.mark_gone(row)
            return True
        except RetryLater as exc:
            delay = backoff.next_delay(exc.retry_after)
            log.info("progress to %s retried in %.1fs: %s", channel.address, delay, exc)
            store.mark_retry(row, delay, str(exc))
            return False
        except ProviderConflict as exc:
            store.mark_retry(row, CONFLICT_RETRY_SECONDS, str(exc))
            return False
        except ChatMoved as exc:
            if exc.new_chat_id == channel.chat_id:
                store.give_up(row, "failed", str(exc))
                return True
            queries.migrate_channel(channel.provider, channel.chat_id, exc.new_chat_id)
            return False  # the next scan finds the chat under its new id
        except PermanentDeliveryError as exc:
            log.warning("progress to %s failed for good: %s", channel.address, exc)
            store.give_up(row, "failed", str(exc))
            return True
        except Exception as exc:
            log.exception("unexpected error sending progress to %s", channel.address)
            if row.attempts + 1 >= MAX_UNEXPECTED_ATTEMPTS:
                store.give_up(row, "failed", repr(exc))
                return True
            store.mark_retry(row, backoff.next_delay(), repr(exc))
            return False
        backoff.reset()
        self.calls += 1
        if not message_id:  # a platform without message ids cannot edit: no progress there
            store.give_up(row, "failed", "the platform gave no message id to edit")
            return True
        store.mark_shown(row, payload, message_id)
        return True

    async def _drain(self) -> None:
        tasks = list(self._busy.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def _is_group(channel: Channel) -> bool:
    return bool(channel.is_group) or channel.chat_id.startswith("-")
