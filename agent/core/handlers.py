"""An inbound chat message to its replies and backend calls (one command each)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from agent.backend.client import BackendClient
from agent.chats.base import ChatProvider, InboundMessage, OutboundMessage
from agent.core import answers, i18n, prompts
from agent.core.attachments import FileRelay
from agent.core.commands import Command, parse
from agent.core.file_commands import FileCommands
from agent.core.intents import PromptSender, Sent
from agent.core.notices import TYPED_ANSWER_PROVIDERS, NoticeContext
from agent.core.progress import STOP_PREFIX
from agent.core.run_commands import Reply, RunCommands
from agent.core.session_commands import UUID, SessionCommands, last_listing
from agent.errors import (
    BackendError,
    BackendNotFound,
    BackendRejected,
    BackendUnauthorized,
    BackendUnavailable,
)
from agent.store import queries
from agent.store.models import Channel

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 20_000

# Called after a prompt reached the backend, so notifications and typing can start at once.
PromptListener = Callable[[Channel, str], Awaitable[None]]


class AnswerOutcome(StrEnum):
    """What became of a posted answer; the value is its reply text's key."""

    SENT = "answer_sent"
    ALREADY_ANSWERED = "answer_already"
    EXPIRED = "answer_expired"
    NOT_FOUND = "answer_not_found"


@dataclass(frozen=True)
class HandlerSettings:
    lang: str
    frontend_url: str
    link_lang: str
    # Providers that show inline buttons (and can edit a prompt once answered).
    button_providers: frozenset[str] = frozenset({"telegram"})
    # Providers whose typing indicator acknowledges a continuation (no "sent" reply needed).
    typing_providers: frozenset[str] = frozenset({"telegram"})
    max_file_bytes: int = 20 * 1024 * 1024  # IM_MAX_FILE_MB

    @property
    def notice_context(self) -> NoticeContext:
        return NoticeContext(self.lang, self.frontend_url, self.link_lang)


class Handlers:
    def __init__(
        self,
        backend: BackendClient,
        settings: HandlerSettings,
        on_prompt: PromptListener | None = None,
        on_watch: Callable[[str], None] | None = None,
        providers: Mapping[str, ChatProvider] | None = None,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.sender = PromptSender(backend)
        providers = providers or {}
        self.files = FileRelay(
            backend, self.sender, providers, max_bytes=settings.max_file_bytes, lang=settings.lang
        )
        self.file_commands = FileCommands(backend, providers, lang=settings.lang)
        self.on_prompt = on_prompt
        # Called when a chat starts following a session, so its notifications start soon.
        self.on_watch = on_watch
        self.sessions = SessionCommands(backend, settings.notice_context, on_watch)
        self.runs = RunCommands(
            backend,
            settings.notice_context,
            self.sessions.resolve,
            last_listing,
            on_stop=on_watch,
        )
        self._commands: dict[str, Callable[[Channel, str], Awaitable[Sequence[Reply]]]] = {
            "help": self._help,
            "list": self.sessions.list_sessions,
            "connect": self.sessions.connect,
            "watch": self.sessions.watch,
            "watches": self.sessions.watches,
            "unwatch": self.sessions.unwatch,
            "link": self.sessions.link,
            "clear": self.sessions.clear,
            "answer": self._answer,
            "files": self.file_commands.files,
            "get": self.file_commands.get,
            "stop": self.runs.stop,
            "status": self.runs.status,
        }

    def t(self, key: str, **values: object) -> str:
        return i18n.text(self.settings.lang, key, **values)

    def link(self, session_id: str) -> str:
        return i18n.session_link(self.settings.frontend_url, self.settings.link_lang, session_id)

    async def handle(self, message: InboundMessage, channel: Channel) -> list[OutboundMessage]:
        """The replies to one message. Backend failures become short replies, never raise."""
        try:
            texts = await self._dispatch(message, channel)
        except BackendError as exc:
            texts = [self._backend_error_text(exc)]
        return [t if isinstance(t, OutboundMessage) else OutboundMessage(t) for t in texts]

    async def _dispatch(self, message: InboundMessage, channel: Channel) -> Sequence[Reply]:
        if message.unsupported:
            return [self.t("text_only")]
        if message.attachments:
            return await self._files_in(message, channel)
        if len(message.text) > MAX_PROMPT_CHARS:
            return [self.t("too_long", length=len(message.text), limit=MAX_PROMPT_CHARS)]
        if message.callback_data.startswith(STOP_PREFIX):
            return await self.runs.stop_button(channel, message.callback_data)
        answer = self._answer_in(message, channel)
        if answer is not None:
            return await self._apply_answer(answer, channel)
        command = parse(message.text)
        if command.is_plain_text:
            return await self._plain_text(channel, command.args, message.key)
        if command.name == "new":
            return await self._new(channel, command.args, message.key)
        if command.name == "?":
            return [self.t("unknown_command", name=command.raw_name[:32]) + "\n\n" + self.t("help")]
        return await self._commands[command.name](channel, command.args)

    def _answer_in(self, message: InboundMessage, channel: Channel) -> answers.Answer | None:
        """An answer to an input prompt: a button, a reply to the prompt, or a number/label."""
        ctx = self.settings.notice_context
        if message.callback_data:
            return answers.answer_from_button(channel, message.callback_data, ctx)
        if message.text.startswith(("/", "／")):
            return None
        if message.reply_to_message_id:
            answer = answers.answer_from_reply(
                channel, message.reply_to_message_id, message.text, ctx
            )
            if answer is not None:
                return answer
        if channel.provider in TYPED_ANSWER_PROVIDERS:
            answer = answers.answer_from_text(channel, message.text, ctx)
            if answer is not None:
                return answer
            prompts.chat_moved_on(channel)
        return None

    async def _apply_answer(self, answer: answers.Answer, channel: Channel) -> list[str]:
        if answer.refresh is not None:
            queries.enqueue(
                channel,
                answer.refresh,
                kind="edit",
                extra={"target_dedup_key": prompts.prompt_key(answer.prompt.request_id)},
            )
            return []
        if answer.answers is None:
            return [answer.reply] if answer.reply else []
        request_id = answer.prompt.request_id
        outcome = await self.submit_answer(request_id, answer.answers)
        if outcome is AnswerOutcome.SENT:
            # A button or a reply to the prompt: the prompt itself is edited to show the
            # answer. A typed number or word is answered in words (the prompt may be far up).
            replied = channel.provider not in self.settings.button_providers or answer.via == "text"
            prompts.close_request_everywhere(
                request_id,
                self.settings.notice_context,
                self.settings.button_providers,
                answer.summary,
                answered_in=channel,
                replied=replied,
            )
            if not replied:
                return []
        elif outcome in (AnswerOutcome.ALREADY_ANSWERED, AnswerOutcome.EXPIRED):
            # Closed meanwhile (we had not seen it yet): the reply tells the chat.
            state = "expired" if outcome is AnswerOutcome.EXPIRED else "answered"
            ctx = self.settings.notice_context
            prompts.close_prompt(
                answer.prompt, state, ctx, self.settings.button_providers, answered_here=True
            )
            return [prompts.late_reply(answer.prompt, state, channel, ctx, answer.via)]
        return [self.t(outcome.value, request_id=request_id)]

    def _backend_error_text(self, exc: BackendError) -> str:
        if isinstance(exc, BackendUnauthorized):
            log.warning("backend answered 401: set BACKEND_INTERNAL_TOKEN")
            return self.t("backend_unauthorized")
        if isinstance(exc, BackendUnavailable):
            log.warning("backend unavailable: %s", exc)
            return self.t("backend_down")
        log.info("backend refused: %s", exc)
        return self.t("backend_refused", reason=str(exc)[:300])

    # --- commands ---

    async def _help(self, channel: Channel, args: str) -> list[str]:
        return [self.t("help")]

    async def _plain_text(self, channel: Channel, text: str, key: str) -> list[str]:
        if not text:
            return [self.t("empty")]
        session_id = queries.bound_session(channel)
        if session_id is None:
            return [self.t("not_bound")]
        try:
            sent = await self.sender.send(key, channel, text, session_id)
        except BackendNotFound:
            return [self.t("not_found", session_id=session_id)]
        return await self._continued(channel, sent)

    async def _files_in(self, message: InboundMessage, channel: Channel) -> list[str]:
        """A photo, file or voice note (core/attachments); replied to as a text prompt."""
        outcome = await self.files.relay(message, channel)
        texts = list(outcome.notes)
        if outcome.task is None:
            return texts
        if outcome.new_session:
            return texts + await self._created(channel, outcome.task)
        return texts + await self._continued(channel, outcome.task)

    async def _new(self, channel: Channel, args: str, key: str) -> list[str]:
        if not args:
            return [self.t("new_usage")]
        sent = await self.sender.send(key, channel, args, None)
        return await self._created(channel, sent)

    async def _continued(self, channel: Channel, sent: Sent) -> list[str]:
        await self._prompt_sent(channel, sent.session_id)
        if sent.queued:
            return [self.t("queued", short_id=sent.session_id[:8], count=sent.queued_count)]
        if channel.provider in self.settings.typing_providers:
            return []
        return [self.t("continued", short_id=sent.session_id[:8])]

    async def _created(self, channel: Channel, sent: Sent) -> list[str]:
        queries.bind(channel, sent.session_id, new_session=True)
        await self._prompt_sent(channel, sent.session_id)
        return [self.t("created", session_id=sent.session_id, link=self.link(sent.session_id))]

    async def settle(
        self, message: InboundMessage, channel: Channel
    ) -> list[OutboundMessage] | None:
        """The replies to a message whose handling was cut off after its prompt may have
        gone out: found at the backend or sent now, answered as usual. None when it sent
        nothing (handle it afresh). BackendUnavailable, BackendUnauthorized and
        PromptInDoubt mean: the backend cannot be asked now, try again later."""
        intent = self.sender.unsettled(message.key)
        if intent is None:
            return None
        try:
            sent = await self.sender.settle(intent)
        except (BackendUnavailable, BackendUnauthorized):
            raise
        except BackendNotFound:
            texts = [self.t("not_found", session_id=intent.session_id)]
        except BackendError as exc:
            texts = [self._backend_error_text(exc)]
        else:
            if sent is None:
                preview = " ".join(intent.prompt.split())[:60]
                return [OutboundMessage(self.t("in_doubt", preview=preview), markdown=False)]
            if intent.session_id:
                texts = await self._continued(channel, sent)
            else:
                texts = await self._created(channel, sent)
        return [OutboundMessage(text) for text in texts]

    async def _answer(self, channel: Channel, args: str) -> list[str]:
        request_id, _, raw = args.partition(" ")
        if not request_id or not raw.strip():
            return [self.t("answer_usage")]
        answers = _parse_answers(raw)
        if answers is None:
            return [self.t("answer_bad_json")]
        if not UUID.match(request_id):
            return [self.t("answer_not_found", request_id=request_id[:40])]
        outcome = await self.submit_answer(request_id, answers)
        return [self.t(outcome.value, request_id=request_id)]

    async def submit_answer(self, request_id: str, answers: dict[str, str]) -> AnswerOutcome:
        """Post an answer and say what became of it (shared by /answer and prompts)."""
        try:
            await self.backend.answer_input_request(request_id, answers)
        except BackendNotFound:
            return AnswerOutcome.NOT_FOUND
        except BackendRejected as exc:
            reason = str(exc).lower()
            if "answered" in reason:
                return AnswerOutcome.ALREADY_ANSWERED
            if "expired" in reason:
                return AnswerOutcome.EXPIRED
            raise
        return AnswerOutcome.SENT

    # --- helpers ---

    async def _prompt_sent(self, channel: Channel, session_id: str) -> None:
        if self.on_prompt is not None:
            await self.on_prompt(channel, session_id)


def _parse_answers(raw: str) -> dict[str, str] | None:
    """A JSON object whose values are strings (booleans/numbers are stringified)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or not data:
        return None
    answers: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, bool):
            answers[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            answers[key] = str(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            answers[key] = ", ".join(value)
        else:
            return None
    return answers


__all__ = ["Command", "HandlerSettings", "Handlers"]
