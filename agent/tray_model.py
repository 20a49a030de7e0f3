"""What the tray shows for a state: colour, tooltip, menu lines. Pure: no pystray here."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum

from agent import __version__
from agent.chats.base import ProviderState
from agent.status import AgentStatus

# Windows cuts tray tooltips at 127 characters (NOTIFYICONDATA.szTip is 128 with the NUL).
TOOLTIP_MAX = 127
APP_TITLE = "poco-im-agent"


class TrayState(StrEnum):
    OK = "ok"
    CONNECTING = "connecting"
    ERROR = "error"
    NOT_CONFIGURED = "not_configured"
    PAUSED = "paused"


# One colour per state, distinct enough to tell apart at 16 px (and in a screenshot).
COLOURS: dict[TrayState, tuple[int, int, int]] = {
    TrayState.OK: (40, 167, 69),
    TrayState.CONNECTING: (240, 173, 0),
    TrayState.ERROR: (220, 53, 69),
    TrayState.NOT_CONFIGURED: (0, 120, 215),
    TrayState.PAUSED: (128, 128, 128),
}

SUMMARIES: dict[TrayState, str] = {
    TrayState.OK: "all connected",
    TrayState.CONNECTING: "connecting",
    TrayState.ERROR: "error",
    TrayState.NOT_CONFIGURED: "not configured",
    TrayState.PAUSED: "paused",
}

PROVIDER_TITLES = {"telegram": "Telegram", "dingtalk": "DingTalk"}


@dataclass(frozen=True)
class PendingPairing:
    code: str
    address: str
    title: str = ""


@dataclass(frozen=True)
class HostView:
    """Everything the tray needs, as one read-only value.

    `status` is None while the runtime is not running; `error` is why it is not (a bad
    setting, another instance holding the lock, a crash).
    """

    configured: bool
    status: AgentStatus | None = None
    error: str = ""
    pairings: tuple[PendingPairing, ...] = ()
    autostart: bool = False
    config_file: str = ""


@dataclass(frozen=True)
class MenuEntry:
    """One menu line. `action` None = an information line (shown disabled)."""

    text: str
    action: str | None = None
    argument: str = ""
    checked: bool | None = None
    enabled: bool = True
    default: bool = False
    separator: bool = False


SEPARATOR = MenuEntry("", separator=True)


@dataclass
class TrayModel:
    """The state, its colour and tooltip, and the menu lines for one `HostView`."""

    view: HostView
    now: float = field(default_factory=time.time)

    @property
    def state(self) -> TrayState:
        return overall_state(self.view)

    @property
    def colour(self) -> tuple[int, int, int]:
        return COLOURS[self.state]

    @property
    def tooltip(self) -> str:
        return tooltip(self.view)

    def menu(self) -> list[MenuEntry]:
        return menu_model(self.view, self.now)


def overall_state(view: HostView) -> TrayState:
    if view.error:
        return TrayState.ERROR
    if not view.configured:
        return TrayState.NOT_CONFIGURED
    status = view.status
    if status is None:
        return TrayState.CONNECTING
    if status.paused:
        return TrayState.PAUSED
    enabled = [p for p in status.providers.values() if p.enabled]
    if (
        status.backend.reachable is False
        or status.backend.unauthorized
        or any(p.state is ProviderState.ERROR for p in enabled)
    ):
        return TrayState.ERROR
    if status.is_healthy():
        return TrayState.OK
    return TrayState.CONNECTING


def _problem(view: HostView) -> str:
    """The first thing worth naming in the tooltip, or ''."""
    if view.error:
        return view.error
    if not view.configured:
        return f"fill in {view.config_file or 'agent.env'}"
    status = view.status
    if status is None:
        return "starting"
    for name, provider in status.providers.items():
        if provider.enabled and provider.state is not ProviderState.CONNECTED:
            title = PROVIDER_TITLES.get(name, name)
            return f"{title} {provider.state.value}" + (
                f": {provider.detail}" if provider.detail else ""
            )
    if status.backend.unauthorized:
        return "backend refuses the agent: set BACKEND_INTERNAL_TOKEN"
    if status.backend.reachable is False:
        return "backend unreachable"
    return ""


def tooltip(view: HostView) -> str:
    state = overall_state(view)
    text = f"{APP_TITLE}: {SUMMARIES[state]}"
    problem = "" if state in (TrayState.OK, TrayState.PAUSED) else _problem(view)
    if problem:
        text += f" - {problem}"
    if view.pairings:
        count = len(view.pairings)
        text += f" ({count} pairing request{'s' if count > 1 else ''})"
    if len(text) > TOOLTIP_MAX:
        text = text[: TOOLTIP_MAX - 3] + "..."
    return text


def ago(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return "never"
    seconds = max(0.0, now - timestamp)
    if seconds < 10:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def _status_lines(view: HostView, now: float) -> list[MenuEntry]:
    status = view.status
    if status is None:
        return []
    lines = []
    for name, provider in status.providers.items():
        if not provider.enabled:
            continue
        title = PROVIDER_TITLES.get(name, name)
        detail = f" ({provider.detail})" if provider.detail else ""
        lines.append(
            MenuEntry(
                f"{title}: {provider.state.value}{detail}"
                f" · last ok {ago(provider.last_ok_at, now)}",
                enabled=False,
            )
        )
    backend = status.backend
    backend_state = backend.state if backend.reachable is not None else "not checked yet"
    lines.append(
        MenuEntry(
            f"Backend: {backend_state} · last ok {ago(backend.last_ok_at, now)}", enabled=False
        )
    )
    return lines


def menu_model(view: HostView, now: float | None = None) -> list[MenuEntry]:
    """The tray menu, top to bottom: state, providers, backend, pairings, actions, Quit."""
    now = time.time() if now is None else now
    state = overall_state(view)
    header = f"{APP_TITLE} {__version__}: {SUMMARIES[state]}"
    entries = [MenuEntry(header, enabled=False)]
    if state in (TrayState.ERROR, TrayState.NOT_CONFIGURED) and _problem(view):
        entries.append(MenuEntry(_problem(view)[:100], enabled=False))
    entries += _status_lines(view, now)
    if view.pairings:
        entries.append(SEPARATOR)
        entries += [
            MenuEntry(
                f"Approve {p.address}" + (f" ({p.title})" if p.title else "") + f" - {p.code}",
                action="approve",
                argument=p.code,
            )
            for p in view.pairings
        ]
    running = view.status is not None
    paused = running and view.status is not None and view.status.paused
    entries += [
        SEPARATOR,
        MenuEntry("Resume" if paused else "Pause", action="toggle_pause", enabled=running),
        MenuEntry("Reload settings", action="reload"),
        MenuEntry("Open settings file", action="open_settings", default=True),
        MenuEntry("Open log folder", action="open_logs"),
        MenuEntry("Start at login", action="toggle_autostart", checked=view.autostart),
        SEPARATOR,
        MenuEntry("Quit", action="quit"),
    ]
    return entries
