"""/files and /get: the connected session's workspace files, and one of them sent back.

`/files [page]` numbers the workspace's files (from the listing the backend makes after a
run exported its workspace), with sizes, a page at a time; `/get <n|path>` streams one
from its presigned URL to the chat as a document (Telegram, up to 50 MB), or sends its
link where the platform takes no file from a bot (DingTalk here) or it is too large. The
numbers are those of the chat's last /files. A run's end notice says how many files it
changed (`changed_files_note`, called by core/session_feed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from agent.backend.client import BackendClient
from agent.backend.files import WorkspaceFile
from agent.backend.models import Run
from agent.chats.base import ChatProvider, OutgoingFile
from agent.core import i18n
from agent.errors import BackendNotFound, DeliveryError, FileTooLarge
from agent.store import queries
from agent.store.models import Channel

log = logging.getLogger(__name__)

PAGE_SIZE = 20
KB = 1024


def changed_files_note(lang: str, run: Run) -> str:
    """The line a run's end notice gets when the run changed workspace files ('' if not)."""
    if not run.changed_files:
        return ""
    return "\n" + i18n.text(lang, "files.changed", count=run.changed_files)


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    if size < KB:
        return f"{size} B"
    if size < KB * KB:
        return f"{size / KB:.0f} KB"
    return f"{size / KB / KB:.1f} MB"


class FileCommands:
    def __init__(
        self, backend: BackendClient, providers: Mapping[str, ChatProvider], *, lang: str
    ) -> None:
        self.backend = backend
        self.providers = providers
        self.lang = lang

    def t(self, key: str, **values: object) -> str:
        return i18n.text(self.lang, key, **values)

    async def files(self, channel: Channel, args: str) -> list[str]:
        session_id = queries.bound_session(channel)
        if session_id is None:
            return [self.t("not_bound")]
        page = int(args) if args.isdigit() and int(args) > 0 else 1
        try:
            files = await self.backend.workspace_files(session_id)
        except BackendNotFound:
            return [self.t("not_found", session_id=session_id)]
        if not files:
            return [self.t("files.none")]
        queries.set_meta(_listing_key(channel), json.dumps([f.path for f in files]))
        pages = (len(files) + PAGE_SIZE - 1) // PAGE_SIZE
        page = min(page, pages)
        first = (page - 1) * PAGE_SIZE
        lines = [self.t("files.header", count=len(files), page=page, pages=pages)]
        for number, file in enumerate(files[first : first + PAGE_SIZE], start=first + 1):
            lines.append(f"{number}. `{file.path}` ({human_size(file.size)})")
        if page < pages:
            lines.append(self.t("files.more", next=page + 1))
        lines.append(self.t("files.footer"))
        return ["\n".join(lines)]

    async def get(self, channel: Channel, args: str) -> list[str]:
        if not args.strip():
            return [self.t("files.get_usage")]
        session_id = queries.bound_session(channel)
        if session_id is None:
            return [self.t("not_bound")]
        wanted = self._path(channel, args.strip())
        if wanted is None:
            return [self.t("files.bad_number", value=args.strip()[:40])]
        try:
            files = await self.backend.workspace_files(session_id)  # fresh links
        except BackendNotFound:
            return [self.t("not_found", session_id=session_id)]
        file = next((f for f in files if f.path == wanted), None)
        if file is None:
            return [self.t("files.no_such", path=wanted)]
        provider = self.providers.get(channel.provider)
        if provider is None or provider.max_upload_bytes == 0:
            return [self._link(file)]
        if file.size is not None and file.size > provider.max_upload_bytes:
            return [self._too_big(file, provider.max_upload_bytes)]
        return await self._send(channel, provider, file)

    async def _send(
        self, channel: Channel, provider: ChatProvider, file: WorkspaceFile
    ) -> list[str]:
        chat = queries.chat_ref(channel)
        limit = provider.max_upload_bytes
        try:
            async with self.backend.open_workspace_file(file, max_bytes=limit) as remote:
                outgoing = OutgoingFile(
                    file.name or file.path.rsplit("/", 1)[-1],
                    remote.content_type,
                    remote.size,
                    remote.chunks(),
                    caption=file.path,
                )
                await provider.send_file(chat, outgoing)
        except FileTooLarge:
            return [self._too_big(file, limit)]
        except DeliveryError as exc:
            log.warning("sending %s to %s failed: %s", file.path, channel.address, exc)
            return [self.t("files.send_failed", path=file.path, reason=str(exc)[:200])]
        return []  # the document is the answer

    def _path(self, channel: Channel, value: str) -> str | None:
        if value.isdigit():
            listing: list[str] = json.loads(queries.get_meta(_listing_key(channel), "[]"))
            index = int(value)
            return listing[index - 1] if 1 <= index <= len(listing) else None
        return "/" + value.strip("/")

    def _link(self, file: WorkspaceFile) -> str:
        return self.t("files.link", name=file.name, size=human_size(file.size), url=file.url)

    def _too_big(self, file: WorkspaceFile, limit: int) -> str:
        return self.t("files.too_big_to_send", limit=limit // KB // KB) + "\n" + self._link(file)


def _listing_key(channel: Channel) -> str:
    return f"files:{channel.id}"
