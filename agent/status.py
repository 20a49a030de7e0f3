"""The health snapshot shared by `/api/v1/health`, `status` and the tray."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from agent import __version__
from agent.chats.base import ProviderState, ProviderStatus

UNAUTHORIZED_DETAIL = (
    "the backend answered 401: set BACKEND_INTERNAL_TOKEN to its INTERNAL_API_TOKEN"
)


@dataclass
class BackendStatus:
    reachable: bool | None = None
    detail: str = ""
    last_ok_at: float | None = None
    # The backend answered, but refused us (401): reachable, yet nothing works.
    unauthorized: bool = False
    # When any answer (or a failure) was last seen: how fresh `state` is.
    checked_at: float | None = None

    def ok(self) -> None:
        self.reachable = True
        self.unauthorized = False
        self.detail = ""
        self.last_ok_at = self.checked_at = time.time()

    def failed(self, detail: str) -> None:
        self.reachable = False
        self.unauthorized = False
        self.detail = detail
        self.checked_at = time.time()

    def refused_auth(self) -> None:
        self.reachable = True
        self.unauthorized = True
        self.detail = UNAUTHORIZED_DETAIL
        self.checked_at = time.time()

    @property
    def state(self) -> str:
        if self.unauthorized:
            return "unauthorized"
        return "unreachable" if self.reachable is False else "reachable"


@dataclass
class AgentStatus:
    providers: dict[str, ProviderStatus] = field(default_factory=dict)
    backend: BackendStatus = field(default_factory=BackendStatus)
    started_at: float = field(default_factory=time.time)
    paused: bool = False

    def is_healthy(self) -> bool:
        enabled = [p for p in self.providers.values() if p.enabled]
        return (
            bool(enabled)
            and all(p.state is ProviderState.CONNECTED for p in enabled)
            and self.backend.reachable is not False
            and not self.backend.unauthorized
        )

    def snapshot(self, outbox_pending: int) -> dict[str, Any]:
        """The health JSON (contract §4). No secrets, no chat ids."""
        return {
            "status": "ok" if self.is_healthy() else "degraded",
            "version": __version__,
            "paused": self.paused,
            "providers": {
                name: {
                    "enabled": p.enabled,
                    "mode": p.mode,
                    "state": p.state.value,
                    "detail": p.detail,
                    "last_ok_at": _iso(p.last_ok_at),
                }
                for name, p in self.providers.items()
            },
            "backend": {
                "state": self.backend.state,
                "detail": self.backend.detail,
                "last_ok_at": _iso(self.backend.last_ok_at),
            },
            "outbox_pending": outbox_pending,
            "uptime_seconds": round(time.time() - self.started_at, 1),
        }


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
