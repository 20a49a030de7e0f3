"""kill -9 while an album's files are uploading: after a restart the task has each file
once, and a file uploaded before the crash is not uploaded again (both generations).

The agent runs as the real `python -m agent run` subprocess; the fake Poco holds the second
upload after storing it, so the agent dies without its answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.conftest import agent_environment
from tests.fakes.poco import GENERATIONS, FakePoco
from tests.fakes.telegram import FakeTelegram
from tests.test_cli import start_agent, wait_healthy
from tests.test_e2e_telegram import texts_to

pytestmark = pytest.mark.parametrize("poco_generation", GENERATIONS)

CHAT = 909


@asynccontextmanager
async def agent_running(
    tmp_path: Path, env: dict[str, str]
) -> AsyncIterator[asyncio.subprocess.Process]:
    port_file = Path(env["IM_DATA_DIR"]) / "agent.port"
    port_file.unlink(missing_ok=True)
    process = await start_agent(tmp_path, env)
    try:
        await wait_healthy(port_file)
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), timeout=20)


async def test_album_cut_off_mid_upload_is_finished_once(
    tmp_path: Path, telegram_api: FakeTelegram, poco: FakePoco
) -> None:
    env = agent_environment(tmp_path / "data", telegram=telegram_api, poco=poco)
    photos = [os.urandom(70_000), os.urandom(80_000)]
    session_id = poco.create_session(status="completed")
    async with agent_running(tmp_path, env) as process:
        telegram_api.inject_message(CHAT, f"/connect {session_id}")
        await telegram_api.wait_for(lambda f: len(texts_to(f, CHAT)) == 1, timeout=20)
        poco.hold_uploads(skip=1)
        for index, photo in enumerate(photos):
            caption = "compare" if index == 0 else None
            telegram_api.inject_photo(CHAT, photo, caption=caption, media_group_id="a1")
        await poco.wait_for(lambda p: p.uploads_held == 1, timeout=20)
        process.kill()
        await process.wait()
    poco.release_uploads()
    assert poco.tasks_posted == []
    async with agent_running(tmp_path, env):
        await poco.wait_for(lambda p: len(p.tasks_posted) == 1, timeout=20)
        telegram_api.inject_message(CHAT, "/link")  # handled after the album's messages
        await telegram_api.wait_for(lambda f: "🔗" in texts_to(f, CHAT)[-1], timeout=20)
    [task] = poco.tasks_posted
    assert task["session_id"] == session_id and task["prompt"] == "compare"
    files = task["config"]["input_files"]
    stored = {u["input_file"]["id"]: u["sha256"] for u in poco.uploads}
    digests = [hashlib.sha256(p).hexdigest() for p in photos]
    assert [stored[f["id"]] for f in files] == digests  # each photo once, in order
    # The first photo went up once (its InputFile was recorded); the second twice (its
    # answer was lost with the agent).
    assert [u["sha256"] for u in poco.uploads] == [digests[0], digests[1], digests[1]]
    assert not any("may not have reached" in t for t in texts_to(telegram_api, CHAT))


@pytest.mark.parametrize("reached", [True, False], ids=["reached", "never-reached"])
async def test_a_file_task_cut_off_in_flight_reaches_the_task_once_with_its_file(
    tmp_path: Path, telegram_api: FakeTelegram, poco: FakePoco, reached: bool
) -> None:
    env = agent_environment(tmp_path / "data", telegram=telegram_api, poco=poco)
    photo = os.urandom(50_000)
    session_id = poco.create_session(status="completed")
    async with agent_running(tmp_path, env) as process:
        telegram_api.inject_message(CHAT, f"/connect {session_id}")
        await telegram_api.wait_for(lambda f: len(texts_to(f, CHAT)) == 1, timeout=20)
        poco.hold_tasks(create=reached)  # the agent never hears whether the task was made
        telegram_api.inject_photo(CHAT, photo, caption="what is this")
        await poco.wait_for(lambda p: p.tasks_held == 1, timeout=20)
        process.kill()
        await process.wait()
    poco.release_tasks()
    async with agent_running(tmp_path, env):
        telegram_api.inject_message(CHAT, "/link")  # handled after the settled photo
        await telegram_api.wait_for(lambda f: "🔗" in texts_to(f, CHAT)[-1], timeout=20)
    prompts = [m for m in poco.messages_of(session_id) if "what is this" in str(m["content"])]
    queued = [q for q in poco.queued_queries(session_id) if q["prompt"] == "what is this"]
    assert len(prompts) + len(queued) == 1  # the backend has it once
    assert len(poco.uploads) == 1  # and the photo went up once
    assert all(t["config"]["input_files"] for t in poco.tasks_posted)  # with its file
    assert not any("may not have reached" in t for t in texts_to(telegram_api, CHAT))


async def test_a_file_message_cut_off_before_its_task_went_out_is_sent_after_restart(
    tmp_path: Path, telegram_api: FakeTelegram, poco: FakePoco
) -> None:
    env = agent_environment(tmp_path / "data", telegram=telegram_api, poco=poco)
    session_id = poco.create_session(status="completed")
    async with agent_running(tmp_path, env) as process:
        telegram_api.inject_message(CHAT, f"/connect {session_id}")
        await telegram_api.wait_for(lambda f: len(texts_to(f, CHAT)) == 1, timeout=20)
        reads_before = poco.count("GET", f"/sessions/{session_id}/messages")

        def uploaded(p: FakePoco) -> bool:
            if p.uploads:
                p.set_delay(60)  # the agent's next call (its look before the task) hangs
            return bool(p.uploads)

        telegram_api.inject_photo(CHAT, os.urandom(40_000), caption="cut before the task")
        await poco.wait_for(uploaded, timeout=20)
        # (Polled: the fake signals a request when it is answered, and this one hangs.)
        async with asyncio.timeout(20):
            while poco.count("GET", f"/sessions/{session_id}/messages") <= reads_before:
                await asyncio.sleep(0.05)
        process.kill()
        await process.wait()
    poco.set_delay(0)
    async with agent_running(tmp_path, env):
        await poco.wait_for(lambda p: len(p.tasks_posted) == 1, timeout=20)
    [task] = poco.tasks_posted
    assert task["prompt"] == "cut before the task"
    assert len(task["config"]["input_files"]) == 1
    assert len(poco.uploads) == 1  # the recorded upload was reused
