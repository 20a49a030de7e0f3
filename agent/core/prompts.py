"""Input requests shown in chats: open once per (request, chat), closed once answered or
expired, and what became of them (how the chats answer is in `answers`).

Once a request is answered anywhere, every chat's prompt says so, and a late answer to it
is told so ("already answered" by whom, or "expired") instead of reaching the session as a
prompt: through its button or a reply to it for as long as the prompt is stored, as a bare
number or word for a while after it closed (`PromptClosure`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from agent.backend.models import InputRequest
from agent.chats.base import OutboundMessage
from agent.core import i18n, notices
from agent.core.notices import NoticeContext
from agent.store import queries
from agent.store.models import Channel, InputPrompt, PromptClosure, TrackedSession

CLOSED = ("answered", "expired")
# A bare number or word still answers a closed prompt (with "already answered"/"expired")
# this long after it closed: the chat may not have seen it close (answered in the web UI,
# in another chat, or expired meanwhile) ...
LATE_SECONDS = 30 * 60
# ... and this long when this chat answered it itself, which it saw: past that, "ok" more
# likely answers what the agent wrote since than the old prompt.
LATE_HERE_SECONDS = 120


def prompt_key(request_id: str) -> str:
    return f"ui:{request_id}"


# --- showing and closing ---


def open_prompt(
    channel: Channel, request: InputRequest, label: str, ctx: NoticeContext, *, buttons: bool
) -> None:
    """Show the request in the chat once (no-op when already shown)."""
    if InputPrompt.get_or_none(
        (InputPrompt.request_id == request.id) & (InputPrompt.channel == channel)
    ):
        return
    prompt = InputPrompt.create(
        request_id=request.id,
        channel=channel,
        session_id=request.session_id,
        request=json.dumps(request.raw),
    )
    typed = channel.provider in notices.TYPED_ANSWER_PROVIDERS
    message = notices.input_prompt(ctx, label, prompt.id, request, buttons=buttons, typed=typed)
    queries.enqueue(channel, message, dedup_key=prompt_key(request.id))


def open_prompt_count() -> int:
    return int(InputPrompt.select().where(InputPrompt.state == "open").count())


def closed_prompts(
    live_ids: set[str], followed: set[str], now: float
) -> list[tuple[InputPrompt, str]]:
    """Open prompts whose request left the pending list, with what became of it:
    'expired' (time is up, or its run was canceled), 'answered', or 'dropped' (the chat
    no longer follows the session: closed without a word)."""
    closed = []
    for prompt in InputPrompt.select().where(InputPrompt.state == "open"):
        if prompt.request_id in live_ids:
            continue
        if prompt.session_id not in followed:
            closed.append((prompt, "dropped"))
            continue
        request = request_of(prompt)
        expired = request.expires_at is not None and request.expires_at.timestamp() <= now
        tracked = TrackedSession.get_or_none(TrackedSession.session_id == prompt.session_id)
        canceled = tracked is not None and tracked.latest_run_status == "canceled"
        closed.append((prompt, "expired" if expired or canceled else "answered"))
    return closed


def close_prompt(
    prompt: InputPrompt,
    state: str,
    ctx: NoticeContext,
    button_providers: Iterable[str],
    answer: str = "",
    *,
    answered_here: bool = False,
    answered_by: Channel | None = None,
) -> None:
    """Mark closed and tell the chat: edit the prompt where possible, else a short line
    (none when `answered_here`: the chat's reply says it). `answered_by` is the chat that
    answered it through the agent (None: the web UI or elsewhere).

    Where the platform may or may not edit the prompt (a DingTalk prompt went out as a
    card, or as text after a card error), the edit carries the short line as its
    `fallback`, sent instead when the prompt cannot be edited (core/delivery)."""
    InputPrompt.update(state=state).where(InputPrompt.id == prompt.id).execute()
    if state == "dropped":
        return
    _record_closure(prompt, answered_by)
    channel = prompt.channel
    request = request_of(prompt)
    label = notices.session_label("", prompt.session_id)
    message = notices.prompt_closed(ctx, label, request, state, answer)
    tail = OutboundMessage(message.text.rsplit("\n\n", 1)[-1])
    if channel.provider in set(button_providers):
        extra: dict[str, object] = {"target_dedup_key": prompt_key(prompt.request_id)}
        if not answered_here:
            extra["fallback"] = tail.to_dict()
        queries.enqueue(
            channel, message, dedup_key=f"ui-closed:{prompt.request_id}", kind="edit", extra=extra
        )
    elif not answered_here:
        queries.enqueue(channel, tail, dedup_key=f"ui-closed:{prompt.request_id}")


def close_request_everywhere(
    request_id: str,
    ctx: NoticeContext,
    button_providers: Iterable[str],
    answer: str,
    answered_in: Channel | None,
    *,
    replied: bool = True,
) -> None:
    """Close the request's open prompts in every chat. `replied`: the answering chat gets
    a reply of its own (else its prompt alone shows the answer)."""
    for prompt in InputPrompt.select().where(
        (InputPrompt.request_id == request_id) & (InputPrompt.state == "open")
    ):
        here = answered_in is not None and prompt.channel_id == answered_in.id
        close_prompt(
            prompt,
            "answered",
            ctx,
            button_providers,
            answer,
            answered_here=here and replied,
            answered_by=answered_in,
        )
    if answered_in is not None:
        # The notifier may have seen the request leave the pending list (and closed its
        # prompts as answered elsewhere) while our answer was on its way: it was ours.
        answered = InputPrompt.select(InputPrompt.id).where(
            (InputPrompt.request_id == request_id) & (InputPrompt.state == "answered")
        )
        PromptClosure.update(answered_by=answered_in).where(
            PromptClosure.answered_by.is_null() & PromptClosure.prompt.in_(answered)
        ).execute()


def request_of(prompt: InputPrompt) -> InputRequest:
    return InputRequest.from_api(json.loads(prompt.request))


def _record_closure(prompt: InputPrompt, answered_by: Channel | None) -> None:
    closure = PromptClosure.get_or_none(PromptClosure.prompt == prompt.id)
    if closure is None:
        PromptClosure.create(prompt=prompt.id, answered_by=answered_by)
    elif answered_by is not None and closure.answered_by_id is None:
        closure.answered_by = answered_by
        closure.save()


# --- late answers ---


def late_state(prompt: InputPrompt, request: InputRequest, now: float) -> str:
    """'answered' or 'expired' for a prompt that takes no answer any more, else ''."""
    if prompt.state in CLOSED:
        return str(prompt.state)
    if prompt.state == "open" and request.is_expired(now):
        return "expired"  # the notifier closes it at its next look
    return ""


def late_reply(
    prompt: InputPrompt, state: str, channel: Channel, ctx: NoticeContext, via: str
) -> str:
    """What a late answer gets: by whom it was answered, or that it expired, and (for a
    reply or a typed answer) how to send the text to the session instead."""
    if state == "expired":
        text = ctx.t("late.expired")
    else:
        text = ctx.t("late.answered", by=_answered_by(prompt, channel, ctx))
    hint = {"reply": "late.hint_reply", "text": "late.hint_text"}.get(via)
    return f"{text}\n{ctx.t(hint)}" if hint else text


def _answered_by(prompt: InputPrompt, channel: Channel, ctx: NoticeContext) -> str:
    closure = PromptClosure.get_or_none(PromptClosure.prompt == prompt.id)
    by = closure.answered_by if closure is not None and closure.answered_by_id else None
    if by is None:
        return ctx.t("late.by_web")
    if by.id == channel.id:
        return ctx.t("late.by_here")
    provider = f"provider.{by.provider}"
    name = ctx.t(provider) if provider in i18n.TEXTS["en"] else by.provider
    return ctx.t("late.by_chat", provider=name, name=by.title or by.chat_id)


def recently_closed(channel: Channel, now: float) -> list[tuple[InputPrompt, str]]:
    """The chat's prompts that closed lately, newest first, with their state: a bare
    number or word matching one of them is a late answer."""
    closures = (
        PromptClosure.select(PromptClosure, InputPrompt)
        .join(InputPrompt)
        .where(
            (InputPrompt.channel == channel)
            & InputPrompt.state.in_(CLOSED)
            & PromptClosure.matchable
            & (PromptClosure.closed_at >= now - LATE_SECONDS)
        )
        .order_by(PromptClosure.closed_at.desc(), PromptClosure.id.desc())
    )
    return [
        (closure.prompt, str(closure.prompt.state))
        for closure in closures
        if closure.answered_by_id != channel.id or closure.closed_at >= now - LATE_HERE_SECONDS
    ]


def chat_moved_on(channel: Channel) -> None:
    """The chat sent something that was no answer: from now on a bare number or word is
    about the conversation, not about the prompts that closed before."""
    mine = InputPrompt.select(InputPrompt.id).where(InputPrompt.channel == channel)
    matchable = PromptClosure.matchable & PromptClosure.prompt.in_(mine)
    if PromptClosure.select().where(matchable).exists():  # no write lock for nothing
        PromptClosure.update(matchable=False).where(matchable).execute()
