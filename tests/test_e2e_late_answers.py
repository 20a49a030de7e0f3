"""Late and ambiguous answers end to end: a number, label or "ok" sent after its prompt was
answered elsewhere or expired is told so and never reaches the backend, and a bare number
with several open prompts asks which."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.store.models import InputPrompt, PromptClosure
from tests.conftest import agent_environment, run_agent
from tests.fakes.dingtalk import FakeDingTalk
from tests.fakes.poco import GENERATIONS, FakePoco
from tests.fakes.telegram import FakeTelegram
from tests.test_e2e_dingtalk import say, texts_to
from tests.test_e2e_telegram import continued_reply
from tests.test_e2e_telegram import say as tg_say
from tests.test_e2e_telegram import texts_to as tg_texts

# Every test here runs against both backend generations (Feb and April 2026).
pytestmark = pytest.mark.parametrize("poco_generation", GENERATIONS, ids=lambda g: f"poco-{g}")

TG_CHAT = 4004
ANSWER_ROUTE = "/user-input-requests/"


class Backend:
    """What reached the backend from the chats: answers posted and prompts (POST /tasks)."""

    def __init__(self, poco: FakePoco) -> None:
        self.poco = poco
        self.answers = poco.count("POST", ANSWER_ROUTE)
        self.tasks = len(poco.tasks_posted)

    def untouched(self) -> bool:
        return (
            self.poco.count("POST", ANSWER_ROUTE) == self.answers
            and len(self.poco.tasks_posted) == self.tasks
        )


# Long enough for the prompt to be shown first (polls every 0.2 s), short enough to wait.
SHORT_EXPIRY = 4.0


async def dingtalk_question(
    dingtalk: FakeDingTalk, poco: FakePoco, question: str = "Which format?"
) -> tuple[str, str]:
    """A bound DingTalk chat whose session asks `question`; (session id, request id)."""
    await say(dingtalk, f"/new ask about {question}")
    session_id = list(poco.sessions)[-1]
    poco.start_run(session_id)
    request_id = poco.add_question(session_id, question, ["Bullets", "Prose"], expires_in=600)
    await dingtalk.wait_for(lambda: any(question in t for t in texts_to(dingtalk)), timeout=10)
    return session_id, request_id


async def told(dingtalk: FakeDingTalk, needle: str, before: int) -> None:
    """Wait until the chat was sent `needle` (after its first `before` messages)."""
    await dingtalk.wait_for(lambda: any(needle in t for t in texts_to(dingtalk)[before:]), 10)


async def test_dingtalk_number_after_a_web_answer_is_already_answered(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco)
    async with run_agent(env):
        session_id, request_id = await dingtalk_question(dingtalk_api, poco)
        before = len(texts_to(dingtalk_api))
        poco.answer_from_web(request_id, {"Which format?": "Prose"})
        await told(dingtalk_api, "was answered", before)
        backend = Backend(poco)
        reply = await say(dingtalk_api, "1")
        assert "already answered" in reply and "web UI" in reply
        assert "already answered" in await say(dingtalk_api, "prose")
        assert backend.untouched()
        assert poco.input_requests[request_id]["answers"] == {"Which format?": "Prose"}

        # A sentence that merely contains a label is no answer: it continues the session,
        # and the chat has moved on, so a bare number is a follow-up prompt again.
        assert continued_reply(poco) in await say(dingtalk_api, "Bullets would have been nicer")
        assert continued_reply(poco) in await say(dingtalk_api, "1")
        prompts = [t["prompt"] for t in poco.tasks_posted[backend.tasks :]]
        assert prompts == ["Bullets would have been nicer", "1"]
        assert all(t["session_id"] == session_id for t in poco.tasks_posted[backend.tasks :])


async def test_dingtalk_word_after_expiry_is_expired(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco)
    async with run_agent(env):
        await say(dingtalk_api, "/new plan it")
        session_id = list(poco.sessions)[-1]
        poco.start_run(session_id)
        before = len(texts_to(dingtalk_api))
        plan = poco.add_input_request(
            session_id, "ExitPlanMode", {"plan": "1. a"}, expires_in=SHORT_EXPIRY
        )
        await told(dingtalk_api, "proposes a plan", before)
        await told(dingtalk_api, "expired", before)
        poco.expire_request(plan)
        backend = Backend(poco)
        for word in ("ok", "好", "批准"):
            assert "expired" in await say(dingtalk_api, word)
        assert backend.untouched()


async def test_closed_prompts_match_for_a_while_only(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco)
    async with run_agent(env):
        _, request_id = await dingtalk_question(dingtalk_api, poco)
        before = len(texts_to(dingtalk_api))
        poco.answer_from_web(request_id, {"Which format?": "Prose"})
        await told(dingtalk_api, "was answered", before)
        backend = Backend(poco)
        assert "already answered" in await say(dingtalk_api, "2")
        assert backend.untouched()
        # 31 minutes later the same "2" is a follow-up prompt.
        prompt = InputPrompt.get(InputPrompt.request_id == request_id)
        PromptClosure.update(closed_at=PromptClosure.closed_at - 31 * 60).where(
            PromptClosure.prompt == prompt.id
        ).execute()
        assert continued_reply(poco) in await say(dingtalk_api, "2")
        assert poco.tasks_posted[-1]["prompt"] == "2"

        # Answered in this chat, which saw it: a repeat is caught for two minutes only.
        session_id = poco.tasks_posted[-1]["session_id"]
        again = poco.add_question(session_id, "Which tone?", ["Formal", "Casual"])
        await dingtalk_api.wait_for(
            lambda: any("Which tone?" in t for t in texts_to(dingtalk_api)), timeout=10
        )
        assert "Answer sent" in await say(dingtalk_api, "2")
        assert "already answered in this chat" in await say(dingtalk_api, "2")
        prompt = InputPrompt.get(InputPrompt.request_id == again)
        PromptClosure.update(closed_at=PromptClosure.closed_at - 3 * 60).where(
            PromptClosure.prompt == prompt.id
        ).execute()
        assert continued_reply(poco) in await say(dingtalk_api, "2")
        assert poco.input_requests[again]["answers"] == {"Which tone?": "Casual"}


async def test_several_open_prompts_and_a_bare_answer_ask_which(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco)
    async with run_agent(env):
        session_id, first = await dingtalk_question(dingtalk_api, poco)
        second = poco.add_question(session_id, "Which tone?", ["Formal", "Casual"])
        plan = poco.add_input_request(session_id, "ExitPlanMode", {"plan": "1. a"})
        await dingtalk_api.wait_for(
            lambda: (
                any("Which tone?" in t for t in texts_to(dingtalk_api))
                and any("proposes a plan" in t for t in texts_to(dingtalk_api))
            ),
            timeout=10,
        )
        backend = Backend(poco)
        reply = await say(dingtalk_api, "1")
        assert "/answer" in reply and all(r in reply for r in (first, second, plan))
        assert '{"Which format?": "Bullets"}' in reply  # what "1" would have answered
        assert "/answer" in await say(dingtalk_api, "ok")
        assert backend.untouched()
        # A label only one of them has is unambiguous.
        assert "Answer sent" in await say(dingtalk_api, "casual")
        assert poco.input_requests[second]["answers"] == {"Which tone?": "Casual"}

        # The plan is approved in the web UI: a bare number now answers the one left open,
        # and a late "ok" is told that the plan was answered.
        before = len(texts_to(dingtalk_api))
        poco.answer_from_web(plan, {"approved": "false"})
        await told(dingtalk_api, "was answered", before)
        assert "Answer sent" in await say(dingtalk_api, "1")
        assert poco.input_requests[first]["answers"] == {"Which format?": "Bullets"}
        assert "already answered" in await say(dingtalk_api, "ok")
        assert len(poco.tasks_posted) == backend.tasks


async def test_bound_chat_without_prompts_sends_numbers_and_ok_to_the_session(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco)
    async with run_agent(env):
        await say(dingtalk_api, "/new count with me")
        session_id = list(poco.sessions)[-1]
        for text in ("1", "ok", "好"):
            assert continued_reply(poco) in await say(dingtalk_api, text)
            assert poco.tasks_posted[-1] == {
                **poco.tasks_posted[-1],
                "prompt": text,
                "session_id": session_id,
            }


async def test_answered_in_another_chat_says_which(
    telegram_api: FakeTelegram,
    dingtalk_api: FakeDingTalk,
    poco: FakePoco,
    data_dir: Path,
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, dingtalk=dingtalk_api, poco=poco)
    async with run_agent(env):
        await say(dingtalk_api, "/new shared question")
        session_id = list(poco.sessions)[-1]
        await tg_say(telegram_api, TG_CHAT, f"/watch {session_id}")
        poco.start_run(session_id)
        request_id = poco.add_question(session_id, "Which format?", ["Bullets", "Prose"])
        await telegram_api.wait_for(
            lambda f: any("Which format?" in t for t in tg_texts(f, TG_CHAT)), timeout=10
        )
        await dingtalk_api.wait_for(
            lambda: any("Which format?" in t for t in texts_to(dingtalk_api)), timeout=10
        )
        prompt = next(m for m in telegram_api.sent if "Which format?" in (m["text"] or ""))
        before = len(texts_to(dingtalk_api))
        button = prompt["reply_markup"]["inline_keyboard"][1][0]["callback_data"]
        telegram_api.inject_callback(TG_CHAT, prompt["message_id"], button)
        await told(dingtalk_api, "Prose", before)
        backend = Backend(poco)
        reply = await say(dingtalk_api, "1")
        assert "already answered" in reply and "Telegram" in reply
        assert backend.untouched()
        assert poco.input_requests[request_id]["answers"] == {"Which format?": "Prose"}


async def test_telegram_reply_to_a_closed_prompt_is_not_sent(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await tg_say(telegram_api, TG_CHAT, "/new reply late")
        session_id = list(poco.sessions)[-1]
        poco.start_run(session_id)
        answered = poco.add_question(session_id, "Which format?", ["Bullets", "Prose"])
        expired = poco.add_input_request(
            session_id, "ExitPlanMode", {"plan": "1. a"}, expires_in=SHORT_EXPIRY
        )
        await telegram_api.wait_for(
            lambda f: (
                sum(("Which format?" in t or "proposes a plan" in t) for t in tg_texts(f, TG_CHAT))
                >= 2
            ),
            timeout=10,
        )
        question = next(m for m in telegram_api.sent if "Which format?" in (m["text"] or ""))
        plan = next(m for m in telegram_api.sent if "proposes a plan" in (m["text"] or ""))
        poco.answer_from_web(answered, {"Which format?": "Prose"})
        await telegram_api.wait_for(
            lambda f: sum(c[0] == "editMessageText" for c in f.calls) >= 2, timeout=10
        )
        poco.expire_request(expired)
        backend = Backend(poco)
        reply = await tg_say(
            telegram_api, TG_CHAT, "Bullets", reply_to_message_id=question["message_id"]
        )
        assert "already answered" in reply and "web UI" in reply
        reply = await tg_say(telegram_api, TG_CHAT, "ok", reply_to_message_id=plan["message_id"])
        assert "expired" in reply
        assert backend.untouched()
