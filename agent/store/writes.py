"""Store writes that wait out a lock held by another process without freezing the agent.

SQLite waits for a lock by sleeping in the calling thread, and the agent's thread is the
event loop: with a 5 s busy timeout a DB browser or a backup holding the write lock froze
every chat, poll and health check for 5 s per write. The agent's connection therefore gives
up after LOOP_BUSY_TIMEOUT_MS, and the writes that must happen (delivery, the inbound
journal) go through `write`, which retries with backoff, awaiting between tries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import peewee

from agent.retry import Backoff

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long one statement of the agent may block the loop waiting for a lock. Our own CLI
# (`pair approve`) holds it for milliseconds; anything longer is retried by `write`.
LOOP_BUSY_TIMEOUT_MS = 100
RETRY_INITIAL, RETRY_MAX = 0.05, 2.0


async def write(call: Callable[[], T], what: str, *, give_up_after: float | None = None) -> T:
    """Run `call` (one write or transaction) until it succeeds; `OperationalError` (database
    locked, disk full) is retried with backoff. With `give_up_after` seconds, the last error
    is raised once they have passed. One log line per streak of failures."""
    backoff = Backoff(initial=RETRY_INITIAL, maximum=RETRY_MAX)
    deadline = None if give_up_after is None else time.monotonic() + give_up_after
    failures = 0
    while True:
        try:
            result = call()
        except peewee.OperationalError as exc:
            if deadline is not None and time.monotonic() >= deadline:
                raise
            if failures == 0:
                log.warning("%s failed (%s); retrying", what, exc)
            failures += 1
            await asyncio.sleep(backoff.next_delay())
            continue
        if failures:
            log.info("%s done after %d retries", what, failures)
        return result
