"""DingTalk files: the attachments of a robot message, and their download.

A picture, file, audio or video message carries a `downloadCode` in its `content`; a
richText message a list of text and picture items. `POST /v1.0/robot/messageFiles/download`
with the code and the robot code gives a temporary link, read as a stream. An audio message
also carries DingTalk's own speech recognition (`content.recognition`).
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from agent.chats.base import Attachment, ChatRef, IncomingFile
from agent.chats.dingtalk_send import NAME, DingTalkSender, describe
from agent.config import DingTalkSettings
from agent.errors import PermanentDeliveryError, RetryLater

log = logging.getLogger(__name__)

FILE_TYPES = ("picture", "file", "audio", "video")
DOWNLOAD_PATH = "/v1.0/robot/messageFiles/download"
# DingTalk sets no limit of its own for a robot; IM_MAX_FILE_MB does.
MAX_DOWNLOAD_BYTES = 2 * 1024 * 1024 * 1024
CHUNK = 64 * 1024
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30)
DEFAULT_NAMES = {"picture": "image", "voice": "voice", "video": "video", "file": "file"}


def message_files(msgtype: str, content: dict[str, Any]) -> tuple[tuple[Attachment, ...], str]:
    """(attachments, text) of a non-text robot message: a richText's text items joined, a
    media message's file. Nothing for a type that carries neither."""
    if msgtype == "richText":
        texts: list[str] = []
        files: list[Attachment] = []
        for item in content.get("richText") or []:
            if not isinstance(item, dict):
                continue
            if item.get("downloadCode"):
                files.append(Attachment("picture", str(item["downloadCode"])))
            elif isinstance(item.get("text"), str):
                texts.append(item["text"])
        return tuple(files), "".join(texts).strip()
    code = content.get("downloadCode")
    if msgtype not in FILE_TYPES or not code:
        return (), ""
    name = str(content.get("fileName") or "")
    if msgtype == "video" and content.get("videoType"):
        name = f"video.{content['videoType']}"
    if msgtype == "audio":  # a recorded voice message, with DingTalk's recognition
        transcript = str(content.get("recognition") or "").strip()
        return (Attachment("voice", str(code), name=name, transcript=transcript),), ""
    return (Attachment(msgtype, str(code), name=name),), ""


class _Download:
    def __init__(self, name: str, content_type: str, size: int | None, response: Any) -> None:
        self.name, self.content_type, self.size = name, content_type, size
        self._response: aiohttp.ClientResponse = response

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(CHUNK):
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryLater(
                f"DingTalk file download failed: {describe(exc)}", provider=NAME
            ) from exc


class DingTalkFiles:
    """Downloads for DingTalkProvider, over its HTTP session and its sender's token."""

    def __init__(
        self,
        settings: DingTalkSettings,
        http: Callable[[], aiohttp.ClientSession],
        sender: DingTalkSender,
    ) -> None:
        self.settings = settings
        self._http = http
        self._sender = sender

    @asynccontextmanager
    async def open(self, chat: ChatRef, attachment: Attachment) -> AsyncIterator[IncomingFile]:
        settings = self.settings
        if not (settings.client_id and settings.client_secret):
            raise PermanentDeliveryError(
                "downloading a DingTalk file needs DINGTALK_CLIENT_ID/SECRET", provider=NAME
            )
        robot_code = settings.robot_code or chat.route.get("robot_code") or settings.client_id
        body = {"downloadCode": attachment.ref, "robotCode": robot_code}
        data = await self._sender.openapi("POST", DOWNLOAD_PATH, body)
        url = str(data.get("downloadUrl") or "")
        if not url:
            raise PermanentDeliveryError(f"{DOWNLOAD_PATH} gave no downloadUrl", provider=NAME)
        try:
            async with self._http().get(url, timeout=DOWNLOAD_TIMEOUT) as response:
                if response.status != 200:
                    kind = RetryLater if response.status >= 500 else PermanentDeliveryError
                    raise kind(f"DingTalk file link: HTTP {response.status}", provider=NAME)
                content_type = response.content_type or "application/octet-stream"
                name = attachment.name or _default_name(attachment.kind, content_type)
                yield _Download(name, content_type, response.content_length, response)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryLater(f"DingTalk file link: {describe(exc)}", provider=NAME) from exc


def _default_name(kind: str, content_type: str) -> str:
    extension = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ""
    if content_type == "application/octet-stream":
        extension = {"picture": ".jpg", "voice": ".amr"}.get(kind, "")
    return DEFAULT_NAMES.get(kind, "file") + extension
