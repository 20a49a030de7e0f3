"""Telegram updates as InboundMessages: texts, button presses, and a group's move."""

from __future__ import annotations

import logging
import re

from telegram import CallbackQuery, Message, Update
from telegram.constants import ChatType

from agent.chats.base import InboundMessage

PROVIDER = "telegram"
COMMAND_MENTION = re.compile(r"(/[A-Za-z0-9_]+)@([A-Za-z0-9_]+)(.*)", re.DOTALL)

log = logging.getLogger(__name__)


def to_inbound(update: Update, bot_username: str) -> InboundMessage | None:
    """The update as the journal stores it, or None when there is nothing to handle."""
    key = f"{PROVIDER}:{update.update_id}"
    if update.callback_query is not None:
        return _from_callback(key, update.callback_query)
    message = update.message or update.edited_message
    if message is None:
        return None
    if message.migrate_to_chat_id or message.migrate_from_chat_id:
        return _chat_moved(key, message)
    if message.text is None:
        if message.effective_attachment is None:
            return None  # a service message (member joined, pin...): nothing to answer
        return _from_message(key, message, message.caption or "", unsupported=True)
    text = addressed(message.text, bot_username)
    return None if text is None else _from_message(key, message, text)


def addressed(text: str, bot_username: str) -> str | None:
    """`/cmd@OurBot args` → `/cmd args`; None for a command meant for another bot."""
    match = COMMAND_MENTION.match(text)
    if match is None:
        return text
    if match[2].lower() != bot_username.lower():
        return None
    return match[1] + match[3]


def _from_message(
    key: str, message: Message, text: str, *, unsupported: bool = False
) -> InboundMessage:
    sender = message.from_user
    reply = message.reply_to_message
    route = {"thread_id": message.message_thread_id} if message.is_topic_message else {}
    return InboundMessage(
        provider=PROVIDER,
        key=key,
        chat_id=str(message.chat.id),
        text=text,
        message_id=str(message.message_id),
        sender_id=str(sender.id) if sender else "",
        sender_name=(sender.username or sender.full_name) if sender else "",
        is_group=message.chat.type in (ChatType.GROUP, ChatType.SUPERGROUP),
        reply_to_message_id=str(reply.message_id) if reply else "",
        route=route,
        unsupported=unsupported,
    )


def _chat_moved(key: str, message: Message) -> InboundMessage:
    """The service message of a group upgraded to a supergroup (Telegram sends one in each:
    `migrate_to_chat_id` in the old group, `migrate_from_chat_id` in the new supergroup)."""
    if message.migrate_to_chat_id:
        old, new = message.chat.id, message.migrate_to_chat_id
    else:
        old, new = message.migrate_from_chat_id or 0, message.chat.id
    log.info(
        "Telegram group %s is now supergroup %s: its chat state follows "
        "(an IM_ALLOWLIST entry telegram:%s needs telegram:%s instead)",
        old,
        new,
        old,
        new,
    )
    return InboundMessage(
        provider=PROVIDER, key=key, chat_id=str(old), text="", is_group=True, moved_to=str(new)
    )


def _from_callback(key: str, query: CallbackQuery) -> InboundMessage:
    message = query.message
    chat = message.chat if message is not None else None
    return InboundMessage(
        provider=PROVIDER,
        key=key,
        chat_id=str(chat.id if chat else query.from_user.id),
        text="",
        message_id=str(message.message_id) if message else "",
        sender_id=str(query.from_user.id),
        sender_name=query.from_user.username or query.from_user.full_name,
        is_group=chat is not None and chat.type in (ChatType.GROUP, ChatType.SUPERGROUP),
        callback_data=query.data or "",
        callback_id=query.id,
    )
