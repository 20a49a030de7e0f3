"""Who may drive the backend: pairing codes, the allowlist, or open. Decided per chat."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

from agent.chats.base import OutboundMessage
from agent.core import i18n
from agent.store import queries
from agent.store.models import Channel, Pairing, database_proxy

log = logging.getLogger(__name__)

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: easy to read aloud
CODE_LENGTH = 8
CODE_TTL_SECONDS = 3600
# A refused chat hears from us at most this often, and only this many codes live at once.
REFUSED_REPLY_INTERVAL_SECONDS = 600
MAX_ACTIVE_CODES = 50


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

    def decide(self, channel: Channel, now: float | None = None) -> Decision:
        now = time.time() if now is None else now
        if self.policy == "open" or channel.allowed or channel.address in self.allowlist:
            return Decision(True)
        last = self._last_refusal.get(channel.address)
        if last is not None and now - last < REFUSED_REPLY_INTERVAL_SECONDS:
            return Decision(False)
        self._last_refusal[channel.address] = now
        if self.policy == "allowlist":
            log.info("refused chat %s (not on the allowlist)", channel.address)
            return Decision(False)
        code = pairing_code(channel, now)
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
    with database_proxy.atomic():
        pairing = Pairing.get_or_none(
            (Pairing.code == normalise_code(code)) & (Pairing.expires_at >= now)
        )
        if pairing is None:
            return None
        channel = queries.ensure_channel(pairing.provider, pairing.chat_id)
        Channel.update(allowed=True).where(Channel.id == channel.id).execute()
        pairing.delete_instance()
        queries.enqueue(channel, OutboundMessage(i18n.text(lang, "paired")))
    return channel


def revoke(address: str) -> bool:
    provider, _, chat_id = address.partition(":")
    return bool(
        Channel.update(allowed=False)
        .where((Channel.provider == provider) & (Channel.chat_id == chat_id) & Channel.allowed)
        .execute()
    )


def allowed_channels() -> list[Channel]:
    return list(Channel.select().where(Channel.allowed).order_by(Channel.id))
