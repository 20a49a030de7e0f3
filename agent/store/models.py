"""The tables of the local store (peewee on SQLite).

A chat is a `Channel`. It may be bound to one session (`Binding`) and watch several
(`Watch`). Inbound platform events go to the `Inbound` journal before they are confirmed;
everything a chat is told goes through the `Outbox`, unique per (channel, dedup_key), so
enqueueing the same notification twice is a no-op.
"""

from __future__ import annotations

import time
from typing import Any

import peewee

database_proxy = peewee.DatabaseProxy()


def now() -> float:
    return time.time()


class BaseModel(peewee.Model):
    id: Any  # peewee's implicit auto-increment key (a field on the class, an int on rows)

    class Meta:
        database = database_proxy
        legacy_table_names = False


class Meta(BaseModel):
    """Small key/value state: schema version, last heartbeat, /list and /watches orders."""

    key = peewee.CharField(primary_key=True)
    value = peewee.TextField()


class Channel(BaseModel):
    provider = peewee.CharField()
    chat_id = peewee.CharField()
    title = peewee.CharField(default="")
    is_group = peewee.BooleanField(default=False)
    # Access decided per chat: allowed once paired, approved, or on the allowlist.
    allowed = peewee.BooleanField(default=False)
    created_at = peewee.FloatField(default=now)
    # Provider-specific delivery data (JSON), e.g. DingTalk's conversation type, the
    # sender's staff id and the last sessionWebhook; handed back to the provider on send.
    route = peewee.TextField(default="{}")

    class Meta:
        indexes = ((("provider", "chat_id"), True),)

    @property
    def address(self) -> str:
        return f"{self.provider}:{self.chat_id}"


class ChatMove(BaseModel):
    """A chat that got a new id (a Telegram group upgraded to a supergroup): its old id
    still finds the chat, e.g. for a late message or an old pairing code."""

    provider = peewee.CharField()
    old_chat_id = peewee.CharField()
    new_chat_id = peewee.CharField()
    moved_at = peewee.FloatField(default=now)

    class Meta:
        indexes = ((("provider", "old_chat_id"), True),)


class Binding(BaseModel):
    """The session a chat's plain text continues."""

    channel_id: int

    channel = peewee.ForeignKeyField(Channel, unique=True, on_delete="CASCADE")
    session_id = peewee.CharField()
    bound_at = peewee.FloatField(default=now)


class Watch(BaseModel):
    """A chat follows a session's notifications. Cursors say what it has been told."""

    channel_id: int

    channel = peewee.ForeignKeyField(Channel, on_delete="CASCADE")
    session_id = peewee.CharField(index=True)
    created_at = peewee.FloatField(default=now)
    # Highest message id already turned into outbox rows; None = never seen.
    message_cursor = peewee.IntegerField(null=True)
    # Latest run whose terminal notice was enqueued.
    notified_run_id = peewee.CharField(default="")

    class Meta:
        indexes = ((("channel", "session_id"), True),)


class TrackedSession(BaseModel):
    """What the notifier knows of a followed session, so finished ones cost nothing."""

    session_id = peewee.CharField(primary_key=True)
    status = peewee.CharField(default="")
    latest_run_id = peewee.CharField(default="")
    latest_run_status = peewee.CharField(default="")
    latest_run_error = peewee.TextField(default="")
    max_message_id = peewee.IntegerField(default=0)
    message_count = peewee.IntegerField(default=0)
    run_count = peewee.IntegerField(default=0)
    # True while a run may still produce output: followed closely; False = listed cheaply.
    active = peewee.BooleanField(default=True, index=True)
    title = peewee.CharField(default="")
    updated_at = peewee.CharField(default="")
    checked_at = peewee.FloatField(default=0)


class Inbound(BaseModel):
    """The inbound journal: one row per platform event, persisted before it is confirmed."""

    key = peewee.CharField(unique=True)
    provider = peewee.CharField()
    chat_id = peewee.CharField()
    payload = peewee.TextField()
    # pending → started (handler running) → done; a row left `started` by a crash is in doubt.
    status = peewee.CharField(default="pending", index=True)
    received_at = peewee.FloatField(default=now)
    handled_at = peewee.FloatField(null=True)


class Outbox(BaseModel):
    channel_id: int
    channel = peewee.ForeignKeyField(Channel, on_delete="CASCADE")
    dedup_key = peewee.CharField(null=True)
    kind = peewee.CharField(default="message")  # message | edit
    payload = peewee.TextField()
    # pending → sent | failed (permanent)
    status = peewee.CharField(default="pending", index=True)
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.FloatField(default=0)
    last_error = peewee.TextField(default="")
    created_at = peewee.FloatField(default=now)
    sent_at = peewee.FloatField(null=True)
    # The platform's id of the sent message (to edit an input prompt later).
    platform_message_id = peewee.CharField(default="")

    class Meta:
        indexes = ((("channel", "dedup_key"), True),)


class Pairing(BaseModel):
    provider = peewee.CharField()
    chat_id = peewee.CharField()
    code = peewee.CharField(unique=True)
    title = peewee.CharField(default="")
    created_at = peewee.FloatField(default=now)
    expires_at = peewee.FloatField()

    class Meta:
        indexes = ((("provider", "chat_id"), False),)


class InputPrompt(BaseModel):
    """An input request shown in a chat, with the choices made so far (multi-select)."""

    channel_id: int

    request_id = peewee.CharField()
    channel = peewee.ForeignKeyField(Channel, on_delete="CASCADE")
    session_id = peewee.CharField()
    request = peewee.TextField()  # the request JSON as the backend listed it
    selected = peewee.TextField(default="[]")
    state = peewee.CharField(default="open")  # open | answered | expired | dropped
    created_at = peewee.FloatField(default=now)

    class Meta:
        indexes = ((("request_id", "channel"), True),)


class PromptClosure(BaseModel):
    """When and how a prompt closed (answered or expired), so that a late answer to it is
    told so instead of reaching the session as a prompt. Its own table: no migration."""

    prompt_id: int
    answered_by_id: int | None

    prompt = peewee.ForeignKeyField(InputPrompt, unique=True, on_delete="CASCADE")
    closed_at = peewee.FloatField(default=now, index=True)
    # The chat that answered it through the agent; None: the web UI or elsewhere.
    answered_by = peewee.ForeignKeyField(
        Channel, null=True, on_delete="SET NULL", backref="answered_prompts"
    )
    # False once the chat moved on (sent a message that was no answer): a bare "1" or
    # "ok" then means something else.
    matchable = peewee.BooleanField(default=True)


class RunProgress(BaseModel):
    """What a run's progress messages show, kept across restarts: one row per run."""

    run_id = peewee.CharField(primary_key=True)
    session_id = peewee.CharField(index=True)
    view = peewee.TextField(default="{}")  # core.progress.RunView as JSON
    ended = peewee.BooleanField(default=False)
    created_at = peewee.FloatField(default=now)


class ProgressMessage(BaseModel):
    """A run's progress message in one chat: what it should show (`message`) and what the
    platform shows (`shown`, '' before the first send); edited until the two match."""

    channel_id: int

    channel = peewee.ForeignKeyField(Channel, on_delete="CASCADE")
    run_id = peewee.CharField()
    message = peewee.TextField()  # OutboundMessage JSON
    shown = peewee.TextField(default="")
    platform_message_id = peewee.CharField(default="")
    # live (kept up to date) | failed (the chat refuses it) | dropped (chat no longer allowed)
    state = peewee.CharField(default="live", index=True)
    final = peewee.BooleanField(default=False)  # the run ended: `message` is its last word
    not_before = peewee.FloatField(default=0)  # a 429's retry_after, as wall-clock time
    attempts = peewee.IntegerField(default=0)
    last_error = peewee.TextField(default="")
    updated_at = peewee.FloatField(default=now)

    class Meta:
        indexes = ((("channel", "run_id"), True),)


class StopRequest(BaseModel):
    """A cancel posted for a run: once, however often Stop is pressed or /stop sent."""

    run_id = peewee.CharField(primary_key=True)
    session_id = peewee.CharField()
    requested_at = peewee.FloatField(default=now)


ALL_MODELS: tuple[type[BaseModel], ...] = (
    Meta,
    Channel,
    ChatMove,
    Binding,
    Watch,
    TrackedSession,
    Inbound,
    Outbox,
    Pairing,
    InputPrompt,
    PromptClosure,
    RunProgress,
    ProgressMessage,
    StopRequest,
)
