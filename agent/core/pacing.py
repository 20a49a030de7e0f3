"""When delivery may try a chat, or a platform, again: waits on the monotonic clock.

A chat backs off on its own failures (x1.5 up to a minute; a `retry_after` is waited out
as given). A platform that fails (5xx, network) opens a circuit: its chats wait for one
probe at a time instead of each retrying, the probe backs off, and any sign of life (a
send, a successful poll) closes the circuit so the queue goes out at once.

Waits live in memory, in monotonic time: a wall-clock step must not freeze a queue. The
retry time a row keeps in the store (wall clock) only serves the next start, where it is
trusted for at most STORED_WAIT_CAP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from agent.retry import Backoff

MAX_DELAY = 60.0
STORED_WAIT_CAP = 5.0


def _backoff() -> Backoff:
    return Backoff(maximum=MAX_DELAY)


@dataclass
class _Circuit:
    """An open circuit: the platform failed; `until` is when the next probe may go."""

    backoff: Backoff = field(default_factory=_backoff)
    until: float = 0.0
    probing: bool = False


class Pacing:
    def __init__(self) -> None:
        self._chat_until: dict[int, float] = {}
        self._chat_backoff: dict[int, Backoff] = {}
        self._circuits: dict[str, _Circuit] = {}

    # --- asking ---

    def until(self, channel_id: int, provider: str) -> float:
        """Monotonic time before which this chat waits (past: it may go, see `start`)."""
        circuit = self._circuits.get(provider)
        return max(self._chat_until.get(channel_id, 0.0), circuit.until if circuit else 0.0)

    def start(self, channel_id: int, provider: str, now: float) -> tuple[bool, bool]:
        """(may it go now, is it its platform's probe). An open circuit lets one chat go."""
        if self.until(channel_id, provider) > now:
            return False, False
        circuit = self._circuits.get(provider)
        if circuit is None:
            return True, False
        if circuit.probing:
            return False, False
        circuit.probing = True
        return True, True

    def may_continue(self, channel_id: int, provider: str, now: float) -> bool:
        """May a running worker go on with the chat's next row."""
        return provider not in self._circuits and self._chat_until.get(channel_id, 0.0) <= now

    # --- outcomes ---

    def succeeded(self, channel_id: int, provider: str) -> bool:
        """A send went through; True if that closed the platform's circuit."""
        self._chat_until.pop(channel_id, None)
        self._chat_backoff.pop(channel_id, None)
        return self.platform_ok(provider)

    def platform_ok(self, provider: str) -> bool:
        """The platform answered (a send, a refusal, a poll); True if it was seen down."""
        return self._circuits.pop(provider, None) is not None

    def platform_failed(self, channel_id: int, provider: str, now: float, *, probe: bool) -> float:
        """A 5xx or network error; returns how long this chat now waits."""
        circuit = self._circuits.get(provider)
        if circuit is None:
            # The first sign of trouble: the platform may be down, or only this chat's
            # message upsets it; the chat backs off on its own too.
            circuit = self._circuits[provider] = _Circuit()
            circuit.until = now + circuit.backoff.next_delay()
            self._backoff_chat(channel_id, now)
        elif probe:
            circuit.until = now + circuit.backoff.next_delay()
            circuit.probing = False
        # else: sent before another chat's failure opened the circuit, which covers it.
        return self.until(channel_id, provider) - now

    def chat_failed(self, channel_id: int, now: float, retry_after: float | None = None) -> float:
        """This chat must wait (`retry_after`, or its own backoff); returns how long."""
        return self._backoff_chat(channel_id, now, retry_after)

    def release_probe(self, provider: str) -> None:
        circuit = self._circuits.get(provider)
        if circuit is not None:
            circuit.probing = False

    # --- restarts and wakes ---

    def restore(self, channel_id: int, stored_due: float) -> None:
        """A retry time (wall clock) stored by an earlier run: kept, but never for long,
        since the wall clock may have stepped since."""
        wait = min(max(0.0, stored_due - time.time()), STORED_WAIT_CAP)
        if wait > 0:
            self._chat_until[channel_id] = time.monotonic() + wait

    def clear(self) -> None:
        """After a wake the network is new: every chat and platform may be tried now."""
        self._chat_until.clear()
        self._circuits.clear()

    def _backoff_chat(self, channel_id: int, now: float, retry_after: float | None = None) -> float:
        backoff = self._chat_backoff.setdefault(channel_id, _backoff())
        delay = backoff.next_delay(retry_after)
        self._chat_until[channel_id] = now + delay
        return delay
