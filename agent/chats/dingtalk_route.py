"""Which sessionWebhook a DingTalk message may hand us, and for how long.

A robot message carries `sessionWebhook`, a URL the agent later POSTs replies and
notifications to, and `sessionWebhookExpiredTime`. Taken on trust, one forged call (a
webhook token read from a proxy log) would point an allowed chat's notifications at any
URL and make the agent POST wherever it is told. So a sessionWebhook is used only when it
has the shape DingTalk gives it, `https://oapi.dingtalk.com/robot/sendBySession?session=…`
(the robot docs and the dingtalk-stream SDK's samples show exactly this), and its claimed
life is capped: DingTalk grants about 90 minutes.

Allowed origins (scheme, host, port): DingTalk's own `https://oapi.dingtalk.com`, plus
the origin of DINGTALK_OPEN_BASE_URL (default `https://api.dingtalk.com`, DingTalk too).
That setting already receives the app secret, so an operator who points it at their own
gateway (or a test at a fake on 127.0.0.1) trusts that host anyway; nothing else is
accepted, and no extra setting can widen the list by mistake.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

DINGTALK_SESSION_ORIGIN = ("https", "oapi.dingtalk.com", 443)
SESSION_WEBHOOK_PATH = "/robot/sendBySession"
# DingTalk gives a sessionWebhook ~90 minutes; a claim beyond this is cut down to it.
SESSION_WEBHOOK_MAX_TTL = 2 * 3600.0
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


def origin_of(url: str) -> Origin | None:
    """(scheme, host, port) of an http(s) URL without user info, else None."""
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    return parts.scheme, parts.hostname.lower(), port


class SessionWebhookPolicy:
    """Decides whether a sessionWebhook URL and its expiry can be used (module docstring)."""

    def __init__(self, open_base_url: str) -> None:
        self.origins: set[Origin] = {DINGTALK_SESSION_ORIGIN}
        configured = origin_of(open_base_url)
        if configured is not None:
            self.origins.add(configured)

    def accepts(self, url: str) -> bool:
        """True for `<allowed origin>/robot/sendBySession?session=<non-empty>` and nothing
        more (no other query field, no fragment)."""
        if origin_of(url) not in self.origins:
            return False
        parts = urlsplit(url)
        query = parse_qs(parts.query, keep_blank_values=True)
        return (
            parts.path == SESSION_WEBHOOK_PATH
            and not parts.fragment
            and list(query) == ["session"]
            and len(query["session"]) == 1
            and bool(query["session"][0].strip())
        )

    @staticmethod
    def expires_at(claimed_ms: float, now: float) -> float:
        """The expiry to believe (epoch seconds): what DingTalk claims, at most the cap."""
        return min(claimed_ms / 1000.0, now + SESSION_WEBHOOK_MAX_TTL)

    def usable(self, url: str, expires_at: float, now: float, margin: float) -> bool:
        """A stored sessionWebhook may be sent to: trusted, and alive for `margin` more."""
        return (
            bool(url)
            and now + margin <= expires_at <= now + SESSION_WEBHOOK_MAX_TTL
            and self.accepts(url)
        )
