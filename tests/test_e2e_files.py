"""End to end: photos, files and voice notes from Telegram into tasks, and workspace files
back to the chat, against the fake Telegram and both fake backend generations."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import agent_environment, run_agent
from tests.fakes.poco import GEN_NEW, GENERATIONS, FakePoco
from tests.fakes.telegram import FakeTelegram
from tests.test_e2e_telegram import say, texts_to

pytestmark = pytest.mark.parametrize("poco_generation", GENERATIONS, ids=lambda g: f"poco-{g}")

CHAT = 4004
MB = 1024 * 1024


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def input_files(task: dict[str, Any]) -> list[dict[str, Any]]:
    return list((task.get("config") or {}).get("input_files") or [])


def calls(fake: FakeTelegram, method: str) -> int:
    return sum(1 for name, _, _ in fake.calls if name.lower() == method.lower())


async def bind(telegram: FakeTelegram, poco: FakePoco, chat: int = CHAT) -> str:
    session_id = poco.create_session(status="completed")
    assert "Connected" in await say(telegram, chat, f"/connect {session_id}")
    return session_id


async def next_task(poco: FakePoco, before: int) -> dict[str, Any]:
    await poco.wait_for(lambda p: len(p.tasks_posted) > before, timeout=15)
    return dict(poco.tasks_posted[before])


async def fence(telegram: FakeTelegram, chat: int = CHAT) -> list[str]:
    """Everything the chat was sent before its answer to a /link sent now (messages of a
    chat are handled in order), without that answer."""
    before = len(texts_to(telegram, chat))
    telegram.inject_message(chat, "/link")

    def answer(f: FakeTelegram) -> int | None:
        texts = texts_to(f, chat)
        marks = ("🔗", "not connected")
        return next(
            (i for i in range(before, len(texts)) if any(m in texts[i] for m in marks)), None
        )

    await telegram.wait_for(lambda f: answer(f) is not None, timeout=15)
    return texts_to(telegram, chat)[: answer(telegram)]


async def test_photo_with_caption(telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path):
    photo = os.urandom(300_000)
    async with run_agent(agent_environment(data_dir, telegram=telegram_api, poco=poco)):
        session_id = await bind(telegram_api, poco)
        before, replies = len(poco.tasks_posted), len(texts_to(telegram_api, CHAT))
        telegram_api.inject_photo(CHAT, photo, caption="What is in this picture?")
        task = await next_task(poco, before)
        assert task["prompt"] == "What is in this picture?"
        assert task["session_id"] == session_id
        [item] = input_files(task)
        assert item["name"].startswith("photo_") and item["name"].endswith(".jpg")
        assert (item["content_type"], item["size"]) == ("image/jpeg", len(photo))
        [upload] = poco.uploads
        assert upload["sha256"] == sha(photo)  # the largest size, whole
        assert len(telegram_api.downloads) == 1
        # Telegram's answer to a follow-up is the typing indicator: no text.
        assert await fence(telegram_api) == texts_to(telegram_api, CHAT)[:replies]


async def test_album_is_one_task(telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path):
    photos = [os.urandom(50_000 + i) for i in range(3)]
    async with run_agent(agent_environment(data_dir, telegram=telegram_api, poco=poco)):
        await bind(telegram_api, poco)
        before = len(poco.tasks_posted)
        for index, photo in enumerate(photos):
            caption = "Compare these" if index == 0 else None
            telegram_api.inject_photo(CHAT, photo, caption=caption, media_group_id="album-1")
        task = await next_task(poco, before)
        await fence(telegram_api)
        assert len(poco.tasks_posted) == before + 1
        assert task["prompt"] == "Compare these"
        assert [f["size"] for f in input_files(task)] == [len(p) for p in photos]
        assert [u["sha256"] for u in poco.uploads] == [sha(p) for p in photos]


async def test_document_without_caption_and_new_with_caption(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
):
    log = b"ERROR boom\n" * 1000
    async with run_agent(agent_environment(data_dir, telegram=telegram_api, poco=poco)):
        await bind(telegram_api, poco)
        before = len(poco.tasks_posted)
        telegram_api.inject_file(CHAT, "document", log, file_name="app.log", mime_type="text/plain")
        task = await next_task(poco, before)
        assert task["prompt"] == "Please take a look at the attached file(s)."
        [item] = input_files(task)
        assert (item["name"], item["content_type"], item["size"]) == (
            "app.log",
            "text/plain",
            len(log),
        )
        telegram_api.inject_file(
            CHAT, "document", b"a,b\n1,2\n", file_name="t.csv", caption="/new chart this table"
        )
        task = await next_task(poco, before + 1)
        assert task["prompt"] == "chart this table" and task["session_id"] is None
        assert [f["name"] for f in input_files(task)] == ["t.csv"]
        await telegram_api.wait_for(
            lambda f: "Session created" in texts_to(f, CHAT)[-1], timeout=10
        )
        new_session = list(poco.sessions)[-1]
        assert new_session in await say(telegram_api, CHAT, "/link")  # the chat is bound to it


async def test_oversize_files_are_refused_naming_the_limit(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
):
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco, IM_MAX_FILE_MB="1")
    async with run_agent(env):
        await bind(telegram_api, poco)
        before = len(texts_to(telegram_api, CHAT))
        # Announced over the limit: refused before any download.
        telegram_api.inject_file(
            CHAT, "document", b"x" * 100, file_name="big.zip", announced_size=30 * MB
        )
        await telegram_api.wait_for(lambda f: len(texts_to(f, CHAT)) > before, timeout=10)
        assert "big.zip is larger than 1 MB" in texts_to(telegram_api, CHAT)[-1]
        assert calls(telegram_api, "getFile") == 0
        # Not announced (a photo size without file_size): stopped as it streams.
        telegram_api.inject_photo(CHAT, os.urandom(MB + 10), file_size=False)
        await telegram_api.wait_for(lambda f: len(texts_to(f, CHAT)) > before + 1, timeout=10)
        assert "The photo is larger than 1 MB" in texts_to(telegram_api, CHAT)[-1]
        assert poco.uploads == [] and len(poco.tasks_posted) == 0


async def test_over_the_backends_own_limit(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
):
    poco.max_upload_mb = 1  # the backend's MAX_UPLOAD_SIZE_MB
    async with run_agent(agent_environment(data_dir, telegram=telegram_api, poco=poco)):
        await bind(telegram_api, poco)
        before = len(texts_to(telegram_api, CHAT))
        telegram_api.inject_file(CHAT, "document", os.urandom(MB + 1), file_name="dump.bin")
        replies = (await fence(telegram_api))[before:]
        assert replies == [
            "⚠️ The Poco backend refused the file as too large: File too large. Max 1MB."
        ]
        assert poco.upload_attempts == 1 and poco.tasks_posted == []


async def test_backend_without_storage_says_so_once(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
):
    poco.storage = False
    async with run_agent(agent_environment(data_dir, telegram=telegram_api, poco=poco)):
        await bind(telegram_api, poco)
        before = len(texts_to(telegram_api, CHAT))
        telegram_api.inject_photo(CHAT, os.urandom(1000), caption="look")
        replies = (await fence(telegram_api))[before:]
        assert len(replies) == 1 and "cannot store files" in replies[0]
        assert poco.upload_attempts == 1 and poco.tasks_posted == []
        assert telegram_api.documents == []


async def test_voice_without_transcription_is_attached(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
):
    """Feb 2026 has no transcription route; April 2026 has one but no OpenAI key here."""
    voice = b"OggS" + os.urandom(8000)
    async with run_agent(agent_environment(data_dir, telegram=telegram_api, poco=poco)):
        await bind(telegram_api, poco)
        before = len(poco.tasks_posted)
        telegram_api.inject_file(CHAT, "voice", voice, mime_type="audio/ogg")
        task = await next_task(poco, before)
        [item] = input_files(task)
        assert (item["name"], item["content_type"]) == ("voice.ogg", "audio/ogg")
        assert poco.uploads[-1]["sha256"] == sha(voice)
        await telegram_api.wait_for(
            lambda f: any("cannot transcribe" in t for t in texts_to(f, CHAT)), timeout=10
        )
        assert poco.transcriptions == []


async def test_voice_is_transcribed_where_the_backend_can(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
):
    if poco.generation != GEN_NEW:
        pytest.skip("transcription exists from April 2026 on")
    poco.set_transcription("list the open issues")
    voice = b"OggS" + os.urandom(8000)
    async with run_agent(agent_environment(data_dir, telegram=telegram_api, poco=poco)):
        await bind(telegram_api, poco)
        before = len(poco.tasks_posted)
        telegram_api.inject_file(CHAT, "voice", voice, mime_type="audio/ogg")
        task = await next_task(poco, before)
        assert task["prompt"] == "list the open issues" and input_files(task) == []
        assert "🎤 list the open issues" in await fence(telegram_api)
        [heard] = poco.transcriptions
        assert heard["sha256"] == sha(voice) and heard["content_type"] == "audio/ogg"
        assert poco.uploads == []


async def test_files_and_get(telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path):
    report = b"# Report\n" + b"line\n" * 5000
    async with run_agent(agent_environment(data_dir, telegram=telegram_api, poco=poco)):
        assert "not connected" in await say(telegram_api, CHAT, "/files")
        assert {"files", "get"} <= {c["command"] for c in telegram_api.commands}
        session_id = await bind(telegram_api, poco)
        assert "No workspace files yet" in await say(telegram_api, CHAT, "/files")
        poco.export_workspace(session_id, {"report.md": report, "src/main.py": b"print(1)\n"})
        listing = await say(telegram_api, CHAT, "/files")
        assert "1. /src/main.py (9 B)\n2. /report.md (24 KB)\n" in listing
        assert "/get 1" in listing
        await say(telegram_api, CHAT, "/get 2", count=0)
        await telegram_api.wait_for(lambda f: len(f.documents) == 1, timeout=10)
        [sent] = telegram_api.documents
        assert (sent["chat_id"], sent["file_name"], sent["sha256"]) == (
            CHAT,
            "report.md",
            sha(report),
        )
        assert sent["caption"] == "/report.md"
        await say(telegram_api, CHAT, "/get src/main.py", count=0)
        await telegram_api.wait_for(lambda f: len(f.documents) == 2, timeout=10)
        assert telegram_api.documents[-1]["file_name"] == "main.py"
        assert "no file 9" in (await say(telegram_api, CHAT, "/get 9")).lower()
        assert "No file /nope.txt" in await say(telegram_api, CHAT, "/get nope.txt")


async def test_refused_and_unbound_chats_never_fetch_or_upload(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
):
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco, IM_ACCESS_POLICY="pairing")
    async with run_agent(env):
        before = len(texts_to(telegram_api, CHAT))
        telegram_api.inject_photo(CHAT, os.urandom(1000), caption="hello")
        await telegram_api.wait_for(lambda f: len(texts_to(f, CHAT)) > before, timeout=10)
        assert "Pairing code" in texts_to(telegram_api, CHAT)[-1]
    async with run_agent(agent_environment(data_dir, telegram=telegram_api, poco=poco)):
        other = CHAT + 1
        telegram_api.inject_file(other, "document", b"data", file_name="a.txt")
        await telegram_api.wait_for(lambda f: len(texts_to(f, other)) == 1, timeout=10)
        assert "not connected" in texts_to(telegram_api, other)[0]
    assert calls(telegram_api, "getFile") == 0 and telegram_api.downloads == []
    assert poco.count(path_prefix="/attachments") == 0 and poco.count(path_prefix="/audio") == 0


async def test_run_end_counts_changed_files(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
):
    async with run_agent(agent_environment(data_dir, telegram=telegram_api, poco=poco)):
        await say(telegram_api, CHAT, "/new write two files")
        session_id = list(poco.sessions)[-1]
        poco.start_run(session_id)
        poco.set_file_changes(session_id, ["/a.py", "/b.md"])
        poco.finish_run(session_id, "completed")
        await telegram_api.wait_for(
            lambda f: any("completed" in t for t in texts_to(f, CHAT)), timeout=10
        )
        [end] = [t for t in texts_to(telegram_api, CHAT) if "completed" in t]
        if poco.is_new:  # April 2026 runs carry their workspace state
            assert "2 file(s) changed in the workspace: /files" in end
        else:
            assert "changed" not in end
