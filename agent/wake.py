"""Notice that the machine slept (or the process was frozen): its clocks disagree.

On Linux and macOS the monotonic clock stops during a suspend and the wall clock does not,
so after a resume wall - monotonic has grown by the time away. Where the monotonic clock
counts the suspend too, the check loop finds far more of it passed than it slept. Either,
beyond JUMP_SECONDS, is a wake: chats missed things and connections are likely dead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from agent.retry import sleep_or_stop

log = logging.getLogger(__name__)

CHECK_SECONDS = 2.0
# Above NTP's small steps, below the 40-90 s a dead connection takes to time out.
JUMP_SECONDS = 30.0


class WakeDetector:
    def __init__(
        self,
        on_wake: Callable[[float], None],
        *,
        check_seconds: float = CHECK_SECONDS,
        jump_seconds: float = JUMP_SECONDS,
    ) -> None:
        self.on_wake = on_wake
        self.check_seconds = check_seconds
        self.jump_seconds = jump_seconds
        self._wall, self._mono = time.time(), time.monotonic()

    def check(self) -> float | None:
        """Compare the clocks with the last check; on a wake call `on_wake(seconds away)`
        and return the seconds away. A backward step of the wall clock is no wake."""
        wall, mono = time.time(), time.monotonic()
        slept = mono - self._mono
        wall_ahead = (wall - self._wall) - slept
        frozen = slept - self.check_seconds
        self._wall, self._mono = wall, mono
        away = max(wall_ahead, frozen)
        if away < self.jump_seconds:
            return None
        try:
            self.on_wake(away)
        except Exception:  # a bug in a wake hook must not end the detector
            log.exception("handling a wake failed")
        return away

    async def run(self, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(self.check_seconds, stop):
            self.check()
