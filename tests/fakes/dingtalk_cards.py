"""The fake DingTalk's interactive cards: the card OpenAPI and presses over the Stream.

Shapes from DingTalk's card docs and the dingtalk-stream SDK (card_replier.py,
card_callback.py):

* `POST /v1.0/card/instances/createAndDeliver` {cardTemplateId, outTrackId, callbackType
  (STREAM | HTTP), cardData: {cardParamMap: {name: string}}, openSpaceId
  (`dtv1.card//IM_GROUP.<openConversationId>` | `dtv1.card//IM_ROBOT.<userId>`),
  imGroupOpenSpaceModel / imRobotOpenSpaceModel {supportForward, lastMessageI18n},
  imGroupOpenDeliverModel {robotCode} / imRobotOpenDeliverModel {spaceType: IM_ROBOT,
  robotCode}, userIdType} -> {success, result: {outTrackId, deliverResults: [{spaceType,
  spaceId, success, errorMsg, carrierId}]}}.
* `POST /v1.0/card/instances` (create, not delivered) -> {success, result}.
* `PUT /v1.0/card/instances` {outTrackId, cardData, privateData, cardUpdateOptions:
  {updateCardDataByKey}} -> {success, result: true}.
* `PUT /v1.0/card/streaming` {outTrackId, guid, key, content, isFull, isFinalize,
  isError} -> {success, result: true}.
* All with `x-acs-dingtalk-access-token`; without the app permission, 403
  {code: Forbidden.AccessDenied.AccessTokenPermissionDenied, message, requestid,
  accessdenieddetail: {requiredScopes: [...]}}.
* A press: a CALLBACK frame on topic `/v1.0/card/instances/callback` whose data has the
  SDK's CardCallbackMessage fields: {extension (JSON string), corpId, type:
  actionCallback, userId, userIdType, spaceType, spaceId, outTrackId, content (JSON
  string) {"cardPrivateData": {"actionIds": [...], "params": {...}}}}.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from tests.fakes.dingtalk import FakeDingTalk

CARD_TOPIC = "/v1.0/card/instances/callback"
TEMPLATE_ID = "fake-card-template.schema"
INSTANCE_WRITE = "Card.Instance.Write"
STREAMING_WRITE = "Card.Streaming.Write"
PERMISSION_MESSAGE = (
    "没有调用该接口的权限，接口权限申请参考：https://open.dingtalk.com/document/orgapp-server/"
    "add-api-permission"
)


@dataclass
class FakeCard:
    """One card instance as the fake holds it."""

    out_track_id: str
    template_id: str
    space_id: str = ""  # openSpaceId; "" until delivered
    callback_type: str = ""
    data: dict[str, str] = field(default_factory=dict)  # public cardParamMap as it stands
    body: dict[str, Any] = field(default_factory=dict)  # the create request
    updates: list[dict[str, Any]] = field(default_factory=list)  # PUT bodies, in order
    streams: list[dict[str, Any]] = field(default_factory=list)  # streaming PUT bodies
    # When each streaming PUT reached the fake (monotonic), refused ones too.
    stream_calls: list[float] = field(default_factory=list)
    finalized: bool = False
    at: float = field(default_factory=time.monotonic)
    updated_at: float = 0.0

    @property
    def options(self) -> list[dict[str, str]]:
        return list(json.loads(self.data.get("options") or "[]"))

    @property
    def space_type(self) -> str:
        return self.space_id.removeprefix("dtv1.card//").split(".", 1)[0]

    @property
    def space(self) -> str:
        """The conversation id (group) or user id (1:1) the card went to."""
        return self.space_id.removeprefix("dtv1.card//").split(".", 1)[-1]


class FakeCards:
    """Card state and routes of a FakeDingTalk (see the module docstring)."""

    def __init__(self, fake: FakeDingTalk) -> None:
        self.fake = fake
        self.templates = {TEMPLATE_ID}
        self.scopes = {INSTANCE_WRITE, STREAMING_WRITE}  # the app's permissions
        self.cards: dict[str, FakeCard] = {}
        self.calls: list[tuple[str, str]] = []  # (method, path) of every card API request
        self.press_acks: dict[str, float] = {}  # stream messageId -> monotonic time of the ACK
        self.press_ack_frames: dict[str, dict[str, Any]] = {}
        self._presses: set[str] = set()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1.0/card/instances/createAndDeliver", self._create_and_deliver)
        app.router.add_post("/v1.0/card/instances", self._create)
        app.router.add_put("/v1.0/card/instances", self._update)
        app.router.add_put("/v1.0/card/streaming", self._streaming)

    # -- test controls -------------------------------------------------------------------

    def delivered(self) -> list[FakeCard]:
        return [card for card in self.cards.values() if card.space_id]

    def to(self, space: str) -> list[FakeCard]:
        """Cards delivered to a conversation (group) or user (1:1), oldest first."""
        return [card for card in self.delivered() if card.space == space]

    async def press(
        self,
        card: FakeCard,
        *,
        action_id: str = "",
        label: str | None = None,
        params: dict[str, Any] | None = None,
        user_id: str = "staff-1",
        action_ids: list[str] | None = None,
    ) -> str:
        """A user taps a button: by default the card's option with `action_id` (or
        `label`), whose object the template sends as `params`. Returns the messageId."""
        if params is None:
            option = next(
                (
                    o
                    for o in card.options
                    if (action_id and o["actionId"] == action_id) or o["label"] == label
                ),
                None,
            )
            assert option is not None, f"no button {action_id or label} on {card.options}"
            params, action_id = dict(option), option["actionId"]
        content = {
            "cardPrivateData": {
                "actionIds": action_ids if action_ids is not None else [action_id],
                "params": params,
            }
        }
        data = {
            "extension": json.dumps({}),
            "corpId": "dingcorp",
            "type": "actionCallback",
            "userId": user_id,
            "userIdType": 1,
            "spaceType": card.space_type,
            "spaceId": card.space,
            "outTrackId": card.out_track_id,
            "content": json.dumps(content, ensure_ascii=False),
        }
        return await self.push_callback(data)

    async def push_callback(self, data: dict[str, Any]) -> str:
        message_id = f"card{uuid.uuid4().hex[:12]}"
        self._presses.add(message_id)
        await self.fake.push_raw(self.fake._frame("CALLBACK", CARD_TOPIC, message_id, data))
        return message_id

    def note_ack(self, message_id: str, frame: dict[str, Any]) -> bool:
        """An ACK frame from the client: True when it confirms a press."""
        if message_id not in self._presses:
            return False
        self.press_acks.setdefault(message_id, time.monotonic())
        self.press_ack_frames.setdefault(message_id, frame)
        return True

    # -- handlers ------------------------------------------------------------------------

    async def _checked(self, request: web.Request, route: str, scope: str) -> web.Response | None:
        self.calls.append((request.method, request.path))
        await self.fake.notify()
        if (denied := await self.fake._check_token(request)) is not None:
            return denied
        if (failure := self.fake._injected(route)) is not None:
            return failure
        if scope not in self.scopes:
            return web.json_response(
                {
                    "code": "Forbidden.AccessDenied.AccessTokenPermissionDenied",
                    "requestid": uuid.uuid4().hex,
                    "message": PERMISSION_MESSAGE,
                    "accessdenieddetail": {"requiredScopes": [scope]},
                },
                status=403,
            )
        return None

    def _new_card(self, body: dict[str, Any]) -> FakeCard | web.Response:
        template = body.get("cardTemplateId", "")
        out_track_id = body.get("outTrackId", "")
        params = (body.get("cardData") or {}).get("cardParamMap")
        if not template:
            return self.fake._bad_request("param.cardTemplateIdEmpty")
        if template not in self.templates:
            return web.json_response(
                {
                    "code": "invalidParameter.cardTemplate.notFound",
                    "message": "不存在的卡片模板",
                    "requestid": uuid.uuid4().hex,
                },
                status=400,
            )
        if not out_track_id:
            return self.fake._bad_request("param.outTrackIdEmpty")
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            return self.fake._bad_request("cardParamMap values must be strings")
        return FakeCard(
            out_track_id,
            template,
            callback_type=body.get("callbackType", ""),
            data=dict(params),
            body=body,
        )

    def _deliver_to(self, body: dict[str, Any]) -> str | web.Response:
        """The openSpaceId, if its deliver model is right; else the 400."""
        space_id = str(body.get("openSpaceId", ""))
        if space_id.startswith("dtv1.card//IM_GROUP."):
            model = body.get("imGroupOpenDeliverModel") or {}
            if model.get("robotCode") != self.fake.robot_code:
                return self.fake._bad_request("imGroupOpenDeliverModel.robotCode is wrong")
        elif space_id.startswith("dtv1.card//IM_ROBOT."):
            model = body.get("imRobotOpenDeliverModel") or {}
            if model.get("spaceType") != "IM_ROBOT":
                return self.fake._bad_request("imRobotOpenDeliverModel.spaceType is missing")
        else:
            return self.fake._bad_request("param.openSpaceModelInvalid")
        return space_id

    async def _create_and_deliver(self, request: web.Request) -> web.Response:
        if (refused := await self._checked(request, "card_create", INSTANCE_WRITE)) is not None:
            return refused
        body = await request.json()
        card = self._new_card(body)
        if isinstance(card, web.Response):
            return card
        space_id = self._deliver_to(body)
        if isinstance(space_id, web.Response):
            return space_id
        card.space_id = space_id
        self.cards[card.out_track_id] = card
        await self.fake.notify()
        delivered = {
            "spaceType": card.space_type,
            "spaceId": card.space,
            "success": True,
            "carrierId": uuid.uuid4().hex,
        }
        return web.json_response(
            {
                "success": True,
                "result": {"outTrackId": card.out_track_id, "deliverResults": [delivered]},
            }
        )

    async def _create(self, request: web.Request) -> web.Response:
        if (refused := await self._checked(request, "card_create", INSTANCE_WRITE)) is not None:
            return refused
        card = self._new_card(await request.json())
        if isinstance(card, web.Response):
            return card
        self.cards[card.out_track_id] = card
        return web.json_response({"success": True, "result": card.out_track_id})

    async def _update(self, request: web.Request) -> web.Response:
        if (refused := await self._checked(request, "card_update", INSTANCE_WRITE)) is not None:
            return refused
        body = await request.json()
        card = self.cards.get(body.get("outTrackId", ""))
        if card is None:
            return self.fake._bad_request("card instance not found")
        params = (body.get("cardData") or {}).get("cardParamMap") or {}
        if not all(isinstance(v, str) for v in params.values()):
            return self.fake._bad_request("cardParamMap values must be strings")
        by_key = (body.get("cardUpdateOptions") or {}).get("updateCardDataByKey", False)
        card.data = {**card.data, **params} if by_key else dict(params)
        card.updates.append(body)
        card.updated_at = time.monotonic()
        await self.fake.notify()
        return web.json_response({"success": True, "result": True})

    async def _streaming(self, request: web.Request) -> web.Response:
        body = await request.json()
        card = self.cards.get(body.get("outTrackId", ""))
        if card is not None:
            card.stream_calls.append(time.monotonic())
        refused = await self._checked(request, "card_streaming", STREAMING_WRITE)
        if refused is not None:
            return refused
        if card is None:
            return self.fake._bad_request("card instance not found")
        if not body.get("guid") or not body.get("key"):
            return self.fake._bad_request("guid and key are required")
        card.streams.append(body)
        # The streamed variable shows `content`: whole (isFull) or appended.
        key, content = str(body["key"]), str(body.get("content", ""))
        card.data[key] = content if body.get("isFull") else card.data.get(key, "") + content
        card.finalized = card.finalized or bool(body.get("isFinalize"))
        card.updated_at = time.monotonic()
        await self.fake.notify()
        return web.json_response({"success": True, "result": True})
