"""Waking from a sleep: noticed from the clocks, and both platforms reconnect at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent import wake
from agent.wake import WakeDetector
from tests.conftest import agent_environment, run_agent
from tests.fakes.dingtalk import FakeDingTalk
from tests.fakes.poco import FakePoco
from tests.fakes.telegram import FakeTelegram


class Clock:
    """The two clocks the detector reads, moved by hand."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 100.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def tick(self, seconds: float, *, wall: float | None = None) -> None:
        self.mono += seconds
        self.wall += seconds if wall is None else wall


def test_a_forward_jump_is_a_wake_and_a_backward_step_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(wake, "time", clock)
    wakes: list[float] = []
    detector = WakeDetector(wakes.append)
    clock.tick(2)
    assert detector.check() is None
    clock.tick(2, wall=2 - 3600)  # NTP steps the clock back an hour
    assert detector.check() is None
    clock.tick(2, wall=2 + 600)  # ten minutes suspended: the monotonic clock stood still
    assert detector.check() == pytest.approx(600)
    clock.tick(2 + 600)  # where the monotonic clock counts a suspend: the check came late
    assert detector.check() == pytest.approx(600)
    clock.tick(2, wall=2 + 10)  # a small correction
    assert detector.check() is None
    assert wakes == [pytest.approx(600), pytest.approx(600)]


async def test_a_wake_reconnects_both_platforms_at_once(
    telegram_api: FakeTelegram,
    dingtalk_api: FakeDingTalk,
    poco: FakePoco,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = agent_environment(
        data_dir,
        telegram=telegram_api,
        dingtalk=dingtalk_api,
        poco=poco,
        TELEGRAM_POLL_TIMEOUT_SECONDS="30",
    )

    def polls(fake: FakeTelegram) -> int:
        return sum(call[0] == "getUpdates" for call in fake.calls)

    async with run_agent(env):
        await telegram_api.wait_for(lambda f: polls(f) >= 1, timeout=10)
        await dingtalk_api.wait_for(lambda: dingtalk_api.open_connections == 1, timeout=10)
        before_polls, before_links = polls(telegram_api), dingtalk_api.connections_total
        wall = time.time
        monkeypatch.setattr(time, "time", lambda: wall() + 600)  # back from 10 minutes asleep
        # The pending long poll would answer after 30 s, the websocket look dead after 90 s.
        await telegram_api.wait_for(lambda f: polls(f) > before_polls, timeout=10)
        await dingtalk_api.wait_for(
            lambda: dingtalk_api.connections_total > before_links, timeout=10
        )
        await dingtalk_api.wait_for(lambda: dingtalk_api.open_connections == 1, timeout=10)
