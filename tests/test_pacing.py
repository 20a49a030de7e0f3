"""Delivery's waits: per chat, per platform (one probe at a time), in monotonic time."""

from __future__ import annotations

import pytest

from agent.core import pacing as pacing_module
from agent.core.pacing import MAX_DELAY, Pacing

T0 = 1000.0


def test_a_failing_platform_lets_one_probe_through_until_it_answers() -> None:
    pacing = Pacing()
    assert pacing.start(1, "telegram", T0) == (True, False)
    assert pacing.start(2, "telegram", T0) == (True, False)
    assert 0.8 <= pacing.platform_failed(1, "telegram", T0, probe=False) <= 1.2
    # In flight when the circuit opened: covered by it, no escalation.
    assert 0.8 <= pacing.platform_failed(2, "telegram", T0, probe=False) <= 1.2
    assert pacing.start(3, "telegram", T0) == (False, False)
    assert pacing.start(9, "dingtalk", T0) == (True, False)  # other platforms go on
    later = T0 + 1.3
    assert pacing.start(2, "telegram", later) == (True, True)  # the probe
    assert pacing.start(3, "telegram", later) == (False, False)  # only one
    assert 1.2 <= pacing.platform_failed(2, "telegram", later, probe=True) <= 1.8
    assert pacing.platform_ok("telegram")  # e.g. a successful poll
    assert not pacing.platform_ok("telegram")
    # The probe's chat did not back off on its own: all go at once.
    assert pacing.start(2, "telegram", later) == (True, False)
    assert pacing.start(3, "telegram", later) == (True, False)


def test_a_chat_that_keeps_failing_backs_off_to_a_minute() -> None:
    pacing = Pacing()
    now = T0
    for _ in range(20):
        wait = pacing.platform_failed(5, "telegram", now, probe=False)
        pacing.platform_ok("telegram")  # the platform is fine for everyone else
        now += wait
    assert MAX_DELAY * 0.8 <= wait <= MAX_DELAY * 1.2
    assert pacing.start(5, "telegram", now - 1) == (False, False)
    assert pacing.succeeded(5, "telegram") is False
    assert pacing.start(5, "telegram", now - 1) == (True, False)


def test_retry_after_is_kept_when_the_platform_answers() -> None:
    pacing = Pacing()
    assert pacing.chat_failed(7, T0, retry_after=42) == 42
    pacing.platform_ok("telegram")
    assert pacing.start(7, "telegram", T0 + 41) == (False, False)
    assert pacing.start(7, "telegram", T0 + 42) == (True, False)


def test_a_stored_retry_time_waits_at_most_a_few_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    class Clock:
        @staticmethod
        def time() -> float:
            return 50_000.0

        @staticmethod
        def monotonic() -> float:
            return T0

    monkeypatch.setattr(pacing_module, "time", Clock)
    pacing = Pacing()
    pacing.restore(1, 50_000.0 + 3600)  # written before the wall clock stepped back
    pacing.restore(2, 50_000.0 - 10)  # already due
    assert pacing.until(1, "telegram") == T0 + pacing_module.STORED_WAIT_CAP
    assert pacing.start(2, "telegram", T0) == (True, False)
