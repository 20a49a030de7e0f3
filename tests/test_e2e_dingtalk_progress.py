"""End to end: a run's progress in a DingTalk chat as one AI card per run, streamed
(coalesced, paced, finalised with the terminal state), with a Stop button that cancels
once; no card API at all without a template, and a refused card breaks nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.core.progress_sender import PROGRESS_EDIT_SECONDS
from agent.store.models import ProgressMessage
from tests.conftest import agent_environment, run_agent
from tests.fakes.dingtalk import FakeDingTalk
from tests.fakes.dingtalk_cards import STREAMING_WRITE, TEMPLATE_ID, FakeCard
from tests.fakes.poco import GENERATIONS, FakePoco
from tests.test_e2e_dingtalk import say, texts_to

pytestmark = pytest.mark.parametrize("poco_generation", GENERATIONS, ids=lambda g: f"poco-{g}")

STAFF = "staff-1"  # the private chat's user: its cards go to dtv1.card//IM_ROBOT.<userId>
TODOS = [
    {"content": "Read the README", "status": "completed", "active_form": "Reading the README"},
    {"content": "Write a summary", "status": "in_progress", "active_form": "Writing a summary"},
]


def progress_env(data_dir: Path, fake: FakeDingTalk, poco: FakePoco, **more: str) -> dict:
    settings = {"IM_PROGRESS": "on", "DINGTALK_CARD_TEMPLATE_ID": TEMPLATE_ID, **more}
    return agent_environment(data_dir, dingtalk=fake, poco=poco, **settings)


async def start_run(fake: FakeDingTalk, poco: FakePoco) -> tuple[str, FakeCard]:
    """/new in the private chat, the executor starts the run: its progress card appears."""
    await say(fake, "/new summarise the README")
    session_id = list(poco.sessions)[-1]
    poco.start_run(session_id)
    await fake.wait_for(lambda: len(fake.cards.to(STAFF)) == 1, timeout=10)
    return session_id, fake.cards.to(STAFF)[0]


def content(card: FakeCard) -> str:
    return card.data.get("content", "")


async def wait_content(fake: FakeDingTalk, card: FakeCard, needle: str) -> str:
    await fake.wait_for(lambda: needle in content(card), timeout=15)
    return content(card)


async def until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    """Poll a store condition (no fake sees it happen) until it holds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


def given_up() -> bool:
    return bool(ProgressMessage.select().where(ProgressMessage.state == "failed").exists())


def cancels(poco: FakePoco, session_id: str) -> int:
    return poco.count("POST", f"/sessions/{session_id}/cancel")


async def test_state_changes_stream_into_one_card_coalesced_paced_and_finalised(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(progress_env(data_dir, dingtalk_api, poco)):
        session_id, card = await start_run(dingtalk_api, poco)
        assert card.template_id == TEMPLATE_ID and card.callback_type == "STREAM"
        assert "running" in content(card) and card.data["flowStatus"] == "2"
        assert [o["actionId"] for o in card.options] == ["stop"]

        poco.set_state_patch(session_id, {"current_step": "step 1", "todos": TODOS})
        assert "1/2 done" in await wait_content(dingtalk_api, card, "step 1")
        for step in range(2, 7):
            poco.set_state_patch(session_id, {"current_step": f"step {step}", "todos": TODOS})
            await asyncio.sleep(0.15)  # paces the backend's changes (polls every 0.2 s)
        await wait_content(dingtalk_api, card, "step 6")
        streamed = [s["content"] for s in card.streams]
        assert not any(f"step {n}" in t for t in streamed for n in range(2, 6))
        assert all(s["key"] == "content" and s["isFull"] is True for s in card.streams)
        assert not any(s["isFinalize"] for s in card.streams)

        poco.add_tool_use(session_id, "Bash", {"command": "pytest -q"})
        await wait_content(dingtalk_api, card, "🔧 Bash: pytest -q")
        poco.add_result(session_id, "All done.")
        poco.finish_run(session_id, "completed")
        await dingtalk_api.wait_for(lambda: card.finalized and card.options == [], timeout=15)
        last = card.streams[-1]
        assert last["isFinalize"] is True and "completed" in last["content"]
        assert card.data["flowStatus"] == "3"
        # The run's notice still comes once as text; one card for the run, nothing after.
        await dingtalk_api.wait_for(
            lambda: any("completed.\n" in t for t in texts_to(dingtalk_api)), timeout=10
        )
        assert len(dingtalk_api.cards.delivered()) == 1
        assert sum(s["isFinalize"] for s in card.streams) == 1

    # Never two progress calls to the chat within the bound (as the fake received them).
    times = sorted([card.at, *card.stream_calls])
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps and min(gaps) >= PROGRESS_EDIT_SECONDS, gaps


async def test_stop_on_the_card_cancels_once(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(progress_env(data_dir, dingtalk_api, poco)):
        session_id, card = await start_run(dingtalk_api, poco)
        first = await dingtalk_api.cards.press(card, action_id="stop")
        second = await dingtalk_api.cards.press(card, action_id="stop")
        await dingtalk_api.wait_for(
            lambda: {first, second} <= set(dingtalk_api.cards.press_acks), timeout=10
        )
        await poco.wait_for(lambda p: cancels(p, session_id) >= 1, 10)
        if poco.is_new:
            # The executor has not confirmed: the card says stopping, without its button.
            text = await wait_content(dingtalk_api, card, "stopping…")
            assert "canceled" not in text and not card.finalized
            poco.complete_cancellation(session_id)
        await dingtalk_api.wait_for(lambda: card.finalized and card.options == [], timeout=15)
        assert "canceled" in card.streams[-1]["content"]
        assert "Nothing to stop" in await say(dingtalk_api, "/cancel")
        assert cancels(poco, session_id) == 1


async def test_no_template_no_card_api_and_no_progress(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco, IM_PROGRESS="on")
    async with run_agent(env):
        await say(dingtalk_api, "/new summarise the README")
        session_id = list(poco.sessions)[-1]
        poco.start_run(session_id)
        poco.set_state_patch(session_id, {"current_step": "Reading"})
        poco.add_assistant_text(session_id, "looking around")
        await dingtalk_api.wait_for(lambda: "looking around" in texts_to(dingtalk_api)[-1], 10)
        poco.finish_run(session_id, "completed")
        await dingtalk_api.wait_for(
            lambda: any("completed.\n" in t for t in texts_to(dingtalk_api)), timeout=10
        )
    assert dingtalk_api.cards.calls == []
    assert not any("running" in t for t in texts_to(dingtalk_api))


@pytest.mark.parametrize("refused", ["create", "stream"])
async def test_a_403_on_the_progress_card_breaks_nothing(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path, refused: str
) -> None:
    if refused == "create":  # no card at all, and no text instead of it
        denied = {"code": "Forbidden.AccessDenied.AccessTokenPermissionDenied", "message": "no"}
        dingtalk_api.fail_next("card_create", 403, denied)
    else:  # the app may create cards but not stream into them: the first state only
        dingtalk_api.cards.scopes.discard(STREAMING_WRITE)
    async with run_agent(progress_env(data_dir, dingtalk_api, poco)):
        await say(dingtalk_api, "/new summarise the README")
        session_id = list(poco.sessions)[-1]
        poco.start_run(session_id)
        await dingtalk_api.wait_for(lambda: dingtalk_api.cards.calls != [], timeout=10)
        poco.set_state_patch(session_id, {"current_step": "step 1"})
        poco.add_assistant_text(session_id, "halfway there")
        await dingtalk_api.wait_for(lambda: "halfway there" in texts_to(dingtalk_api)[-1], 10)
        # That chat's progress for the run is given up, not retried.
        await until(given_up)
        poco.set_state_patch(session_id, {"current_step": "step 2"})
        poco.finish_run(session_id, "completed")
        await dingtalk_api.wait_for(
            lambda: any("completed.\n" in t for t in texts_to(dingtalk_api)), timeout=10
        )
    cards = dingtalk_api.cards
    if refused == "create":
        assert cards.calls == [("POST", "/v1.0/card/instances/createAndDeliver")]
        assert cards.cards == {}
    else:
        [card] = cards.to(STAFF)
        assert len(card.stream_calls) == 1 and card.streams == []
    assert not any("running" in t for t in texts_to(dingtalk_api))
