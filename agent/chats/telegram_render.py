"""An OutboundMessage as Telegram wants it: text parts with entities, and a keyboard.

Markdown goes through telegramify-markdown into plain text plus entities, so Telegram
never answers "can't parse entities"; the text is split at line boundaries in UTF-16
units (Telegram's measure) and each part keeps the entities that fall in it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import telegramify_markdown
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, MessageEntity, ReplyParameters

from agent.chats.base import Button, OutboundMessage
from agent.chats.text import (
    TELEGRAM_CALLBACK_DATA_LIMIT,
    TELEGRAM_TEXT_LIMIT,
    split_text,
    utf16_len,
)
from agent.errors import PermanentDeliveryError

LINK_SCHEMES = ("http://", "https://", "tg://")
PROVIDER = "telegram"

log = logging.getLogger(__name__)
Part = tuple[str, list[MessageEntity]]
# Code (fenced blocks, then inline spans): kept as written, everything else may be escaped.
_CODE = re.compile(r"(```.*?(?:```|\Z)|`[^`\n]*`)", re.DOTALL)


def render(message: OutboundMessage) -> list[Part]:
    """Markdown → plain text + entities (never a parse error), split at line boundaries."""
    text, entities = message.text, []
    if message.markdown:
        try:
            text, converted = telegramify_markdown.convert(_literal_angles(message.text))
        except Exception:  # a renderer bug must not lose the message
            log.warning("Markdown rendering failed; sending plain text", exc_info=True)
        else:
            entities = [_entity(e) for e in converted if _usable(e)]
    parts: list[Part] = []
    start = 0
    for chunk in split_text(text, TELEGRAM_TEXT_LIMIT, measure=utf16_len):
        size = utf16_len(chunk)
        if chunk.strip():  # Telegram rejects a blank message
            parts.append((chunk, _clip(entities, start, start + size)))
        start += size
    return parts


def _literal_angles(markdown: str) -> str:
    """`<` outside code as a Markdown escape: the converter drops inline HTML, which would
    eat placeholders like `/new <task>` and an agent's `List<String>` or `<div>`."""
    pieces = _CODE.split(markdown)
    return "".join(
        piece if index % 2 else piece.replace("<", "\\<") for index, piece in enumerate(pieces)
    )


def _usable(entity: telegramify_markdown.MessageEntity) -> bool:
    return entity.type != "text_link" or (entity.url or "").startswith(LINK_SCHEMES)


def _entity(entity: telegramify_markdown.MessageEntity) -> MessageEntity:
    return MessageEntity(
        entity.type, entity.offset, entity.length, url=entity.url, language=entity.language
    )


def _clip(entities: list[MessageEntity], start: int, end: int) -> list[MessageEntity]:
    """The entities overlapping [start, end), cut to it and made relative to `start`."""
    clipped = []
    for entity in entities:
        low, high = max(entity.offset, start), min(entity.offset + entity.length, end)
        if high > low:
            clipped.append(
                MessageEntity(
                    entity.type, low - start, high - low, url=entity.url, language=entity.language
                )
            )
    return clipped


def keyboard(rows: Sequence[Sequence[Button]]) -> InlineKeyboardMarkup | None:
    if not rows:
        return None
    for row in rows:
        for button in row:
            if len(button.data.encode()) > TELEGRAM_CALLBACK_DATA_LIMIT:
                raise PermanentDeliveryError(
                    f"button data over {TELEGRAM_CALLBACK_DATA_LIMIT} bytes: {button.data!r}",
                    provider=PROVIDER,
                )
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=b.data) for b in row] for row in rows]
    )


def reply_parameters(message_id: str) -> ReplyParameters | None:
    if not message_id:
        return None
    # A deleted original must not make the answer undeliverable.
    return ReplyParameters(int(message_id), allow_sending_without_reply=True)
