"""End to end: DingTalk pictures, files, voice and rich text into tasks, and /get as a link,
against the fake DingTalk (Stream mode) and both fake backend generations."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import agent_environment, run_agent
from tests.fakes.dingtalk import FakeDingTalk
from tests.fakes.poco import GENERATIONS, FakePoco
from tests.test_e2e_dingtalk import PRIVATE, say, texts_to

pytestmark = pytest.mark.parametrize("poco_generation", GENERATIONS, ids=lambda g: f"poco-{g}")


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def input_files(task: dict[str, Any]) -> list[dict[str, Any]]:
    return list((task.get("config") or {}).get("input_files") or [])


async def bind(dingtalk: FakeDingTalk, poco: FakePoco) -> str:
    session_id = poco.create_session(status="completed")
    assert "Connected" in await say(dingtalk, f"/connect {session_id}")
    return session_id


async def next_task(poco: FakePoco, before: int) -> dict[str, Any]:
    await poco.wait_for(lambda p: len(p.tasks_posted) > before, timeout=15)
    return dict(poco.tasks_posted[before])


async def test_picture_file_and_rich_text(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    picture, document = os.urandom(40_000), b"%PDF-1.4 " + os.urandom(9000)
    async with run_agent(agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco)):
        session_id = await bind(dingtalk_api, poco)
        before = len(poco.tasks_posted)
        await dingtalk_api.push_file(PRIVATE, "picture", picture)
        task = await next_task(poco, before)
        assert task["session_id"] == session_id
        assert task["prompt"] == "Please take a look at the attached file(s)."
        [item] = input_files(task)
        assert item["name"].startswith("image") and item["size"] == len(picture)
        assert poco.uploads[-1]["sha256"] == sha(picture)
        assert len(dingtalk_api.file_downloads) == 1  # one messageFiles/download

        await dingtalk_api.push_file(PRIVATE, "file", document, file_name="spec.pdf")
        task = await next_task(poco, before + 1)
        assert [f["name"] for f in input_files(task)] == ["spec.pdf"]
        assert poco.uploads[-1]["sha256"] == sha(document)

        content = dingtalk_api.rich_text("What changed between ", picture, " and ", document)
        await dingtalk_api.push_message(PRIVATE, "", msgtype="richText", content=content)
        task = await next_task(poco, before + 2)
        assert task["prompt"] == "What changed between  and"
        assert [f["size"] for f in input_files(task)] == [len(picture), len(document)]


async def test_audio_recognition_is_the_prompt(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco)):
        await bind(dingtalk_api, poco)
        before = len(poco.tasks_posted)
        await dingtalk_api.push_file(
            PRIVATE, "audio", b"#!AMR" + os.urandom(500), recognition="总结一下今天的进展"
        )
        task = await next_task(poco, before)
        assert task["prompt"] == "总结一下今天的进展" and input_files(task) == []
        await dingtalk_api.wait_for(
            lambda: any("🎤 总结一下今天的进展" in t for t in texts_to(dingtalk_api)), timeout=10
        )
        assert dingtalk_api.file_downloads == [] and poco.uploads == []


async def test_group_picture_needs_the_mention(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    group = "cid-group-files"
    async with run_agent(agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco)):
        session_id = poco.create_session(status="completed")
        reply = await say(
            dingtalk_api, f"@Poco /connect {session_id}", group, conversation_type="2", at_bot=True
        )
        assert "Connected" in reply
        before = len(poco.tasks_posted)
        await dingtalk_api.push_file(group, "picture", b"ignored", conversation_type="2")
        content = dingtalk_api.rich_text("@Poco what is this?", b"\x89PNG picture")
        await dingtalk_api.push_message(
            group, "", msgtype="richText", content=content, conversation_type="2", at_bot=True
        )
        task = await next_task(poco, before)
        assert task["prompt"] == "what is this?"
        assert [f["size"] for f in input_files(task)] == [len(b"\x89PNG picture")]
        assert len(poco.tasks_posted) == before + 1


async def test_get_sends_a_link(dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path):
    async with run_agent(agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco)):
        session_id = await bind(dingtalk_api, poco)
        poco.export_workspace(session_id, {"out/result.csv": b"a,b\n1,2\n"})
        assert "1. `/out/result.csv` (8 B)" in await say(dingtalk_api, "/files")
        reply = await say(dingtalk_api, "/get 1")
        assert reply.startswith("📎 [result.csv](http://127.0.0.1:")
        assert "/s3/workspaces/" in reply and "(8 B)" in reply
