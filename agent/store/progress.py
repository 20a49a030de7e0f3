"""Reads and writes of progress messages, run views and stop requests (core builds no SQL)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any, cast

import peewee

from agent.chats.base import OutboundMessage
from agent.store.models import Channel, ProgressMessage, RunProgress, StopRequest

LIVE = "live"


# --- run views ---


def run_view(run_id: str) -> dict[str, Any] | None:
    row = RunProgress.get_or_none(RunProgress.run_id == run_id)
    return None if row is None else dict(json.loads(row.view), _ended=row.ended)


def save_run_view(run_id: str, session_id: str, view: dict[str, Any], *, ended: bool) -> None:
    RunProgress.insert(
        run_id=run_id, session_id=session_id, view=json.dumps(view), ended=ended
    ).on_conflict(
        conflict_target=[RunProgress.run_id],
        update={RunProgress.view: json.dumps(view), RunProgress.ended: ended},
    ).execute()


def open_run_ids(session_id: str) -> list[str]:
    """Runs of the session whose progress is shown and not yet final."""
    rows = RunProgress.select(RunProgress.run_id).where(
        (RunProgress.session_id == session_id) & ~RunProgress.ended
    )
    return [row.run_id for row in rows]


def session_of_run(run_id: str) -> str | None:
    row = RunProgress.get_or_none(RunProgress.run_id == run_id)
    return None if row is None else str(row.session_id)


# --- progress messages ---


def show(channel: Channel, run_id: str, message: OutboundMessage) -> bool:
    """What the chat's progress message for the going run should show now; True when
    that changed (a new message, or a new text for the existing one)."""
    payload = _payload(message)
    row = ProgressMessage.get_or_none(
        (ProgressMessage.channel == channel) & (ProgressMessage.run_id == run_id)
    )
    if row is None:
        ProgressMessage.create(channel=channel, run_id=run_id, message=payload)
        return True
    if row.message == payload:
        return False
    ProgressMessage.update(message=payload, updated_at=time.time()).where(
        ProgressMessage.id == row.id
    ).execute()
    return row.state == LIVE


def finish(run_id: str, message: OutboundMessage) -> bool:
    """The run ended: each of its progress messages shows `message` as its last state."""
    payload = _payload(message)
    changed = (
        ProgressMessage.update(message=payload, final=True, updated_at=time.time())
        .where(
            (ProgressMessage.run_id == run_id)
            & ((ProgressMessage.message != payload) | ~ProgressMessage.final)
        )
        .execute()
    )
    return bool(changed)


def _payload(message: OutboundMessage) -> str:
    return json.dumps(message.to_dict(), sort_keys=True)


def pending_channels() -> dict[int, float]:
    """Chats with a progress message to send or edit: channel id → when it may go."""
    rows = (
        ProgressMessage.select(ProgressMessage.channel, peewee.fn.MIN(ProgressMessage.not_before))
        .where((ProgressMessage.state == LIVE) & (ProgressMessage.message != ProgressMessage.shown))
        .group_by(ProgressMessage.channel)
    )
    pairs = cast(Iterable[tuple[int, float]], rows.tuples())
    return {int(channel_id): float(due) for channel_id, due in pairs}


def next_pending(channel_id: int, now: float) -> ProgressMessage | None:
    """The chat's progress message due for a send or an edit (final ones first: a run's
    last word never waits behind another run's progress)."""
    return (
        ProgressMessage.select()
        .where(
            (ProgressMessage.channel == channel_id)
            & (ProgressMessage.state == LIVE)
            & (ProgressMessage.message != ProgressMessage.shown)
            & (ProgressMessage.not_before <= now)
        )
        .order_by(ProgressMessage.final.desc(), ProgressMessage.updated_at)
        .first()
    )


def message_of(row: ProgressMessage) -> OutboundMessage:
    return OutboundMessage.from_dict(json.loads(row.message))


def mark_shown(row: ProgressMessage, payload: str, platform_message_id: str) -> None:
    """`payload` (the message as it was read before the call) is what the chat shows now;
    a newer one written meanwhile stays pending."""
    ProgressMessage.update(
        shown=payload, platform_message_id=platform_message_id, attempts=0, last_error=""
    ).where(ProgressMessage.id == row.id).execute()


def mark_retry(row: ProgressMessage, delay: float, error: str) -> None:
    ProgressMessage.update(
        not_before=time.time() + delay, attempts=row.attempts + 1, last_error=error[:500]
    ).where(ProgressMessage.id == row.id).execute()


def mark_gone(row: ProgressMessage) -> None:
    """The platform's message can no longer be edited: the next attempt sends a new one."""
    ProgressMessage.update(platform_message_id="", shown="").where(
        ProgressMessage.id == row.id
    ).execute()


def give_up(row: ProgressMessage, state: str, error: str) -> None:
    ProgressMessage.update(state=state, last_error=error[:500]).where(
        ProgressMessage.id == row.id
    ).execute()


# --- stop requests ---


def claim_stop(run_id: str, session_id: str) -> bool:
    """Record that a cancel is posted for the run; False when one already was."""
    try:
        StopRequest.create(run_id=run_id, session_id=session_id)
    except peewee.IntegrityError:
        return False
    return True


def release_stop(run_id: str) -> None:
    """The cancel did not reach the backend: a later Stop may post it again."""
    StopRequest.delete().where(StopRequest.run_id == run_id).execute()


def stop_requested(run_id: str) -> bool:
    return bool(StopRequest.select().where(StopRequest.run_id == run_id).exists())


# --- pruning ---


def prune(cutoff: float) -> int:
    """Forget runs ended before `cutoff` (their messages are final), and old stops."""
    old = RunProgress.select(RunProgress.run_id).where(
        RunProgress.ended & (RunProgress.created_at < cutoff)
    )
    removed = (
        ProgressMessage.delete()
        .where(ProgressMessage.run_id.in_(old) & (ProgressMessage.updated_at < cutoff))
        .execute()
    )
    removed += (
        RunProgress.delete().where(RunProgress.ended & (RunProgress.created_at < cutoff)).execute()
    )
    removed += StopRequest.delete().where(StopRequest.requested_at < cutoff).execute()
    return int(removed)
