"""A by-hand end-to-end check against a REAL Poco backend (not part of the test suite).

Start one with `../shared/tools/real-poco-backend.sh` (either generation), then:

    python3 -m tests.real_backend_check http://127.0.0.1:18001 local-internal-token

The agent runs in-process against that backend, with the fake Telegram as the chat; this
script plays the executor over plain HTTP (claim, start, callbacks, input requests), as
Poco's executor-manager would. It walks what a user does: /new, texts, a question answered
with a button, a plan approved with a button, the end told once, a follow-up sent while a
run is running (queued on the April 2026 backend, then followed), and a session past 100
messages. Each step prints what the chat saw; any failure raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import agent_environment, run_agent
from tests.fakes.telegram import FakeTelegram
from tests.test_e2e_telegram import say, texts_to

CHAT = 777
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Executor:
    """Poco's executor side, over HTTP: claim a session's run, start it, call back."""

    def __init__(self, base: str, token: str, user: str) -> None:
        self.http = httpx.AsyncClient(base_url=base + "/api/v1", timeout=15)
        self.token, self.user = token, user
        self.worker = f"check-{uuid.uuid4().hex[:6]}"

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, path, **kwargs)
        body = response.json()
        if response.status_code != 200 or body.get("code") != 0:
            raise RuntimeError(f"{method} {path}: {response.status_code} {body}")
        return body["data"]

    @property
    def user_headers(self) -> dict[str, str]:
        return {"X-User-Id": self.user, "X-Internal-Token": self.token}

    async def start(self, session_id: str) -> str:
        """Claim runs until this session's comes up, and start it."""
        for _ in range(50):
            claimed = await self.call(
                "POST", "/runs/claim", json={"worker_id": self.worker, "lease_seconds": 600}
            )
            if claimed is None:
                await asyncio.sleep(0.3)
                continue
            run = claimed["run"]
            if run["session_id"] == session_id:
                await self.call(
                    "POST", f"/runs/{run['run_id']}/start", json={"worker_id": self.worker}
                )
                return str(run["run_id"])
        raise RuntimeError(f"no queued run of {session_id} came up")

    async def callback(self, session_id: str, status: str = "running", **extra: Any) -> None:
        body = {
            "session_id": session_id,
            "time": datetime.now(UTC).isoformat(),
            "status": status,
            "progress": 100 if status == "completed" else 50,
            **extra,
        }
        await self.call("POST", "/callback", json=body)

    async def say(self, session_id: str, text: str) -> None:
        message = {
            "_type": "AssistantMessage",
            "content": [{"_type": "TextBlock", "text": text}],
            "model": "check",
            "parent_tool_use_id": None,
        }
        await self.callback(session_id, new_message=message)

    async def finish(self, session_id: str, status: str = "completed") -> None:
        await self.callback(session_id, status)

    async def ask(self, session_id: str, tool: str, tool_input: dict[str, Any]) -> str:
        data = await self.call(
            "POST",
            "/internal/user-input-requests",
            json={"session_id": session_id, "tool_name": tool, "tool_input": tool_input},
            headers={"X-Internal-Token": self.token},
        )
        return str(data["id"])

    async def complete_cancellation(self, session_id: str) -> None:
        """The executor-manager's side of a cancel (April 2026): claim it, complete it."""
        headers = {"X-Internal-Token": self.token}
        for _ in range(50):
            claimed = await self.call(
                "POST",
                "/internal/sessions/cancellations/claim",
                json={"worker_id": self.worker},
                headers=headers,
            )
            if claimed is not None and claimed["session_id"] == session_id:
                break
            await asyncio.sleep(0.2)
        await self.call(
            "POST",
            f"/internal/sessions/{session_id}/cancellation-complete",
            json={"worker_id": self.worker, "stop_status": "stopped"},
            headers=headers,
        )

    async def answer_of(self, request_id: str) -> dict[str, Any]:
        return dict(
            await self.call(
                "GET",
                f"/internal/user-input-requests/{request_id}",
                headers={"X-Internal-Token": self.token},
            )
        )


def seen(telegram: FakeTelegram, needle: str) -> int:
    return sum(needle in text for text in texts_to(telegram, CHAT))


async def press_first_button(telegram: FakeTelegram, label: str) -> None:
    message = next(m for m in reversed(telegram.sent) if m.get("reply_markup"))
    buttons = [b for row in message["reply_markup"]["inline_keyboard"] for b in row]
    button = next(b for b in buttons if label in b["text"])
    telegram.inject_callback(CHAT, message["message_id"], button["callback_data"])


async def check(base: str, token: str) -> None:
    telegram = FakeTelegram()
    await telegram.start()
    user = f"im-check-{uuid.uuid4().hex[:6]}"
    executor = Executor(base, token, user)
    with tempfile.TemporaryDirectory() as tmp:
        env = agent_environment(
            Path(tmp) / "data",
            telegram=telegram,
            BACKEND_URL=base,
            BACKEND_INTERNAL_TOKEN=token,
            BACKEND_USER_ID=user,
            IM_PROGRESS="on",
        )
        started = time.monotonic()
        async with run_agent(env) as agent:
            step = lambda what: print(f"[{time.monotonic() - started:6.1f}s] {what}", flush=True)  # noqa: E731
            await telegram.wait_for(lambda f: agent.runtime.status.backend.last_ok_at is not None)
            step(f"health: backend {agent.runtime.status.backend.state}")

            reply = await say(telegram, CHAT, "/new summarise the README")
            session_id = UUID.search(reply).group(0)  # type: ignore[union-attr]
            step(f"/new -> {reply.splitlines()[0]}")
            await executor.start(session_id)
            await executor.say(session_id, "Reading the README now")
            await telegram.wait_for(lambda f: seen(f, "Reading the README") == 1, timeout=15)
            step("text arrived")

            question = {
                "questions": [
                    {
                        "question": "Which format?",
                        "header": "Format",
                        "options": [
                            {"label": "Bullets", "description": "short"},
                            {"label": "Prose", "description": "long"},
                        ],
                        "multiSelect": False,
                    }
                ]
            }
            asked = await executor.ask(session_id, "AskUserQuestion", question)
            await telegram.wait_for(lambda f: seen(f, "Which format?") >= 1, timeout=15)
            await press_first_button(telegram, "Bullets")
            for _ in range(50):
                if (await executor.answer_of(asked))["status"] == "answered":
                    break
                await asyncio.sleep(0.2)
            answer = await executor.answer_of(asked)
            assert answer["answers"] == {"Which format?": "Bullets"}, answer
            step(f"question answered by button: {answer['answers']}")

            plan = await executor.ask(session_id, "ExitPlanMode", {"plan": "1. read\n2. write"})
            await telegram.wait_for(lambda f: seen(f, "proposes a plan") >= 1, timeout=15)
            await press_first_button(telegram, "Approve")
            for _ in range(50):
                if (await executor.answer_of(plan))["status"] == "answered":
                    break
                await asyncio.sleep(0.2)
            approved = await executor.answer_of(plan)
            assert approved["answers"] == {"approved": "true"}, approved
            step("plan approved by button")

            # A follow-up while the run is running.
            telegram.inject_message(CHAT, "also list the open issues")
            # April 2026 queues it (said in words); Feb 2026 adds a run (Telegram: typing).
            with contextlib.suppress(TimeoutError):
                await telegram.wait_for(lambda f: seen(f, "Queued") == 1, timeout=3)
            queued = seen(telegram, "Queued") == 1
            step(f"follow-up while running -> {'queued' if queued else 'no reply (typing)'}")
            await executor.say(session_id, "Summary: it is a README")
            await executor.finish(session_id)
            await telegram.wait_for(lambda f: seen(f, "completed.") == 1, timeout=15)
            step("first run: its last text, then completed")

            await executor.start(session_id)  # the follow-up's run (promoted when queued)
            await executor.say(session_id, "Open issues: none")
            await executor.finish(session_id)
            await telegram.wait_for(lambda f: seen(f, "completed.") == 2, timeout=15)
            await telegram.wait_for(lambda f: seen(f, "Open issues: none") == 1, timeout=15)
            step("follow-up run followed and told once")

            # A session past 100 messages, started in the web UI, then watched from the chat:
            # its last texts come first (the 100-message trap is behind us), then new ones.
            created = await executor.call(
                "POST", "/tasks", json={"prompt": "count to 110"}, headers=executor.user_headers
            )
            long_id = str(created["session_id"])
            await executor.start(long_id)
            for i in range(110):
                await executor.say(long_id, f"number {i}")
            await say(telegram, CHAT, f"/watch {long_id}")
            await telegram.wait_for(lambda f: seen(f, "number 109") == 1, timeout=30)
            assert seen(telegram, "number 106") == 0 and seen(telegram, "number 107") == 1
            await executor.say(long_id, "past a hundred")
            await telegram.wait_for(lambda f: seen(f, "past a hundred") == 1, timeout=15)
            await executor.finish(long_id)
            await telegram.wait_for(lambda f: seen(f, "completed.") == 3, timeout=15)
            step("session past 100 messages: its last texts, a new one, its end once")
            await asyncio.sleep(3)
            assert seen(telegram, "completed.") == 3, "an end was told twice"
            step("no end repeated")

            # A photo into the connected session: this backend has no object storage, so
            # the chat is told so, once, and no task is sent.
            before = len(texts_to(telegram, CHAT))
            telegram.inject_photo(CHAT, b"\x89PNG not really" * 100, caption="what is this")
            await telegram.wait_for(lambda f: seen(f, "cannot store files") == 1, timeout=15)
            await asyncio.sleep(2)
            assert len(texts_to(telegram, CHAT)) == before + 1
            step("photo without object storage: one short reply, nothing sent")

            # Progress edited in place, then /stop from the chat: one cancel.
            reply = await say(telegram, CHAT, "/new long job")
            job_id = UUID.search(reply).group(0)  # type: ignore[union-attr]
            await executor.start(job_id)
            await executor.callback(job_id, state_patch={"current_step": "Reading the code"})
            await executor.say(job_id, "on it")
            await telegram.wait_for(lambda f: seen(f, "Reading the code") >= 1, timeout=15)
            await executor.callback(job_id, state_patch={"current_step": "Writing the patch"})
            await telegram.wait_for(lambda f: seen(f, "Writing the patch") >= 1, timeout=15)
            edits = [c for c in telegram.calls if c[0].lower() == "editmessagetext"]
            step(f"progress message edited in place ({len(edits)} edits)")
            stopping = await say(telegram, CHAT, "/stop")
            step(f"/stop -> {stopping.splitlines()[0]}")
            if "Stopping" in stopping:
                state = await executor.call(
                    "GET", f"/sessions/{job_id}/state", headers=executor.user_headers
                )
                if state["status"] == "canceling":
                    await executor.complete_cancellation(job_id)
            await telegram.wait_for(lambda f: seen(f, "was canceled.") >= 1, timeout=15)
            step("the run is canceled, told in the chat")

            # A cancel from the web UI (April 2026: canceling, then canceled).
            reply = await say(telegram, CHAT, "/new wait for me")
            stop_id = UUID.search(reply).group(0)  # type: ignore[union-attr]
            await executor.start(stop_id)
            await executor.say(stop_id, "working")
            await telegram.wait_for(lambda f: seen(f, "working") == 1, timeout=15)
            canceled = await executor.call(
                "POST", f"/sessions/{stop_id}/cancel", json={}, headers=executor.user_headers
            )
            step(f"canceled in the web UI: {canceled['status']}")
            if canceled["status"] == "canceling":
                await asyncio.sleep(2)
                assert seen(telegram, "was canceled.") == 1, "canceling told as an end"
                await executor.complete_cancellation(stop_id)
            await telegram.wait_for(lambda f: seen(f, "was canceled.") == 2, timeout=15)
            step("canceled told once (canceling was not an end)")
    await telegram.stop()
    await executor.http.aclose()


if __name__ == "__main__":
    asyncio.run(check(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""))
