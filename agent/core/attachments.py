"""A photo, file or voice note from a chat into a task.

In a chat bound to a session (or with a `/new <task>` caption), each file is streamed from
the platform to `POST /attachments/upload` (never held whole, never written to disk) and
the task is posted with `config.input_files`; the caption is the prompt, or a short
default. The photos of a Telegram album (one message each, sharing a media_group_id) wait
for each other briefly and become one task; the album's first message answers for all.

Voice: a DingTalk audio message carries DingTalk's own recognition, a Telegram voice note
goes to the backend's `POST /audio/transcriptions` (April 2026 on, with an OpenAI key);
the chat is shown what was heard and that is the prompt. Without a transcript the
recording is attached as a file, and the chat is told.

Exactly once across a crash: each uploaded InputFile is recorded (store/file_jobs) before
the next step; a message cut off while its files were still uploading is handled again
(inbound journal) and reuses what was recorded, so the task gets each file once. Once the
task is being posted the message is settled like a text prompt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.backend.client import BackendClient
from agent.chats.base import Attachment, ChatProvider, ChatRef, InboundMessage
from agent.core import i18n
from agent.core.commands import parse
from agent.core.intents import PromptSender, Sent
from agent.errors import (
    BackendError,
    BackendRejected,
    BackendRouteMissing,
    BackendUnavailable,
    DeliveryError,
    FileTooLarge,
)
from agent.store import file_jobs, queries
from agent.store.models import Channel, Inbound

log = logging.getLogger(__name__)

MB = 1024 * 1024
CODE_NO_STORAGE = 50201  # the backend's call to S3 failed (or it has none)
CODE_TOO_LARGE = 413  # over the backend's MAX_UPLOAD_SIZE_MB
# An album's photos reach the bot as separate updates within about a second.
ALBUM_QUIET_SECONDS = 1.5
ALBUM_MAX_WAIT_SECONDS = 10.0
ALBUM_POLL_SECONDS = 0.2
# After "no OpenAI key" the backend is not asked to transcribe again for this long.
TRANSCRIPTION_RETRY_SECONDS = 600.0
# Kinds whose name is the user's (a photo's or a voice note's is made up here).
NAMED_KINDS = frozenset({"document", "file", "audio", "video", "animation"})
VOICE = "voice"  # a recorded voice message (Telegram voice note, DingTalk audio)


@dataclass
class FileOutcome:
    """What became of a file message: replies to show first, and the task if one was
    posted (`new_session`: it started a session the chat is to be bound to)."""

    notes: list[str] = field(default_factory=list)
    task: Sent | None = None
    session_id: str = ""
    new_session: bool = False


class _Refused(Exception):
    """The message ends here with this reply (too big, no storage, download failed)."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        super().__init__(reply)


class FileRelay:
    def __init__(
        self,
        backend: BackendClient,
        sender: PromptSender,
        providers: Mapping[str, ChatProvider],
        *,
        max_bytes: int,
        lang: str,
    ) -> None:
        self.backend = backend
        # Tasks go out as text prompts do: intent first, settled after a crash.
        self.sender = sender
        self.providers = providers
        self.max_bytes = max_bytes
        self.lang = lang
        self._no_transcription_until = 0.0  # monotonic; inf when the route is missing

    def t(self, key: str, **values: object) -> str:
        return i18n.text(self.lang, key, **values)

    async def relay(self, message: InboundMessage, channel: Channel) -> FileOutcome:
        """Handle one file message. BackendErrors other than "no storage" and "too large"
        propagate (the caller answers them as for text)."""
        job = file_jobs.find(message.key)
        if job is not None and job.state == file_jobs.ABSORBED:
            return FileOutcome()  # an album photo: its first message answered for it
        if job is not None and job.state == file_jobs.DONE:
            return FileOutcome()  # settled already
        # `posting` with no intent recorded (inbound settles those first): cut off before
        # the task went out; it goes out now, with the uploads already recorded.
        messages = [message] + await self._album_members(message)
        caption = "\n".join(m.text.strip() for m in messages if m.text.strip())
        command = parse(caption)
        new_session = command.name == "new"
        prompt = command.args if new_session else caption
        session_id = None if new_session else queries.bound_session(channel)
        if session_id is None and not new_session:
            return FileOutcome(notes=[self.t("not_bound")])
        provider = self.providers.get(channel.provider)
        if provider is None:
            return FileOutcome(notes=[self.t("files.download_failed", reason="no provider")])
        files = [a for m in messages for a in m.attachments]
        chat = queries.chat_ref(channel)
        try:
            return await self._send(message.key, channel, provider, chat, files, prompt, session_id)
        except _Refused as refused:
            return FileOutcome(notes=[refused.reply])

    async def _send(
        self,
        key: str,
        channel: Channel,
        provider: ChatProvider,
        chat: ChatRef,
        files: list[Attachment],
        prompt: str,
        session_id: str | None,
    ) -> FileOutcome:
        limit = min(self.max_bytes, provider.max_download_bytes)
        for attachment in files:
            if attachment.size is not None and attachment.size > limit:
                raise _Refused(self._too_big(attachment, limit))
        job = file_jobs.start(key)
        notes: list[str] = []
        if len(files) == 1 and files[0].kind == VOICE and not prompt:
            heard = await self._transcript(provider, chat, files[0], limit)
            if heard:
                notes.append(self.t("files.heard", text=heard))
                prompt, files = heard, []
            else:
                notes.append(self.t("files.no_transcript"))
        input_files = await self._upload_all(job.key, provider, chat, files, limit)
        if not prompt:
            prompt = self.t("files.default_prompt", count=len(input_files))
        file_jobs.set_state(job, file_jobs.POSTING)
        config = {"input_files": input_files} if input_files else None
        sent = await self.sender.send(key, channel, prompt, session_id, config=config)
        file_jobs.set_state(job, file_jobs.DONE)
        return FileOutcome(notes, sent, sent.session_id, new_session=session_id is None)

    # -- voice -----------------------------------------------------------------------------

    async def _transcript(
        self, provider: ChatProvider, chat: ChatRef, attachment: Attachment, limit: int
    ) -> str:
        """What a voice message says: the platform's recognition, else the backend's."""
        if attachment.transcript:
            return attachment.transcript
        if time.monotonic() < self._no_transcription_until:
            return ""
        try:
            async with provider.open_file(chat, attachment) as incoming:
                return await self.backend.transcribe(
                    attachment.name or incoming.name,
                    attachment.mime_type or incoming.content_type,
                    _limited(incoming.chunks(), limit, attachment.name),
                    incoming.size,
                )
        except BackendRouteMissing:
            log.info("backend has no audio transcription (older than April 2026)")
            self._no_transcription_until = float("inf")
        except (BackendRejected, BackendUnavailable) as exc:
            log.info("backend did not transcribe a voice note: %s", exc)
            if exc.code == 40000:  # no OpenAI key: ask again later, not for every note
                self._no_transcription_until = time.monotonic() + TRANSCRIPTION_RETRY_SECONDS
        except (DeliveryError, FileTooLarge) as exc:
            log.info("voice note not fetched for transcription: %s", exc)
        return ""

    # -- files -----------------------------------------------------------------------------

    async def _upload_all(
        self,
        job_key: str,
        provider: ChatProvider,
        chat: ChatRef,
        files: list[Attachment],
        limit: int,
    ) -> list[dict[str, Any]]:
        done = file_jobs.uploaded(job_key)
        input_files: list[dict[str, Any]] = []
        for attachment in files:
            input_file = done.get(attachment.key)
            if input_file is None:
                input_file = await self._upload(provider, chat, attachment, limit)
                file_jobs.record_upload(job_key, attachment.key, input_file)
            input_files.append(input_file)
        return input_files

    async def _upload(
        self, provider: ChatProvider, chat: ChatRef, attachment: Attachment, limit: int
    ) -> dict[str, Any]:
        """One file streamed from the platform to the backend; its InputFile."""
        try:
            async with provider.open_file(chat, attachment) as incoming:
                if incoming.size is not None and incoming.size > limit:
                    raise FileTooLarge(attachment.name, limit=limit, size=incoming.size)
                return await self.backend.upload_attachment(
                    attachment.name or incoming.name or "file",
                    attachment.mime_type or incoming.content_type,
                    _limited(incoming.chunks(), limit, attachment.name),
                    incoming.size,
                )
        except FileTooLarge as exc:
            raise _Refused(self._too_big(attachment, min(limit, exc.limit))) from exc
        except DeliveryError as exc:
            log.warning("%s file not fetched: %s", provider.name, exc)
            raise _Refused(self.t("files.download_failed", reason=str(exc)[:200])) from exc
        except BackendError as exc:
            if exc.code == CODE_NO_STORAGE:
                log.warning("backend cannot store files (50201): %s", exc)
                raise _Refused(self.t("files.no_storage")) from exc
            if exc.code == CODE_TOO_LARGE:
                raise _Refused(self.t("files.backend_too_big", reason=str(exc)[:200])) from exc
            raise

    def _too_big(self, attachment: Attachment, limit: int) -> str:
        named = attachment.name and attachment.kind in NAMED_KINDS
        name = attachment.name if named else self.t(f"files.kind.{attachment.kind}")
        return self.t("files.too_big", name=name, limit=limit // MB)

    # -- albums ----------------------------------------------------------------------------

    async def _album_members(self, message: InboundMessage) -> list[InboundMessage]:
        """The album's other messages, once no more have come for a moment; they are
        marked as answered by this one."""
        if not message.media_group_id:
            return []
        leader = file_jobs.inbound_row(message.key)
        if leader is None:
            return []
        members = await _quiet_album(leader, message.media_group_id)
        file_jobs.absorb(message.key, [m.key for _, m in members])
        return [m for _, m in members]


async def _quiet_album(leader: Inbound, group_id: str) -> list[tuple[Inbound, InboundMessage]]:
    deadline = time.monotonic() + ALBUM_MAX_WAIT_SECONDS
    while True:
        members = file_jobs.album_rows(leader, group_id)
        newest = max([leader.received_at] + [row.received_at for row, _ in members])
        quiet = time.time() - newest
        if quiet >= ALBUM_QUIET_SECONDS or time.monotonic() >= deadline:
            return members
        await asyncio.sleep(min(ALBUM_POLL_SECONDS, ALBUM_QUIET_SECONDS - quiet))


async def _limited(chunks: AsyncIterator[bytes], limit: int, name: str) -> AsyncIterator[bytes]:
    """The chunks, stopped with FileTooLarge past `limit` bytes (a size nobody announced)."""
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise FileTooLarge(f"{name or 'file'} is over {limit} bytes", limit=limit)
        yield chunk
