"""The seam every chat platform implements: inbound messages, outbound messages, states.

`core/` talks to Telegram and DingTalk only through these types; it imports neither library.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from agent.logs import mask_url_credentials


class ProviderState(StrEnum):
    DISABLED = "disabled"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    ERROR = "error"


@dataclass(frozen=True)
class Button:
    """An inline button; `data` comes back as `InboundMessage.callback_data` when pressed.

    `action_id` names it where buttons are drawn by a template and a press reports only
    the label and this name (DingTalk cards: `option_<n>`, `approve`, `reject`, `submit`)."""

    label: str
    data: str
    action_id: str = ""


@dataclass(frozen=True)
class Attachment:
    """A file in an inbound message, as the journal keeps it: how to fetch it, never its
    bytes. `ref` is Telegram's file_id or DingTalk's downloadCode; `size` is what the
    platform announced (None: unknown until fetched)."""

    # Telegram: photo document audio voice video video_note animation; DingTalk: picture
    # file voice (its audio message) video.
    kind: str
    ref: str
    name: str = ""
    mime_type: str = ""
    size: int | None = None
    # Stable per file (Telegram's file_unique_id): an upload is recorded under it.
    unique_id: str = ""
    # DingTalk's own speech recognition of an audio message.
    transcript: str = ""

    @property
    def key(self) -> str:
        return self.unique_id or self.ref


@dataclass(frozen=True)
class InboundMessage:
    """One message (or button press) from a chat, as the journal stores it.

    `key` is unique per platform event (Telegram: `telegram:<update_id>`; DingTalk:
    `dingtalk:<msgId>`) so a redelivery is recognised; `chat_id` orders processing.
    """

    provider: str
    key: str
    chat_id: str
    text: str
    message_id: str = ""
    sender_id: str = ""
    sender_name: str = ""
    is_group: bool = False
    reply_to_message_id: str = ""
    callback_data: str = ""
    callback_id: str = ""
    # Delivery data the provider wants back on send (stored on the channel), see ChatRef.
    route: dict[str, Any] = field(default_factory=dict)
    # A press reported by the pressed message's id (`message_id`) and the button's label and
    # action id only, without the chat (DingTalk cards): the journal finds the chat and the
    # button's `callback_data` in that message as it was sent, or drops a press on a
    # message that is not ours (store/queries.resolve_press).
    button_label: str = ""
    button_action: str = ""
    # True for a message the agent cannot read (photo, sticker...): core answers "text only".
    unsupported: bool = False
    received_at: float = field(default_factory=time.time)
    # Not a message: the chat now lives under this id (a Telegram group upgraded to a
    # supergroup). The journal moves the chat's state when it records it; nothing to handle.
    moved_to: str = ""
    # Files the message carries (its text is then the caption), and the album they belong
    # to (Telegram sends each photo of an album as its own message with this id).
    attachments: tuple[Attachment, ...] = ()
    media_group_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "key": self.key,
            "chat_id": self.chat_id,
            "text": self.text,
            "message_id": self.message_id,
            "sender_id": self.sender_id,
            "sender_name": self.sender_name,
            "is_group": self.is_group,
            "reply_to_message_id": self.reply_to_message_id,
            "callback_data": self.callback_data,
            "callback_id": self.callback_id,
            "button_label": self.button_label,
            "button_action": self.button_action,
            "route": self.route,
            "unsupported": self.unsupported,
            "received_at": self.received_at,
            "moved_to": self.moved_to,
            "attachments": [asdict(a) for a in self.attachments],
            "media_group_id": self.media_group_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InboundMessage:
        files = tuple(Attachment(**a) for a in data.get("attachments") or ())
        return cls(**{**data, "attachments": files})

    @property
    def unresolved_press(self) -> bool:
        """A press that names its button but not yet its chat and data (see button_label)."""
        return not self.callback_data and bool(self.button_label or self.button_action)


@dataclass(frozen=True)
class ChatRef:
    """Where to deliver: the chat, and the provider's own route data from its last message."""

    provider: str
    chat_id: str
    is_group: bool = False
    route: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboundMessage:
    """What core asks a provider to show. `text` is Markdown unless `markdown` is False."""

    text: str
    markdown: bool = True
    buttons: Sequence[Sequence[Button]] = ()
    reply_to_message_id: str = ""
    # A run's progress (sent once, then replaced in place): DingTalk shows it as a
    # streamed card. `final`: the run's last state, no further change follows.
    progress: bool = False
    final: bool = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "text": self.text,
            "markdown": self.markdown,
            "buttons": [
                [{"label": b.label, "data": b.data, "action_id": b.action_id} for b in row]
                for row in self.buttons
            ],
            "reply_to_message_id": self.reply_to_message_id,
        }
        if self.progress:  # only when set: stored payloads of other messages stay as they were
            data["progress"] = True
            data["final"] = self.final
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutboundMessage:
        return cls(
            text=data["text"],
            markdown=data.get("markdown", True),
            buttons=tuple(
                tuple(Button(b["label"], b["data"], b.get("action_id", "")) for b in row)
                for row in data.get("buttons", ())
            ),
            reply_to_message_id=data.get("reply_to_message_id", ""),
            progress=bool(data.get("progress", False)),
            final=bool(data.get("final", False)),
        )


class IncomingFile(Protocol):
    """A file being fetched from a platform: its metadata, then its bytes once."""

    name: str
    content_type: str
    size: int | None  # None when the platform does not say

    def chunks(self) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True)
class OutgoingFile:
    """A file for a chat, streamed from `chunks` (read once)."""

    name: str
    content_type: str
    size: int | None
    chunks: AsyncIterator[bytes]
    caption: str = ""


# Persists a batch of inbound messages (deduplicated by key) and returns once they are
# durable; only then may a provider confirm them to its platform.
InboundSink = Callable[[Sequence[InboundMessage]], Awaitable[None]]

# Told, while a long message goes out in parts, how many parts were delivered so far;
# returns once that is durable, so a crash resumes after them.
PartsSent = Callable[[int], Awaitable[None]]


@dataclass
class ProviderStatus:
    enabled: bool
    mode: str
    state: ProviderState = ProviderState.DISABLED
    detail: str = ""
    last_ok_at: float | None = None
    # Called on each success (a poll, a connection): delivery retries a platform it saw down.
    on_ok: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def set(self, state: ProviderState, detail: str = "") -> None:
        self.state = state
        # Shown by health, `status` and the tray: never a URL's ticket or session.
        self.detail = mask_url_credentials(detail)
        if state is ProviderState.CONNECTED:
            self.last_ok_at = time.time()
            if self.on_ok is not None:
                self.on_ok()


class ChatProvider(Protocol):
    """A chat platform. Errors raised are `agent.errors.DeliveryError` subclasses."""

    name: str
    status: ProviderStatus
    text_limit: int

    async def run(self, sink: InboundSink) -> None:
        """Receive until cancelled: hand each batch to `sink`, then confirm it."""
        ...

    async def send(
        self,
        chat: ChatRef,
        message: OutboundMessage,
        *,
        first_part: int = 0,
        on_part: PartsSent | None = None,
    ) -> str:
        """Send (split if long) and return the platform's id of the last part, or ''.

        A retry resumes at `first_part` (from RetryLater.parts_sent or `on_part`): parts
        already delivered are not sent again. `on_part(n)` is awaited after the n-th part
        when more parts follow."""
        ...

    async def edit(self, chat: ChatRef, message_id: str, message: OutboundMessage) -> bool:
        """Replace a sent message's text and buttons. False when that message cannot be
        edited (a DingTalk text message; a card the app may no longer update): the caller
        may send what it has to say as a new message instead."""
        ...

    # Largest file this platform hands a bot (bytes), and the largest it takes from one
    # (0: it takes no files; core sends a link instead).
    max_download_bytes: int
    max_upload_bytes: int

    def open_file(
        self, chat: ChatRef, attachment: Attachment
    ) -> AbstractAsyncContextManager[IncomingFile]:
        """Start fetching an inbound file. DeliveryError subclasses on failure; FileTooLarge
        when the platform will not hand it out."""
        ...

    async def send_file(self, chat: ChatRef, file: OutgoingFile) -> str:
        """Send a document; the platform's message id."""
        ...

    async def show_typing(self, chat: ChatRef) -> None: ...

    async def acknowledge_button(self, callback_id: str, text: str = "") -> None: ...

    async def reconnect(self) -> None:
        """After a wake: drop the receiving connection (likely dead) and open a new one now
        instead of waiting for it to time out. A no-op where nothing is held open."""
        ...

    async def close(self) -> None: ...
