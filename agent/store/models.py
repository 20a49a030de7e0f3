"""The tables of the local store (peewee on SQLite).

A chat is a `Channel`. It may be bound to one session (`Binding`) and watch several
(`Watch`). Inbound platform events go to the `Inbound` journal before they are confirmed;
everything a chat is told goes through the `Outbox`, unique per (channel, dedup_key), so
enqueueing the same notification twice is a no-op. A prompt is an `Intent` before it is
sent, so a crash in the middle of `POST /tasks` can be settled at the next start.
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


class Intent(BaseModel):
    """A prompt for `POST /tasks` (a follow-up, or `/new`), recorded before the call.

    `sending` means the answer never came (a crash, a timeout): what the backend had just
    before the call lets the next look tell whether the prompt arrived.
    """

    channel_id: int

    key = peewee.CharField(unique=True)  # the inbound journal key of the message
    channel = peewee.ForeignKeyField(Channel, on_delete="CASCADE")
    session_id = peewee.CharField(default="", index=True)  # "" = /new
    prompt = peewee.TextField()
    # Follow-up: the newest message id the session had before the call; `blind` when the
    # backend could not show them all (an older backend lists the first 1000 only).
    after_message_id = peewee.IntegerField(default=0)
    blind = peewee.BooleanField(default=False)
    # /new: `created_at` (the backend's clock) of the newest session before the call.
    sessions_after = peewee.CharField(default="")
    # The task's `config` as JSON ("" = none): a file message's uploaded input_files, so a
    # prompt sent again after a crash carries its files.
    config = peewee.TextField(default="")
    # sending → sent (answered, or found at the backend) | failed (refused: not there)
    state = peewee.CharField(default="sending", index=True)
    # What it became: its session; `queued` behind a running run; the user message found.
    result_session_id = peewee.CharField(default="")
    queued = peewee.BooleanField(default=False)
    queued_count = peewee.IntegerField(default=0)
    message_id = peewee.IntegerField(null=True)
    created_at = peewee.FloatField(default=now)
    updated_at = peewee.FloatField(default=now)


class Outbox(BaseModel):
    channel_id: int
    channel = peewee.ForeignKeyField(Channel, on_delete="CASCADE")
    dedup_key = peewee.CharField(null=True)
    kind = peewee.CharField(default="message")  # message | edit
    # {"message": …, "parts_sent": n once n parts of a long message went out, …}
    payload = peewee.TextField()
    # pending → sent | failed (permanent)
    status = peewee.CharField(default="pending", index=True)
    attempts = peewee.IntegerField(default=0)
    # Wall clock, so only a hint for the next start: a running agent waits in monotonic time.
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


class FileJob(BaseModel):
    """An inbound file message on its way into a task (core/attachments). Its files are
    fetched and uploaded (`uploading`), then the task is posted (`posting`, `done`). The
    other photos of an album are `absorbed` by the job of the album's first message."""

    key = peewee.CharField(unique=True)  # the inbound message's key
    state = peewee.CharField(default="uploading")
    leader = peewee.CharField(default="")  # absorbed: the key of the album's job
    created_at = peewee.FloatField(default=now, index=True)


class FileUpload(BaseModel):
    """A file a job uploaded: the backend's InputFile, reused when the job is retried after
    a crash, so the task gets each file once."""

    job_key = peewee.CharField()
    file_key = peewee.CharField()  # Attachment.key
    input_file = peewee.TextField()  # the InputFile JSON as the backend answered it
    created_at = peewee.FloatField(default=now)

    class Meta:
        indexes = ((("job_key", "file_key"), True),)


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
    Intent,
    FileJob,
    FileUpload,
)
