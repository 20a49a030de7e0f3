"""End to end: DingTalk prompts as interactive cards, answered by a press exactly once,
every chat's card updated, and today's text prompt whenever cards cannot serve."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.store.models import Inbound
from tests.conftest import agent_environment, run_agent
from tests.fakes.dingtalk import FakeDingTalk
from tests.fakes.dingtalk_cards import INSTANCE_WRITE, TEMPLATE_ID, FakeCard
from tests.fakes.poco import FakePoco
from tests.fakes.telegram import FakeTelegram
from tests.test_e2e_dingtalk import GROUP, say, texts_to
from tests.test_e2e_late_answers import ANSWER_ROUTE, SHORT_EXPIRY
from tests.test_e2e_telegram import say as tg_say
from tests.test_e2e_telegram import texts_to as tg_texts

STAFF = "staff-1"  # the private chat's user: 1:1 cards go to dtv1.card//IM_ROBOT.<userId>
TG_CHAT = 5005


def card_env(data_dir: Path, dingtalk: FakeDingTalk, poco: FakePoco, **more: object) -> dict:
    return agent_environment(
        data_dir,
        dingtalk=dingtalk,
        poco=poco,
        DINGTALK_CARD_TEMPLATE_ID=TEMPLATE_ID,
        **more,  # type: ignore[arg-type]
    )


async def asked(
    fake: FakeDingTalk,
    poco: FakePoco,
    options: list[str],
    expires_in: float = 600,
    **kwargs: object,
) -> tuple[str, FakeCard]:
    """A bound private chat whose session asks "Which?": (request id, its card)."""
    await say(fake, "/new ask me")
    session_id = list(poco.sessions)[-1]
    poco.start_run(session_id)
    before = len(fake.cards.to(STAFF))
    request_id = poco.add_question(session_id, "Which?", options, expires_in=expires_in, **kwargs)
    await fake.wait_for(lambda: len(fake.cards.to(STAFF)) > before, timeout=10)
    return request_id, fake.cards.to(STAFF)[-1]


async def closed(fake: FakeDingTalk, card: FakeCard, needle: str) -> None:
    """Wait until `card` shows `needle` with its buttons gone."""
    await fake.wait_for(lambda: card.options == [] and needle in card.data["content"], 10)


def answers_posted(poco: FakePoco) -> int:
    return poco.count("POST", ANSWER_ROUTE)


async def test_single_select_by_button_exactly_once(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(card_env(data_dir, dingtalk_api, poco)):
        request_id, card = await asked(dingtalk_api, poco, ["Bullets", "Prose"])
        assert card.callback_type == "STREAM" and card.template_id == TEMPLATE_ID
        assert card.options == [
            {"label": "Bullets", "actionId": "option_1"},
            {"label": "Prose", "actionId": "option_2"},
        ]
        assert "1. Bullets" in card.data["content"]  # typed numbers work beside the buttons
        texts_before = len(texts_to(dingtalk_api))

        press = await dingtalk_api.cards.press(card, action_id="option_2")
        await poco.wait_for(lambda p: p.input_requests[request_id].get("answers"), 10)
        assert poco.input_requests[request_id]["answers"] == {"Which?": "Prose"}
        await closed(dingtalk_api, card, "Answered: Prose")
        assert press in dingtalk_api.cards.press_acks
        assert Inbound.get(Inbound.key == f"dingtalk:card:{press}").chat_id == "cid-private-1"

        # A second press (the card had not changed yet on that phone), and the number typed
        # afterwards: "already answered", and nothing more reaches the backend.
        await dingtalk_api.cards.press(card, params={"label": "Bullets", "actionId": "option_1"})
        await dingtalk_api.wait_for(lambda: len(texts_to(dingtalk_api)) > texts_before, 10)
        assert "already answered in this chat" in texts_to(dingtalk_api)[-1]
        assert "already answered" in await say(dingtalk_api, "1")
        assert answers_posted(poco) == 1
        assert poco.input_requests[request_id]["answers"] == {"Which?": "Prose"}
        assert not any("Answer sent" in t for t in texts_to(dingtalk_api))


async def test_multi_select_by_buttons(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(card_env(data_dir, dingtalk_api, poco)):
        request_id, card = await asked(
            dingtalk_api, poco, ["Red", "Green", "Blue"], multi_select=True
        )
        assert [o["actionId"] for o in card.options] == [
            "option_1",
            "option_2",
            "option_3",
            "submit",
        ]
        await dingtalk_api.cards.press(card, action_id="option_1")
        await dingtalk_api.wait_for(lambda: "☑️ Red" in card.data["content"], 10)
        await dingtalk_api.cards.press(card, action_id="option_3")
        await dingtalk_api.wait_for(lambda: "☑️ Blue" in card.data["content"], 10)
        await dingtalk_api.cards.press(card, action_id="submit")
        await poco.wait_for(lambda p: p.input_requests[request_id].get("answers"), 10)
        assert poco.input_requests[request_id]["answers"] == {"Which?": "Red, Blue"}
        await closed(dingtalk_api, card, "Answered: Red, Blue")


async def test_plan_approved_by_button_in_a_group(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(card_env(data_dir, dingtalk_api, poco)):
        await say(dingtalk_api, "@Poco /new plan it", GROUP, conversation_type="2", at_bot=True)
        session_id = list(poco.sessions)[-1]
        poco.start_run(session_id)
        plan = poco.add_input_request(
            session_id, "ExitPlanMode", {"plan": "1. read\n2. write"}, expires_in=600
        )
        await dingtalk_api.wait_for(lambda: len(dingtalk_api.cards.to(GROUP)) == 1, 10)
        [card] = dingtalk_api.cards.to(GROUP)
        assert card.space_id == f"dtv1.card//IM_GROUP.{GROUP}"
        assert card.body["imGroupOpenDeliverModel"]["robotCode"] == dingtalk_api.robot_code
        assert [o["actionId"] for o in card.options] == ["approve", "reject"]
        # Anyone in the group may press; the label names the option.
        await dingtalk_api.cards.press(card, label="✅ Approve", user_id="staff-9")
        await poco.wait_for(lambda p: p.input_requests[plan].get("answers"), 10)
        assert poco.input_requests[plan]["answers"] == {"approved": "true"}
        await closed(dingtalk_api, card, "Answered: approved")


async def test_answered_in_telegram_first_updates_the_card(
    telegram_api: FakeTelegram, dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = card_env(data_dir, dingtalk_api, poco, telegram=telegram_api)
    async with run_agent(env):
        await say(dingtalk_api, "/new shared")
        session_id = list(poco.sessions)[-1]
        await tg_say(telegram_api, TG_CHAT, f"/watch {session_id}")
        poco.start_run(session_id)
        request_id = poco.add_question(session_id, "Which?", ["Bullets", "Prose"])
        await dingtalk_api.wait_for(lambda: len(dingtalk_api.cards.to(STAFF)) == 1, 10)
        await telegram_api.wait_for(
            lambda f: any("Which?" in t for t in tg_texts(f, TG_CHAT)), timeout=10
        )
        [card] = dingtalk_api.cards.to(STAFF)
        prompt = next(m for m in telegram_api.sent if "Which?" in (m["text"] or ""))
        button = prompt["reply_markup"]["inline_keyboard"][1][0]["callback_data"]
        telegram_api.inject_callback(TG_CHAT, prompt["message_id"], button)
        await closed(dingtalk_api, card, "Answered: Prose")
        # The DingTalk copy pressed late: told where it was answered, nothing posted.
        before = len(texts_to(dingtalk_api))
        await dingtalk_api.cards.press(card, params={"label": "Bullets", "actionId": "option_1"})
        await dingtalk_api.wait_for(lambda: len(texts_to(dingtalk_api)) > before, 10)
        assert "already answered" in texts_to(dingtalk_api)[-1]
        assert "Telegram" in texts_to(dingtalk_api)[-1]
        assert answers_posted(poco) == 1
        assert poco.input_requests[request_id]["answers"] == {"Which?": "Prose"}


@pytest.mark.parametrize("how", ["web", "expired"])
async def test_closed_elsewhere_or_expired_updates_the_card(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path, how: str
) -> None:
    async with run_agent(card_env(data_dir, dingtalk_api, poco)):
        expires_in = 600 if how == "web" else SHORT_EXPIRY
        request_id, card = await asked(dingtalk_api, poco, ["Bullets", "Prose"], expires_in)
        if how == "web":
            poco.answer_from_web(request_id, {"Which?": "Prose"})
            await closed(dingtalk_api, card, "This request was answered")
        else:
            await closed(dingtalk_api, card, "This request expired")
        # A press on it now is told so and posts nothing.
        before = len(texts_to(dingtalk_api))
        await dingtalk_api.cards.press(card, params={"label": "Bullets", "actionId": "option_1"})
        await dingtalk_api.wait_for(lambda: len(texts_to(dingtalk_api)) > before, 10)
        assert ("already answered" if how == "web" else "expired") in texts_to(dingtalk_api)[-1]
        assert answers_posted(poco) == 0


async def test_typed_number_answers_beside_the_card(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(card_env(data_dir, dingtalk_api, poco)):
        request_id, card = await asked(dingtalk_api, poco, ["Bullets", "Prose"])
        assert "Answer sent" in await say(dingtalk_api, "2")
        assert poco.input_requests[request_id]["answers"] == {"Which?": "Prose"}
        await closed(dingtalk_api, card, "Answered: Prose")


async def test_card_refused_403_sends_the_text_prompt(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    dingtalk_api.cards.scopes.discard(INSTANCE_WRITE)
    async with run_agent(card_env(data_dir, dingtalk_api, poco)):
        await say(dingtalk_api, "/new ask me")
        session_id = list(poco.sessions)[-1]
        poco.start_run(session_id)
        request_id = poco.add_question(session_id, "Which?", ["Bullets", "Prose"])
        await dingtalk_api.wait_for(
            lambda: any("Which?" in t for t in texts_to(dingtalk_api)), timeout=10
        )
        prompt = next(t for t in texts_to(dingtalk_api) if "Which?" in t)
        assert "1. Bullets" in prompt and "option number" in prompt
        assert dingtalk_api.cards.delivered() == []
        assert ("POST", "/v1.0/card/instances/createAndDeliver") in dingtalk_api.cards.calls
        assert "Answer sent" in await say(dingtalk_api, "2")
        assert poco.input_requests[request_id]["answers"] == {"Which?": "Prose"}
        # The web answers a second one: the text prompt cannot be edited, a line says so.
        second = poco.add_question(session_id, "And?", ["A", "B"])
        await dingtalk_api.wait_for(lambda: any("And?" in t for t in texts_to(dingtalk_api)), 10)
        poco.answer_from_web(second, {"And?": "A"})
        await dingtalk_api.wait_for(
            lambda: "This request was answered" in texts_to(dingtalk_api)[-1], 10
        )


async def test_no_template_means_no_card_api_call(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco)):
        await say(dingtalk_api, "/new ask me")
        session_id = list(poco.sessions)[-1]
        poco.start_run(session_id)
        request_id = poco.add_question(session_id, "Which?", ["Bullets", "Prose"])
        await dingtalk_api.wait_for(
            lambda: any("Which?" in t for t in texts_to(dingtalk_api)), timeout=10
        )
        assert "Answer sent" in await say(dingtalk_api, "1")
        assert poco.input_requests[request_id]["answers"] == {"Which?": "Bullets"}
    assert dingtalk_api.cards.calls == []


async def test_card_update_retried_and_unknown_card_ignored(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(card_env(data_dir, dingtalk_api, poco)):
        request_id, card = await asked(dingtalk_api, poco, ["Bullets", "Prose"])
        # A card of ours the agent does not know (another install's, or long pruned).
        stranger = FakeCard("poco_card_unknown", TEMPLATE_ID, card.space_id, data=card.data)
        unknown = await dingtalk_api.cards.press(stranger, action_id="option_1")
        await dingtalk_api.wait_for(lambda: unknown in dingtalk_api.cards.press_acks, 10)
        dingtalk_api.fail_next("card_update", 503)
        await dingtalk_api.cards.press(card, action_id="option_1")
        await closed(dingtalk_api, card, "Answered: Bullets")
        assert len(card.updates) == 1  # the 503 was not applied; the retry was
        assert poco.input_requests[request_id]["answers"] == {"Which?": "Bullets"}
        assert answers_posted(poco) == 1
        assert not Inbound.select().where(Inbound.key == f"dingtalk:card:{unknown}").exists()


async def test_press_updates_the_card_without_waiting_for_a_poll(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    # Polls far apart: the card appears right after one, and the next is 3 s away (the
    # outbox rescans every 5 s). A press must get the card changed before either, not
    # wait for them (a button answer has no reply that would wake delivery).
    slow = {
        "POLL_SESSION_MESSAGES_INTERVAL_SECONDS": "3",
        "POLL_USER_INPUT_INTERVAL_SECONDS": "30",
        "POLL_SESSIONS_RECENT_INTERVAL_SECONDS": "30",
    }
    async with run_agent(card_env(data_dir, dingtalk_api, poco, **slow)):
        await say(dingtalk_api, "/new ask me")
        session_id = list(poco.sessions)[-1]
        poco.start_run(session_id)
        poco.add_question(session_id, "Which?", ["Bullets", "Prose"], expires_in=600)
        await dingtalk_api.wait_for(lambda: len(dingtalk_api.cards.to(STAFF)) == 1, 15)
        [card] = dingtalk_api.cards.to(STAFF)
        await dingtalk_api.cards.press(card, action_id="option_1")
        await dingtalk_api.wait_for(lambda: card.options == [], timeout=2)
