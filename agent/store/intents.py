"""Reads and writes of the `Intent` table: prompts recorded before `POST /tasks`."""

from __future__ import annotations

import time
from typing import Any

from agent.store.models import Channel, Inbound, Intent, TrackedSession

SENDING = "sending"
SENT = "sent"
FAILED = "failed"
# Settled intents are kept this long: a later look at the same session must not count the
# messages and sessions they were matched with again.
RETENTION_SECONDS = 7 * 24 * 3600


def record(
    key: str,
    channel: Channel,
    prompt: str,
    session_id: str = "",
    *,
    after_message_id: int = 0,
    blind: bool = False,
    sessions_after: str = "",
    config: str = "",
) -> Intent:
    """Record a prompt about to be sent (replacing a failed earlier try of the same key)."""
    Intent.delete().where(Intent.key == key).execute()
    return Intent.create(
        key=key,
        channel=channel,
        prompt=prompt,
        session_id=session_id,
        after_message_id=after_message_id,
        blind=blind,
        sessions_after=sessions_after,
        config=config,
    )


def find(key: str) -> Intent | None:
    return Intent.get_or_none(Intent.key == key)


def reload(intent: Intent) -> Intent:
    return Intent.get_by_id(intent.id)


def mark_sent(
    intent: Intent,
    session_id: str,
    *,
    queued: bool = False,
    queued_count: int = 0,
    message_id: int | None = None,
) -> None:
    intent.state = SENT
    intent.result_session_id = session_id
    intent.queued = queued
    intent.queued_count = queued_count
    intent.message_id = message_id
    intent.updated_at = time.time()
    intent.save()


def mark_failed(intent: Intent) -> None:
    intent.state = FAILED
    intent.updated_at = time.time()
    intent.save()


def unsettled_follow_ups(session_id: str) -> list[Intent]:
    """Follow-ups to the session whose answer never came, oldest first."""
    return _unsettled(Intent.session_id == session_id)


def unsettled_new() -> list[Intent]:
    """`/new` prompts whose answer never came, oldest first (any chat)."""
    return _unsettled(Intent.session_id == "")


def _unsettled(where: Any) -> list[Intent]:
    # Only while their message is still being handled: one whose handler died of a bug
    # was answered already and must not take part in matching.
    return list(
        Intent.select()
        .join(Inbound, on=(Inbound.key == Intent.key))
        .where(where & (Intent.state == SENDING) & (Inbound.status != "done"))
        .order_by(Intent.id)
    )


def queued_unmatched(session_id: str) -> list[Intent]:
    """Follow-ups the backend queued behind a running run (April 2026), oldest first: their
    user message appears only when promoted, and must not be taken for a later prompt."""
    return list(
        Intent.select()
        .where(
            (Intent.session_id == session_id)
            & (Intent.state == SENT)
            & Intent.queued
            & Intent.message_id.is_null()
        )
        .order_by(Intent.id)
    )


def claimed_message_ids(session_id: str) -> set[int]:
    """User messages of the session already matched with an intent."""
    rows = Intent.select(Intent.message_id).where(
        (Intent.session_id == session_id) & Intent.message_id.is_null(False)
    )
    return {row.message_id for row in rows if row.message_id is not None}


def claimed_sessions() -> set[str]:
    """Sessions some `/new` intent created (by its answer, or found later)."""
    rows = Intent.select(Intent.result_session_id).where(
        (Intent.session_id == "") & (Intent.state == SENT)
    )
    return {row.result_session_id for row in rows}


def known_messages(session_id: str) -> tuple[int, int]:
    """(newest message id, message count) the notifier saw of a session; (0, 0) if none."""
    row = TrackedSession.get_or_none(TrackedSession.session_id == session_id)
    return (int(row.max_message_id), int(row.message_count)) if row else (0, 0)


def prune(now: float | None = None) -> int:
    """Delete intents older than the retention whose message was handled; return how many."""
    cutoff = (time.time() if now is None else now) - RETENTION_SECONDS
    open_keys = Inbound.select(Inbound.key).where(Inbound.status != "done")
    return int(
        Intent.delete().where((Intent.updated_at < cutoff) & Intent.key.not_in(open_keys)).execute()
    )
