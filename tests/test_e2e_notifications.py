"""Notifications end to end: the fake backend plays the executor, the fake Telegram the chat."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.store import queries
from agent.store.models import Outbox
from tests.conftest import agent_environment, run_agent
from tests.fakes.poco import GENERATIONS, FakePoco
from tests.fakes.telegram import FakeTelegram
from tests.test_e2e_telegram import continue_session, say, texts_to

# Every test here runs against both backend generations (Feb and April 2026).
pytestmark = pytest.mark.parametrize("poco_generation", GENERATIONS, ids=lambda g: f"poco-{g}")

CHAT = 2002


def count(fake: FakeTelegram, chat_id: int, needle: str) -> int:
    return sum(needle in text for text in texts_to(fake, chat_id))


async def new_session(telegram_api: FakeTelegram, poco: FakePoco, chat: int = CHAT) -> str:
    await say(telegram_api, chat, "/new write a haiku")
    return str(poco.tasks_posted[-1].get("session_id") or list(poco.sessions)[-1])


def latest_session(poco: FakePoco) -> str:
    return list(poco.sessions)[-1]


async def test_texts_then_terminal_exactly_once(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await say(telegram_api, CHAT, "/new write a haiku")
        session_id = latest_session(poco)
        poco.start_run(session_id)
        poco.add_system_init(session_id)
        poco.add_assistant_text(session_id, "First *line* of the haiku")
        poco.add_assistant_text(
            session_id, "hidden sub-agent chatter", parent_tool_use_id="toolu_1"
        )
        poco.add_assistant_text(session_id, "Second line_with_underscores")
        poco.add_result(session_id, "Second line_with_underscores")
        poco.finish_run(session_id, "completed")
        await telegram_api.wait_for(lambda f: count(f, CHAT, "completed") == 1, timeout=10)
        texts = texts_to(telegram_api, CHAT)
        first = next(i for i, t in enumerate(texts) if "First" in t)
        second = next(i for i, t in enumerate(texts) if "Second line" in t)
        done = next(i for i, t in enumerate(texts) if "completed" in t)
        assert first < second < done
        assert count(telegram_api, CHAT, "Second line") == 1  # the result repeats it: once
        assert count(telegram_api, CHAT, "sub-agent") == 0

        # A follow-up makes the finished session run again; the new run ends once too.
        await continue_session(telegram_api, poco, CHAT, "one more please")
        poco.start_run(session_id)
        poco.add_assistant_text(session_id, "Third line")
        poco.finish_run(session_id, "failed", error="RuntimeError: model overloaded")
        await telegram_api.wait_for(lambda f: count(f, CHAT, "model overloaded") == 1, timeout=10)
        assert count(telegram_api, CHAT, "Third line") == 1
        assert count(telegram_api, CHAT, "completed") == 1


async def test_first_sight_only_last_three_and_long_sessions(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    session_id = poco.create_session(prompt="long one")
    poco.start_run(session_id)
    for i in range(120):
        poco.add_assistant_text(session_id, f"old text {i:03d}")
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await say(telegram_api, CHAT, f"/watch {session_id}")
        await telegram_api.wait_for(lambda f: count(f, CHAT, "old text 119") == 1, timeout=10)
        assert count(telegram_api, CHAT, "old text") == 3
        # Past the 100-message trap new texts still arrive.
        poco.add_assistant_text(session_id, "brand new text")
        await telegram_api.wait_for(lambda f: count(f, CHAT, "brand new text") == 1, timeout=10)


async def test_restart_repeats_nothing_and_loses_nothing(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await say(telegram_api, CHAT, "/new survive a restart")
        session_id = latest_session(poco)
        poco.start_run(session_id)
        poco.add_assistant_text(session_id, "before the stop")
        await telegram_api.wait_for(lambda f: count(f, CHAT, "before the stop") == 1, timeout=10)
    poco.add_assistant_text(session_id, "while stopped")
    poco.finish_run(session_id, "completed")
    async with run_agent(env):
        await telegram_api.wait_for(lambda f: count(f, CHAT, "completed") == 1, timeout=10)
        assert count(telegram_api, CHAT, "while stopped") == 1
    async with run_agent(env):
        await say(telegram_api, CHAT, "/help")
    assert count(telegram_api, CHAT, "before the stop") == 1
    assert count(telegram_api, CHAT, "completed") == 1


async def test_delivery_survives_429_and_5xx(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await say(telegram_api, CHAT, "/new flaky chat")
        session_id = latest_session(poco)
        telegram_api.fail_next("sendMessage", 429, retry_after=1)
        telegram_api.fail_next("sendMessage", 502, count=2)
        poco.start_run(session_id)
        poco.add_assistant_text(session_id, "text one")
        poco.add_assistant_text(session_id, "text two")
        await telegram_api.wait_for(lambda f: count(f, CHAT, "text two") == 1, timeout=20)
        texts = texts_to(telegram_api, CHAT)
        assert count(telegram_api, CHAT, "text one") == 1
        assert texts.index(next(t for t in texts if "text one" in t)) < texts.index(
            next(t for t in texts if "text two" in t)
        )


async def test_backend_outage_then_catch_up(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env) as agent:
        await say(telegram_api, CHAT, "/new outage")
        session_id = latest_session(poco)
        poco.start_run(session_id)
        await poco.stop()
        await telegram_api.wait_for(
            lambda f: agent.runtime.status.backend.reachable is False, timeout=10
        )
        await poco.start()
        poco.add_assistant_text(session_id, "after the outage")
        await telegram_api.wait_for(lambda f: count(f, CHAT, "after the outage") == 1, timeout=15)


async def test_digest_after_a_gap(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await say(telegram_api, CHAT, "/new long absence")
        first = latest_session(poco)
        await say(telegram_api, CHAT, "/new second one")  # the first stays watched
        second = latest_session(poco)
    for session_id, name in ((first, "alpha"), (second, "beta")):
        poco.start_run(session_id)
        for i in range(10):
            poco.add_assistant_text(session_id, f"missed {name} {i}")
    poco.finish_run(first, "completed")
    # Pretend the agent was last alive an hour ago.
    from agent.store import db

    db.open_database(data_dir / "im.db")
    queries.set_meta("last_alive", str(time.time() - 3600))
    db.close_database()
    async with run_agent(env):
        await telegram_api.wait_for(
            lambda f: count(f, CHAT, "While the agent was away") == 1, timeout=10
        )
        digest = next(t for t in texts_to(telegram_api, CHAT) if "While the agent" in t)
        assert "missed alpha 9" in digest and "completed" in digest
        assert "missed beta 9" in digest and "running" in digest
        await say(telegram_api, CHAT, "/help")
    assert count(telegram_api, CHAT, "While the agent was away") == 1  # one per chat
    assert count(telegram_api, CHAT, "missed alpha") == 1


async def test_question_buttons_answer_the_backend(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await say(telegram_api, CHAT, "/new ask me something")
        session_id = latest_session(poco)
        poco.start_run(session_id)
        request_id = poco.add_question(
            session_id,
            "Which format should the summary use?",
            [("Bullets", "short list"), ("Prose", "paragraph")],
            header="Format",
        )
        await telegram_api.wait_for(lambda f: count(f, CHAT, "Which format") == 1, timeout=10)
        prompt = next(m for m in telegram_api.sent if "Which format" in (m["text"] or ""))
        keyboard = prompt["reply_markup"]["inline_keyboard"]
        data = keyboard[0][0]["callback_data"]
        telegram_api.inject_callback(CHAT, prompt["message_id"], data)
        await poco.wait_for(
            lambda p: p.input_requests[request_id]["status"] == "answered", timeout=10
        )
        assert poco.input_requests[request_id]["answers"] == {
            "Which format should the summary use?": "Bullets"
        }
        await telegram_api.wait_for(
            lambda f: any(c[0] == "editMessageText" and "Answered" in str(c[1]) for c in f.calls),
            timeout=10,
        )


async def test_plan_answered_elsewhere_updates_the_prompt(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await say(telegram_api, CHAT, "/new plan something")
        session_id = latest_session(poco)
        poco.start_run(session_id)
        request_id = poco.add_input_request(
            session_id, "ExitPlanMode", {"plan": "## Plan\n1. Read\n2. Write"}, expires_in=600
        )
        await telegram_api.wait_for(lambda f: count(f, CHAT, "proposes a plan") == 1, timeout=10)
        prompt = next(m for m in telegram_api.sent if "proposes a plan" in (m["text"] or ""))
        poco.answer_from_web(request_id, {"approved": "true"})
        await telegram_api.wait_for(
            lambda f: any(c[0] == "editMessageText" and "answered" in str(c[1]) for c in f.calls),
            timeout=10,
        )
        # A late press of the stale button gets a clear reply.
        approve = prompt["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        before = len(texts_to(telegram_api, CHAT))
        telegram_api.inject_callback(CHAT, prompt["message_id"], approve)
        await telegram_api.wait_for(lambda f: len(texts_to(f, CHAT)) > before, timeout=10)
        assert "already answered" in texts_to(telegram_api, CHAT)[-1]


async def test_answer_command_still_works(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await say(telegram_api, CHAT, "/new typed answer")
        session_id = latest_session(poco)
        poco.start_run(session_id)
        request_id = poco.add_input_request(session_id, "ExitPlanMode", {"plan": "do it"})
        await telegram_api.wait_for(lambda f: count(f, CHAT, "proposes a plan") == 1, timeout=10)
        reply = await say(telegram_api, CHAT, f'/answer {request_id} {{"approved": true}}')
        assert "Answer sent" in reply
        assert poco.input_requests[request_id]["answers"] == {"approved": "true"}
        reply = await say(telegram_api, CHAT, f'/answer {request_id} {{"approved": "true"}}')
        assert "already answered" in reply


async def test_multi_select_toggles_and_free_text_reply(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await say(telegram_api, CHAT, "/new choose several")
        session_id = latest_session(poco)
        poco.start_run(session_id)
        multi = poco.add_question(
            session_id,
            "Which parts?",
            ["Intro", "Body", "Outro"],
            header="Parts",
            multi_select=True,
        )
        await telegram_api.wait_for(lambda f: count(f, CHAT, "Which parts?") == 1, timeout=10)
        prompt = next(m for m in telegram_api.sent if "Which parts?" in (m["text"] or ""))
        buttons = [row[0]["callback_data"] for row in prompt["reply_markup"]["inline_keyboard"]]
        submit = buttons[-1]
        for data in (buttons[0], buttons[2], submit):
            edits = sum(c[0] == "editMessageText" for c in telegram_api.calls)
            telegram_api.inject_callback(CHAT, prompt["message_id"], data)
            await telegram_api.wait_for(
                lambda f, e=edits: sum(c[0] == "editMessageText" for c in f.calls) > e,
                timeout=10,
            )
        await poco.wait_for(lambda p: p.input_requests[multi]["status"] == "answered", 10)
        assert poco.input_requests[multi]["answers"] == {"Which parts?": "Intro, Outro"}

        free = poco.add_question(session_id, "Any title?", ["Short"], header="Title")
        await telegram_api.wait_for(lambda f: count(f, CHAT, "Any title?") == 1, timeout=10)
        prompt = next(m for m in telegram_api.sent if "Any title?" in (m["text"] or ""))
        telegram_api.inject_message(
            CHAT, "Call it Ode to Tests", reply_to_message_id=prompt["message_id"]
        )
        await poco.wait_for(lambda p: p.input_requests[free]["status"] == "answered", 10)
        assert poco.input_requests[free]["answers"] == {"Any title?": "Call it Ode to Tests"}
        assert "Call it Ode to Tests" not in [b["prompt"] for b in poco.tasks_posted]


async def test_stale_requests_are_skipped_and_blocked_chats_are_given_up(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await say(telegram_api, CHAT, "/new stale and blocked")
        session_id = latest_session(poco)
        poco.start_run(session_id)
        # Past expires_at but still listed as pending (the executor died): never shown.
        poco.add_input_request(session_id, "ExitPlanMode", {"plan": "stale plan"}, expires_in=-5)
        poco.add_input_request(session_id, "ExitPlanMode", {"plan": "live plan"}, expires_in=600)
        await telegram_api.wait_for(lambda f: count(f, CHAT, "live plan") == 1, timeout=10)
        assert count(telegram_api, CHAT, "stale plan") == 0

        # The user blocked the bot: the row is recorded as failed, not retried forever.
        telegram_api.blocked_chats.add(CHAT)
        poco.add_assistant_text(session_id, "nobody will read this")
        other = 3003
        await say(telegram_api, other, "/help")  # other chats are unaffected
        await telegram_api.wait_for(lambda f: failed_rows() == 1, timeout=10)
        assert count(telegram_api, CHAT, "nobody will read this") == 0


def failed_rows() -> int:
    return int(Outbox.select().where(Outbox.status == "failed").count())


async def test_a_long_plan_keeps_its_buttons_reachable(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await say(telegram_api, CHAT, "/new long plan")
        session_id = latest_session(poco)
        poco.start_run(session_id)
        plan = "\n".join(f"{i}. step number {i} of a very long plan" for i in range(300))
        request_id = poco.add_input_request(
            session_id, "ExitPlanMode", {"plan": plan}, expires_in=600
        )
        await telegram_api.wait_for(lambda f: count(f, CHAT, "step number 299") == 1, timeout=15)
        with_buttons = [m for m in telegram_api.sent if m.get("reply_markup")]
        assert len(with_buttons) == 1 and "step number 299" in with_buttons[0]["text"]
        approve = with_buttons[0]["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        telegram_api.inject_callback(CHAT, with_buttons[0]["message_id"], approve)
        await poco.wait_for(lambda p: p.input_requests[request_id]["status"] == "answered", 10)
        await telegram_api.wait_for(
            lambda f: any(
                c[0] == "editMessageText"
                and str(c[1].get("message_id")) == str(with_buttons[0]["message_id"])
                and "Answered" in str(c[1])
                for c in f.calls
            ),
            timeout=10,
        )


async def test_a_long_text_cut_by_429_resumes_without_repeating_parts(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await say(telegram_api, CHAT, "/new long answer")
        session_id = latest_session(poco)
        poco.start_run(session_id)
        # The second part of the split text hits flood control.
        telegram_api.fail_next("sendMessage", 429, retry_after=1, after=1)
        text = "\n".join(f"line {i:04d} of a long answer" for i in range(400))
        poco.add_assistant_text(session_id, text)
        await telegram_api.wait_for(lambda f: count(f, CHAT, "line 0399") == 1, timeout=15)
        sent = "".join(texts_to(telegram_api, CHAT))
        assert all(sent.count(f"line {i:04d} ") == 1 for i in range(400))
