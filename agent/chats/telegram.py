"""Telegram provider: getUpdates long polling and sends through python-telegram-bot's Bot."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

# PTB >= 22.2 warns on every RetryAfter unless timedelta values are opted into; we handle both.
os.environ.setdefault("PTB_TIMEDELTA", "true")

from telegram import (  # noqa: E402
    Bot,
    BotCommand,
    InlineKeyboardMarkup,
    Message,
    MessageEntity,
    Update,
)
from telegram.constants import ChatAction  # noqa: E402
from telegram.error import (  # noqa: E402
    BadRequest,
    Conflict,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from agent.chats.base import (  # noqa: E402
    Attachment,
    ChatRef,
    InboundMessage,
    InboundSink,
    IncomingFile,
    OutboundMessage,
    OutgoingFile,
    PartsSent,
    ProviderState,
    ProviderStatus,
)
from agent.chats.telegram_errors import (  # noqa: E402
    TOKEN_RETRY_DELAY,
    QuietRequest,
    call,
    is_entity_error,
    is_gone_error,
    seconds,
    short,
)
from agent.chats.telegram_files import (  # noqa: E402
    GET_FILE_LIMIT,
    SEND_DOCUMENT_LIMIT,
    TelegramFiles,
)
from agent.chats.telegram_render import keyboard, render, reply_parameters  # noqa: E402
from agent.chats.telegram_updates import to_inbound  # noqa: E402
from agent.chats.text import (  # noqa: E402
    TELEGRAM_TEXT_LIMIT,
)
from agent.config import TelegramSettings  # noqa: E402
from agent.errors import MessageGone, PermanentDeliveryError, RetryLater  # noqa: E402
from agent.retry import Backoff, Restartable, sleep_or_stop  # noqa: E402

PROVIDER = "telegram"
# Edits are not subscribed: an edited prompt would otherwise run as a second task.
ALLOWED_UPDATES = ("message", "callback_query")
REQUEST_READ_TIMEOUT = 15.0
TYPING_REFRESH_SECONDS = 4.0
# PTB adds the long-poll timeout to the getUpdates read timeout; this is the margin on top.
POLL_READ_MARGIN = 10.0
CONFLICT_RETRY_DELAY = 30.0
GLOBAL_RATE, GLOBAL_BURST = 30.0, 30.0  # messages per second, all chats
PRIVATE_RATE, PRIVATE_BURST = 1.0, 3.0  # per private chat
GROUP_RATE, GROUP_BURST = 20 / 60, 3.0  # per group: 20 a minute
EMPTY_TEXT = "\u2026"  # Telegram refuses a blank text

log = logging.getLogger(__name__)
T = TypeVar("T")


class RateLimiter:
    """A token bucket: `acquire()` waits until one more message fits the rate."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate, self._burst = rate, burst
        self._tokens, self._stamp = burst, time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self._rate)
                self._tokens, self._stamp = 1.0, time.monotonic()
            self._tokens -= 1


class TelegramProvider:
    """The ChatProvider for Telegram in polling mode."""

    name = PROVIDER
    text_limit = TELEGRAM_TEXT_LIMIT
    max_download_bytes = GET_FILE_LIMIT
    max_upload_bytes = SEND_DOCUMENT_LIMIT

    def __init__(
        self, settings: TelegramSettings, *, commands: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.settings = settings
        self.status = ProviderStatus(enabled=True, mode=settings.mode)
        self.commands = [BotCommand(command, description) for command, description in commands]
        proxy = settings.proxy_url or None
        self.request = QuietRequest(proxy=proxy, read_timeout=REQUEST_READ_TIMEOUT)
        # Its own client (one connection) so a pending long poll never blocks a send.
        self.updates_request = QuietRequest(
            connection_pool_size=1,
            proxy=proxy,
            read_timeout=settings.poll_timeout + POLL_READ_MARGIN,
        )
        self.bot = Bot(
            settings.token,
            base_url=f"{settings.api_base_url}/bot",
            base_file_url=f"{settings.api_base_url}/file/bot",
            request=self.request,
            get_updates_request=self.updates_request,
        )
        self.files = TelegramFiles(settings)
        self.username = ""
        self.offset = 0
        self.backoff = Backoff()
        self._ready = False
        self._stop = asyncio.Event()
        self._global_limit = RateLimiter(GLOBAL_RATE, GLOBAL_BURST)
        self._chat_limits: dict[str, RateLimiter] = {}
        self._typing_at: dict[str, float] = {}
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._poll = Restartable()

    # ---- receiving ---------------------------------------------------------------------

    async def run(self, sink: InboundSink) -> None:
        """Poll until cancelled or closed; confirm each batch only after `sink` stored it."""
        self.status.set(ProviderState.CONNECTING)
        backoff = self.backoff
        while not self._stop.is_set():
            try:
                if not self._ready:
                    await self._connect()
                await self._poll_once(sink)
            except Exception as exc:  # every failure is retried; none ends the loop
                if await sleep_or_stop(self._failure_delay(exc, backoff), self._stop):
                    return
            else:
                backoff.reset()

    async def _connect(self) -> None:
        await self.bot.initialize()  # getMe
        self.username = self.bot.username
        await self._claim_updates()
        if self.commands:
            try:
                await self.bot.set_my_commands(self.commands)
            except BadRequest as exc:
                log.warning("Telegram refused the command menu: %s", exc.message)
        self._ready = True
        self.status.set(ProviderState.CONNECTED)

    async def _claim_updates(self) -> None:
        """Make Telegram hand updates to this mode (the webhook provider sets one instead)."""
        # Polling and a webhook exclude each other; keep the pending updates (never drop them).
        await self.bot.delete_webhook(drop_pending_updates=False)

    async def _poll_once(self, sink: InboundSink) -> None:
        timeout = self.settings.poll_timeout

        async def poll() -> tuple[Update, ...]:
            # asyncio.timeout, not wait_for: wait_for can swallow a cancel (Python 3.11).
            async with asyncio.timeout(2 * timeout + POLL_READ_MARGIN):
                return await self.bot.get_updates(
                    offset=self.offset or None,
                    timeout=timeout,
                    allowed_updates=ALLOWED_UPDATES,
                    read_timeout=POLL_READ_MARGIN,
                )

        finished, updates = await self._poll.run(poll)
        if not finished:
            return  # reconnect(): the next poll starts at once, on a new connection
        self.status.set(ProviderState.CONNECTED)
        if not updates:
            return
        messages = [m for m in map(self._convert, updates) if m is not None]
        if messages:
            await sink(messages)
        # Persist before confirm: only now may Telegram forget these updates.
        self.offset = updates[-1].update_id + 1
        self._stop_spinners(messages)

    def _stop_spinners(self, messages: Sequence[InboundMessage]) -> None:
        """A pressed button spins until answered: answer it now that the press is stored
        (the result shows as the prompt's edit); in the background, never holding the poll."""
        for message in messages:
            if message.callback_id:
                task = asyncio.create_task(self._acknowledge_quietly(message.callback_id))
                self._side_tasks.add(task)
                task.add_done_callback(self._side_tasks.discard)

    async def _acknowledge_quietly(self, callback_id: str) -> None:
        try:
            await self.acknowledge_button(callback_id)
        except Exception as exc:  # cosmetic: the answer itself is already journaled
            log.debug("answerCallbackQuery failed: %s", exc)

    def _failure_delay(self, exc: Exception, backoff: Backoff) -> float:
        """Record why the loop failed and say how long to wait before the next try.

        A platform failure is one short line; a traceback only for what is not Telegram's."""
        if isinstance(exc, Conflict):
            self.status.set(ProviderState.ERROR, self._short(exc))
            return CONFLICT_RETRY_DELAY
        if isinstance(exc, InvalidToken):
            self._ready = False
            self.status.set(ProviderState.ERROR, "token rejected")
            return TOKEN_RETRY_DELAY
        if isinstance(exc, RetryAfter):
            return backoff.next_delay(seconds(exc.retry_after))
        if isinstance(exc, TimeoutError):
            self.status.set(ProviderState.ERROR, "getUpdates was silent too long; restarted")
            return 0.0
        delay = backoff.next_delay()
        if self._stop.is_set():
            return delay  # closing cut the poll short: nothing went wrong
        if isinstance(exc, TelegramError):
            self.status.set(ProviderState.ERROR, self._short(exc))
            level = logging.WARNING if isinstance(exc, NetworkError) else logging.ERROR
            log.log(level, "Telegram: %s; retrying in %.1f s", self.status.detail, delay)
        else:
            log.exception("storing Telegram updates failed; they will come again")
        return delay

    def _short(self, exc: TelegramError) -> str:
        return short(exc, self.settings.token)

    def _convert(self, update: Update) -> InboundMessage | None:
        return to_inbound(update, self.username)

    # ---- sending -----------------------------------------------------------------------

    async def send(
        self,
        chat: ChatRef,
        message: OutboundMessage,
        *,
        first_part: int = 0,
        on_part: PartsSent | None = None,
    ) -> str:
        parts = render(message)
        markup = keyboard(message.buttons)
        sent_id = ""
        for index, (text, entities) in enumerate(parts):
            if index < first_part:
                continue  # delivered by an earlier attempt
            reply_to = message.reply_to_message_id if index == 0 else ""
            # Buttons go under the last part, where the reader ends up.
            last = index == len(parts) - 1
            try:
                sent = await self._send_part(
                    chat, text, entities, reply_to, markup if last else None
                )
            except RetryLater as exc:
                exc.parts_sent = index
                raise
            sent_id = str(sent.message_id)
            if on_part is not None and not last:
                await on_part(index + 1)
        # The id of the last part: the one carrying the buttons, which an edit must reach.
        return sent_id

    async def _send_part(
        self,
        chat: ChatRef,
        text: str,
        entities: list[MessageEntity],
        reply_to: str,
        markup: InlineKeyboardMarkup | None,
    ) -> Message:
        await self._throttle(chat)
        kwargs: dict[str, Any] = {
            "chat_id": int(chat.chat_id),
            "text": text,
            "reply_markup": markup,
            "message_thread_id": chat.route.get("thread_id"),
            "reply_parameters": reply_parameters(reply_to),
        }
        try:
            return await self._call(self.bot.send_message(entities=entities or None, **kwargs))
        except PermanentDeliveryError as exc:
            if not (entities and is_entity_error(exc)):
                raise
            return await self._call(self.bot.send_message(**kwargs))

    async def edit(self, chat: ChatRef, message_id: str, message: OutboundMessage) -> bool:
        # A long text was sent in parts and `message_id` is the last one: it gets the end.
        parts = render(message) or [(EMPTY_TEXT, [])]
        text, entities = parts[-1]
        kwargs: dict[str, Any] = {
            "chat_id": int(chat.chat_id),
            "message_id": int(message_id),
            "text": text,
            "reply_markup": keyboard(message.buttons),
        }
        # Telegram counts an edit against the chat's limits like a message.
        await self._throttle(chat)
        try:
            try:
                await self._call(self.bot.edit_message_text(entities=entities or None, **kwargs))
            except PermanentDeliveryError as exc:
                if not (entities and is_entity_error(exc)):
                    raise
                await self._call(self.bot.edit_message_text(**kwargs))
        except PermanentDeliveryError as exc:
            if "message is not modified" not in str(exc).lower():
                if is_gone_error(exc):
                    raise MessageGone(str(exc), provider=PROVIDER) from exc
                raise
        return True

    def open_file(
        self, chat: ChatRef, attachment: Attachment
    ) -> AbstractAsyncContextManager[IncomingFile]:
        return self.files.open(self.bot, attachment)

    async def send_file(self, chat: ChatRef, file: OutgoingFile) -> str:
        await self._throttle(chat)
        return await self.files.send_document(chat, file)

    async def show_typing(self, chat: ChatRef) -> None:
        # Telegram shows "typing…" for about 5 s: refreshing it more often is wasted calls.
        now = time.monotonic()
        if (
            now - self._typing_at.get(chat.chat_id, -TYPING_REFRESH_SECONDS)
            < TYPING_REFRESH_SECONDS
        ):
            return
        self._typing_at[chat.chat_id] = now
        await self._call(
            self.bot.send_chat_action(
                int(chat.chat_id), ChatAction.TYPING, message_thread_id=chat.route.get("thread_id")
            )
        )

    async def acknowledge_button(self, callback_id: str, text: str = "") -> None:
        try:
            await self._call(self.bot.answer_callback_query(callback_id, text=text or None))
        except PermanentDeliveryError as exc:
            # A press older than ~15 minutes can no longer be answered; nothing is lost.
            if "query is too old" not in str(exc).lower():
                raise

    async def reconnect(self) -> None:
        """After a wake the long poll's connection is likely dead: poll again now."""
        if self._poll.restart():
            log.info("Telegram long poll restarted")

    async def close(self) -> None:
        self._stop.set()
        await self.bot.shutdown()
        await self.request.shutdown()
        await self.updates_request.shutdown()
        await self.files.aclose()

    async def _throttle(self, chat: ChatRef) -> None:
        limiter = self._chat_limits.get(chat.chat_id)
        if limiter is None:
            group = chat.is_group or chat.chat_id.startswith("-")
            rate, burst = (GROUP_RATE, GROUP_BURST) if group else (PRIVATE_RATE, PRIVATE_BURST)
            limiter = self._chat_limits[chat.chat_id] = RateLimiter(rate, burst)
        await limiter.acquire()
        await self._global_limit.acquire()

    async def _call(self, awaitable: Awaitable[T]) -> T:
        return await call(awaitable, self.settings.token)
