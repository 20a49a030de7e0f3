"""Telegram updates as InboundMessages: texts, files, button presses, and a group's move."""

from __future__ import annotations

import logging
import re

from telegram import CallbackQuery, Message, Update
from telegram.constants import ChatType

from agent.chats.base import Attachment, InboundMessage

PROVIDER = "telegram"
# What a file message carries, checked in this order (a GIF has `animation` and `document`).
FILE_KINDS = ("animation", "video", "video_note", "audio", "voice", "document")
DEFAULT_NAMES = {
    "animation": ("animation.mp4", "video/mp4"),
    "video": ("video.mp4", "video/mp4"),
    "video_note": ("video_note.mp4", "video/mp4"),
    "audio": ("audio.mp3", "audio/mpeg"),
    "voice": ("voice.ogg", "audio/ogg"),
    "document": ("document", "application/octet-stream"),
}
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
        caption = addressed(message.caption or "", bot_username)
        files = attachments(message)
        if caption is None or not files:  # another bot's command; a sticker, a poll...
            return _from_message(key, message, message.caption or "", unsupported=True)
        return _from_message(key, message, caption, files=files)
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


def attachments(message: Message) -> tuple[Attachment, ...]:
    """The message's file: a photo's largest size, or its document, audio, voice..."""
    if message.photo:
        largest = message.photo[-1]  # sizes come smallest first
        return (
            Attachment(
                "photo",
                largest.file_id,
                name=f"photo_{largest.file_unique_id}.jpg",  # Telegram re-encodes as JPEG
                mime_type="image/jpeg",
                size=largest.file_size,
                unique_id=largest.file_unique_id,
            ),
        )
    for kind in FILE_KINDS:
        media = getattr(message, kind)
        if media is None:
            continue
        name, mime = DEFAULT_NAMES[kind]
        return (
            Attachment(
                kind,
                media.file_id,
                name=getattr(media, "file_name", None) or name,
                mime_type=getattr(media, "mime_type", None) or mime,
                size=media.file_size,
                unique_id=media.file_unique_id,
            ),
        )
    return ()


def _from_message(
    key: str,
    message: Message,
    text: str,
    *,
    unsupported: bool = False,
    files: tuple[Attachment, ...] = (),
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
        attachments=files,
        media_group_id=(message.media_group_id or "") if files else "",
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
