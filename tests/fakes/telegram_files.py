"""The fake Telegram's files: messages carrying them, getFile, downloads and sendDocument.

As the Bot API documents them (https://core.telegram.org/bots/api):
* a photo message has `photo`, an array of PhotoSize (smallest first), an optional
  `caption`; the photos of an album share a `media_group_id`, one update each;
* document, audio, voice, video and video_note messages carry that object with
  `file_id`, `file_unique_id`, `file_size` and (some) `file_name`, `mime_type`, `duration`;
* `getFile` -> File `{file_id, file_unique_id, file_size, file_path}`; over 20 MB it is
  400 "Bad Request: file is too big"; then `GET <base>/file/bot<token>/<file_path>`;
* `sendDocument` takes a multipart upload (field `document`, up to 50 MB, else 413
  "Request Entity Too Large") or a file_id, and answers a Message with `document`.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

from aiohttp import web

GET_FILE_LIMIT = 20 * 1024 * 1024
SEND_DOCUMENT_LIMIT = 50 * 1024 * 1024
CHUNK = 64 * 1024


class FileApi:
    """Mixed into FakeTelegram (which provides `_chat`, `_message_id`, `inject_raw`, ...)."""

    files: dict[str, dict[str, Any]]
    documents: list[dict[str, Any]]
    downloads: list[str]

    def _init_files(self) -> None:
        self.files = {}  # file_id -> {content, file_unique_id, file_path}
        self.documents = []  # sendDocument calls that succeeded: chat_id, file_name, sha256...
        self.downloads = []  # file_ids whose content was downloaded

    # ---- test side ---------------------------------------------------------------------

    def add_file(self, content: bytes, *, suffix: str = "") -> dict[str, Any]:
        """Store a file as Telegram would; its `file_id`, `file_unique_id`, `file_size`."""
        unique = uuid.uuid4().hex[:16]
        file_id = f"BQAC{uuid.uuid4().hex}"
        self.files[file_id] = {
            "content": content,
            "file_unique_id": unique,
            "file_path": f"documents/file_{len(self.files)}{suffix}",
        }
        return {"file_id": file_id, "file_unique_id": unique, "file_size": len(content)}

    def inject_photo(
        self,
        chat_id: int,
        content: bytes,
        *,
        caption: str | None = None,
        media_group_id: str | None = None,
        file_size: bool = True,
    ) -> int:
        """A photo: three sizes as Telegram sends them, the largest being `content`."""
        sizes = []
        for width, data in ((90, content[:64]), (320, content[:512]), (1280, content)):
            ref = self.add_file(data, suffix=".jpg")
            if not file_size:
                ref.pop("file_size")
            sizes.append({**ref, "width": width, "height": width * 3 // 4})
        return self._inject_media(chat_id, "photo", sizes, caption, media_group_id)

    def inject_file(
        self,
        chat_id: int,
        kind: str,
        content: bytes,
        *,
        file_name: str | None = None,
        mime_type: str | None = None,
        caption: str | None = None,
        duration: int | None = None,
        announced_size: int | None = None,
        media_group_id: str | None = None,
        chat_type: str = "private",
    ) -> int:
        """A document, audio, voice, video or video_note message."""
        suffix = "." + file_name.rsplit(".", 1)[-1] if file_name and "." in file_name else ""
        ref = self.add_file(content, suffix=suffix)
        if announced_size is not None:
            ref["file_size"] = announced_size
        if file_name and kind in ("document", "audio", "video", "animation"):
            ref["file_name"] = file_name
        if mime_type and kind != "video_note":
            ref["mime_type"] = mime_type
        if kind in ("audio", "voice", "video", "video_note"):
            ref["duration"] = duration or 3
        if kind in ("video", "video_note"):
            ref.update(width=640, height=480) if kind == "video" else ref.update(length=240)
        return self._inject_media(chat_id, kind, ref, caption, media_group_id, chat_type)

    def _inject_media(
        self,
        chat_id: int,
        kind: str,
        media: Any,
        caption: str | None,
        media_group_id: str | None,
        chat_type: str = "private",
    ) -> int:
        chat = self._chat(chat_id, chat_type)  # type: ignore[attr-defined]
        message: dict[str, Any] = {
            "message_id": self._message_id(chat_id),  # type: ignore[attr-defined]
            "from": {"id": abs(chat_id), "is_bot": False, "first_name": "User"},
            "chat": chat,
            "date": int(time.time()),
            kind: media,
        }
        if caption is not None:
            message["caption"] = caption
        if media_group_id is not None:
            message["media_group_id"] = media_group_id
        self.messages[(chat_id, message["message_id"])] = message  # type: ignore[attr-defined]
        return int(self.inject_raw({"message": message}))  # type: ignore[attr-defined]

    # ---- Bot API -----------------------------------------------------------------------

    async def _api_getfile(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = str(params.get("file_id") or "")
        stored = self.files.get(file_id)
        if stored is None:
            raise _error(400, "Bad Request: invalid file_id")
        size = len(stored["content"])
        if size > GET_FILE_LIMIT:
            raise _error(400, "Bad Request: file is too big")
        return {
            "file_id": file_id,
            "file_unique_id": stored["file_unique_id"],
            "file_size": size,
            "file_path": stored["file_path"],
        }

    async def _download(self, request: web.Request) -> web.StreamResponse:
        """GET /file/bot<token>/<file_path>: the content, streamed."""
        path = request.match_info["path"]
        found = next(
            (fid for fid, f in self.files.items() if f["file_path"] == path),
            None,
        )
        if request.match_info["token"] != self.token or found is None:  # type: ignore[attr-defined]
            return web.json_response(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
            )
        content = self.files[found]["content"]
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = len(content)
        await response.prepare(request)
        for start in range(0, len(content), CHUNK):
            await response.write(content[start : start + CHUNK])
        await response.write_eof()
        self.downloads.append(found)
        self._notify()  # type: ignore[attr-defined]
        return response

    async def _api_senddocument(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._check_chat(params)  # type: ignore[attr-defined]
        document = params.get("document")
        if isinstance(document, str):
            stored = self.files.get(document)
            if stored is None:
                raise _error(400, "Bad Request: wrong file identifier/HTTP URL specified")
            content, name, mime = stored["content"], "document", "application/octet-stream"
        elif document is not None and hasattr(document, "file"):
            content = document.file.read()
            name = document.filename or "document"
            mime = document.content_type or "application/octet-stream"
        else:
            raise _error(400, "Bad Request: there is no document in the request")
        if len(content) > SEND_DOCUMENT_LIMIT:
            raise _error(413, "Request Entity Too Large")
        ref = self.add_file(content)
        caption = str(params.get("caption") or "")
        message = {
            "message_id": self._message_id(chat_id),  # type: ignore[attr-defined]
            "date": int(time.time()),
            "chat": self._chat(chat_id),  # type: ignore[attr-defined]
            "from": {"id": self.bot_id, "is_bot": True, "first_name": "Poco"},  # type: ignore[attr-defined]
            "document": {**ref, "file_name": name, "mime_type": mime},
        }
        if caption:
            message["caption"] = caption
        self.documents.append(
            {
                "chat_id": chat_id,
                "file_name": name,
                "mime_type": mime,
                "size": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
                "caption": caption,
                "message_id": message["message_id"],
                "at": time.monotonic(),
            }
        )
        return message


def _error(status: int, description: str) -> Exception:
    from tests.fakes.telegram import ApiError  # the module that mixes this class in

    return ApiError(status, description)
