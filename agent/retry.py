"""One backoff policy for every loop: wait out retry_after, else back off x1.5 up to 30 s.

Also the loops' small helpers: a sleep that ends on stop, and a step a wake can cut short.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

INITIAL_DELAY = 1.0
MAX_DELAY = 30.0
FACTOR = 1.5


class Backoff:
    """Delays for successive failures of one loop; `reset()` after a success."""

    def __init__(self, initial: float = INITIAL_DELAY, maximum: float = MAX_DELAY) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        """The wait before the next try; a server's `retry_after` wins when given."""
        self.failures += 1
        if retry_after is not None:
            return max(0.0, retry_after)
        delay = min(self.maximum, self.initial * FACTOR ** (self.failures - 1))
        # Jitter keeps many chats (or a reconnecting fleet) from retrying in lockstep.
        return delay * random.uniform(0.8, 1.2)  # noqa: S311 - not security relevant


async def sleep_or_stop(delay: float, stop: asyncio.Event | None) -> bool:
    """Sleep `delay` seconds; return True early if `stop` is set meanwhile."""
    if stop is None:
        await asyncio.sleep(delay)
        return False
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay)
    except TimeoutError:
        return False
    return True


class Restartable:
    """Runs a loop's long step (a long poll, a websocket) so that `restart()` can cut it
    short: after a wake its connection is likely dead, and waiting for a timeout to say
    so takes a minute."""

    def __init__(self) -> None:
        self._step: asyncio.Future[object] | None = None

    async def run(self, step: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """(True, result) when `step()` finished, (False, None) when `restart()` cut it."""

        async def call() -> T:
            # Made inside the task: a task cancelled before it starts leaves no coroutine
            # that was never awaited.
            return await step()

        future = asyncio.ensure_future(call())
        self._step = future  # type: ignore[assignment]
        current = asyncio.current_task()
        try:
            result = await future
            if current is not None and current.cancelling():
                # The loop was cancelled while the step was finishing, and the step swallowed
                # it (asyncio.wait_for does, in Python 3.11): the cancel must not be lost.
                raise asyncio.CancelledError
            return True, result
        except asyncio.CancelledError:
            if current is not None and current.cancelling():
                raise  # the loop itself is being cancelled
            return False, None
        finally:
            self._step = None

    def restart(self) -> bool:
        """Cancel the step in progress, if any; True if there was one."""
        if self._step is None or self._step.done():
            return False
        self._step.cancel()
        return True
