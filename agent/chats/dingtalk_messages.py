"""DingTalk robot messages (a Stream CALLBACK frame's data, or a webhook body) as
InboundMessages: who wrote what in which chat, and the route to answer it by."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from dingtalk_stream import ChatbotMessage

from agent.chats.base import Attachment, InboundMessage
from agent.chats.dingtalk_files import message_files
from agent.chats.dingtalk_route import SessionWebhookPolicy
from agent.chats.dingtalk_send import NAME

log = logging.getLogger(__name__)

_LEADING_MENTION = re.compile(r"^\s*@\S+")


def to_inbound(
    data: dict[str, Any], session_webhooks: SessionWebhookPolicy, now: float | None = None
) -> InboundMessage | None:
    """A robot message (the CALLBACK frame's data) as an InboundMessage, or None to ignore.

    Its sessionWebhook is kept only when `session_webhooks` trusts it, with the expiry capped.
    """
    now = time.time() if now is None else now
    robot = ChatbotMessage.from_dict(data)
    if robot.chatbot_user_id and robot.sender_id == robot.chatbot_user_id:
        return None  # the robot's own message
    is_group = robot.conversation_type == "2"
    if is_group and not robot.is_in_at_list:
        return None  # DingTalk group messages count only when the robot is @-mentioned
    files: tuple[Attachment, ...] = ()
    if robot.message_type == "text":
        text = _LEADING_MENTION.sub("", robot.text.content or "", count=1).strip() or "/help"
    else:
        files, text = message_files(str(robot.message_type), data.get("content") or {})
        text = _LEADING_MENTION.sub("", text, count=1).strip()
        if robot.message_type == "richText" and not files:
            text = text or "/help"  # rich text without pictures is text
    unsupported = not text and not files
    session_webhook = str(robot.session_webhook or "")
    expires_at = session_webhooks.expires_at(robot.session_webhook_expired_time or 0, now)
    if session_webhook and not session_webhooks.accepts(session_webhook):
        log.warning(
            "DingTalk message %s names a sessionWebhook outside DingTalk's hosts; not used",
            robot.message_id,
        )
        session_webhook, expires_at = "", 0.0
    created_ms = robot.create_at
    return InboundMessage(
        provider=NAME,
        key=f"{NAME}:{robot.message_id}",
        chat_id=str(robot.conversation_id),
        text=text,
        message_id=str(robot.message_id),
        sender_id=str(robot.sender_staff_id or robot.sender_id or ""),
        sender_name=str(robot.sender_nick or ""),
        is_group=is_group,
        route={
            "conversation_type": str(robot.conversation_type or ""),
            "sender_staff_id": str(robot.sender_staff_id or ""),
            "session_webhook": session_webhook,
            "session_webhook_expires_at": expires_at,  # epoch seconds
            "robot_code": str(robot.robot_code or ""),
        },
        unsupported=unsupported,
        received_at=created_ms / 1000.0 if isinstance(created_ms, int | float) else now,
        attachments=files,
    )
