"""The runtime beside a GUI: its own thread and event loop, and the actions the tray menu calls.

Nothing here imports pystray, so the actions are testable without a display. Every call into
the runtime goes through its loop (`call_soon_threadsafe` / `run_coroutine_threadsafe`): the
runtime and its database connection belong to that thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from agent import autostart, paths
from agent.config import Settings, template
from agent.errors import AgentError
from agent.runtime import Runtime
from agent.status import AgentStatus
from agent.tray_model import HostView, PendingPairing

log = logging.getLogger(__name__)

T = TypeVar("T")

STOP_TIMEOUT_SECONDS = 30.0
CALL_TIMEOUT_SECONDS = 5.0


def ensure_config_file(path: Path) -> bool:
    """Write the commented template on first run; True when it was written now."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(template(), encoding="utf-8")
    path.chmod(0o600)  # it will hold tokens
    return True


def open_path(path: Path) -> None:
    """Show a file or folder with the desktop's default application."""
    if sys.platform == "win32":
        os.startfile(path)  # type: ignore[attr-defined,unused-ignore]  # noqa: S606
        return
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    try:
        subprocess.Popen(  # noqa: S603  # our own path, no shell
            [opener, str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        log.warning("cannot open %s with %s: %s", path, opener, exc)


class AgentHost:
    """Owns one `Runtime` at a time in a background thread; restarts it on reload."""

    def __init__(self, load: Callable[[], Settings], config_file: Path) -> None:
        self._load = load
        self.config_file = config_file
        self.settings: Settings | None = None
        self.error = ""
        self._runtime: Runtime | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._config_mtime = self._mtime()
        self._lock = threading.Lock()

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Load the settings and start the runtime if a chat platform is configured."""
        with self._lock:
            self._config_mtime = self._mtime()
            try:
                self.settings = self._load()
            except AgentError as exc:
                self.settings, self.error = None, str(exc)
                log.error("configuration: %s", exc)
                return
            self.error = ""
            if not self.settings.any_provider_enabled:
                return
            runtime = Runtime(self.settings)
            ready = threading.Event()
            self._runtime = runtime
            self._thread = threading.Thread(
                target=self._thread_main, args=(runtime, ready), name="agent-runtime", daemon=True
            )
            self._thread.start()
            ready.wait(CALL_TIMEOUT_SECONDS)  # the loop exists once this is set

    def _thread_main(self, runtime: Runtime, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready.set()
        try:
            loop.run_until_complete(runtime.run())
        except AgentError as exc:
            self.error = str(exc)
            log.error("the agent stopped: %s", exc)
        except Exception as exc:  # a crash shows in the tray instead of killing it
            self.error = f"crashed: {exc}"
            log.exception("the agent crashed")
        finally:
            loop.close()
            self._loop = None

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> bool:
        """Ask the runtime to stop gracefully and wait; False if it is still running."""
        thread, loop, runtime = self._thread, self._loop, self._runtime
        if thread is None:
            return True
        if loop is not None and runtime is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(runtime.request_stop)
        thread.join(timeout)
        if thread.is_alive():
            return False
        self._thread = self._runtime = None
        return True

    def reload(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the runtime serves health (True) or has stopped (False)."""
        runtime = self._runtime
        if runtime is None:
            return False
        future = self._submit(runtime.ready.wait)
        if future is None:
            return False
        try:
            future.result(timeout)
        except (TimeoutError, asyncio.CancelledError, RuntimeError):
            return False
        return True

    # -- what the menu calls -------------------------------------------------------------

    def set_paused(self, paused: bool) -> None:
        loop, runtime = self._loop, self._runtime
        if loop is not None and runtime is not None:
            loop.call_soon_threadsafe(runtime.set_paused, paused)

    def toggle_pause(self) -> None:
        status = self._status()
        if status is not None:
            self.set_paused(not status.paused)

    def approve(self, code: str) -> str | None:
        """Approve a pairing code; the chat's address, or None for an unknown/expired code."""
        future = self._submit(lambda: self._approve(code))
        return None if future is None else future.result(CALL_TIMEOUT_SECONDS)

    async def _approve(self, code: str) -> str | None:
        from agent.core import access

        assert self.settings is not None
        channel = access.approve(code, self.settings.lang)
        delivery = getattr(self._runtime, "delivery", None)  # set once the runtime runs
        if delivery is not None:
            delivery.wake()  # send "paired" now
        return None if channel is None else str(channel.address)

    def pending_pairings(self) -> tuple[PendingPairing, ...]:
        future = self._submit(self._pairings)
        if future is None:
            return ()
        try:
            return future.result(CALL_TIMEOUT_SECONDS)
        except (TimeoutError, RuntimeError, AgentError):
            return ()

    async def _pairings(self) -> tuple[PendingPairing, ...]:
        from agent.core import access

        return tuple(
            PendingPairing(str(p.code), f"{p.provider}:{p.chat_id}", str(p.title or ""))
            for p in access.pending_pairings()
        )

    def open_settings(self) -> None:
        ensure_config_file(self.config_file)
        open_path(self.config_file)

    def open_logs(self) -> None:
        data_dir = self.settings.data_dir if self.settings else paths.default_data_dir()
        folder = paths.log_dir(data_dir)
        folder.mkdir(parents=True, exist_ok=True)
        open_path(folder)

    def toggle_autostart(self) -> bool:
        if autostart.is_enabled():
            autostart.disable()
            return False
        autostart.enable()
        return True

    # -- state for the tray ----------------------------------------------------------------

    def view(self) -> HostView:
        configured = self.settings is not None and self.settings.any_provider_enabled
        status = self._status() if self.running else None
        return HostView(
            configured=configured or bool(self.error),
            status=status,
            error=self.error,
            pairings=self.pending_pairings() if status is not None else (),
            autostart=autostart.is_enabled(),
            config_file=str(self.config_file),
        )

    def config_changed(self) -> bool:
        """True (once) when the settings file was saved since the last start."""
        mtime = self._mtime()
        if mtime == self._config_mtime:
            return False
        self._config_mtime = mtime
        return True

    def _status(self) -> AgentStatus | None:
        runtime = self._runtime
        return None if runtime is None else runtime.status

    def _mtime(self) -> float | None:
        try:
            return self.config_file.stat().st_mtime
        except OSError:
            return None

    def _submit(self, make: Callable[[], Coroutine[Any, Any, T]]) -> Future[T] | None:
        loop = self._loop
        if loop is None or not self.running:
            return None
        coroutine = make()
        try:
            return asyncio.run_coroutine_threadsafe(coroutine, loop)
        except RuntimeError:  # the loop closed meanwhile
            coroutine.close()
            return None
