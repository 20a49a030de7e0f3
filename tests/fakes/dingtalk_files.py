"""The fake DingTalk's files: robot messages carrying them, and the file download API.

As DingTalk documents them (open.dingtalk.com "机器人接收消息" and "下载机器人接收消息的
文件内容"):
* msgtype `picture`: content `{downloadCode, pictureDownloadCode}`; `file`: `{downloadCode,
  fileName, spaceId, fileId}`; `audio`: `{downloadCode, duration (ms), recognition}` (its
  speech recognised by DingTalk); `video`: `{downloadCode, duration, videoType}`;
  `richText`: `{richText: [{text}, {type: "picture", downloadCode, pictureDownloadCode}]}`.
  Groups deliver only pictures and rich text to a robot (no audio, file or video).
* `POST /v1.0/robot/messageFiles/download` {downloadCode, robotCode} with the access token
  header -> `{downloadUrl}`, a temporary link (here `/oss/<token>` on this server).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

CHUNK = 64 * 1024


class FileDownloads:
    """Mixed into FakeDingTalk (which provides the token check, `push_message`, ...)."""

    media: dict[str, bytes]
    file_downloads: list[str]  # downloadCodes exchanged for a link
    fetched: list[str]  # downloadCodes whose content was fetched

    def _init_files(self) -> None:
        self.media = {}
        self.file_downloads = []
        self.fetched = []
        self._links: dict[str, tuple[str, float]] = {}  # link token -> (downloadCode, expiry)

    def add_media(self, content: bytes) -> str:
        """Store a file a user sent; its downloadCode."""
        code = f"mIofN{uuid.uuid4().hex}=="
        self.media[code] = content
        return code

    def media_content(self, msgtype: str, content: bytes, **fields: Any) -> dict[str, Any]:
        """The `content` of a picture, file, audio or video message carrying `content`."""
        code = self.add_media(content)
        if msgtype == "picture":
            return {"downloadCode": code, "pictureDownloadCode": f"pic{code}"}
        if msgtype == "file":
            return {
                "downloadCode": code,
                "fileName": fields.get("file_name", "file.bin"),
                "spaceId": "25112461",
                "fileId": uuid.uuid4().hex[:11],
            }
        if msgtype == "audio":
            result = {"downloadCode": code, "duration": fields.get("duration", 4000)}
            if "recognition" in fields:
                result["recognition"] = fields["recognition"]
            return result
        if msgtype == "video":
            return {"downloadCode": code, "duration": 8000, "videoType": "mp4"}
        raise ValueError(f"no file in a {msgtype} message")

    def rich_text(self, *items: str | bytes) -> dict[str, Any]:
        """A richText content: each str is a text item, each bytes a picture."""
        parts: list[dict[str, Any]] = []
        for item in items:
            if isinstance(item, bytes):
                code = self.add_media(item)
                parts.append(
                    {"type": "picture", "downloadCode": code, "pictureDownloadCode": f"pic{code}"}
                )
            else:
                parts.append({"text": item})
        return {"richText": parts}

    async def push_file(
        self, conversation_id: str, msgtype: str, content: bytes, **fields: Any
    ) -> str:
        """A picture, file, audio or video message; returns its msgId."""
        media = self.media_content(msgtype, content, **fields)
        options = {k: v for k, v in fields.items() if k not in ("file_name", "recognition")}
        options.pop("duration", None)
        return str(
            await self.push_message(  # type: ignore[attr-defined]
                conversation_id, "", msgtype=msgtype, content=media, **options
            )
        )

    # ---- OpenAPI -----------------------------------------------------------------------

    async def _message_file(self, request: web.Request) -> web.Response:
        if (denied := await self._check_token(request)) is not None:  # type: ignore[attr-defined]
            return denied
        if (failure := self._injected("download")) is not None:  # type: ignore[attr-defined]
            return failure
        body = await request.json()
        if body.get("robotCode") != self.robot_code:  # type: ignore[attr-defined]
            return self._bad_request("robotCode is wrong")  # type: ignore[attr-defined,no-any-return]
        code = str(body.get("downloadCode") or "")
        if code not in self.media:
            return self._bad_request("downloadCode is invalid")  # type: ignore[attr-defined,no-any-return]
        token = uuid.uuid4().hex
        self._links[token] = (code, time.time() + 3600)
        self.file_downloads.append(code)
        await self.notify()  # type: ignore[attr-defined]
        return web.json_response({"downloadUrl": f"{self.url}/oss/{token}"})  # type: ignore[attr-defined]

    async def _oss(self, request: web.Request) -> web.StreamResponse:
        code, expiry = self._links.get(request.match_info["token"], ("", 0.0))
        if not code or expiry < time.time():
            body = "<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>"
            return web.Response(status=403, text=body, content_type="application/xml")
        content = self.media[code]
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = len(content)
        await response.prepare(request)
        for start in range(0, len(content), CHUNK):
            await response.write(content[start : start + CHUNK])
        await response.write_eof()
        self.fetched.append(code)
        await self.notify()  # type: ignore[attr-defined]
        return response
