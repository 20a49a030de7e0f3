"""The tray icon: its colour says the state, its menu holds the actions; the runtime runs beside.

pystray wants the main thread (macOS) and fails to import on Linux without a display, so it is
imported only in `run_tray`, which only the `tray` command (or a bare start on a desktop) calls.

With pystray's xorg backend every X call is made on the thread that runs the icon (see
`TrayApp._x_events`): python-xlib cannot be driven from two threads safely.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from agent.config import Settings
from agent.tray_host import AgentHost, ensure_config_file
from agent.tray_model import APP_TITLE, MenuEntry, TrayModel

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0
ICON_SIZE = 64


def icon_image(colour: tuple[int, int, int], size: int = ICON_SIZE) -> Image.Image:
    """A filled disc in the state's colour on a transparent square."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    margin = size // 16
    draw.ellipse((margin, margin, size - margin - 1, size - margin - 1), fill=(*colour, 255))
    return image


class TrayApp:
    def __init__(self, host: AgentHost) -> None:
        import pystray

        self._pystray = pystray
        self.host = host
        self.model = TrayModel(host.view())
        self._shown: tuple[tuple[int, int, int], str] | None = None
        self._stopping = threading.Event()
        # Icon updates and Quit exclude each other: no update is queued once Quit has begun.
        self._ui_lock = threading.Lock()
        self._xorg = pystray.Icon.__module__.endswith("_xorg")
        # Work for the icon's thread (xorg only), and a pipe to wake that thread for it.
        self._ui_calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._ui_thread: threading.Thread | None = None
        self._wake_lock = threading.Lock()
        self._wake: tuple[int, int] | None = None
        self.icon = pystray.Icon(
            APP_TITLE,
            icon_image(self.model.colour),
            self._displayable(self.model.tooltip),
            menu=pystray.Menu(self._menu_items),
        )
        if self._xorg:
            read_end, write_end = os.pipe()
            os.set_blocking(read_end, False)
            os.set_blocking(write_end, False)
            self._wake = (read_end, write_end)
            # pystray's X loop reads its events from here: see `_x_events`.
            self.icon._events = self._x_events

    # -- menu ----------------------------------------------------------------------------

    def _menu_items(self) -> Iterator[Any]:
        for entry in self.model.menu():
            yield self._item(entry)

    def _item(self, entry: MenuEntry) -> Any:
        pystray = self._pystray
        if entry.separator:
            return pystray.Menu.SEPARATOR
        if entry.action is None:
            return pystray.MenuItem(entry.text, None, enabled=False)
        checked = None if entry.checked is None else (lambda _item, c=entry.checked: c)
        return pystray.MenuItem(
            entry.text,
            self._handler(entry.action, entry.argument),
            checked=checked,
            enabled=entry.enabled,
            default=entry.default,
        )

    def _handler(self, action: str, argument: str) -> Callable[[Any, Any], None]:
        def work() -> None:
            try:
                self.perform(action, argument)
            except Exception:  # a failed action must not take the tray down
                log.exception("tray action %s failed", action)

        def handle(_icon: Any, _item: Any) -> None:
            # Off the GUI thread: approve, reload and quit wait for the runtime.
            threading.Thread(target=work, name=f"tray-{action}", daemon=True).start()

        return handle

    def perform(self, action: str, argument: str = "") -> None:
        host = self.host
        if action == "quit":
            self.quit()
            return
        if action == "approve":
            address = host.approve(argument)
            log.info(
                "approved %s from the tray" if address else "pairing code %s expired",
                address or argument,
            )
        elif action == "toggle_pause":
            host.toggle_pause()
        elif action == "reload":
            host.reload()
        elif action == "open_settings":
            host.open_settings()
        elif action == "open_logs":
            host.open_logs()
        elif action == "toggle_autostart":
            host.toggle_autostart()
        self.refresh()

    # -- state ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Recompute the model; repaint and retitle only when something shows differently."""
        model = TrayModel(self.host.view())
        with self._ui_lock:
            if self._stopping.is_set():
                return
            self.model = model
            shown = (model.colour, model.tooltip)
            changed = shown != self._shown
            self._shown = shown
            self._on_ui_thread(lambda: self._show(model, changed))

    def _show(self, model: TrayModel, changed: bool) -> None:
        if changed:
            self.icon.title = self._displayable(model.tooltip)
            self.icon.icon = icon_image(model.colour)
            log.debug("tray: %s", model.tooltip)
        self.icon.update_menu()

    def _displayable(self, text: str) -> str:
        """The plain X backend stores the tooltip as a Latin-1 WM_NAME: replace what won't fit."""
        if self._xorg:
            return text.encode("latin-1", "replace").decode("latin-1")
        return text

    # -- the icon's thread -----------------------------------------------------------------

    def _on_ui_thread(self, call: Callable[[], None]) -> None:
        """Run `call` where the icon may be touched; with xorg, queue it for the icon's thread.

        pystray's xorg backend forwards a call made on another thread to its loop through the
        X connection itself, and python-xlib loses requests when two threads send at once: the
        loop's own request (the window's destroy on Quit, a repaint) can stay queued unsent
        while the loop waits for an event only that request would bring, and the tray hangs.
        So with xorg nothing but the icon's thread talks to X. The other backends post the
        call to their own GUI loop and are safe to call from any thread.
        """
        if not self._xorg or threading.current_thread() is self._ui_thread:
            call()
            return
        self._ui_calls.put(call)
        with self._wake_lock:
            if self._wake is not None:
                # A full pipe means the loop has a wake-up pending already.
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake[1], b"\0")

    def _run_ui_calls(self) -> None:
        while True:
            try:
                call = self._ui_calls.get_nowait()
            except queue.Empty:
                return
            try:
                call()
            except Exception:
                log.exception("tray update failed")

    def _x_events(self) -> Iterator[Any]:
        """pystray's xorg event source, on the icon's thread: X events and our queued calls.

        Each pass sends what the calls (and pystray's handlers) queued, takes the events that
        arrived, and only then sleeps until the X connection or the wake pipe has something.
        """
        assert self._wake is not None
        display = self.icon._display
        wake = self._wake[0]
        while True:
            self._run_ui_calls()
            display.flush()
            if display.pending_events():
                yield display.next_event()
                continue
            readable, _, _ = select.select([display, wake], [], [])
            if wake in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake, 4096):
                        pass

    # -- life cycle ------------------------------------------------------------------------

    def _watch(self, icon: Any) -> None:
        """pystray's setup thread: show the icon, then keep it current until Quit."""
        self._on_ui_thread(lambda: setattr(icon, "visible", True))
        while not self._stopping.wait(REFRESH_SECONDS):
            restart = self.host.error or not self.host.running
            if self.host.config_changed() and restart and not self._stopping.is_set():
                log.info("settings file changed; starting again")
                self.host.reload()
            try:
                self.refresh()
            except Exception:
                log.exception("tray refresh failed")

    def quit(self) -> None:
        with self._ui_lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
            self._on_ui_thread(lambda: setattr(self.icon, "title", f"{APP_TITLE}: stopping"))
        if not self.host.stop():
            log.warning("the agent did not stop in time; quitting anyway")
        self._on_ui_thread(self.icon.stop)

    def run(self) -> None:
        """Show the icon and handle its events on this thread until Quit."""
        self._ui_thread = threading.current_thread()
        try:
            self.icon.run(setup=self._watch)
        finally:
            with self._wake_lock:
                wake, self._wake = self._wake, None
            if wake is not None:
                for fd in wake:
                    os.close(fd)


def run_tray(load: Callable[[], Settings], config_file: Path) -> None:
    """Start the runtime beside the tray icon; return after Quit (or SIGINT/SIGTERM)."""
    host = AgentHost(load, config_file)
    host.start()
    if not host.error and not host.running:
        # First run: a commented template to fill in, shown at once; saving it starts the agent.
        ensure_config_file(config_file)
        host.config_changed()  # the template itself is not a change to react to
        log.info("no chat platform configured yet: fill in %s", config_file)
        host.open_settings()
    app = TrayApp(host)

    def on_signal(_signum: int, _frame: object) -> None:
        threading.Thread(target=app.quit, name="tray-quit", daemon=True).start()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    app.run()
