"""Benchmark shapes from docs/benchmarks.md, run against the loopback fakes.

The agent runs as the real `python -m agent run` subprocess, so its CPU and RSS are its
own; the fakes run in this process and share its monotonic clock with the agent.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import agent_environment, subprocess_env
from tests.fakes.dingtalk import FakeDingTalk
from tests.fakes.poco import GEN_NEW, GEN_OLD, FakePoco
from tests.fakes.telegram import FakeTelegram

# The guide's polling defaults (the tests' fixture polls faster).
GUIDE_POLLING = {
    "POLL_SESSION_MESSAGES_INTERVAL_SECONDS": "2",
    "POLL_USER_INPUT_INTERVAL_SECONDS": "2",
    "POLL_SESSIONS_RECENT_INTERVAL_SECONDS": "5",
    "TELEGRAM_POLL_TIMEOUT_SECONDS": "30",
    "IM_LOG_LEVEL": "WARNING",
    "IM_PROGRESS": "on",  # the product's default (the tests' fixture turns it off)
}
BOTH_GENERATIONS = (GEN_OLD, GEN_NEW)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@asynccontextmanager
async def agent_process(env: dict[str, str], data_dir: Path) -> AsyncIterator[int]:
    clean = subprocess_env(**env)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "run",
        env=clean,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    started = time.monotonic()
    try:
        await wait_healthy(data_dir)
        yield process.pid
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)
    _ = started


async def wait_healthy(data_dir: Path, timeout: float = 30) -> float:
    """Seconds until `/api/v1/health` says ok."""
    started = time.monotonic()
    port_file = data_dir / "agent.port"
    async with httpx.AsyncClient() as client:
        while time.monotonic() - started < timeout:
            if port_file.exists():
                try:
                    url = f"http://127.0.0.1:{port_file.read_text()}/api/v1/health"
                    if (await client.get(url)).json().get("status") == "ok":
                        return time.monotonic() - started
                except (httpx.HTTPError, ValueError):
                    pass
            await asyncio.sleep(0.01)
    raise TimeoutError("agent never became healthy")


@asynccontextmanager
async def fakes(generation: str = GEN_OLD) -> AsyncIterator[tuple[FakeTelegram, FakePoco, Path]]:
    """Telegram and a Poco of `generation` (the agent env from `agent_environment` carries
    the fake's internal token), and a data dir."""
    telegram, poco = FakeTelegram(), FakePoco(generation=generation)
    await telegram.start()
    await poco.start()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            yield telegram, poco, Path(tmp) / "data"
        finally:
            await poco.stop()
            await telegram.stop()


async def bind_chats(telegram: FakeTelegram, poco: FakePoco, chats: list[int]) -> None:
    sessions = {chat: poco.create_session(prompt=f"bench {chat}") for chat in chats}
    before = len(telegram.sent)
    for chat in chats:
        telegram.inject_message(chat, f"/connect {sessions[chat]}")
    await telegram.wait_for(lambda f: len(f.sent) >= before + len(chats), timeout=30)


def _latencies(telegram: FakeTelegram, poco: FakePoco, injected: dict[str, float]) -> list[float]:
    arrived = {body["prompt"]: body.at for body in poco.tasks_posted}
    return [(arrived[text] - at) * 1000 for text, at in injected.items() if text in arrived]


def _order_kept(poco: FakePoco, chats: list[int]) -> float:
    prompts = [body["prompt"] for body in poco.tasks_posted if body["prompt"].startswith("m ")]
    kept = 0
    for chat in chats:
        mine = [int(p.split()[2]) for p in prompts if p.split()[1] == str(chat)]
        kept += mine == sorted(mine)
    return 100.0 * kept / len(chats)


async def inbound_paced(chats: int = 30, rounds: int = 20, gap: float = 0.1) -> dict[str, Any]:
    """Each chat sends one message every `gap` s: latency update → backend POST /tasks."""
    async with fakes() as (telegram, poco, data_dir):
        env = agent_environment(
            data_dir,
            telegram=telegram,
            poco=poco,
            **GUIDE_POLLING,
        )
        async with agent_process(env, data_dir) as pid:
            ids = list(range(50_000, 50_000 + chats))
            await bind_chats(telegram, poco, ids)
            cpu_before, own_before = cpu_seconds(pid), time.process_time()
            injected: dict[str, float] = {}
            # Paced, not bursty: the chats take turns, one message every gap/chats seconds.
            step = gap / len(ids)
            start = time.monotonic()
            for n in range(rounds * len(ids)):
                await asyncio.sleep(max(0.0, start + n * step - time.monotonic()))
                text = f"m {ids[n % len(ids)]} {n // len(ids)}"
                telegram.inject_message(ids[n % len(ids)], text)
                injected[text] = time.monotonic()
            await poco.wait_for(lambda p: _count_bench(p) >= len(injected), timeout=60)
            latencies = _latencies(telegram, poco, injected)
            return {
                "messages": len(injected),
                "agent_cpu_s": round(cpu_seconds(pid) - cpu_before, 2),
                "fakes_cpu_s": round(time.process_time() - own_before, 2),
                "latency_p50_ms": round(statistics.median(latencies), 1),
                "latency_p99_ms": round(percentile(latencies, 99), 1),
                "order_kept_pct": _order_kept(poco, ids),
            }


def _count_bench(poco: FakePoco) -> int:
    return sum(1 for body in poco.tasks_posted if body["prompt"].startswith("m "))


async def inbound_burst(chats: int = 30, per_chat: int = 20) -> dict[str, Any]:
    """All messages available at once: drain time and throughput."""
    async with fakes() as (telegram, poco, data_dir):
        env = agent_environment(
            data_dir,
            telegram=telegram,
            poco=poco,
            **GUIDE_POLLING,
        )
        async with agent_process(env, data_dir):
            ids = list(range(60_000, 60_000 + chats))
            await bind_chats(telegram, poco, ids)
            total = chats * per_chat
            started = time.monotonic()
            for round_ in range(per_chat):
                for chat in ids:
                    telegram.inject_message(chat, f"m {chat} {round_}")
            await poco.wait_for(lambda p: _count_bench(p) >= total, timeout=120)
            elapsed = time.monotonic() - started
            prompts = [b["prompt"] for b in poco.tasks_posted if b["prompt"].startswith("m ")]
            return {
                "messages": total,
                "handled_once": len(prompts) == len(set(prompts)) == total,
                "drain_s": round(elapsed, 2),
                "messages_per_s": round(total / elapsed, 1),
                "order_kept_pct": _order_kept(poco, ids),
            }


async def idle_cost(
    watched: int = 50,
    running: int = 0,
    seconds: float = 60,
    *,
    generation: str = GEN_OLD,
    history: int = 0,
    queued_forever: int = 0,
    old_bound: bool = False,
) -> dict[str, Any]:
    """Backend requests/min, CPU s/min and RSS at idle: `watched` finished watched sessions,
    `running` ones, `history` finished unwatched ones (newer than an `old_bound` session a
    chat is connected to), and `queued_forever` watched sessions no executor ever takes."""
    async with fakes(generation) as (telegram, poco, data_dir):
        env = agent_environment(data_dir, telegram=telegram, poco=poco, **GUIDE_POLLING)
        old = poco.create_session(prompt="the old bound one", status="completed")
        for i in range(history):
            poco.create_session(prompt=f"history {i}", status="completed")
        finished = []
        for i in range(watched):
            session_id = poco.create_session(prompt=f"old {i}")
            poco.start_run(session_id)
            poco.add_assistant_text(session_id, f"answer {i}")
            poco.finish_run(session_id, "completed")
            finished.append(session_id)
        active = []
        for i in range(running):
            session_id = poco.create_session(prompt=f"busy {i}")
            poco.start_run(session_id)
            active.append(session_id)
        stuck = [poco.create_session(prompt=f"stuck {i}") for i in range(queued_forever)]
        async with agent_process(env, data_dir) as pid:
            # One chat per session: Telegram allows about one message per second per chat.
            before = len(telegram.sent)
            followed = finished + active + stuck + ([old] if old_bound else [])
            for i, session_id in enumerate(followed):
                verb = "/connect" if session_id == old else "/watch"
                telegram.inject_message(70_000 + i, f"{verb} {session_id}")
            await telegram.wait_for(lambda f: len(f.sent) >= before + len(followed), timeout=120)
            await telegram.wait_for(
                lambda f: sum("completed" in (m["text"] or "") for m in f.sent[before:]) >= watched,
                timeout=120,
            )
            await asyncio.sleep(5)  # let first-sight fetches settle
            requests_before = len(poco.requests)
            cpu_before = cpu_seconds(pid)
            await asyncio.sleep(seconds)
            minutes = seconds / 60
            calls = poco.requests[requests_before:]
            return {
                "generation": generation,
                "watched_finished": watched,
                "running": running,
                "history": history,
                "queued_forever": queued_forever,
                "backend_requests_per_min": round(len(calls) / minutes, 1),
                "cpu_s_per_min": round((cpu_seconds(pid) - cpu_before) / minutes, 3),
                "requests_by_route": dict(Counter(call.route_key for call in calls)),
                "rss_mb": round(rss_mb(pid), 1),
            }


async def outside_latency(
    samples: int = 12, *, generation: str = GEN_OLD, watched: int = 50
) -> dict[str, Any]:
    """A run started in the web UI on a finished watched session → its text in the chat,
    at the contract's default intervals (bound: recent + messages interval + delivery)."""
    async with fakes(generation) as (telegram, poco, data_dir):
        env = agent_environment(data_dir, telegram=telegram, poco=poco, **GUIDE_POLLING)
        sessions = [
            poco.create_session(prompt=f"w {i}", status="completed") for i in range(watched)
        ]
        async with agent_process(env, data_dir):
            before = len(telegram.sent)
            for i, session_id in enumerate(sessions):
                telegram.inject_message(90_000 + i, f"/watch {session_id}")
            await telegram.wait_for(lambda f: len(f.sent) >= before + 2 * watched, timeout=120)
            await asyncio.sleep(6)
            latencies = []
            for i in range(samples):
                session_id = sessions[i % watched]
                marker = f"outside-{i}"
                started = time.monotonic()
                poco.post_task_from_web(f"follow-up {i}", session_id)
                poco.start_run(session_id)
                poco.add_assistant_text(session_id, marker)
                poco.finish_run(session_id, "completed")
                await telegram.wait_for(
                    lambda f, m=marker: any(m in (s["text"] or "") for s in f.sent), timeout=60
                )
                got = next(s["at"] for s in telegram.sent if marker in (s["text"] or ""))
                latencies.append((got - started) * 1000)
                await asyncio.sleep(1.3 + (i % 4) * 0.9)  # de-phase from the intervals
            return {
                "generation": generation,
                "bound_s": 5 + 2,
                "latency_p50_ms": round(statistics.median(latencies), 1),
                "latency_p99_ms": round(percentile(latencies, 99), 1),
            }


async def long_session_cycle(
    messages: int = 2000, seconds: float = 20, *, generation: str = GEN_OLD
) -> dict[str, Any]:
    """One active session with `messages` messages: requests and bytes per poll cycle."""
    async with fakes(generation) as (telegram, poco, data_dir):
        env = agent_environment(data_dir, telegram=telegram, poco=poco, **GUIDE_POLLING)
        session_id = poco.create_session(prompt="a long one")
        poco.start_run(session_id)
        for i in range(messages - 1):
            poco.add_assistant_text(session_id, f"line {i} " + "x" * 200)
        async with agent_process(env, data_dir):
            telegram.inject_message(95_000, f"/watch {session_id}")
            await telegram.wait_for(lambda f: len(f.sent) >= 2, timeout=60)
            await asyncio.sleep(5)
            since = len(poco.requests)
            await asyncio.sleep(seconds)
            calls = poco.requests[since:]
            cycles = seconds / float(GUIDE_POLLING["POLL_SESSION_MESSAGES_INTERVAL_SECONDS"])
            messages_calls = [c for c in calls if "/messages" in c.route]
            return {
                "generation": generation,
                "messages": messages,
                "requests_per_cycle": round(len(calls) / cycles, 2),
                "message_requests_per_cycle": round(len(messages_calls) / cycles, 2),
                "kb_per_cycle": round(sum(c.response_bytes for c in calls) / cycles / 1024, 1),
                "requests_by_route": dict(Counter(call.route_key for call in calls)),
            }


async def notification_latency(samples: int = 20, interval: float = 2.0) -> dict[str, Any]:
    """Backend adds an assistant text → the chat receives it (default poll interval)."""
    async with fakes() as (telegram, poco, data_dir):
        env = agent_environment(
            data_dir,
            telegram=telegram,
            poco=poco,
            **{**GUIDE_POLLING, "POLL_SESSION_MESSAGES_INTERVAL_SECONDS": str(interval)},
        )
        async with agent_process(env, data_dir):
            chat = 80_000
            telegram.inject_message(chat, "/new latency")
            await poco.wait_for(lambda p: len(p.tasks_posted) == 1, timeout=30)
            session_id = list(poco.sessions)[-1]
            poco.start_run(session_id)
            latencies = []
            for i in range(samples):
                marker = f"sample-{i}"
                added = time.monotonic()
                poco.add_assistant_text(session_id, marker)
                await telegram.wait_for(
                    lambda f, m=marker: any(m in (s["text"] or "") for s in f.sent), timeout=30
                )
                got = next(s["at"] for s in telegram.sent if marker in (s["text"] or ""))
                latencies.append((got - added) * 1000)
                await asyncio.sleep(0.37)  # de-phase from the poll interval
            return {
                "poll_interval_s": interval,
                "latency_p50_ms": round(statistics.median(latencies), 1),
                "latency_p99_ms": round(percentile(latencies, 99), 1),
            }


async def startup_time(runs: int = 3) -> dict[str, Any]:
    """`poco-im-agent run` → healthy `/api/v1/health`."""
    times = []
    for _ in range(runs):
        async with fakes() as (telegram, poco, data_dir):
            env = agent_environment(data_dir, telegram=telegram, poco=poco)
            clean = subprocess_env(**env)
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agent",
                "run",
                env=clean,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                times.append(await wait_healthy(data_dir))
            finally:
                process.terminate()
                await process.wait()
    return {"startup_s_median": round(statistics.median(times), 2)}


async def dingtalk_stream(
    conversations: int = 20, per_conversation: int = 20, gap: float = 0.1
) -> dict[str, Any]:
    """Paced messages through the Stream websocket: push → ack, push → POST /tasks,
    then the time to reconnect once the gateway is back after an outage."""
    dingtalk, poco = FakeDingTalk(), FakePoco()
    await dingtalk.start()
    await poco.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp) / "data"
            env = agent_environment(data_dir, dingtalk=dingtalk, poco=poco, **GUIDE_POLLING)
            async with agent_process(env, data_dir):
                ids = [f"cid-bench-{i}" for i in range(conversations)]
                for conversation in ids:
                    session_id = poco.create_session(prompt=f"bench {conversation}")
                    await dingtalk.push_message(conversation, f"/connect {session_id}")
                await dingtalk.wait_for(lambda: len(dingtalk.sent) >= conversations, timeout=30)
                pushed: dict[str, str] = {}
                step = gap / conversations
                start = time.monotonic()
                for n in range(conversations * per_conversation):
                    await asyncio.sleep(max(0.0, start + n * step - time.monotonic()))
                    text = f"d {ids[n % conversations]} {n // conversations}"
                    pushed[await dingtalk.push_message(ids[n % conversations], text)] = text
                await poco.wait_for(
                    lambda p: (
                        sum(b["prompt"].startswith("d ") for b in p.tasks_posted) >= len(pushed)
                    ),
                    timeout=60,
                )
                acks = [(dingtalk.acks[m] - dingtalk.pushed_at[m]) * 1000 for m in pushed]
                arrived = {b["prompt"]: b.at for b in poco.tasks_posted}
                to_backend = [
                    (arrived[t] - dingtalk.pushed_at[m]) * 1000 for m, t in pushed.items()
                ]
                reconnect = await _dingtalk_reconnect(dingtalk)
        return {
            "messages": len(pushed),
            "ack_p50_ms": round(statistics.median(acks), 1),
            "ack_p99_ms": round(percentile(acks, 99), 1),
            "to_backend_p50_ms": round(statistics.median(to_backend), 1),
            "to_backend_p99_ms": round(percentile(to_backend, 99), 1),
            "reconnect_s": round(reconnect, 2),
        }
    finally:
        await poco.stop()
        await dingtalk.stop()


async def _dingtalk_reconnect(dingtalk: FakeDingTalk, outage: float = 10.0) -> float:
    """Seconds from the gateway coming back (after `outage` s down) to a live connection."""
    dingtalk.set_gateway_available(False)
    await dingtalk.disconnect_all()
    await asyncio.sleep(outage)
    back = time.monotonic()
    dingtalk.set_gateway_available(True)
    await dingtalk.wait_for(lambda: dingtalk.open_connections >= 1, timeout=60)
    return time.monotonic() - back


async def progress_edits(
    chats: int = 5,
    seconds: float = 60.0,
    change_every: float = 0.2,
    interval: float = 2.0,
    generation: str = GEN_OLD,
) -> dict[str, Any]:
    """A run whose state changes every `change_every` s for `seconds`, followed by `chats`
    chats: progress edits per chat per minute, 429s from Telegram's flood control, the time
    from a state change to the edit showing it, and the agent's CPU meanwhile."""
    async with fakes(generation) as (telegram, poco, data_dir):
        telegram.flood_control = True
        polling = {**GUIDE_POLLING, "POLL_SESSION_MESSAGES_INTERVAL_SECONDS": str(interval)}
        env = agent_environment(data_dir, telegram=telegram, poco=poco, **polling)
        async with agent_process(env, data_dir) as pid:
            ids = list(range(90_000, 90_000 + chats))
            telegram.inject_message(ids[0], "/new a busy run")
            await poco.wait_for(lambda p: len(p.tasks_posted) == 1, timeout=30)
            session_id = list(poco.sessions)[-1]
            for chat in ids[1:]:
                telegram.inject_message(chat, f"/watch {session_id}")
            await telegram.wait_for(lambda f: len(f.sent) >= chats, timeout=30)
            poco.start_run(session_id)
            await telegram.wait_for(
                lambda f: len({m["chat_id"] for m in _progress_sends(f)}) == chats, timeout=30
            )
            changed: dict[str, float] = {}
            cpu_before, started = cpu_seconds(pid), time.monotonic()
            step = 0
            while time.monotonic() - started < seconds:
                step += 1
                name = f"step {step:05d}"
                poco.set_state_patch(session_id, {"current_step": name})
                changed[name] = time.monotonic()
                await asyncio.sleep(max(0.0, started + step * change_every - time.monotonic()))
            cpu = cpu_seconds(pid) - cpu_before
            ended = time.monotonic()
            edits = [
                m
                for m in telegram.sent
                if m["method"] == "editMessageText" and started <= m["at"] <= ended
            ]
            # Per edit: how old the state it shows is. Per change: how long until an edit
            # shows it or a newer one (changes faster than the bound are coalesced).
            latencies: list[float] = []
            shown_at: dict[int, list[tuple[str, float]]] = {}
            for edit in edits:
                shown = next((w for w in edit["text"].split("\n") if "step " in w), "")
                name = shown.removeprefix("📍 ").strip()
                if name in changed:
                    latencies.append((edit["at"] - changed[name]) * 1000)
                    shown_at.setdefault(edit["chat_id"], []).append((name, edit["at"]))
            staleness = [
                (min(later) - at) * 1000
                for chat_edits in shown_at.values()
                for name, at in changed.items()
                if (later := [t for shown_name, t in chat_edits if shown_name >= name and t >= at])
            ]
            minutes = seconds / 60
            per_chat = Counter(m["chat_id"] for m in edits)
            return {
                "chats": chats,
                "state_changes": step,
                "poll_interval_s": interval,
                "edits_per_chat_per_min_max": round(max(per_chat.values()) / minutes, 1),
                "edits_per_chat_per_min_min": round(min(per_chat.values()) / minutes, 1),
                "telegram_429s": telegram.flood_refusals,
                "change_to_edit_p50_ms": round(statistics.median(latencies), 1),
                "change_to_edit_p99_ms": round(percentile(latencies, 99), 1),
                "change_to_display_p50_ms": round(statistics.median(staleness), 1),
                "change_to_display_p99_ms": round(percentile(staleness, 99), 1),
                "cpu_s_per_min": round(cpu / minutes, 3),
                "state_reads_per_min": round(
                    poco.count("GET", f"/sessions/{session_id}/state", since=started) / minutes, 1
                ),
            }


def _progress_sends(telegram: FakeTelegram) -> list[dict[str, Any]]:
    return [
        m
        for m in telegram.sent
        if m["method"] == "sendMessage"
        and any(
            str(b.get("callback_data", "")).startswith("stop:")
            for row in (m.get("reply_markup") or {}).get("inline_keyboard", [])
            for b in row
        )
    ]
