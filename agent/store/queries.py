"""Every read and write of the store, by what it means (core never builds SQL)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import peewee

from agent.chats.base import ChatRef, InboundMessage, OutboundMessage
from agent.store.allowed import open_access
from agent.store.db import durable_transaction
from agent.store.models import (
    Binding,
    Channel,
    ChatMove,
    Inbound,
    InputPrompt,
    Meta,
    Outbox,
    Pairing,
    ProgressMessage,
    TrackedSession,
    Watch,
    database_proxy,
)

# --- meta ---


def get_meta(key: str, default: str = "") -> str:
    row = Meta.get_or_none(Meta.key == key)
    return row.value if row else default


def set_meta(key: str, value: str) -> None:
    Meta.replace(key=key, value=value).execute()


# --- channels ---


_CHANNEL_FIELDS = (
    "id",
    "provider",
    "chat_id",
    "title",
    "is_group",
    "allowed",
    "created_at",
    "route",
)


def channel_for(message: InboundMessage) -> Channel:
    """The channel of an inbound message, created on first sight.

    Read afresh for every message (access may have changed in another process), so in
    plain SQL: peewee's query building would cost more than SQLite itself. Its route is
    not taken from here: only a message that access control let in may set where the
    chat's notifications go (`keep_route`).
    """
    row = database_proxy.execute_sql(
        f"SELECT {', '.join(_CHANNEL_FIELDS)} FROM channel WHERE provider = ? AND chat_id = ?",  # noqa: S608
        (message.provider, message.chat_id),
    ).fetchone()
    if row is not None:
        values = dict(zip(_CHANNEL_FIELDS, row, strict=True))
        values["is_group"], values["allowed"] = bool(values["is_group"]), bool(values["allowed"])
        return Channel(**values)
    # Not under this id: maybe under the id it had before it moved, else a new chat.
    return find_channel(message.provider, message.chat_id) or _create_channel(
        message.provider, message.chat_id, is_group=message.is_group, title=message.sender_name
    )


def keep_route(channel: Channel, message: InboundMessage) -> None:
    """An admitted message: its delivery data becomes the chat's (e.g. a fresh sessionWebhook)."""
    if not message.route:
        return
    route = json.dumps(message.route, sort_keys=True)
    if route != channel.route or channel.is_group != message.is_group:
        channel.route, channel.is_group = route, message.is_group
        # Only these two fields: the object may be older than an approval made meanwhile.
        Channel.update(route=route, is_group=message.is_group).where(
            Channel.id == channel.id
        ).execute()


def find_channel(provider: str, chat_id: str) -> Channel | None:
    """The chat's channel, also under an id it had before it moved."""
    channel = _exact_channel(provider, chat_id)
    if channel is None:
        move = ChatMove.get_or_none(
            (ChatMove.provider == provider) & (ChatMove.old_chat_id == chat_id)
        )
        if move is not None:
            channel = _exact_channel(provider, move.new_chat_id)
    return channel


def _exact_channel(provider: str, chat_id: str) -> Channel | None:
    return Channel.get_or_none((Channel.provider == provider) & (Channel.chat_id == chat_id))


def ensure_channel(provider: str, chat_id: str) -> Channel:
    return find_channel(provider, chat_id) or _create_channel(provider, chat_id)


def _create_channel(provider: str, chat_id: str, **fields: Any) -> Channel:
    channel, _ = Channel.get_or_create(provider=provider, chat_id=chat_id, defaults=fields)
    return channel


def migrate_channel(provider: str, old_chat_id: str, new_chat_id: str) -> Channel | None:
    """The chat got a new id (a Telegram group upgraded to a supergroup): its approval,
    pairing code, binding, watches, prompts and pending outbox rows follow. Idempotent.

    Usually the chat is simply renamed. If the new id already has a channel (someone wrote
    in the supergroup before we learnt of the move), the old one is merged into it.
    """
    if old_chat_id == new_chat_id:
        return find_channel(provider, new_chat_id)
    with database_proxy.atomic():
        ChatMove.replace(
            provider=provider, old_chat_id=old_chat_id, new_chat_id=new_chat_id
        ).execute()
        Pairing.update(chat_id=new_chat_id).where(
            (Pairing.provider == provider) & (Pairing.chat_id == old_chat_id)
        ).execute()
        old = _exact_channel(provider, old_chat_id)
        new = _exact_channel(provider, new_chat_id)
        if old is None:
            return new
        if new is None:
            Channel.update(chat_id=new_chat_id, is_group=True).where(Channel.id == old.id).execute()
            return _exact_channel(provider, new_chat_id)
        _merge_channel(old, new)
        return _exact_channel(provider, new_chat_id)


def _merge_channel(old: Channel, new: Channel) -> None:
    """Move what `old` holds to `new` (what `new` already has wins), then drop `old`."""
    Channel.update(allowed=old.allowed or new.allowed, is_group=True).where(
        Channel.id == new.id
    ).execute()
    if bound_session(new) is None:
        Binding.update(channel=new).where(Binding.channel == old).execute()
    watched = watched_session_ids(new)
    Watch.update(channel=new).where(
        (Watch.channel == old) & Watch.session_id.not_in(list(watched))
    ).execute()
    taken_keys = Outbox.select(Outbox.dedup_key).where(
        (Outbox.channel == new) & Outbox.dedup_key.is_null(False)
    )
    Outbox.update(channel=new).where(
        (Outbox.channel == old)
        & (Outbox.status == "pending")
        & (Outbox.dedup_key.is_null() | Outbox.dedup_key.not_in(taken_keys))
    ).execute()
    taken_requests = InputPrompt.select(InputPrompt.request_id).where(InputPrompt.channel == new)
    InputPrompt.update(channel=new).where(
        (InputPrompt.channel == old) & InputPrompt.request_id.not_in(taken_requests)
    ).execute()
    old.delete_instance()  # cascades to whatever stayed behind


def chat_ref(channel: Channel, row: Outbox | None = None) -> ChatRef:
    """Where to deliver; a row's own route (a reply to a refused chat) comes first."""
    route: dict[str, Any] = json.loads(channel.route or "{}")
    if row is not None:
        route.update(outbox_payload(row).get("route") or {})
    return ChatRef(channel.provider, channel.chat_id, channel.is_group, route)


# --- inbound journal ---


def record_inbound(messages: Sequence[InboundMessage]) -> list[Inbound]:
    """Persist new messages in one transaction; already-journaled keys are skipped.

    The platform is told "received" after this: the commit must survive power loss.
    Plain SQL: this runs for every inbound message, and peewee's query building would
    cost more than SQLite itself.
    """
    created: list[Inbound] = []
    now = time.time()
    with durable_transaction():
        for pressed in messages:
            message = resolve_press(pressed) if pressed.unresolved_press else pressed
            if message is None:
                continue  # a press on a message that is not ours (or no longer known)
            payload = json.dumps(message.to_dict())
            if message.moved_to:
                _record_move(message, payload, now)
                continue
            cursor = database_proxy.execute_sql(
                "INSERT OR IGNORE INTO inbound (key, provider, chat_id, payload, status,"
                " received_at) VALUES (?, ?, ?, ?, 'pending', ?)",
                (message.key, message.provider, message.chat_id, payload, now),
            )
            if cursor.rowcount == 1:
                created.append(
                    Inbound(
                        id=cursor.lastrowid,
                        key=message.key,
                        provider=message.provider,
                        chat_id=message.chat_id,
                        payload=payload,
                        status="pending",
                        received_at=now,
                    )
                )
    return created


def resolve_press(message: InboundMessage) -> InboundMessage | None:
    """A press named by its message's platform id and its button's label or action id
    (DingTalk cards) as a press of that button in that message's chat: the button whose
    label names one of the message's buttons, else the one with that action id (contract,
    section 5). None for a message the agent never sent, or no such button."""
    if not message.message_id:
        return None
    row = (
        Outbox.select(Outbox, Channel)
        .join(Channel)
        .where(
            (Channel.provider == message.provider)
            & (Outbox.platform_message_id == message.message_id)
            & (Outbox.kind == "message")
        )
        .order_by(Outbox.id)
        .first()
    )
    if row is not None:
        channel, sent = row.channel, outbox_message(row)
    else:  # a Stop on a progress card
        progress = (
            ProgressMessage.select(ProgressMessage, Channel)
            .join(Channel)
            .where(
                (Channel.provider == message.provider)
                & (ProgressMessage.platform_message_id == message.message_id)
            )
            .first()
        )
        if progress is None:
            return None
        channel = progress.channel
        sent = OutboundMessage.from_dict(json.loads(progress.message))
    buttons = [button for line in sent.buttons for button in line]
    label, action = message.button_label, message.button_action
    by_label = [button for button in buttons if label and button.label == label]
    by_action = [button for button in buttons if action and button.action_id == action]
    pressed = by_label[0] if len(by_label) == 1 else (by_action[0] if by_action else None)
    if pressed is None:
        return None
    return dataclasses.replace(
        message, chat_id=channel.chat_id, is_group=channel.is_group, callback_data=pressed.data
    )


def _record_move(message: InboundMessage, payload: str, now: float) -> None:
    """A chat's move is applied as it is journaled (before the platform is told we have
    it), so no later message of the chat is handled under the old id."""
    cursor = database_proxy.execute_sql(
        "INSERT OR IGNORE INTO inbound (key, provider, chat_id, payload, status,"
        " received_at, handled_at) VALUES (?, ?, ?, ?, 'done', ?, ?)",
        (message.key, message.provider, message.chat_id, payload, now, now),
    )
    if cursor.rowcount == 1:
        migrate_channel(message.provider, message.chat_id, message.moved_to)


def inbound_rows(status: str) -> list[Inbound]:
    return list(Inbound.select().where(Inbound.status == status).order_by(Inbound.id))


def inbound_message(row: Inbound) -> InboundMessage:
    return InboundMessage.from_dict(json.loads(row.payload))


def mark_inbound(row: Inbound, status: str) -> None:
    row.status = status
    if status == "done":
        row.handled_at = time.time()
    database_proxy.execute_sql(  # per message: plain SQL, see record_inbound
        "UPDATE inbound SET status = ?, handled_at = ? WHERE id = ?",
        (row.status, row.handled_at, row.id),
    )


# --- bindings and watches ---


def bound_session(channel: Channel) -> str | None:
    row = database_proxy.execute_sql(  # per message: plain SQL, see record_inbound
        "SELECT session_id FROM binding WHERE channel_id = ?", (channel.id,)
    ).fetchone()
    return str(row[0]) if row else None


def bind(channel: Channel, session_id: str, *, new_session: bool = False) -> None:
    """Bind and watch. A session the chat just created has no history to skip."""
    with database_proxy.atomic():
        Binding.replace(channel=channel, session_id=session_id, bound_at=time.time()).execute()
        watch(channel, session_id, new_session=new_session)


def unbind(channel: Channel) -> str | None:
    """Remove the binding and its watch; return the session it held."""
    with database_proxy.atomic():
        session_id = bound_session(channel)
        if session_id is None:
            return None
        Binding.delete().where(Binding.channel == channel).execute()
        unwatch(channel, session_id)
    return session_id


def watch(channel: Channel, session_id: str, *, new_session: bool = False) -> bool:
    """Follow a session; False if already followed."""
    defaults = {"message_cursor": 0} if new_session else {}
    _, created = Watch.get_or_create(channel=channel, session_id=session_id, defaults=defaults)
    TrackedSession.insert(session_id=session_id).on_conflict_ignore().execute()
    return bool(created)


def unwatch(channel: Channel, session_id: str) -> bool:
    return bool(
        Watch.delete()
        .where((Watch.channel == channel) & (Watch.session_id == session_id))
        .execute()
    )


def watches(channel: Channel) -> list[Watch]:
    return list(Watch.select().where(Watch.channel == channel).order_by(Watch.id))


def watched_session_ids(channel: Channel) -> set[str]:
    return {w.session_id for w in watches(channel)}


def watches_of(session_id: str) -> list[Watch]:
    """The session's watches by chats allowed now (a revoked chat is told nothing)."""
    query = Watch.select(Watch, Channel).join(Channel).where(Watch.session_id == session_id)
    if not open_access():
        query = query.where(Channel.allowed)
    return list(query.order_by(Watch.id))


def has_new_watcher(session_id: str) -> bool:
    """Some chat follows the session but has not been told anything of it yet."""
    return bool(
        Watch.select()
        .where((Watch.session_id == session_id) & Watch.message_cursor.is_null())
        .exists()
    )


def followed_session_ids() -> set[str]:
    """Sessions some chat watches (binding a chat always watches its session)."""
    return {row.session_id for row in Watch.select(Watch.session_id).distinct()}


def forget_session(session_id: str) -> None:
    """A session the backend no longer has: drop its watches, bindings and tracking."""
    with database_proxy.atomic():
        Watch.delete().where(Watch.session_id == session_id).execute()
        Binding.delete().where(Binding.session_id == session_id).execute()
        TrackedSession.delete().where(TrackedSession.session_id == session_id).execute()


def channels_bound_to_runs(run_statuses: Iterable[str]) -> list[Channel]:
    query = (
        Channel.select()
        .join(Binding)
        .join(TrackedSession, on=(Binding.session_id == TrackedSession.session_id))
        .where(TrackedSession.latest_run_status.in_(list(run_statuses)))
    )
    return list(query if open_access() else query.where(Channel.allowed))


# --- outbox ---


def enqueue(
    channel: Channel,
    message: OutboundMessage,
    *,
    dedup_key: str | None = None,
    kind: str = "message",
    extra: dict[str, Any] | None = None,
    route: dict[str, Any] | None = None,
) -> Outbox | None:
    """Queue a message for a chat; None if `dedup_key` was already queued for it.

    `route` goes with this row only (a reply to a refused chat, whose route is not kept)."""
    payload = {"message": message.to_dict(), **(extra or {})}
    if route:
        payload["route"] = route
    try:
        with database_proxy.atomic():
            return Outbox.create(
                channel=channel, dedup_key=dedup_key, kind=kind, payload=json.dumps(payload)
            )
    except peewee.IntegrityError:
        return None


def enqueue_many(
    channel: Channel, messages: Iterable[OutboundMessage], *, route: dict[str, Any] | None = None
) -> None:
    for message in messages:
        enqueue(channel, message, route=route)


def outbox_heads() -> list[Outbox]:
    """The oldest pending row of each channel (delivery keeps per-chat order)."""
    heads = (
        Outbox.select(peewee.fn.MIN(Outbox.id))
        .where(Outbox.status == "pending")
        .group_by(Outbox.channel)
    )
    # Channels joined in: the scheduler reads each head's channel (no query per head).
    return list(
        Outbox.select(Outbox, Channel).join(Channel).where(Outbox.id.in_(heads)).order_by(Outbox.id)
    )


def outbox_head(channel_id: int) -> Outbox | None:
    return (
        Outbox.select()
        .where((Outbox.channel == channel_id) & (Outbox.status == "pending"))
        .order_by(Outbox.id)
        .first()
    )


def outbox_message(row: Outbox) -> OutboundMessage:
    return OutboundMessage.from_dict(json.loads(row.payload)["message"])


def outbox_payload(row: Outbox) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(row.payload)
    return payload


def mark_sent(row: Outbox, platform_message_id: str) -> None:
    Outbox.update(
        status="sent",
        sent_at=time.time(),
        platform_message_id=platform_message_id,
        attempts=row.attempts + 1,
    ).where(Outbox.id == row.id).execute()


def note_parts_sent(row: Outbox, parts_sent: int) -> None:
    """A long message was partly delivered: a retry, or the next start, resumes after
    these parts."""
    payload = outbox_payload(row)
    payload["parts_sent"] = parts_sent
    row.payload = json.dumps(payload)
    Outbox.update(payload=row.payload).where(Outbox.id == row.id).execute()


def mark_retry(row: Outbox, delay: float, error: str) -> None:
    """A failed try. The retry time is kept for the next start (delivery waits in memory)."""
    row.attempts += 1
    row.next_attempt_at = time.time() + delay
    Outbox.update(
        attempts=row.attempts, next_attempt_at=row.next_attempt_at, last_error=error[:500]
    ).where(Outbox.id == row.id).execute()


def mark_failed(row: Outbox, error: str) -> None:
    Outbox.update(status="failed", attempts=row.attempts + 1, last_error=error[:500]).where(
        Outbox.id == row.id
    ).execute()


def outbox_pending_count() -> int:
    return int(Outbox.select().where(Outbox.status == "pending").count())


def sent_row(channel: Channel, dedup_key: str) -> Outbox | None:
    return Outbox.get_or_none((Outbox.channel == channel) & (Outbox.dedup_key == dedup_key))
