"""DingTalk interactive cards: prompts as cards with buttons, and the presses on them.

A message with buttons (an input prompt) goes out as an instance of the user's template
(DINGTALK_CARD_TEMPLATE_ID) with `POST /v1.0/card/instances/createAndDeliver`: callback
type STREAM (presses come over the Stream connection the agent holds, topic
`/v1.0/card/instances/callback`), into the group's space `dtv1.card//IM_GROUP.<cid>` or
the 1:1 robot space `dtv1.card//IM_ROBOT.<userId>`. The template's variables
(cardParamMap, all strings):

* `title`: the first line, plain (also the chat list's preview);
* `content`: the prompt in markdown, with its answer once closed;
* `options`: a JSON array of `{"label", "actionId"}`, actionId `option_<n>` (n from 1),
  `approve`, `reject` or `submit` (a multi-select's send button); `[]` once the prompt
  is closed, so the buttons go.

An edit (`PUT /v1.0/card/instances`, public data by key) changes the card for everyone.

A run's progress goes out as a card of the same template (an AI card: `content` is its
streaming markdown variable), created on its first state with the Stop button in
`options` (actionId `stop`) and `flowStatus` "2" (inputting); each later state replaces
`content` whole with `PUT /v1.0/card/streaming` (key `content`, isFull true). The run's
last state is streamed with isFinalize true, then `flowStatus` becomes "3" (finished) and
`options` `[]` (the Stop button goes).
Each button sends its object as the press's `params` (and its actionId in `actionIds`):
a press becomes an InboundMessage naming the card (`message_id` = its outTrackId), the
label and the action id, without the chat; the journal finds the chat and the button
(store/queries.resolve_press) or drops a press on a card that is not ours.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from dingtalk_stream import CallbackMessage
from dingtalk_stream.card_callback import CardCallbackMessage
from dingtalk_stream.handlers import CallbackHandler

from agent.chats.base import ChatRef, InboundMessage, OutboundMessage
from agent.chats.dingtalk_send import NAME, TEXT_LIMIT, DingTalkSender, title_of
from agent.config import DingTalkSettings
from agent.errors import PermanentDeliveryError

log = logging.getLogger(__name__)

CARD_CALLBACK_TOPIC: str = CallbackHandler.TOPIC_CARD_CALLBACK  # /v1.0/card/instances/callback
CREATE_AND_DELIVER = "/v1.0/card/instances/createAndDeliver"
INSTANCES = "/v1.0/card/instances"  # POST: create only (doctor); PUT: update
# Our outTrackIds start so: a press on any other card is not ours.
CARD_ID_PREFIX = "poco_card_"
# A prompt longer than one message (a long plan) goes as text, in parts.
CARD_TEXT_LIMIT = TEXT_LIMIT
STREAMING = "/v1.0/card/streaming"
STREAMING_KEY = "content"
# The AI card's flowStatus: inputting while the run goes on, finished at its end.
FLOW_INPUTTING = "2"
FLOW_FINISHED = "3"


def is_card(message_id: str) -> bool:
    """A platform message id the agent gave a card it created."""
    return message_id.startswith(CARD_ID_PREFIX)


def card_params(message: OutboundMessage) -> dict[str, str]:
    """The template's variables for `message` (see the module docstring)."""
    options = [
        {"label": button.label, "actionId": button.action_id}
        for row in message.buttons
        for button in row
        if button.action_id
    ]
    return {
        "title": title_of(message.text),
        "content": message.text,
        "options": json.dumps(options, ensure_ascii=False),
    }


class DingTalkCards:
    """Creates and updates the agent's cards over the sender's OpenAPI client."""

    def __init__(self, settings: DingTalkSettings, sender: DingTalkSender) -> None:
        self.settings = settings
        self._sender = sender

    def carries(self, chat: ChatRef, message: OutboundMessage) -> bool:
        """A prompt with named buttons that fits one card, in a space a card can go to."""
        return (
            self.settings.cards_enabled
            and bool(self.settings.client_id and self.settings.client_secret)
            and any(button.action_id for row in message.buttons for button in row)
            and len(message.text) <= CARD_TEXT_LIMIT
            and self._space(chat) is not None
        )

    async def create(self, chat: ChatRef, message: OutboundMessage, flow_status: str = "") -> str:
        """Create and deliver the card; its outTrackId (the message id to edit later).
        Raises DeliveryError (RetryLater, PermanentDeliveryError) when it did not go."""
        space = self._space(chat)
        if space is None:
            raise PermanentDeliveryError("no card space for this chat", provider=NAME)
        out_track_id = CARD_ID_PREFIX + uuid.uuid4().hex
        params = card_params(message)
        if flow_status:
            params["flowStatus"] = flow_status
        body: dict[str, Any] = {
            "cardTemplateId": self.settings.card_template_id,
            "outTrackId": out_track_id,
            "callbackType": "STREAM",
            "cardData": {"cardParamMap": params},
            "userIdType": 1,
            **space,
        }
        preview = {"ZH_CN": params["title"], "EN_US": params["title"]}
        space_model = "imGroupOpenSpaceModel" if chat.is_group else "imRobotOpenSpaceModel"
        # Not forwardable: a forwarded copy would answer for the chat it came from.
        body[space_model] = {"supportForward": False, "lastMessageI18n": preview}
        data = await self._sender.openapi("POST", CREATE_AND_DELIVER, body)
        result = data.get("result")
        delivered_to = result.get("deliverResults") if isinstance(result, dict) else None
        for delivered in delivered_to or []:
            if isinstance(delivered, dict) and delivered.get("success") is False:
                raise PermanentDeliveryError(
                    f"card not delivered to {delivered.get('spaceType', '?')}: "
                    f"{delivered.get('errorMsg', '')}".strip(),
                    provider=NAME,
                )
        return out_track_id

    async def update(self, out_track_id: str, message: OutboundMessage) -> None:
        """Show `message` on the card for everyone (its buttons replaced by the message's)."""
        body = {
            "outTrackId": out_track_id,
            "cardData": {"cardParamMap": card_params(message)},
            "cardUpdateOptions": {"updateCardDataByKey": True},
            "userIdType": 1,
        }
        await self._sender.openapi("PUT", INSTANCES, body)

    def carries_progress(self, chat: ChatRef) -> bool:
        """Progress as a streamed card: cards are on and the chat has a card space."""
        return (
            self.settings.cards_enabled
            and bool(self.settings.client_id and self.settings.client_secret)
            and self._space(chat) is not None
        )

    async def create_progress(self, chat: ChatRef, message: OutboundMessage) -> str:
        """The run's progress card with its first state; its outTrackId."""
        out_track_id = await self.create(chat, message, flow_status=FLOW_INPUTTING)
        if message.final:  # the run ended before its card went out: finished at once
            await self.stream(out_track_id, message)
        return out_track_id

    async def stream(self, out_track_id: str, message: OutboundMessage) -> None:
        """Replace the progress card's content; the last state also finishes the card."""
        body = {
            "outTrackId": out_track_id,
            "guid": uuid.uuid4().hex,
            "key": STREAMING_KEY,
            "content": message.text,
            "isFull": True,
            "isFinalize": message.final,
            "isError": False,
        }
        await self._sender.openapi("PUT", STREAMING, body)
        if message.final:
            finished = {"flowStatus": FLOW_FINISHED, "options": "[]"}
            await self._sender.openapi(
                "PUT",
                INSTANCES,
                {
                    "outTrackId": out_track_id,
                    "cardData": {"cardParamMap": finished},
                    "cardUpdateOptions": {"updateCardDataByKey": True},
                    "userIdType": 1,
                },
            )

    def _space(self, chat: ChatRef) -> dict[str, Any] | None:
        """openSpaceId and deliver model of the chat: the group, or the 1:1 robot space of
        the user (its staff id, from the chat's last message)."""
        robot_code = (
            self.settings.robot_code or chat.route.get("robot_code") or self.settings.client_id
        )
        if chat.is_group:
            return {
                "openSpaceId": f"dtv1.card//IM_GROUP.{chat.chat_id}",
                "imGroupOpenDeliverModel": {"robotCode": robot_code},
            }
        staff_id = str(chat.route.get("sender_staff_id") or "")
        if not staff_id:
            return None
        return {
            "openSpaceId": f"dtv1.card//IM_ROBOT.{staff_id}",
            "imRobotOpenDeliverModel": {"spaceType": "IM_ROBOT", "robotCode": robot_code},
        }


def press_from_callback(callback: CallbackMessage) -> InboundMessage | None:
    """A press on one of our cards (the CALLBACK frame of CARD_CALLBACK_TOPIC), or None for
    anything else (another app's card, no button named, a malformed frame)."""
    try:
        card = CardCallbackMessage.from_dict(callback.data)
    except (TypeError, ValueError, AttributeError):
        log.info("DingTalk card callback %s unreadable; ignored", callback.headers.message_id)
        return None
    content = card.content if isinstance(card.content, dict) else {}
    private = content.get("cardPrivateData")
    private = private if isinstance(private, dict) else {}
    params = private.get("params")
    params = params if isinstance(params, dict) else {}
    action_ids = [str(a) for a in private.get("actionIds") or [] if a]
    label = str(params.get("label") or "")
    action = str(params.get("actionId") or (action_ids[0] if action_ids else ""))
    out_track_id = str(card.card_instance_id or "")
    if not is_card(out_track_id) or not (label or action):
        return None
    # The Stream messageId is the event's: a redelivery of it is recognised.
    event_id = str(callback.headers.message_id or uuid.uuid4().hex)
    return InboundMessage(
        provider=NAME,
        key=f"{NAME}:card:{event_id}",
        chat_id="",
        text="",
        message_id=out_track_id,
        sender_id=str(card.user_id or ""),
        button_label=label,
        button_action=action,
    )
