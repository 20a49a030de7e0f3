"""multipart/form-data bodies whose file part is streamed from an async source.

httpx builds a multipart body only from sync file objects; a file relayed from a chat to
the backend (or from the backend to a chat) arrives as an async stream and is never held
whole: the body is the form's head, the file's chunks as they come, and the closing line.
With a known size the length is exact (`Content-Length`), else it is sent chunked.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, AsyncIterator, Mapping

CRLF = b"\r\n"


class SizeMismatch(Exception):
    """The stream ended after more or fewer bytes than announced."""


class MultipartBody:
    """One file field (plus text fields) as an async byte stream for an HTTP client."""

    def __init__(
        self,
        file_field: str,
        filename: str,
        content_type: str,
        chunks: AsyncIterable[bytes],
        *,
        size: int | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> None:
        self.boundary = secrets.token_hex(16)
        self._chunks = chunks
        self.size = size
        head = b"".join(self._text_part(name, value) for name, value in (fields or {}).items())
        disposition = f'form-data; name="{_quote(file_field)}"; filename="{_quote(filename)}"'
        self._head = head + self._part_head(disposition, content_type or "application/octet-stream")
        self._tail = CRLF + f"--{self.boundary}--".encode() + CRLF

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": f"multipart/form-data; boundary={self.boundary}"}
        if self.size is not None:
            headers["Content-Length"] = str(len(self._head) + self.size + len(self._tail))
        return headers

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._head
        sent = 0
        async for chunk in self._chunks:
            sent += len(chunk)
            if self.size is not None and sent > self.size:
                raise SizeMismatch(f"the file is longer than its announced {self.size} bytes")
            yield chunk
        if self.size is not None and sent != self.size:
            raise SizeMismatch(f"the file ended at {sent} of {self.size} bytes")
        yield self._tail

    def _part_head(self, disposition: str, content_type: str | None = None) -> bytes:
        lines = [f"--{self.boundary}", f"Content-Disposition: {disposition}"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        return "\r\n".join(lines).encode() + CRLF + CRLF

    def _text_part(self, name: str, value: str) -> bytes:
        return self._part_head(f'form-data; name="{_quote(name)}"') + value.encode() + CRLF


def _quote(value: str) -> str:
    """A header parameter as browsers (and httpx) write it: UTF-8, quotes and line breaks
    percent-escaped, backslashes doubled."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
