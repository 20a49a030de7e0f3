"""Start at login: the XDG autostart entry is written and removed (Linux), from the CLI too."""

from __future__ import annotations

import configparser
import os
import plistlib
import subprocess
import sys
from pathlib import Path

import pytest

from agent import autostart

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="XDG autostart is Linux's way")


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "xdg-config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


@linux_only
def test_enable_writes_an_xdg_entry_and_disable_removes_it(config_home: Path) -> None:
    assert not autostart.is_enabled()
    where = autostart.enable(["/opt/poco im/poco-im-agent", "tray"])
    entry = config_home / "autostart" / "poco-im-agent.desktop"
    assert where == str(entry) and entry.is_file()
    assert autostart.is_enabled()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(entry)
    section = parser["Desktop Entry"]
    assert section["Type"] == "Application"
    assert section["Exec"] == '"/opt/poco im/poco-im-agent" tray'
    assert section["Terminal"] == "false"
    assert autostart.disable() is True
    assert not entry.exists() and not autostart.is_enabled()
    assert autostart.disable() is False


@linux_only
def test_default_command_is_this_python_running_the_package(config_home: Path) -> None:
    autostart.enable()
    text = (config_home / "autostart" / "poco-im-agent.desktop").read_text()
    assert f"Exec={sys.executable} -m agent\n" in text


@linux_only
def test_without_xdg_config_home_it_goes_to_dot_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert autostart.desktop_entry_path() == tmp_path / ".config/autostart/poco-im-agent.desktop"


def test_exec_quoting_follows_the_desktop_entry_spec() -> None:
    text = autostart.desktop_entry(['/a b/c"d', "$HOME", "plain"])
    assert 'Exec="/a b/c\\"d" "\\$HOME" plain' in text


def test_launch_agent_plist() -> None:
    plist = plistlib.loads(autostart.launch_agent(["/Applications/poco-im-agent"]))
    assert plist["Label"] == autostart.LAUNCH_AGENT_LABEL
    assert plist["ProgramArguments"] == ["/Applications/poco-im-agent"]
    assert plist["RunAtLoad"] is True


@linux_only
def test_cli_on_status_off(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "HOME": str(tmp_path)}

    def cli(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "agent", "autostart", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout

    assert cli("status").startswith("start at login: off")
    assert "on" in cli("on")
    assert (tmp_path / "cfg/autostart/poco-im-agent.desktop").is_file()
    assert cli("status").startswith("start at login: on")
    assert cli("off").strip() == "start at login: off"
    assert not (tmp_path / "cfg/autostart/poco-im-agent.desktop").exists()
