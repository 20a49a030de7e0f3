"""Who may drive the backend: pairing codes, the allowlist, or open. Decided per chat.

A chat is allowed when its stored channel says so (approved with a pairing code, or named
by `IM_ALLOWLIST` at start), or when the policy is open. Every decision reads the store,
so `pair approve/revoke` in another shell counts from the next message on; a revoked chat
also loses its bindings, watches and queued messages (`store.allowed`).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass

from agent.chats.base import OutboundMessage
from agent.core import i18n
from agent.store import allowed, queries
from agent.store.db import WRITE_AT_ONCE
from agent.store.models import Channel, Pairing, database_proxy

log = logging.getLogger(__name__)

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: easy to read aloud
CODE_LENGTH = 8
CODE_TTL_SECONDS = 3600
# A refused chat hears from us at most this often, and only this many codes live at once.
REFUSED_REPLY_INTERVAL_SECONDS = 600
MAX_ACTIVE_CODES = 50
# Chats allowed because IM_ALLOWLIST named them (not approved): revoked when it stops.
ALLOWLIST_GRANTS_KEY = "access.allowlist_grants"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reply: OutboundMessage | None = None


class AccessPolicy:
    def __init__(self, policy: str, allowlist: tuple[str, ...], lang: str) -> None:
        self.policy = policy
        self.allowlist = frozenset(allowlist)
        self.lang = lang
        self._last_refusal: dict[str, float] = {}

    def apply_at_start(self) -> None:
        """Store the policy and the allowlist: its chats are allowed, chats it named only
        until now are revoked, and no chat that is not allowed keeps any state."""
        with database_proxy.atomic(WRITE_AT_ONCE):
            allowed.set_access_policy(self.policy)
            granted = allowlist_grants()
            for address in sorted(granted - self.allowlist):
                if revoke(address) is not None:
                    log.warning("%s left IM_ALLOWLIST: revoked", address)
            grants = set()
            for address in sorted(self.allowlist):
                provider, _, chat_id = address.partition(":")
                channel = queries.ensure_channel(provider, chat_id)
                if address in granted or not channel.allowed:  # else approved: kept as such
                    Channel.update(allowed=True).where(Channel.id == channel.id).execute()
                    grants.add(address)
            queries.set_meta(ALLOWLIST_GRANTS_KEY, json.dumps(sorted(grants)))
            if self.policy != "open":
                # E.g. chats that were let in while the policy was open.
                for channel in allowed.channels_to_cut_off():
                    if dropped := allowed.cut_off(channel):
                        log.info("%s is not allowed: %s dropped", channel.address, dropped)

    def decide(self, channel: Channel, now: float | None = None) -> Decision:
        """`channel` must be fresh from the store (another process may have changed it)."""
        now = time.time() if now is None else now
        if self.policy == "open" or channel.allowed:
            return Decision(True)
        last = self._last_refusal.get(channel.address)
        if last is not None and now - last < REFUSED_REPLY_INTERVAL_SECONDS:
            return Decision(False)
        if self.policy == "allowlist":
            self._last_refusal[channel.address] = now
            log.info("refused chat %s (not on the allowlist)", channel.address)
            return Decision(False)
        code = pairing_code(channel, now)
        self._last_refusal[channel.address] = now  # after the store write: a retry re-asks
        if code is None:
            return Decision(False)
        log.warning(
            "chat %s asks to pair; approve with: poco-im-agent pair approve %s",
            channel.address,
            code,
        )
        return Decision(False, OutboundMessage(i18n.text(self.lang, "pairing", code=code)))


def _new_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return f"{raw[:4]}-{raw[4:]}"


def normalise_code(code: str) -> str:
    raw = "".join(ch for ch in code.upper() if ch.isalnum())
    return f"{raw[:4]}-{raw[4:]}"


def pairing_code(channel: Channel, now: float) -> str | None:
    """The chat's live code (a new one if none); None when too many codes are live."""
    Pairing.delete().where(Pairing.expires_at < now).execute()
    existing = Pairing.get_or_none(
        (Pairing.provider == channel.provider) & (Pairing.chat_id == channel.chat_id)
    )
    if existing is not None:
        return str(existing.code)
    if Pairing.select().count() >= MAX_ACTIVE_CODES:
        return None
    code = _new_code()
    Pairing.create(
        provider=channel.provider,
        chat_id=channel.chat_id,
        code=code,
        title=channel.title,
        created_at=now,
        expires_at=now + CODE_TTL_SECONDS,
    )
    return code


def pending_pairings(now: float | None = None) -> list[Pairing]:
    now = time.time() if now is None else now
    return list(Pairing.select().where(Pairing.expires_at >= now).order_by(Pairing.created_at))


def approve(code: str, lang: str, now: float | None = None) -> Channel | None:
    """Allow the chat behind a live code and tell it so; None for an unknown/expired code."""
    now = time.time() if now is None else now
    with database_proxy.atomic(WRITE_AT_ONCE):
        pairing = Pairing.get_or_none(
            (Pairing.code == normalise_code(code)) & (Pairing.expires_at >= now)
        )
        if pairing is None:
            return None
        channel = queries.ensure_channel(pairing.provider, pairing.chat_id)
        Channel.update(allowed=True).where(Channel.id == channel.id).execute()
        pairing.delete_instance()
        _drop_grant(channel.address)  # approved now: leaving the allowlist keeps it
        queries.enqueue(channel, OutboundMessage(i18n.text(lang, "paired")))
    return channel


def revoke(address: str) -> allowed.CutOff | None:
    """Forbid an allowed chat and drop what it had (None: it was not allowed)."""
    provider, _, chat_id = address.partition(":")
    with database_proxy.atomic(WRITE_AT_ONCE):
        channel = queries.find_channel(provider, chat_id)
        if channel is None or not channel.allowed:
            return None
        Channel.update(allowed=False).where(Channel.id == channel.id).execute()
        _drop_grant(address)
        return allowed.cut_off(channel)


def allowlist_grants() -> set[str]:
    """Allowed chats that were not approved: IM_ALLOWLIST named them at the last start."""
    return set(json.loads(queries.get_meta(ALLOWLIST_GRANTS_KEY, "[]")))


def _drop_grant(address: str) -> None:
    grants = allowlist_grants()
    if address in grants:
        queries.set_meta(ALLOWLIST_GRANTS_KEY, json.dumps(sorted(grants - {address})))


def allowed_channels() -> list[Channel]:
    return list(Channel.select().where(Channel.allowed).order_by(Channel.id))
