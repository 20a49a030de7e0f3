"""Start at login, the platform's own way: XDG autostart, a LaunchAgent, or the Run key."""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
from pathlib import Path

from agent.paths import APP_NAME

LAUNCH_AGENT_LABEL = "ai.poco.im-agent"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"


def command() -> list[str]:
    """What the login starts: the frozen executable itself, or `python -m agent`."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "agent"]


def _quote_windows(args: list[str]) -> str:
    return subprocess.list2cmdline(args)


# --- Linux and other XDG desktops ------------------------------------------------------


def desktop_entry_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "autostart" / f"{APP_NAME}.desktop"


def desktop_entry(args: list[str]) -> str:
    # The desktop entry spec quotes Exec arguments with double quotes; shlex's single
    # quotes are not understood, so quote by hand when an argument needs it.
    def quote(arg: str) -> str:
        if arg and all(c.isalnum() or c in "/._-+:=," for c in arg):
            return arg
        escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")
        return '"' + escaped.replace("$", "\\$") + '"'

    return "\n".join(
        [
            "[Desktop Entry]",
            "Type=Application",
            "Name=Poco IM agent",
            "Comment=Drive Poco agent sessions from Telegram and DingTalk",
            f"Exec={' '.join(quote(a) for a in args)}",
            "Terminal=false",
            "X-GNOME-Autostart-enabled=true",
            "",
        ]
    )


# --- macOS ------------------------------------------------------------------------------


def launch_agent_path() -> Path:
    return Path.home() / "Library" / "LaunchAgents" / f"{LAUNCH_AGENT_LABEL}.plist"


def launch_agent(args: list[str]) -> bytes:
    return plistlib.dumps(
        {
            "Label": LAUNCH_AGENT_LABEL,
            "ProgramArguments": args,
            "RunAtLoad": True,
            "ProcessType": "Interactive",
        }
    )


# --- the three operations ---------------------------------------------------------------


def _file_path() -> Path | None:
    """The file that holds the entry, or None on Windows (registry)."""
    if sys.platform == "win32":
        return None
    if sys.platform == "darwin":
        return launch_agent_path()
    return desktop_entry_path()


def is_enabled() -> bool:
    path = _file_path()
    if path is not None:
        return path.is_file()
    return _windows_get() is not None


def enable(args: list[str] | None = None) -> str:
    """Register the agent to start at login; return where the entry lives."""
    args = command() if args is None else args
    path = _file_path()
    if path is None:
        _windows_set(_quote_windows(args))
        return f"HKCU\\{RUN_KEY}\\{APP_NAME}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if sys.platform == "darwin":
        path.write_bytes(launch_agent(args))
    else:
        path.write_text(desktop_entry(args), encoding="utf-8")
    return str(path)


def disable() -> bool:
    """Remove the login entry; False when there was none."""
    path = _file_path()
    if path is None:
        return _windows_delete()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def describe() -> str:
    """One line for `autostart status`."""
    path = _file_path()
    where = str(path) if path is not None else f"HKCU\\{RUN_KEY}\\{APP_NAME}"
    return f"{'on' if is_enabled() else 'off'} ({where})"


# --- Windows registry (only there; mypy checks the branch of the platform it runs on) ----

if sys.platform == "win32":
    import winreg

    def _windows_get() -> str | None:
        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
                value, _ = winreg.QueryValueEx(key, APP_NAME)
        except OSError:
            return None
        return str(value)

    def _windows_set(command_line: str) -> None:
        with winreg.CreateKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
            winreg.SetValueEx(key, APP_NAME, 0, winreg.REG_SZ, command_line)

    def _windows_delete() -> bool:
        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_SET_VALUE) as key:
                winreg.DeleteValue(key, APP_NAME)
        except OSError:
            return False
        return True

else:

    def _windows_get() -> str | None:
        raise OSError("the Run key exists only on Windows")

    def _windows_set(command_line: str) -> None:
        raise OSError("the Run key exists only on Windows")

    def _windows_delete() -> bool:
        raise OSError("the Run key exists only on Windows")
