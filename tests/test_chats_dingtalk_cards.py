"""DingTalk cards at the provider: prompts out as cards (or text after a card error), card
updates, presses in over the Stream, against the fake DingTalk."""

from __future__ import annotations

import json
from typing import Any

import pytest
from dingtalk_stream import CallbackMessage
from dingtalk_stream.card_callback import CardCallbackMessage

from agent.chats.base import Button, ChatRef, OutboundMessage
from agent.chats.dingtalk import DingTalkProvider
from agent.chats.dingtalk_cards import CARD_CALLBACK_TOPIC, card_params, press_from_callback
from agent.errors import RetryLater
from tests.fakes.dingtalk import FakeDingTalk
from tests.fakes.dingtalk_cards import INSTANCE_WRITE, TEMPLATE_ID, FakeCard
from tests.test_chats_dingtalk import Sink, _inbound, _private_chat, running, settings_for

PROMPT = OutboundMessage(
    "❓ *Demo* asks:\n\nWhich format?\n1. Bullets\n2. Prose\n\nReply with the option number.",
    buttons=(
        (Button("Bullets", "ans:7:0:0", "option_1"),),
        (Button("Prose", "ans:7:0:1", "option_2"),),
    ),
)


@pytest.fixture
def sink(dingtalk_api: FakeDingTalk) -> Sink:
    return Sink(dingtalk_api)


@pytest.fixture
def plain(dingtalk_api: FakeDingTalk) -> DingTalkProvider:
    return DingTalkProvider(settings_for(dingtalk_api), initial_backoff=0.05)


@pytest.fixture
def carded(dingtalk_api: FakeDingTalk) -> DingTalkProvider:
    settings = settings_for(dingtalk_api, card_template_id=TEMPLATE_ID)
    return DingTalkProvider(settings, initial_backoff=0.05)


async def private_chat(fake: FakeDingTalk) -> ChatRef:
    return _private_chat(await _inbound(fake, sender_staff_id="u42"))


# -- out -------------------------------------------------------------------------------


async def test_prompt_goes_as_a_card_in_the_contract_shape(
    dingtalk_api: FakeDingTalk, carded: DingTalkProvider
) -> None:
    out_track_id = await carded.send(await private_chat(dingtalk_api), PROMPT)
    group = ChatRef("dingtalk", "cid-group", True, {"robot_code": dingtalk_api.robot_code})
    group_card = await carded.send(group, PROMPT)
    await carded.close()

    assert dingtalk_api.sent == []  # no text
    card = dingtalk_api.cards.cards[out_track_id]
    assert card.template_id == TEMPLATE_ID and card.callback_type == "STREAM"
    assert card.space_id == "dtv1.card//IM_ROBOT.u42"
    assert card.body["imRobotOpenDeliverModel"]["spaceType"] == "IM_ROBOT"
    assert card.body["imRobotOpenSpaceModel"]["supportForward"] is False
    assert card.options == [
        {"label": "Bullets", "actionId": "option_1"},
        {"label": "Prose", "actionId": "option_2"},
    ]
    assert card.data["content"] == PROMPT.text
    assert card.data["title"] == "❓ Demo asks:"
    in_group = dingtalk_api.cards.cards[group_card]
    assert in_group.space_id == "dtv1.card//IM_GROUP.cid-group"
    assert in_group.body["imGroupOpenDeliverModel"] == {"robotCode": dingtalk_api.robot_code}
    assert out_track_id != group_card


@pytest.mark.parametrize("status", [403, 429, 500, 503])
async def test_a_card_error_sends_the_prompt_as_text(
    dingtalk_api: FakeDingTalk, carded: DingTalkProvider, status: int
) -> None:
    dingtalk_api.fail_next("card_create", status)
    await carded.send(await private_chat(dingtalk_api), PROMPT)
    await carded.close()
    [sent] = dingtalk_api.sent
    assert sent.route == "session_webhook" and sent.markdown["text"] == PROMPT.text
    assert dingtalk_api.cards.delivered() == []


async def test_without_the_permission_the_prompt_goes_as_text(
    dingtalk_api: FakeDingTalk, carded: DingTalkProvider, caplog: pytest.LogCaptureFixture
) -> None:
    dingtalk_api.cards.scopes.discard(INSTANCE_WRITE)
    await carded.send(await private_chat(dingtalk_api), PROMPT)
    await carded.close()
    assert [s.markdown["text"] for s in dingtalk_api.sent] == [PROMPT.text]
    assert "lacks the permission Card.Instance.Write" in caplog.text


async def test_no_template_no_card_call(
    dingtalk_api: FakeDingTalk, plain: DingTalkProvider, sink: Sink
) -> None:
    async with running(plain, sink):
        await plain.send(await private_chat(dingtalk_api), PROMPT)
        assert not await plain.edit(await private_chat(dingtalk_api), "poco_card_old", PROMPT)
        await dingtalk_api.cards.press(_fake_card(), action_id="option_1")  # pushed anyway
        await dingtalk_api.wait_for(lambda: len(dingtalk_api.cards.press_acks) == 1)
    assert sink.calls == 0
    assert dingtalk_api.cards.calls == []
    assert [s.markdown["text"] for s in dingtalk_api.sent] == [PROMPT.text]
    topics = [s["topic"] for s in dingtalk_api.open_calls[0]["subscriptions"]]
    assert CARD_CALLBACK_TOPIC not in topics


async def test_update_replaces_content_and_buttons_for_everyone(
    dingtalk_api: FakeDingTalk, carded: DingTalkProvider
) -> None:
    chat = await private_chat(dingtalk_api)
    out_track_id = await carded.send(chat, PROMPT)
    closed = OutboundMessage("❓ *Demo* asks:\n\nWhich format?\n\n✅ Answered: Prose")
    assert await carded.edit(chat, out_track_id, closed)
    card = dingtalk_api.cards.cards[out_track_id]
    assert card.options == [] and card.data["content"] == closed.text
    assert card.updates[-1]["cardUpdateOptions"] == {"updateCardDataByKey": True}
    # Not a card (a text prompt): not editable, the caller says it anew.
    assert not await carded.edit(chat, "", closed)
    assert not await carded.edit(chat, "processQueryKey123", closed)
    # A retryable failure is retried by the outbox; a refusal means "not editable".
    dingtalk_api.fail_next("card_update", 503)
    with pytest.raises(RetryLater):
        await carded.edit(chat, out_track_id, closed)
    dingtalk_api.cards.scopes.discard(INSTANCE_WRITE)
    assert not await carded.edit(chat, out_track_id, closed)
    await carded.close()
    assert len(card.updates) == 1


# -- in --------------------------------------------------------------------------------


async def test_press_is_journaled_then_acked_and_subscribed(
    dingtalk_api: FakeDingTalk, carded: DingTalkProvider, sink: Sink
) -> None:
    async with running(carded, sink):
        out_track_id = await carded.send(await private_chat(dingtalk_api), PROMPT)
        card = dingtalk_api.cards.cards[out_track_id]
        press = await dingtalk_api.cards.press(card, action_id="option_2", user_id="u42")
        await dingtalk_api.wait_for(lambda: press in dingtalk_api.cards.press_acks)
    [msg] = sink.messages
    assert msg.key == f"dingtalk:card:{press}" and msg.chat_id == ""
    assert (msg.message_id, msg.button_label, msg.button_action) == (
        out_track_id,
        "Prose",
        "option_2",
    )
    assert msg.sender_id == "u42" and msg.unresolved_press
    assert sink.returned_at[out_track_id] <= dingtalk_api.cards.press_acks[press]
    ack = dingtalk_api.cards.press_ack_frames[press]
    assert ack["code"] == 200 and json.loads(ack["data"]) == {"response": {}}
    topics = [s["topic"] for s in dingtalk_api.open_calls[0]["subscriptions"]]
    assert CARD_CALLBACK_TOPIC in topics


async def test_press_not_journaled_is_not_acked(
    dingtalk_api: FakeDingTalk, carded: DingTalkProvider, sink: Sink
) -> None:
    async with running(carded, sink):
        card = dingtalk_api.cards.cards[await carded.send(await private_chat(dingtalk_api), PROMPT)]
        sink.fail = True
        lost = await dingtalk_api.cards.press(card, action_id="option_1")
        await dingtalk_api.wait_for(lambda: sink.calls == 1)
        sink.fail = False
        later = await dingtalk_api.cards.press(card, action_id="option_2")
        await dingtalk_api.wait_for(lambda: later in dingtalk_api.cards.press_acks)
        assert lost not in dingtalk_api.cards.press_acks


async def test_press_on_a_card_not_ours_is_acked_and_ignored(
    dingtalk_api: FakeDingTalk, carded: DingTalkProvider, sink: Sink
) -> None:
    async with running(carded, sink):
        other = await dingtalk_api.cards.push_callback(
            _callback_data("someone_elses_card", {"label": "Yes", "actionId": "yes"})
        )
        garbled = await dingtalk_api.cards.push_callback(
            {"outTrackId": "poco_card_1", "content": "{not json"}
        )
        empty = await dingtalk_api.cards.push_callback(_callback_data("poco_card_2", {}, []))
        await dingtalk_api.wait_for(
            lambda: all(m in dingtalk_api.cards.press_acks for m in (other, garbled, empty))
        )
    assert sink.messages == [] and sink.calls == 0


def _fake_card() -> FakeCard:
    card = FakeCard("poco_card_old", TEMPLATE_ID, "dtv1.card//IM_ROBOT.u42")
    card.data["options"] = json.dumps([{"label": "Bullets", "actionId": "option_1"}])
    return card


def _callback_data(
    out_track_id: str, params: dict[str, Any], action_ids: list[str] | None = None
) -> dict[str, Any]:
    """What the SDK's CardCallbackMessage would carry for a press."""
    card = CardCallbackMessage()
    card.card_instance_id = out_track_id
    card.user_id = "u1"
    card.corp_id = "dingcorp"
    ids = action_ids if action_ids is not None else [params.get("actionId", "")]
    card.content = {"cardPrivateData": {"actionIds": ids, "params": params}}
    return dict(card.to_dict())


def _callback(data: dict[str, Any], message_id: str = "m1") -> CallbackMessage:
    return CallbackMessage.from_dict(
        {
            "specVersion": "1.0",
            "type": "CALLBACK",
            "headers": {"messageId": message_id, "topic": CARD_CALLBACK_TOPIC},
            "data": json.dumps(data),
        }
    )


@pytest.mark.parametrize(
    ("params", "action_ids", "label", "action"),
    [
        ({"label": "Prose", "actionId": "option_2"}, ["option_2"], "Prose", "option_2"),
        # A template whose loop buttons share one static actionId: params say which.
        ({"label": "Prose", "actionId": "option_2"}, ["select"], "Prose", "option_2"),
        # Only the actionId (no params bound): it names the option.
        ({}, ["approve"], "", "approve"),
    ],
)
def test_press_parsing_from_sdk_shapes(
    params: dict[str, Any], action_ids: list[str], label: str, action: str
) -> None:
    msg = press_from_callback(_callback(_callback_data("poco_card_ab", params, action_ids)))
    assert msg is not None
    assert (msg.message_id, msg.button_label, msg.button_action) == ("poco_card_ab", label, action)
    assert msg.key == "dingtalk:card:m1"


def test_card_params_are_strings_and_skip_unnamed_buttons() -> None:
    message = OutboundMessage("x", buttons=((Button("a", "d1", "option_1"), Button("b", "d2")),))
    params = card_params(message)
    assert all(isinstance(v, str) for v in params.values())
    assert json.loads(params["options"]) == [{"label": "a", "actionId": "option_1"}]
