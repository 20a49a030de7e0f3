"""The backend's file routes (mixed into BackendClient): attachments, transcription and the
session workspace, plus the download of a workspace file from its presigned URL.

- `POST /attachments/upload` (both generations) takes a multipart `file` and answers an
  InputFile, passed back verbatim in `POST /tasks` `config.input_files`. Without S3 it is
  code 50201; over MAX_UPLOAD_SIZE_MB a 413 with code 413.
- `POST /audio/transcriptions` exists from April 2026 on (BackendRouteMissing before);
  without an OpenAI key it is 40000.
- `GET /sessions/{id}/workspace/files` is a tree of nodes, `[]` until the workspace was
  exported after a run. Each file has a presigned `url` into the object store: it is
  fetched without our backend headers (the internal token never leaves for S3).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from agent.errors import BackendRejected, BackendUnavailable, FileTooLarge
from agent.multipart import MultipartBody

CHUNK = 64 * 1024
# The backend stores an upload in S3 before it answers: give it time after the last byte.
UPLOAD_TIMEOUT = httpx.Timeout(30.0, read=180.0)
DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
CODE_TOO_LARGE = 413  # the upload route's own code for "File too large. Max N MB."


@dataclass(frozen=True)
class WorkspaceFile:
    """A file of a session's workspace, as the listing gives it."""

    path: str
    name: str
    size: int | None
    url: str
    mime_type: str

    @classmethod
    def from_node(cls, node: dict[str, Any]) -> WorkspaceFile:
        meta = node.get("oss_meta") if isinstance(node.get("oss_meta"), dict) else {}
        size = (meta or {}).get("size")
        return cls(
            path=str(node.get("path") or ""),
            name=str(node.get("name") or ""),
            size=int(size) if isinstance(size, int | float) else None,
            url=str(node.get("url") or ""),
            mime_type=str(node.get("mimeType") or ""),
        )


def flatten(nodes: Any) -> list[WorkspaceFile]:
    """Every file of a node tree, in the listing's order (folders first, by name)."""
    files: list[WorkspaceFile] = []
    for node in nodes if isinstance(nodes, list) else []:
        if not isinstance(node, dict):
            continue
        if node.get("type") == "folder":
            files.extend(flatten(node.get("children")))
        elif node.get("type") == "file":
            files.append(WorkspaceFile.from_node(node))
    return files


class RemoteFile:
    """A workspace file streaming from the object store."""

    def __init__(self, name: str, content_type: str, size: int | None, response: Any) -> None:
        self.name, self.content_type, self.size = name, content_type, size
        self._response: httpx.Response = response

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes(CHUNK):
                yield chunk
        except httpx.HTTPError as exc:
            # Not an httpx error any more: the platform upload reading this stream must not
            # take it for a failure of its own request.
            raise BackendUnavailable(f"workspace file download failed: {exc!r}") from exc


class FileRoutes:
    """Mixed into BackendClient, which provides `_call`."""

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: AsyncIterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        http_timeout: httpx.Timeout | None = None,
    ) -> Any:
        raise NotImplementedError

    async def upload_attachment(
        self, name: str, content_type: str, chunks: AsyncIterable[bytes], size: int | None
    ) -> dict[str, Any]:
        """Stream a file to the backend's storage; the InputFile it answers."""
        body = MultipartBody("file", name, content_type, chunks, size=size)
        data = await self._call(
            "POST",
            "/attachments/upload",
            content=body,
            headers=body.headers,
            http_timeout=UPLOAD_TIMEOUT,
        )
        if not isinstance(data, dict) or not data.get("source") or not data.get("name"):
            raise BackendUnavailable("backend answered an upload with an unexpected shape")
        return data

    async def transcribe(
        self, name: str, content_type: str, chunks: AsyncIterable[bytes], size: int | None
    ) -> str:
        """What the backend heard in a recording (BackendRouteMissing before April 2026)."""
        body = MultipartBody("file", name, content_type, chunks, size=size)
        data = await self._call(
            "POST",
            "/audio/transcriptions",
            content=body,
            headers=body.headers,
            http_timeout=UPLOAD_TIMEOUT,
        )
        text = data.get("text") if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise BackendUnavailable("backend answered a transcription with an unexpected shape")
        return text.strip()

    async def workspace_files(self, session_id: str) -> list[WorkspaceFile]:
        """The session's workspace files (empty until its workspace was exported)."""
        try:
            session_id = str(uuid.UUID(session_id.strip()))
        except ValueError:
            raise BackendRejected(f"Not a valid session id: {session_id[:40]!r}") from None
        return flatten(await self._call("GET", f"/sessions/{session_id}/workspace/files"))

    @asynccontextmanager
    async def open_workspace_file(
        self, file: WorkspaceFile, max_bytes: int | None = None
    ) -> AsyncIterator[RemoteFile]:
        """Stream a workspace file from its presigned URL (a fresh listing's: they expire)."""
        if not file.url.startswith(("http://", "https://")):
            raise BackendUnavailable("the backend gave no download link for this file")
        try:
            async with (
                httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT, follow_redirects=True) as client,
                client.stream("GET", file.url) as response,
            ):
                if response.status_code != 200:
                    raise BackendUnavailable(
                        f"the object store answered HTTP {response.status_code} for {file.path}"
                    )
                length = response.headers.get("Content-Length")
                size = int(length) if length and length.isdigit() else file.size
                if max_bytes is not None and size is not None and size > max_bytes:
                    raise FileTooLarge(f"{file.path} is {size} bytes", limit=max_bytes, size=size)
                content_type = response.headers.get("Content-Type") or file.mime_type
                yield RemoteFile(
                    file.name, content_type or "application/octet-stream", size, response
                )
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"the object store cannot be reached: {exc!r}") from exc
