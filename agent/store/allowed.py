"""Which chats may be told anything, read fresh from the store at each use.

`pair approve/revoke` run in another process, so nothing here is cached: a chat is
allowed when its channel row says so, or when the agent runs with the open policy.
Per message and per send: plain SQL where peewee's query building would cost more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from agent.store.models import (
    Binding,
    Channel,
    InputPrompt,
    Meta,
    Outbox,
    Watch,
    database_proxy,
)

ACCESS_POLICY_KEY = "access.policy"
# An outbox row about access itself (a pairing code): the only thing a refused chat gets.
ACCESS_REPLY = "access_reply"
_OPEN_ACCESS = "SELECT EXISTS (SELECT 1 FROM meta WHERE key = ? AND value = 'open')"


def set_access_policy(policy: str) -> None:
    """Written by the agent at start; `open` lets every chat in."""
    Meta.replace(key=ACCESS_POLICY_KEY, value=policy).execute()


def open_access() -> bool:
    return bool(database_proxy.execute_sql(_OPEN_ACCESS, (ACCESS_POLICY_KEY,)).fetchone()[0])


def channel_allowed(channel_id: int) -> bool:
    row = database_proxy.execute_sql(
        f"SELECT allowed OR ({_OPEN_ACCESS}) FROM channel WHERE id = ?",  # noqa: S608
        (ACCESS_POLICY_KEY, channel_id),
    ).fetchone()
    return bool(row and row[0])


def _is_access_reply(row: Outbox) -> bool:
    return bool(json.loads(row.payload).get(ACCESS_REPLY))


def may_deliver(row: Outbox) -> bool:
    """Only an allowed chat is sent anything, except its own pairing code."""
    return _is_access_reply(row) or channel_allowed(row.channel_id)


def drop(row: Outbox, reason: str = "chat no longer allowed") -> None:
    """Never to be sent."""
    Outbox.update(status="dropped", last_error=reason).where(Outbox.id == row.id).execute()


@dataclass(frozen=True)
class CutOff:
    """What a chat lost when it stopped being allowed."""

    bindings: int = 0
    watches: int = 0
    queued: int = 0

    def __bool__(self) -> bool:
        return bool(self.bindings or self.watches or self.queued)

    def __str__(self) -> str:
        return (
            f"{self.bindings} binding(s), {self.watches} watch(es), {self.queued} queued message(s)"
        )


def cut_off(channel: Channel) -> CutOff:
    """Drop a chat's binding, watches, open prompts and unsent messages (not its pairing
    code): nothing more reaches it, and nothing of it lingers for a later approval."""
    with database_proxy.atomic():
        bindings = Binding.delete().where(Binding.channel == channel).execute()
        watches = Watch.delete().where(Watch.channel == channel).execute()
        InputPrompt.update(state="dropped").where(
            (InputPrompt.channel == channel) & (InputPrompt.state == "open")
        ).execute()
        pending = Outbox.select().where((Outbox.channel == channel) & (Outbox.status == "pending"))
        queued = [row for row in pending if not _is_access_reply(row)]
        for row in queued:
            drop(row)
    return CutOff(int(bindings), int(watches), len(queued))


def channels_to_cut_off() -> list[Channel]:
    """Chats that are not allowed but still follow a session or have unsent rows."""
    holders = (
        Binding.select(Binding.channel)
        | Watch.select(Watch.channel)
        | Outbox.select(Outbox.channel).where(Outbox.status == "pending")
    )
    return list(Channel.select().where(~Channel.allowed & Channel.id.in_(holders)))
