"""Following sessions end to end: every run's end in order, runs started elsewhere, digests
after any gap, the cost of idling, outages and long sessions."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import agent_environment, run_agent
from tests.fakes.poco import GENERATIONS, FakePoco
from tests.fakes.telegram import FakeTelegram
from tests.test_e2e_telegram import continue_session, say, texts_to

# Every test here runs against both backend generations (Feb and April 2026).
pytestmark = pytest.mark.parametrize("poco_generation", GENERATIONS, ids=lambda g: f"poco-{g}")

CHAT = 3003


def count(fake: FakeTelegram, needle: str, chat: int = CHAT) -> int:
    return sum(needle in text for text in texts_to(fake, chat))


def index_of(fake: FakeTelegram, needle: str, chat: int = CHAT) -> int:
    return next(i for i, t in enumerate(texts_to(fake, chat)) if needle in t)


async def send_queued_now(poco: FakePoco, session_id: str) -> None:
    """April 2026: a failed run pauses the queue; the web UI's "send now" resumes it."""
    if not poco.is_new:
        return  # the older backend runs the follow-up anyway
    headers = {"X-User-Id": "default", "X-Internal-Token": poco.internal_token}
    item = poco.queued_queries(session_id)[0]["queue_item_id"]
    async with httpx.AsyncClient(base_url=poco.url) as client:
        path = f"/api/v1/sessions/{session_id}/queued-queries/{item}/send-now"
        response = await client.post(path, headers=headers)
        assert response.status_code == 200, response.text


async def run_a_then_queue_b(telegram: FakeTelegram, poco: FakePoco, first_text: str) -> str:
    """/new starts run A, which says `first_text`; a plain follow-up then waits behind A."""
    await say(telegram, CHAT, "/new run A please")
    session_id = list(poco.sessions)[-1]
    poco.start_run(session_id)
    poco.add_assistant_text(session_id, first_text)
    await telegram.wait_for(lambda f: count(f, first_text) == 1, timeout=10)
    await continue_session(telegram, poco, CHAT, "then run B")
    return session_id


async def test_a_follow_up_while_running_keeps_the_first_runs_end(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        session_id = await run_a_then_queue_b(telegram_api, poco, "A first text")
        poco.add_assistant_text(session_id, "A later text")
        await telegram_api.wait_for(lambda f: count(f, "A later text") == 1, timeout=10)
        poco.finish_run(session_id, "failed", error="RuntimeError: A broke")
        await telegram_api.wait_for(lambda f: count(f, "A broke") == 1, timeout=10)
        await send_queued_now(poco, session_id)
        poco.start_run(session_id)
        poco.add_assistant_text(session_id, "B text")
        poco.finish_run(session_id, "completed")
        await telegram_api.wait_for(lambda f: count(f, "completed") == 1, timeout=10)
        order = [index_of(telegram_api, n) for n in ("A later", "A broke", "B text", "completed")]
        assert order == sorted(order)


async def test_two_runs_ending_between_two_polls_are_both_told_in_order(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        session_id = await run_a_then_queue_b(telegram_api, poco, "A says hi")
        if poco.is_new:
            # The web UI's "send now" puts B first in line; then, with nothing awaited in
            # between, A talks, fails, B starts, talks and ends: one poll sees it all.
            await send_queued_now(poco, session_id)
        poco.add_assistant_text(session_id, "A second")
        poco.finish_run(session_id, "failed", error="RuntimeError: A went wrong")
        if poco.is_new:
            poco.send_queued_now_sync(session_id)
        poco.start_run(session_id)
        poco.add_assistant_text(session_id, "B says hi")
        poco.finish_run(session_id, "completed")
        await telegram_api.wait_for(lambda f: count(f, "completed") == 1, timeout=10)
        names = ("A says hi", "A second", "A went wrong", "B says hi", "completed")
        order = [index_of(telegram_api, n) for n in names]
        assert order == sorted(order)
        assert all(count(telegram_api, n) == 1 for n in names)


async def test_a_restart_after_a_short_stop_is_one_digest(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await say(telegram_api, CHAT, "/new short stop")
        session_id = list(poco.sessions)[-1]
        poco.start_run(session_id)
        poco.add_assistant_text(session_id, "before the stop")
        await telegram_api.wait_for(lambda f: count(f, "before the stop") == 1, timeout=10)
    for i in range(6):
        poco.add_assistant_text(session_id, f"while stopped {i}")
    async with run_agent(env):
        await telegram_api.wait_for(lambda f: count(f, "While the agent was away") == 1)
        digest = texts_to(telegram_api, CHAT)[-1]
        assert "while stopped 5" in digest
        # Live notifications resume after the digest, once.
        poco.add_assistant_text(session_id, "live again")
        await telegram_api.wait_for(lambda f: count(f, "live again") == 1, timeout=10)
    assert count(telegram_api, "while stopped") == 1  # only inside the digest
    assert count(telegram_api, "While the agent was away") == 1


async def test_a_run_started_in_the_web_ui_is_told_within_the_poll_intervals(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    # Both finished before the agent first listed them: their later runs still count.
    chat_session = poco.create_session(prompt="old chat work", status="completed")
    scheduled = poco.create_session(prompt="nightly", status="completed", kind="scheduled")
    for i in range(30):  # newer sessions push the watched ones down the listing
        poco.create_session(prompt=f"other {i}", status="completed")
    recent, messages = 0.5, 0.3
    env = agent_environment(
        data_dir,
        telegram=telegram_api,
        poco=poco,
        POLL_SESSIONS_RECENT_INTERVAL_SECONDS=str(recent),
        POLL_SESSION_MESSAGES_INTERVAL_SECONDS=str(messages),
        POLL_SESSIONS_FULL_INTERVAL_SECONDS="300",
    )
    async with run_agent(env):
        await say(telegram_api, CHAT, f"/watch {chat_session}")
        await say(telegram_api, CHAT, f"/watch {scheduled}")
        await asyncio.sleep(3 * recent)  # idle: nothing running anywhere
        for session_id, name in ((chat_session, "web"), (scheduled, "schedule")):
            ends_before = count(telegram_api, "completed")
            poco.post_task_from_web(f"{name} follow-up", session_id)
            poco.start_run(session_id)
            poco.add_assistant_text(session_id, f"{name} run text")
            poco.finish_run(session_id, "completed")
            # The bound: one listing plus one messages interval, plus delivery.
            await telegram_api.wait_for(
                lambda f, n=name: count(f, f"{n} run text") == 1, timeout=recent + messages + 2
            )
            await telegram_api.wait_for(
                lambda f, before=ends_before: count(f, "completed") == before + 1, timeout=3
            )


async def test_an_outage_costs_one_listing_per_interval(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    recent = 0.5
    env = agent_environment(
        data_dir,
        telegram=telegram_api,
        poco=poco,
        POLL_SESSIONS_RECENT_INTERVAL_SECONDS=str(recent),
        POLL_SESSIONS_FULL_INTERVAL_SECONDS="1",
    )
    async with run_agent(env) as agent:
        await say(telegram_api, CHAT, "/new outage")
        session_id = list(poco.sessions)[-1]
        poco.start_run(session_id)
        await telegram_api.wait_for(lambda f: agent.runtime.status.backend.last_ok_at is not None)
        poco.fail_next(503, count=100_000)
        await poco.wait_for(lambda p: agent.runtime.status.backend.reachable is False, timeout=5)
        since, cpu_before = time.monotonic(), time.process_time()
        await asyncio.sleep(4.0)
        cpu = time.process_time() - cpu_before  # the agent, the fakes and this test
        failed = poco.count(since=since)
        # One listing per interval (plus the odd full pass), not a retry loop.
        assert failed <= 4.0 / recent + 6, failed
        assert cpu < 1.0, f"{cpu:.2f} CPU-s in 4 s of outage: the notifier spins"
        async with httpx.AsyncClient() as client:
            health = (await client.get(agent.health_url)).json()
        assert health["backend"]["state"] == "unreachable"


async def test_health_turns_unreachable_within_two_listing_intervals(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    recent = 0.5
    env = agent_environment(
        data_dir, telegram=telegram_api, poco=poco, POLL_SESSIONS_RECENT_INTERVAL_SECONDS="0.5"
    )
    async with run_agent(env) as agent:  # nothing followed: health is kept fresh anyway
        await telegram_api.wait_for(lambda f: agent.runtime.status.backend.reachable is True)
        await poco.stop()
        await telegram_api.wait_for(
            lambda f: agent.runtime.status.backend.reachable is False, timeout=2 * recent + 1
        )


async def test_sessions_only_waiting_in_the_queue_cost_almost_nothing(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        queued = []
        for i in range(5):  # no executor ever takes these
            await say(telegram_api, CHAT, f"/new stuck {i}")
            queued.append(list(poco.sessions)[-1])
        await asyncio.sleep(1.0)
        since = time.monotonic()
        await asyncio.sleep(3.0)
        runs_reads = poco.count("GET", "/runs/session", since=since)
        # Old cost: each queued session read every 0.2 s (75 reads in 3 s).
        assert runs_reads <= 5, runs_reads
        # ...and the moment one starts, it is followed again.
        poco.start_run(queued[0])
        poco.add_assistant_text(queued[0], "finally running")
        await telegram_api.wait_for(lambda f: count(f, "finally running") == 1, timeout=5)


async def test_typing_repeats_and_a_slow_typing_call_delays_nothing(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    chats = [CHAT + i for i in range(4)]
    async with run_agent(env):
        sessions = []
        for chat in chats:
            await say(telegram_api, chat, f"/new typing {chat}")
            sessions.append(list(poco.sessions)[-1])
        for session_id in sessions:
            poco.start_run(session_id)
        actions_before = len(telegram_api.chat_actions)
        telegram_api.set_method_delay("sendChatAction", 8.0)
        poco.add_assistant_text(sessions[-1], "not held up by typing")
        # Well before one slow sendChatAction could have finished.
        await telegram_api.wait_for(
            lambda f: count(f, "not held up by typing", chats[-1]) == 1, timeout=4
        )
        telegram_api.set_method_delay("sendChatAction", 0.0)
        await telegram_api.wait_for(
            lambda f: len(f.chat_actions) >= actions_before + 2 * len(chats), timeout=15
        )


async def test_past_1000_messages(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    """The delta route sees everything; an older backend cannot, and says so once."""
    session_id = poco.create_session(prompt="very long")
    poco.start_run(session_id)
    for i in range(999):  # with the prompt: 1000 messages, all listed by either backend
        poco.add_assistant_text(session_id, f"line {i}")
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await say(telegram_api, CHAT, f"/watch {session_id}")
        await telegram_api.wait_for(lambda f: count(f, "line 998") == 1, timeout=10)
        poco.add_assistant_text(session_id, "beyond a thousand")
        if poco.is_new:
            await telegram_api.wait_for(lambda f: count(f, "beyond a thousand") == 1, timeout=10)
        else:
            await telegram_api.wait_for(lambda f: count(f, "over 1000 messages") == 1, timeout=10)
            await asyncio.sleep(1.0)
            assert count(telegram_api, "over 1000 messages") == 1


async def test_a_wake_catches_up_with_one_digest(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    # Slow polls: what happens "while asleep" is not seen before the wake.
    env = agent_environment(
        data_dir,
        telegram=telegram_api,
        poco=poco,
        POLL_SESSION_MESSAGES_INTERVAL_SECONDS="60",
        POLL_SESSIONS_RECENT_INTERVAL_SECONDS="60",
    )
    async with run_agent(env) as agent:
        await say(telegram_api, CHAT, "/new sleepy")
        session_id = list(poco.sessions)[-1]
        await asyncio.sleep(0.5)  # the first look (a prompt was sent) is over
        poco.start_run(session_id)
        for i in range(5):
            poco.add_assistant_text(session_id, f"while asleep {i}")
        agent.runtime.notifier.note_wake()  # what the wake detector does on a clock jump
        await telegram_api.wait_for(lambda f: count(f, "While the agent was away") == 1)
        assert "while asleep 4" in texts_to(telegram_api, CHAT)[-1]
        assert count(telegram_api, "while asleep") == 1


async def test_a_chat_watching_mid_run_hears_only_that_runs_end(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    other = CHAT + 50
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await say(telegram_api, CHAT, "/new run X")
        session_id = list(poco.sessions)[-1]
        poco.start_run(session_id)
        poco.add_assistant_text(session_id, "X says hi")
        poco.finish_run(session_id, "completed")
        await telegram_api.wait_for(lambda f: count(f, "completed") == 1, timeout=10)
        await continue_session(telegram_api, poco, CHAT, "now run Y")
        poco.start_run(session_id)
        poco.add_assistant_text(session_id, "Y first")
        await telegram_api.wait_for(lambda f: count(f, "Y first") == 1, timeout=10)
        await say(telegram_api, other, f"/watch {session_id}")
        await telegram_api.wait_for(lambda f: count(f, "Y first", other) == 1, timeout=10)
        poco.add_assistant_text(session_id, "Y second")
        await telegram_api.wait_for(lambda f: count(f, "Y second", other) == 1, timeout=10)
        assert count(telegram_api, "completed", other) == 0  # X's end is old news here
        poco.finish_run(session_id, "completed")
        await telegram_api.wait_for(lambda f: count(f, "completed", other) == 1, timeout=10)
        await asyncio.sleep(0.5)
        assert count(telegram_api, "completed", other) == 1
