"""The tray: the state model (headless), the actions its menu calls (against the fakes), and
the real icon docked in a real X system tray (Xvfb + trayer), checked on a screenshot."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import filelock
import pytest

from agent import paths
from agent.chats.base import ProviderState, ProviderStatus
from agent.config import build_settings, load_settings
from agent.status import AgentStatus
from agent.tray_host import AgentHost, ensure_config_file
from agent.tray_model import (
    COLOURS,
    TOOLTIP_MAX,
    HostView,
    PendingPairing,
    TrayModel,
    TrayState,
    ago,
    menu_model,
    overall_state,
    tooltip,
)
from tests.conftest import agent_environment
from tests.fakes.poco import FakePoco
from tests.fakes.telegram import FakeTelegram

# --- the model, headless ------------------------------------------------------------------


def status_with(
    telegram: ProviderState = ProviderState.CONNECTED,
    backend: bool | None = True,
    paused: bool = False,
    detail: str = "",
) -> AgentStatus:
    status = AgentStatus(paused=paused)
    provider = ProviderStatus(enabled=True, mode="polling")
    provider.set(telegram, detail)
    status.providers = {
        "telegram": provider,
        "dingtalk": ProviderStatus(enabled=False, mode="off"),
    }
    if backend is True:
        status.backend.ok()
    elif backend is False:
        status.backend.failed("connection refused")
    return status


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        (HostView(configured=True, status=status_with()), TrayState.OK),
        (
            HostView(configured=True, status=status_with(ProviderState.CONNECTING)),
            TrayState.CONNECTING,
        ),
        (HostView(configured=True, status=None), TrayState.CONNECTING),
        (
            HostView(configured=True, status=status_with(ProviderState.ERROR, detail="Conflict")),
            TrayState.ERROR,
        ),
        (HostView(configured=True, status=status_with(backend=False)), TrayState.ERROR),
        (HostView(configured=True, status=status_with(paused=True)), TrayState.PAUSED),
        (HostView(configured=False), TrayState.NOT_CONFIGURED),
        (
            HostView(configured=True, error="BACKEND_URL: 'x' is not an http(s) URL"),
            TrayState.ERROR,
        ),
    ],
)
def test_state_for_each_situation(view: HostView, expected: TrayState) -> None:
    assert overall_state(view) is expected
    assert TrayModel(view).colour == COLOURS[expected]


def test_every_state_has_its_own_colour() -> None:
    assert set(COLOURS) == set(TrayState)
    assert len(set(COLOURS.values())) == len(TrayState)


def test_tooltip_names_the_problem_and_fits_windows() -> None:
    conflict = "Conflict: terminated by other getUpdates request " * 5
    view = HostView(configured=True, status=status_with(ProviderState.ERROR, detail=conflict))
    text = tooltip(view)
    assert text.startswith("poco-im-agent: error - Telegram error: Conflict")
    assert len(text) <= TOOLTIP_MAX
    assert tooltip(HostView(configured=True, status=status_with())) == (
        "poco-im-agent: all connected"
    )
    assert "backend unreachable" in tooltip(
        HostView(configured=True, status=status_with(backend=False))
    )
    not_configured = tooltip(HostView(configured=False, config_file="/home/u/agent.env"))
    assert "not configured" in not_configured and "/home/u/agent.env" in not_configured


def test_menu_lines_and_actions() -> None:
    view = HostView(
        configured=True,
        status=status_with(),
        pairings=(PendingPairing("ABCD-EFGH", "telegram:42", "Alice"),),
        autostart=True,
    )
    entries = menu_model(view, now=time.time())
    texts = [e.text for e in entries if not e.separator]
    assert texts[0].endswith("all connected")
    assert any(t.startswith("Telegram: connected · last ok just now") for t in texts)
    assert any(t.startswith("Backend: reachable") for t in texts)
    assert not any(t.startswith("DingTalk") for t in texts)  # disabled providers stay out
    approve = next(e for e in entries if e.action == "approve")
    assert approve.argument == "ABCD-EFGH" and "telegram:42 (Alice)" in approve.text
    actions = [e.action for e in entries if e.action]
    assert actions[-6:] == [
        "toggle_pause",
        "reload",
        "open_settings",
        "open_logs",
        "toggle_autostart",
        "quit",
    ]
    assert next(e for e in entries if e.action == "toggle_autostart").checked is True
    assert next(e for e in entries if e.action == "toggle_pause").text == "Pause"
    paused = menu_model(HostView(configured=True, status=status_with(paused=True)))
    assert next(e for e in paused if e.action == "toggle_pause").text == "Resume"
    stopped = menu_model(HostView(configured=False))
    assert next(e for e in stopped if e.action == "toggle_pause").enabled is False


def test_ago() -> None:
    assert ago(None, 100) == "never"
    assert ago(95, 100) == "just now"
    assert ago(100 - 42, 100) == "42 s ago"
    assert ago(100 - 180, 100) == "3 min ago"
    assert ago(0, 7300) == "2 h ago"


def test_tray_model_imports_without_pystray() -> None:
    code = (
        "import sys; import agent.tray_model, agent.tray_host, agent.cli; "
        "assert 'pystray' not in sys.modules, 'pystray imported'"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"DISPLAY", "WAYLAND_DISPLAY"}}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_bare_command_is_run_without_a_desktop(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.cli import default_command

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert default_command() == "run"


# --- the actions the menu calls, against the fakes ------------------------------------------


@contextlib.asynccontextmanager
async def hosted(env: dict[str, str], config_file: Path) -> Any:
    host = AgentHost(lambda: build_settings(env, config_file), config_file)
    await asyncio.to_thread(host.start)
    try:
        assert await asyncio.to_thread(host.wait_ready, 15), host.error
        yield host
    finally:
        assert await asyncio.to_thread(host.stop)


def get_updates_count(fake: FakeTelegram) -> int:
    return sum(1 for method, _, _ in fake.calls if method == "getUpdates")


async def test_pause_stops_polling_and_resume_catches_up(
    tmp_path: Path, data_dir: Path, telegram_api: FakeTelegram, poco: FakePoco
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with hosted(env, tmp_path / "agent.env") as host:
        await telegram_api.wait_for(lambda t: get_updates_count(t) >= 1, timeout=10)
        host.toggle_pause()
        await wait_until(lambda: host.view().status is not None and host.view().status.paused)
        assert TrayModel(host.view()).state is TrayState.PAUSED
        await asyncio.sleep(0)  # let a cancelled poll finish on the fake's side
        telegram_api.inject_message(42, "/help")
        with pytest.raises(TimeoutError):  # paused: nobody fetches the message
            await telegram_api.wait_for(lambda t: not t.pending_updates, timeout=3)
        host.toggle_pause()
        await telegram_api.wait_for(lambda t: any(s["chat_id"] == 42 for s in t.sent), timeout=10)
        await wait_until(lambda: TrayModel(host.view()).state is TrayState.OK)


async def test_approve_from_the_menu_pairs_the_chat(
    tmp_path: Path, data_dir: Path, telegram_api: FakeTelegram, poco: FakePoco
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco, IM_ACCESS_POLICY="pairing")
    async with hosted(env, tmp_path / "agent.env") as host:
        telegram_api.inject_message(77, "hello", username="alice")
        await telegram_api.wait_for(lambda t: any(s["chat_id"] == 77 for s in t.sent), timeout=10)
        view = await asyncio.to_thread(host.view)
        assert [p.address for p in view.pairings] == ["telegram:77"]
        code = view.pairings[0].code
        assert code in telegram_api.sent[-1]["text"]
        entry = next(e for e in TrayModel(view).menu() if e.action == "approve")
        assert entry.argument == code
        assert await asyncio.to_thread(host.approve, entry.argument) == "telegram:77"
        await telegram_api.wait_for(
            lambda t: sum(1 for s in t.sent if s["chat_id"] == 77) >= 2, timeout=10
        )
        assert (await asyncio.to_thread(host.view)).pairings == ()
        assert await asyncio.to_thread(host.approve, code) is None  # used up


async def test_quit_stops_cleanly(
    tmp_path: Path, data_dir: Path, telegram_api: FakeTelegram, poco: FakePoco
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    host = AgentHost(lambda: build_settings(env, tmp_path / "agent.env"), tmp_path / "agent.env")
    await asyncio.to_thread(host.start)
    assert await asyncio.to_thread(host.wait_ready, 15)
    assert paths.port_file(data_dir).exists()
    started = time.monotonic()
    assert await asyncio.to_thread(host.stop)
    assert time.monotonic() - started < 15
    assert not host.running and host.error == ""
    assert not paths.port_file(data_dir).exists()
    lock = filelock.FileLock(str(paths.lock_file(data_dir)))
    lock.acquire(timeout=0)  # released: a new start could take it
    lock.release()


async def test_first_run_template_then_saving_it_starts_the_agent(
    tmp_path: Path, data_dir: Path, telegram_api: FakeTelegram, poco: FakePoco
) -> None:
    config_file = tmp_path / "config" / "agent.env"
    env = agent_environment(data_dir, poco=poco)

    def load() -> Any:
        return load_settings(environ=env, cwd=tmp_path, config_file=config_file)

    host = AgentHost(load, config_file)
    await asyncio.to_thread(host.start)
    assert not host.running
    assert TrayModel(host.view()).state is TrayState.NOT_CONFIGURED
    assert ensure_config_file(config_file)
    assert not ensure_config_file(config_file)  # never overwritten
    template = config_file.read_text()
    assert "# TELEGRAM_BOT_TOKEN=" in template and "# DINGTALK_CLIENT_ID=" in template
    assert config_file.stat().st_mode & 0o077 == 0
    host.config_changed()
    config_file.write_text(
        template + f"\nTELEGRAM_BOT_TOKEN={telegram_api.token}\n"
        f"TELEGRAM_API_BASE_URL={telegram_api.url}\n"
    )
    os.utime(config_file, (time.time() + 5, time.time() + 5))
    assert host.config_changed()
    await asyncio.to_thread(host.reload)
    try:
        assert await asyncio.to_thread(host.wait_ready, 15)
        await wait_until(lambda: TrayModel(host.view()).state is TrayState.OK)
    finally:
        assert await asyncio.to_thread(host.stop)


async def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.1)


# --- the real icon in a real X system tray ----------------------------------------------------

X_TOOLS = ("Xvfb", "trayer", "import")
MISSING_X_TOOLS = [tool for tool in X_TOOLS if shutil.which(tool) is None]
needs_x = pytest.mark.skipif(
    bool(MISSING_X_TOOLS),
    reason=f"{', '.join(MISSING_X_TOOLS)} not installed (apt-get install xvfb trayer "
    "imagemagick; .ci/run does it)",
)


def _read_display(fd: int, timeout: float) -> str:
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        raise TimeoutError("Xvfb did not start")
    return os.read(fd, 64).decode().strip()


@pytest.fixture
def x_tray() -> Iterator[str]:
    """An X display (Xvfb) with a system tray (trayer); yields the DISPLAY value."""
    from Xlib import display as xdisplay

    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "640x480x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    processes = [xvfb]
    try:
        name = f":{_read_display(read_fd, 15)}"
        trayer = subprocess.Popen(
            [
                "trayer",
                "--edge",
                "top",
                "--align",
                "right",
                "--widthtype",
                "pixel",
                "--width",
                "120",
                "--height",
                "40",
                "--tint",
                "0xffffff",
                "--transparent",
                "true",
                "--alpha",
                "0",
            ],
            env={**os.environ, "DISPLAY": name},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(trayer)
        connection = xdisplay.Display(name)
        try:
            atom = connection.intern_atom("_NET_SYSTEM_TRAY_S0")
            deadline = time.monotonic() + 15
            while connection.get_selection_owner(atom) == 0:  # X.NONE: no tray yet
                assert time.monotonic() < deadline, "trayer did not take the tray selection"
                time.sleep(0.1)
        finally:
            connection.close()
        yield name
    finally:
        os.close(read_fd)
        for process in reversed(processes):
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)


def tray_icon_title(display_name: str) -> str | None:
    """The WM_NAME of our docked icon window (pystray's xorg backend puts the tooltip there)."""
    from Xlib import display as xdisplay
    from Xlib.error import XError

    connection = xdisplay.Display(display_name)
    try:
        stack = [connection.screen().root]
        while stack:
            window = stack.pop()
            try:
                wm_class = window.get_wm_class()
                if wm_class and wm_class[0] == "poco-im-agentSystemTrayIcon":
                    parent = window.query_tree().parent
                    docked = parent.id != connection.screen().root.id
                    name = window.get_wm_name()
                    return str(name) if docked and name is not None else None
                stack.extend(window.query_tree().children)
            except XError:
                continue
        return None
    finally:
        connection.close()


async def screenshot(display_name: str) -> Any:
    from PIL import Image

    process = await asyncio.create_subprocess_exec(
        "import",
        "-window",
        "root",
        "png:-",
        env={**os.environ, "DISPLAY": display_name},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    data, _ = await asyncio.wait_for(process.communicate(), 30)
    return Image.open(io.BytesIO(data)).convert("RGB")


def pixels_of(image: Any, colour: tuple[int, int, int], tolerance: int = 12) -> int:
    data = image.tobytes()  # RGB, 3 bytes a pixel
    r, g, b = colour
    return sum(
        1
        for i in range(0, len(data), 3)
        if abs(data[i] - r) <= tolerance
        and abs(data[i + 1] - g) <= tolerance
        and abs(data[i + 2] - b) <= tolerance
    )


async def wait_for_icon(
    display_name: str, state: TrayState, words: str, timeout: float = 30
) -> str:
    """Wait until the docked icon's tooltip says `words` and the screen shows its colour."""
    deadline = time.monotonic() + timeout
    title: str | None = None
    while time.monotonic() < deadline:
        title = await asyncio.to_thread(tray_icon_title, display_name)
        if title is not None and words in title:
            image = await screenshot(display_name)
            if pixels_of(image, COLOURS[state]) >= 100:
                others = [s for s in TrayState if s is not state]
                assert all(pixels_of(image, COLOURS[s]) < 20 for s in others)
                return title
        await asyncio.sleep(0.2)
    raise AssertionError(f"icon never showed {state} / {words!r}; last tooltip {title!r}")


# The tray as `run_tray` builds it, quit through its menu's Quit item once told on stdin.
QUIT_FROM_THE_MENU = """
import sys, threading
from agent import paths
from agent.config import load_settings
from agent.tray import TrayApp
from agent.tray_host import AgentHost

host = AgentHost(load_settings, paths.user_config_file())
host.start()
app = TrayApp(host)

def click_quit():
    sys.stdin.readline()
    quit_item = next(item for item in app.icon.menu.items if str(item) == "Quit")
    quit_item(app.icon)  # what pystray calls when the menu's Quit is clicked

threading.Thread(target=click_quit, daemon=True).start()
app.run()
print("runtime running after Quit:", host.running, flush=True)
"""


async def start_tray(
    tmp_path: Path, display_name: str, env: dict[str, str], code: str | None = None
) -> Any:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TELEGRAM_", "DINGTALK_", "IM_", "BACKEND_", "POLL_"))
    }
    clean.update(
        {
            "HOME": str(tmp_path / "home"),
            "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
            "DISPLAY": display_name,
            "PYSTRAY_BACKEND": "xorg",
            **env,
        }
    )
    arguments = ["-m", "agent", "tray"] if code is None else ["-c", code]
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *arguments,
        env=clean,
        cwd=tmp_path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def stop_tray(
    process: Any, signum: int | None = signal.SIGTERM, how: str = "SIGTERM"
) -> tuple[int, str, str]:
    """Stop the tray (by `signum`, or already asked to) and wait: exit code, stdout, stderr."""
    if process.returncode is None and signum is not None:
        process.send_signal(signum)
    output = asyncio.ensure_future(process.communicate())
    try:
        await asyncio.wait_for(asyncio.shield(output), 30)
    except TimeoutError:
        process.kill()
        _, stderr = await output
        tail = stderr.decode(errors="replace")[-4000:]
        raise AssertionError(f"the tray did not stop on {how}:\n{tail}") from None
    stdout, stderr = output.result()
    return process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")


@needs_x
async def test_icon_docks_and_turns_red_when_telegram_conflicts(
    tmp_path: Path, data_dir: Path, x_tray: str, telegram_api: FakeTelegram, poco: FakePoco
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    process = await start_tray(tmp_path, x_tray, env)
    try:
        title = await wait_for_icon(x_tray, TrayState.OK, "all connected")
        assert title == "poco-im-agent: all connected"
        # Someone sets a webhook while we poll: the classic silent failure, shown in red.
        telegram_api.webhook = {"url": "https://elsewhere.example/hook"}
        title = await wait_for_icon(x_tray, TrayState.ERROR, "Conflict")
        assert "Telegram error" in title
    finally:
        returncode, _, stderr = await stop_tray(process)
    assert returncode == 0, stderr
    assert "Traceback" not in stderr


@needs_x
async def test_icon_is_red_while_the_backend_is_down(
    tmp_path: Path, data_dir: Path, x_tray: str, telegram_api: FakeTelegram
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api)  # BACKEND_URL: a closed port
    process = await start_tray(tmp_path, x_tray, env)
    try:
        await wait_for_icon(x_tray, TrayState.ERROR, "backend unreachable", timeout=15)
    finally:
        returncode, _, stderr = await stop_tray(process)
    assert returncode == 0, stderr
    assert "Traceback" not in stderr


@needs_x
async def test_sigint_stops_the_tray_cleanly(
    tmp_path: Path, data_dir: Path, x_tray: str, telegram_api: FakeTelegram
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api)
    process = await start_tray(tmp_path, x_tray, env)
    try:
        await wait_for_icon(x_tray, TrayState.ERROR, "backend unreachable", timeout=15)
    finally:
        returncode, _, stderr = await stop_tray(process, signal.SIGINT, "SIGINT")
    assert returncode == 0, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "INFO agent.runtime: stopping" in stderr
    assert not paths.port_file(data_dir).exists()


@needs_x
async def test_quit_from_the_menu_stops_the_tray_cleanly(
    tmp_path: Path, data_dir: Path, x_tray: str, telegram_api: FakeTelegram
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api)
    process = await start_tray(tmp_path, x_tray, env, code=QUIT_FROM_THE_MENU)
    try:
        await wait_for_icon(x_tray, TrayState.ERROR, "backend unreachable", timeout=15)
        process.stdin.write(b"quit\n")
        await process.stdin.drain()
        signum = None  # Quit alone must end it
    except BaseException:
        signum = signal.SIGTERM
        raise
    finally:
        returncode, stdout, stderr = await stop_tray(process, signum, "Quit")
    assert returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "runtime running after Quit: False" in stdout, stderr


@needs_x
def test_bare_command_picks_the_tray_on_a_desktop(x_tray: str) -> None:
    code = "from agent.cli import default_command; print(default_command())"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DISPLAY": x_tray},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "tray"
