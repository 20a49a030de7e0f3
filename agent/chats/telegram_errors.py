"""Telegram's failures as agent.errors: PTB's request kept quiet, its errors mapped and short.

A gateway error (502/504) comes from Telegram's nginx front as an HTML page. PTB's
`BaseRequest.parse_json_payload` logs every unparsable body with a full traceback at ERROR
before raising `NetworkError`; for a transient outage that is one traceback per retry. Our
request class raises the same error without that log, and our loops write one short line.
"""

from __future__ import annotations

import datetime as dtm
import json
from collections.abc import Awaitable
from typing import TypeVar

from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.request import HTTPXRequest

from agent.errors import ChatMoved, PermanentDeliveryError, ProviderConflict, RetryLater

PROVIDER = "telegram"
TOKEN_RETRY_DELAY = 60.0
# PTB appends the whole unparsable body to the message ("... Parsing the server response
# b'<html>...' failed"): a status line is enough.
_PARSE_FAILURE = ". Parsing the server response"
MESSAGE_LIMIT = 200

T = TypeVar("T")


class QuietRequest(HTTPXRequest):
    """PTB's HTTPX transport, minus the ERROR traceback for a non-JSON answer."""

    @staticmethod
    def parse_json_payload(payload: bytes) -> dict[str, object]:
        try:
            data = json.loads(payload.decode("utf-8", "replace"))
        except ValueError as exc:
            # PTB turns this into NetworkError("Bad Gateway (502). ...") for an error status.
            raise TelegramError("Invalid server response") from exc
        if not isinstance(data, dict):
            raise TelegramError("Invalid server response")
        return data


def short(exc: TelegramError, token: str) -> str:
    """The error's message on one line, without the bot token or an HTML body."""
    text = exc.message.split(_PARSE_FAILURE, 1)[0]
    text = " ".join(text.split())[:MESSAGE_LIMIT]
    return text.replace(token, "***") if token else text


def seconds(value: float | dtm.timedelta) -> float:
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


async def call(awaitable: Awaitable[T], token: str) -> T:
    """Await a Bot call, turning PTB's errors into agent.errors."""
    try:
        return await awaitable
    except RetryAfter as exc:
        raise RetryLater(
            "Telegram flood control", provider=PROVIDER, retry_after=seconds(exc.retry_after)
        ) from exc
    except ChatMigrated as exc:
        # A group became a supergroup: same chat, new id. Not a failure of the message.
        raise ChatMoved(
            "group chat was upgraded to a supergroup chat",
            provider=PROVIDER,
            new_chat_id=str(exc.new_chat_id),
        ) from exc
    except Conflict as exc:
        raise ProviderConflict(short(exc, token), provider=PROVIDER) from exc
    except InvalidToken as exc:
        # Not the message's fault: keep it until the token is fixed.
        raise RetryLater(
            "token rejected", provider=PROVIDER, retry_after=TOKEN_RETRY_DELAY
        ) from exc
    except (Forbidden, BadRequest) as exc:
        raise PermanentDeliveryError(short(exc, token), provider=PROVIDER) from exc
    except NetworkError as exc:  # TimedOut and 5xx too; BadRequest was caught above
        raise RetryLater(short(exc, token), provider=PROVIDER) from exc
    except TelegramError as exc:
        raise PermanentDeliveryError(short(exc, token), provider=PROVIDER) from exc


def is_entity_error(exc: PermanentDeliveryError) -> bool:
    return "can't parse entities" in str(exc).lower()


# What Telegram answers an edit of a message that is gone (deleted) or too old to edit.
GONE_ERRORS = ("message to edit not found", "message can't be edited", "message_id_invalid")


def is_gone_error(exc: PermanentDeliveryError) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in GONE_ERRORS)
