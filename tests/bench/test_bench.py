"""Benchmarks (skipped by default): `python3 -m pytest -m bench -s`, or `python3 -m tests.bench`."""

from __future__ import annotations

import pytest

from tests.bench import cards, file_relay, harness

pytestmark = [pytest.mark.bench, pytest.mark.timeout(600)]


async def test_inbound_paced() -> None:
    figures = await harness.inbound_paced()
    print("inbound paced", figures)
    assert figures["order_kept_pct"] == 100
    assert figures["latency_p50_ms"] <= 20
    assert figures["latency_p99_ms"] <= 100


async def test_inbound_burst() -> None:
    figures = await harness.inbound_burst()
    print("inbound burst", figures)
    assert figures["handled_once"]
    assert figures["order_kept_pct"] == 100
    assert figures["drain_s"] <= 2


async def test_idle_cost_finished_sessions() -> None:
    figures = await harness.idle_cost(watched=50, running=0)
    print("idle", figures)
    assert figures["backend_requests_per_min"] <= 15
    assert figures["cpu_s_per_min"] <= 0.3
    assert figures["rss_mb"] <= 80


@pytest.mark.parametrize("generation", [harness.GEN_OLD, harness.GEN_NEW])
async def test_idle_cost_in_both_generations(generation: str) -> None:
    figures = await harness.idle_cost(watched=50, generation=generation)
    print("idle", figures)
    assert figures["backend_requests_per_min"] <= 15
    assert figures["cpu_s_per_min"] <= 0.3
    assert figures["rss_mb"] <= 80


@pytest.mark.parametrize("generation", [harness.GEN_OLD, harness.GEN_NEW])
async def test_idle_cost_is_flat_in_history(generation: str) -> None:
    figures = await harness.idle_cost(
        watched=0, history=3000, queued_forever=10, old_bound=True, generation=generation
    )
    print("idle with history", figures)
    assert figures["backend_requests_per_min"] <= 15


@pytest.mark.parametrize("generation", [harness.GEN_OLD, harness.GEN_NEW])
async def test_outside_started_run_latency(generation: str) -> None:
    figures = await harness.outside_latency(generation=generation)
    print("outside", figures)
    assert figures["latency_p99_ms"] <= (figures["bound_s"] + 1) * 1000


@pytest.mark.parametrize("generation", [harness.GEN_OLD, harness.GEN_NEW])
async def test_long_session_cycle(generation: str) -> None:
    figures = await harness.long_session_cycle(generation=generation)
    print("long session", figures)
    assert figures["message_requests_per_cycle"] <= 1.2


async def test_cost_with_running_sessions() -> None:
    figures = await harness.idle_cost(watched=50, running=5)
    print("running", figures)


async def test_notification_latency() -> None:
    figures = await harness.notification_latency()
    print("notification", figures)
    assert figures["latency_p50_ms"] <= figures["poll_interval_s"] * 1000


async def test_startup() -> None:
    figures = await harness.startup_time()
    print("startup", figures)
    assert figures["startup_s_median"] <= 1.5


async def test_dingtalk_stream() -> None:
    figures = await harness.dingtalk_stream()
    print("dingtalk", figures)
    assert figures["ack_p99_ms"] <= 50
    assert figures["reconnect_s"] <= 2


async def test_file_relay() -> None:
    figures = await file_relay.file_relay(size_mb=20)
    print("file relay", figures)
    assert figures["peak_above_idle_mb_max"] < 10


async def test_progress_edits() -> None:
    figures = await harness.progress_edits()
    print("progress", figures)
    assert figures["edits_per_chat_per_min_max"] <= 30
    assert figures["telegram_429s"] == 0


async def test_dingtalk_cards() -> None:
    figures = await cards.dingtalk_cards()
    print("dingtalk cards", figures)
    assert figures["answers_posted"] == figures["conversations"]
    assert figures["press_to_answer_p99_ms"] <= 1000
    assert figures["press_to_card_updated_p99_ms"] <= 2000
