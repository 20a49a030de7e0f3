"""Relay of a large document from Telegram into a task: wall time and the agent's peak RSS
above idle (the file must stream through, never be held whole)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from tests.bench.harness import GUIDE_POLLING, agent_process, fakes, rss_mb
from tests.conftest import agent_environment

CHAT = 5005
MB = 1024 * 1024


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak(pid: int) -> bool:
    """Reset the kernel's peak RSS (VmHWM) to the current RSS (Linux: clear_refs 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def _sample_peak(pid: int, stop: asyncio.Event, peak: list[float]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mb(pid))
        await asyncio.sleep(0.005)


async def file_relay(size_mb: int = 20, runs: int = 3) -> dict[str, Any]:
    """Send `runs` documents of `size_mb` to a bound chat, one after the other."""
    async with fakes() as (telegram, poco, data_dir):
        env = agent_environment(data_dir, telegram=telegram, poco=poco, **GUIDE_POLLING)
        env["TELEGRAM_POLL_TIMEOUT_SECONDS"] = "1"
        env["IM_MAX_FILE_MB"] = str(size_mb)
        async with agent_process(env, data_dir) as pid:
            session_id = poco.create_session(status="completed")
            telegram.inject_message(CHAT, f"/connect {session_id}")
            await telegram.wait_for(lambda f: len(f.sent) >= 1, timeout=30)
            content = os.urandom(size_mb * MB)
            walls, above = [], []
            for run in range(runs):
                await asyncio.sleep(1.0)  # settle
                idle = rss_mb(pid)
                kernel_peak = reset_peak(pid)
                stop, sampled = asyncio.Event(), [idle]
                sampler = asyncio.create_task(_sample_peak(pid, stop, sampled))
                before = len(poco.tasks_posted)
                started = time.monotonic()
                telegram.inject_file(
                    CHAT,
                    "document",
                    content,
                    file_name=f"big{run}.bin",
                    mime_type="application/zip",
                )
                await poco.wait_for(lambda p, n=before: len(p.tasks_posted) > n, timeout=120)
                walls.append(time.monotonic() - started)
                stop.set()
                await sampler
                peak = max(peak_rss_mb(pid) if kernel_peak else 0.0, sampled[0])
                above.append(peak - idle)
                assert poco.uploads[-1]["size"] == len(content)
            return {
                "size_mb": size_mb,
                "runs": runs,
                "wall_s": [round(w, 2) for w in walls],
                "wall_s_median": round(sorted(walls)[len(walls) // 2], 2),
                "idle_rss_mb": round(idle, 1),
                "peak_above_idle_mb": [round(a, 1) for a in above],
                "peak_above_idle_mb_max": round(max(above), 1),
                "kernel_peak": kernel_peak,
            }
