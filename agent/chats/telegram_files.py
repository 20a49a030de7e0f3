"""Telegram files: inbound ones through getFile and the file URL, documents out through a
streamed sendDocument.

Both stream: PTB reads a download or an upload whole into memory, so the bytes go through
our own httpx client (same proxy as PTB's), chunk by chunk. The Bot API serves files up to
20 MB to a bot and takes documents up to 50 MB from one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from telegram import Bot

from agent.chats.base import Attachment, ChatRef, IncomingFile, OutgoingFile
from agent.chats.telegram_errors import call
from agent.config import TelegramSettings
from agent.errors import (
    ChatMoved,
    DeliveryError,
    FileTooLarge,
    PermanentDeliveryError,
    RetryLater,
)
from agent.multipart import MultipartBody

PROVIDER = "telegram"
GET_FILE_LIMIT = 20 * 1024 * 1024  # getFile: "up to 20 MB in size"
SEND_DOCUMENT_LIMIT = 50 * 1024 * 1024  # sendDocument: "up to 50 MB in size"
CHUNK = 64 * 1024
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
# After the last byte of an upload Telegram may take a while to answer.
UPLOAD_TIMEOUT = httpx.Timeout(READ_TIMEOUT, read=120.0, connect=CONNECT_TIMEOUT)
MESSAGE_LIMIT = 200


class _Download:
    """An inbound file as it streams from Telegram's file URL."""

    def __init__(self, name: str, content_type: str, size: int | None, response: Any) -> None:
        self.name, self.content_type, self.size = name, content_type, size
        self._response: httpx.Response = response

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes(CHUNK):
                yield chunk
        except httpx.HTTPError as exc:
            # Not an httpx error any more: whoever consumes the stream (an upload to the
            # backend) must not take it for a failure of its own request.
            message = f"Telegram file download failed: {_describe(exc)}"
            raise RetryLater(message, provider=PROVIDER) from exc


class TelegramFiles:
    """Fetches and sends files for TelegramProvider; close it with `aclose()`."""

    def __init__(self, settings: TelegramSettings) -> None:
        self._token = settings.token
        self._api = settings.api_base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            proxy=settings.proxy_url or None,
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    @asynccontextmanager
    async def open(self, bot: Bot, attachment: Attachment) -> AsyncIterator[IncomingFile]:
        """getFile, then the file URL, streamed. FileTooLarge over the Bot API's 20 MB."""
        if attachment.size is not None and attachment.size > GET_FILE_LIMIT:
            raise FileTooLarge("Telegram hands bots files up to 20 MB", limit=GET_FILE_LIMIT)
        try:
            file = await call(bot.get_file(attachment.ref), self._token)
        except PermanentDeliveryError as exc:
            if "file is too big" in str(exc).lower():
                raise FileTooLarge(str(exc), limit=GET_FILE_LIMIT) from exc
            raise
        if not file.file_path:
            raise PermanentDeliveryError("getFile gave no file_path", provider=PROVIDER)
        url = file.file_path  # PTB makes it the full file URL
        if not url.startswith(("http://", "https://")):
            url = f"{self._api}/file/bot{self._token}/{url}"
        try:
            async with self._http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise _status_error(response.status_code, "file download")
                length = response.headers.get("Content-Length")
                size = int(length) if length and length.isdigit() else file.file_size
                yield _Download(attachment.name, attachment.mime_type, size, response)
        except httpx.HTTPError as exc:  # opening the stream (its reads raise RetryLater)
            message = self._mask(f"file download: {_describe(exc)}")
            raise RetryLater(message, provider=PROVIDER) from exc

    async def send_document(self, chat: ChatRef, file: OutgoingFile) -> str:
        """sendDocument with the file streamed; the new message's id."""
        if file.size is not None and file.size > SEND_DOCUMENT_LIMIT:
            raise FileTooLarge("Telegram takes documents up to 50 MB", limit=SEND_DOCUMENT_LIMIT)
        fields = {"chat_id": chat.chat_id}
        if file.caption:
            fields["caption"] = file.caption
        if chat.route.get("thread_id"):
            fields["message_thread_id"] = str(chat.route["thread_id"])
        body = MultipartBody(
            "document", file.name, file.content_type, file.chunks, size=file.size, fields=fields
        )
        url = f"{self._api}/bot{self._token}/sendDocument"
        try:
            response = await self._http.post(
                url, content=body, headers=body.headers, timeout=UPLOAD_TIMEOUT
            )
        except httpx.HTTPError as exc:
            message = self._mask(f"sendDocument: {_describe(exc)}")
            raise RetryLater(message, provider=PROVIDER) from exc
        return self._result(response)

    def _result(self, response: httpx.Response) -> str:
        try:
            data = response.json()
        except (ValueError, json.JSONDecodeError):
            raise _status_error(response.status_code, "sendDocument") from None
        if isinstance(data, dict) and data.get("ok"):
            return str(data["result"]["message_id"])
        data = data if isinstance(data, dict) else {}
        description = self._mask(str(data.get("description") or "no description"))
        parameters = data.get("parameters") or {}
        status = int(data.get("error_code") or response.status_code)
        if parameters.get("migrate_to_chat_id"):
            raise ChatMoved(
                description, provider=PROVIDER, new_chat_id=str(parameters["migrate_to_chat_id"])
            )
        if status == 429:
            retry_after = float(parameters.get("retry_after") or 1)
            raise RetryLater(description, provider=PROVIDER, retry_after=retry_after)
        if status == 413:
            raise FileTooLarge(description, limit=SEND_DOCUMENT_LIMIT)
        raise _status_error(status, f"sendDocument: {description}")

    def _mask(self, text: str) -> str:
        text = " ".join(text.split())[:MESSAGE_LIMIT]
        return text.replace(self._token, "***") if self._token else text


def _status_error(status: int, what: str) -> DeliveryError:
    message = f"{what}: HTTP {status}"
    if status == 429 or status >= 500:
        return RetryLater(message, provider=PROVIDER)
    return PermanentDeliveryError(message, provider=PROVIDER)


def _describe(exc: httpx.HTTPError) -> str:
    return str(exc) or type(exc).__name__
