"""Wiring: the instance lock, the store, the providers and loops in one TaskGroup, and stop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import filelock

from agent import paths
from agent.backend.client import BackendClient
from agent.chats.base import ChatProvider, ProviderState, ProviderStatus
from agent.config import Settings
from agent.core import i18n
from agent.core.access import AccessPolicy
from agent.core.commands import MENU
from agent.core.delivery import Delivery
from agent.core.handlers import Handlers, HandlerSettings
from agent.core.inbound import InboundDispatcher
from agent.core.notifier import Notifier
from agent.core.progress_feed import ProgressFeed
from agent.core.progress_sender import ProgressSender
from agent.core.typing_indicator import TypingIndicator
from agent.errors import ConfigError, InstanceLockedError
from agent.retry import Backoff, sleep_or_stop
from agent.status import AgentStatus
from agent.store import db, queries, writes
from agent.store.models import Channel
from agent.wake import WakeDetector
from agent.web import LocalServer, WebhookReceiver

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 60.0
PROGRESS_PROVIDERS = frozenset({"telegram"})
PRUNE_SECONDS = 6 * 3600.0


def acquire_instance_lock(data_dir_lock: str) -> filelock.BaseFileLock:
    lock = filelock.FileLock(data_dir_lock)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise InstanceLockedError(data_dir_lock) from None
    return lock


def build_providers(settings: Settings) -> dict[str, ChatProvider]:
    """The enabled chat platforms (their libraries are imported only when used)."""
    providers: dict[str, ChatProvider] = {}
    if settings.telegram.enabled:
        from agent.chats.telegram import TelegramProvider
        from agent.chats.telegram_webhook import TelegramWebhookProvider

        menu = [(name, i18n.text(settings.lang, f"menu.{name}")) for name in MENU]
        telegram_class = (
            TelegramWebhookProvider if settings.telegram.mode == "webhook" else TelegramProvider
        )
        providers["telegram"] = telegram_class(settings.telegram, commands=menu)
    if settings.dingtalk.enabled:
        from agent.chats.dingtalk import DingTalkProvider
        from agent.chats.dingtalk_webhook import DingTalkWebhookProvider

        dingtalk_class = (
            DingTalkProvider if settings.dingtalk.stream_enabled else DingTalkWebhookProvider
        )
        providers["dingtalk"] = dingtalk_class(settings.dingtalk)
    return providers


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop_event = asyncio.Event()
        self.status = AgentStatus()
        self.port: int | None = None
        self.ready = asyncio.Event()
        self._paused = asyncio.Event()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._side_tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Fire-and-forget side work, kept referenced until it ends."""
        task = asyncio.create_task(work)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def request_stop(self) -> None:
        self.stop_event.set()

    async def run(self, on_ready: Callable[[int], None] | None = None) -> None:
        settings = self.settings
        if not settings.any_provider_enabled:
            raise ConfigError(
                "TELEGRAM_BOT_TOKEN",
                "no chat platform is configured",
                f"Set TELEGRAM_BOT_TOKEN (or DINGTALK_CLIENT_ID and DINGTALK_CLIENT_SECRET) in "
                f"{settings.config_file} or the environment; `poco-im-agent config init` writes "
                "a template there.",
            )
        paths.private_dir(settings.data_dir)  # chat texts, webhooks, pairing codes
        lock = acquire_instance_lock(str(paths.lock_file(settings.data_dir)))
        try:
            database = db.open_database(settings.database_path)
            # This connection runs on the event loop: a lock held elsewhere must not freeze
            # it for seconds; the writes that must happen retry (store.writes).
            database.pragma("busy_timeout", writes.LOOP_BUSY_TIMEOUT_MS, permanent=True)
            await self._run_open(on_ready)
        finally:
            db.close_database()
            lock.release()
            with contextlib.suppress(FileNotFoundError):
                paths.port_file(settings.data_dir).unlink()

    async def _run_open(self, on_ready: Callable[[int], None] | None) -> None:
        settings = self.settings
        backend = BackendClient(settings.backend)
        providers = build_providers(settings)
        self.status.providers = {name: p.status for name, p in providers.items()}
        for name in ("telegram", "dingtalk"):
            self.status.providers.setdefault(name, ProviderStatus(enabled=False, mode="off"))
        self._wire(backend, providers)
        server = await self._start_server(providers)
        try:
            await self._serve(providers, server.port, on_ready)
        finally:
            await server.stop()
            await self.typing.close()
            for provider in providers.values():
                with contextlib.suppress(Exception):
                    await provider.close()
            await backend.aclose()

    def _wire(self, backend: BackendClient, providers: dict[str, ChatProvider]) -> None:
        """Build the core: delivery, notifier, handlers and the inbound dispatcher."""
        settings = self.settings
        self.delivery = Delivery(providers, secrets=settings.secrets())
        # DingTalk shows buttons on cards (and edits them) when a card template is set.
        buttons = {"telegram"} | ({"dingtalk"} if settings.dingtalk.cards_enabled else set())
        handler_settings = HandlerSettings(
            settings.lang,
            settings.backend.frontend_url,
            settings.backend.frontend_lang,
            button_providers=frozenset(buttons),
            max_file_bytes=settings.max_file_mb * 1024 * 1024,
        )

        async def show_typing(channel: Channel) -> None:
            provider = providers.get(channel.provider)
            if provider is not None:
                await provider.show_typing(queries.chat_ref(channel))

        self.typing = typing = TypingIndicator(show_typing)
        self.progress_sender = ProgressSender(providers, secrets=settings.secrets())
        # Progress messages where a message can be edited: DingTalk shows them as streamed
        # cards, so only with a card template (without: no progress there).
        editable = PROGRESS_PROVIDERS | ({"dingtalk"} if settings.dingtalk.cards_enabled else set())
        shown_in = editable & set(providers) if settings.progress else frozenset()
        progress = ProgressFeed(
            handler_settings.notice_context, frozenset(shown_in), self.progress_sender.wake
        )

        self.notifier = notifier = Notifier(
            backend,
            settings.poll,
            handler_settings.notice_context,
            self.status.backend,
            self.delivery.wake,
            button_providers=handler_settings.button_providers,
            typing=typing,
            is_paused=lambda: self.status.paused,
            progress=progress,
        )

        async def on_prompt(channel: Channel, session_id: str) -> None:
            notifier.follow(session_id)
            typing.show(channel)  # in the background: never holds up the chat

        handlers = Handlers(
            backend,
            handler_settings,
            on_prompt=on_prompt,
            on_watch=notifier.follow,
            providers=providers,
        )
        access = AccessPolicy(settings.access_policy, settings.allowlist, settings.lang)
        access.apply_at_start()  # before the first message is decided or notification sent
        if settings.access_policy == "open":
            log.warning(
                "IM_ACCESS_POLICY=open: anyone who finds the bot can run tasks on %s",
                settings.backend.url,
            )
        self.dispatcher = InboundDispatcher(handlers, access, self.delivery.wake)
        self.backend = backend

    async def _start_server(self, providers: dict[str, ChatProvider]) -> LocalServer:
        settings = self.settings
        server = LocalServer(
            settings.http_host,
            settings.http_port,
            lambda: self.status.snapshot(queries.outbox_pending_count()),
            secrets=settings.secrets(),
        )
        for name, provider in providers.items():
            if isinstance(provider, WebhookReceiver):
                server.add_webhook(name, provider.handle_webhook)
        self.port = await server.start()
        if settings.http_port == 0:
            paths.port_file(settings.data_dir).write_text(str(self.port))
        return server

    async def _serve(
        self,
        providers: dict[str, ChatProvider],
        port: int,
        on_ready: Callable[[int], None] | None,
    ) -> None:
        """Every loop in one TaskGroup until stop; receivers stop first, handlers finish."""
        self.dispatcher.resume()
        async with asyncio.TaskGroup() as group:
            receivers = [
                group.create_task(self._supervise(provider, self.dispatcher), name=name)
                for name, provider in providers.items()
            ]
            group.create_task(self.delivery.run(self.stop_event), name="delivery")
            group.create_task(self.notifier.run(self.stop_event), name="notifier")
            group.create_task(self.progress_sender.run(self.stop_event), name="progress")
            group.create_task(self._maintain(), name="maintenance")
            wakes = WakeDetector(functools.partial(self._on_wake, providers))
            group.create_task(wakes.run(self.stop_event), name="wake detector")
            log.info(
                "poco-im-agent running: %s; health at http://%s:%s/api/v1/health",
                ", ".join(providers),
                self.settings.http_host,
                port,
            )
            self.ready.set()
            if on_ready is not None:
                on_ready(port)
            await self.stop_event.wait()
            log.info("stopping")
            for task in receivers:
                task.cancel()
            await self.dispatcher.stop()

    def _on_wake(self, providers: dict[str, ChatProvider], away: float) -> None:
        """Back from a sleep: one digest per chat, and every connection anew, now."""
        log.info("back after about %.0f s away (asleep?): catching up and reconnecting", away)
        self.notifier.note_wake()
        self.delivery.note_wake()
        for provider in providers.values():
            self._spawn(self._reconnect(provider))

    @staticmethod
    async def _reconnect(provider: ChatProvider) -> None:
        try:
            await provider.reconnect()
        except Exception as exc:  # its own loop reconnects anyway, only later
            log.warning("%s could not reconnect at once: %s", provider.name, exc)

    def set_paused(self, paused: bool) -> None:
        """Pause: stop receiving and polling (queued replies still go out); resume: go on."""
        self.status.paused = paused
        if paused:
            self._resumed.clear()
            self._paused.set()
        else:
            self._paused.clear()
            self._resumed.set()
        log.info("paused" if paused else "resumed")

    async def _supervise(self, provider: ChatProvider, dispatcher: InboundDispatcher) -> None:
        """Keep a provider receiving while not paused; a crash is logged and restarted."""
        backoff = Backoff()
        while not self.stop_event.is_set():
            await self._resumed.wait()
            receiver = asyncio.create_task(provider.run(dispatcher.accept))
            paused = asyncio.create_task(self._paused.wait())
            try:
                await asyncio.wait({receiver, paused}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                paused.cancel()
                if not receiver.done():
                    receiver.cancel()
                    await asyncio.gather(receiver, return_exceptions=True)
            if receiver.cancelled():
                provider.status.set(ProviderState.CONNECTING, "paused")
                continue
            if receiver.exception() is None:
                return
            log.error(
                "%s receiver crashed; restarting", provider.name, exc_info=receiver.exception()
            )
            await sleep_or_stop(backoff.next_delay(), self.stop_event)

    async def _maintain(self) -> None:
        last_prune = 0.0
        while not self.stop_event.is_set():
            try:
                queries.set_meta("last_alive", str(time.time()))
                if time.time() - last_prune > PRUNE_SECONDS:
                    removed = db.prune()
                    last_prune = time.time()
                    if removed:
                        log.info("pruned %d old journal/outbox rows", removed)
            except Exception:  # a busy or full disk must not stop the agent
                log.exception("store maintenance failed")
            await sleep_or_stop(HEARTBEAT_SECONDS, self.stop_event)
