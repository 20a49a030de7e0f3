"""The typing indicator in chats bound to a running session, repeated, never in the way.

Platforms show "typing…" for about 5 s, so it is sent again every TYPING_SECONDS while the
session runs. Each call runs in its own task with a time limit, at most one per chat, so a
slow platform delays nothing else (notifications least of all).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from agent.backend.models import ACTIVE_RUN_STATUSES
from agent.store import queries
from agent.store.models import Channel

log = logging.getLogger(__name__)

TYPING_SECONDS = 4.5
TYPING_TIMEOUT_SECONDS = 10.0

ShowTyping = Callable[[Channel], Awaitable[None]]


class TypingIndicator:
    def __init__(self, show: ShowTyping) -> None:
        self._show = show
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._next_round = 0.0

    def due_in(self) -> float:
        return max(0.0, self._next_round - time.monotonic())

    def tick(self) -> bool:
        """Show typing where a bound session runs, if a round is due; True if any runs."""
        now = time.monotonic()
        if now < self._next_round:
            return True
        channels = queries.channels_bound_to_runs(ACTIVE_RUN_STATUSES)
        for channel in channels:
            self.show(channel)
        self._next_round = now + TYPING_SECONDS if channels else 0.0
        return bool(channels)

    def show(self, channel: Channel) -> None:
        """Send once now, in the background (skipped while the chat's last one is pending)."""
        task = self._in_flight.get(channel.id)
        if task is not None and not task.done():
            return
        self._in_flight[channel.id] = asyncio.create_task(
            self._send(channel), name=f"typing {channel.id}"
        )

    async def _send(self, channel: Channel) -> None:
        try:
            async with asyncio.timeout(TYPING_TIMEOUT_SECONDS):
                await self._show(channel)
        except Exception as exc:  # cosmetic: never worth more than a debug line
            log.debug("typing for chat %s failed: %s", channel.id, exc)
        finally:
            self._in_flight.pop(channel.id, None)

    async def close(self) -> None:
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
