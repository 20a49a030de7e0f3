"""Reads and writes of FileJob and FileUpload: inbound files on their way into a task."""

from __future__ import annotations

import json
import time
from typing import Any

from agent.chats.base import InboundMessage
from agent.store.models import FileJob, FileUpload, Inbound

UPLOADING = "uploading"
POSTING = "posting"
DONE = "done"
ABSORBED = "absorbed"


def start(key: str) -> FileJob:
    """The job of an inbound message: created `uploading`, or the one a crash left."""
    job, _ = FileJob.get_or_create(key=key)
    return job


def find(key: str) -> FileJob | None:
    return FileJob.get_or_none(FileJob.key == key)


def set_state(job: FileJob, state: str) -> None:
    job.state = state
    FileJob.update(state=state).where(FileJob.id == job.id).execute()


def absorb(leader: str, keys: list[str]) -> None:
    """The album's other messages belong to `leader`'s job: they are answered by it."""
    for key in keys:
        FileJob.insert(key=key, state=ABSORBED, leader=leader).on_conflict_replace().execute()


def uploaded(job_key: str) -> dict[str, dict[str, Any]]:
    """The InputFiles a job already has, by Attachment.key."""
    rows = FileUpload.select().where(FileUpload.job_key == job_key)
    return {row.file_key: json.loads(row.input_file) for row in rows}


def record_upload(job_key: str, file_key: str, input_file: dict[str, Any]) -> None:
    FileUpload.insert(
        job_key=job_key, file_key=file_key, input_file=json.dumps(input_file)
    ).on_conflict_replace().execute()


def album_rows(leader: Inbound, media_group_id: str) -> list[tuple[Inbound, InboundMessage]]:
    """The album's later messages in the journal, not handled yet, in order."""
    rows = (
        Inbound.select()
        .where(
            (Inbound.provider == leader.provider)
            & (Inbound.chat_id == leader.chat_id)
            & (Inbound.id > leader.id)
            & (Inbound.status == "pending")
        )
        .order_by(Inbound.id)
    )
    found = []
    for row in rows:
        if media_group_id not in row.payload:  # cheap filter before parsing
            continue
        message = InboundMessage.from_dict(json.loads(row.payload))
        if message.media_group_id == media_group_id:
            found.append((row, message))
    return found


def inbound_row(key: str) -> Inbound | None:
    return Inbound.get_or_none(Inbound.key == key)


def prune(cutoff: float | None = None) -> int:
    """Drop jobs (and their uploads) older than `cutoff` (epoch seconds)."""
    cutoff = time.time() - 7 * 24 * 3600 if cutoff is None else cutoff
    old = [job.key for job in FileJob.select(FileJob.key).where(FileJob.created_at < cutoff)]
    removed = 0
    if old:
        removed += FileUpload.delete().where(FileUpload.job_key.in_(old)).execute()
        removed += FileJob.delete().where(FileJob.key.in_(old)).execute()
    return int(removed)
