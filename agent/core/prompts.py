"""Input requests shown in chats, and answers without JSON: buttons, replies, numbers, words.

A prompt is shown once per (request, chat). Buttons (Telegram) carry `ans`/`tog`/`sub`/`plan`
actions; a reply to the prompt message is a free-text answer; elsewhere (DingTalk) a reply
with the option number or label, or an approve/reject word, answers the chat's newest open
prompt. Once a request is answered anywhere, every chat's prompt says so.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from agent.backend.models import InputRequest
from agent.chats.base import OutboundMessage
from agent.core import notices
from agent.core.notices import PLAN_TOOL, NoticeContext
from agent.store import queries
from agent.store.models import Channel, InputPrompt, Outbox, TrackedSession

APPROVE_WORDS = frozenset({"approve", "approved", "yes", "y", "ok", "批准", "同意", "是", "好"})
REJECT_WORDS = frozenset({"reject", "rejected", "no", "n", "deny", "拒绝", "不同意", "否", "不"})
_NUMBERS = re.compile(r"^\s*\d+(\s*[,，、\s]\s*\d+)*\s*$")


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
    message = notices.input_prompt(ctx, label, prompt.id, request, buttons=buttons)
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
) -> None:
    """Mark closed and tell the chat: edit the prompt where possible, else a short line."""
    InputPrompt.update(state=state).where(InputPrompt.id == prompt.id).execute()
    if state == "dropped":
        return
    channel = prompt.channel
    request = request_of(prompt)
    label = notices.session_label("", prompt.session_id)
    message = notices.prompt_closed(ctx, label, request, state, answer)
    if channel.provider in set(button_providers):
        queries.enqueue(
            channel,
            message,
            dedup_key=f"ui-closed:{prompt.request_id}",
            kind="edit",
            extra={"target_dedup_key": prompt_key(prompt.request_id)},
        )
    elif not answered_here:
        tail = message.text.rsplit("\n\n", 1)[-1]
        queries.enqueue(channel, OutboundMessage(tail), dedup_key=f"ui-closed:{prompt.request_id}")


def close_request_everywhere(
    request_id: str,
    ctx: NoticeContext,
    button_providers: Iterable[str],
    answer: str,
    answered_in: Channel | None,
) -> None:
    for prompt in InputPrompt.select().where(
        (InputPrompt.request_id == request_id) & (InputPrompt.state == "open")
    ):
        close_prompt(
            prompt,
            "answered",
            ctx,
            button_providers,
            answer,
            answered_here=answered_in is not None and prompt.channel_id == answered_in.id,
        )


def request_of(prompt: InputPrompt) -> InputRequest:
    return InputRequest.from_api(json.loads(prompt.request))


# --- answers ---


@dataclass(frozen=True)
class Answer:
    """What to post, or what to tell the chat instead (`reply`) when not ready to post."""

    prompt: InputPrompt
    answers: dict[str, str] | None = None
    summary: str = ""
    reply: str = ""
    refresh: OutboundMessage | None = None


def answer_from_button(channel: Channel, data: str, ctx: NoticeContext) -> Answer | None:
    """Interpret a button press; None when the data is not ours or the prompt is unknown."""
    parts = data.split(":")
    try:
        action, prompt_id, numbers = parts[0], int(parts[1]), [int(p) for p in parts[2:]]
    except (IndexError, ValueError):
        return None
    prompt = InputPrompt.get_or_none(
        (InputPrompt.id == prompt_id) & (InputPrompt.channel == channel)
    )
    if prompt is None:
        return None
    request = request_of(prompt)
    if action == "plan" and numbers:
        return _plan_answer(prompt, approved=numbers[0] == 1, ctx=ctx)
    selected = {tuple(pair) for pair in json.loads(prompt.selected)}
    if action in {"ans", "tog"} and len(numbers) == 2:
        qi, oi = numbers
        if not _valid(request, qi, oi):
            return None
        if action == "ans":
            selected = {pair for pair in selected if pair[0] != qi} | {(qi, oi)}
        else:
            selected ^= {(qi, oi)}
        _save_selection(prompt, selected)
        if action == "tog" or not _complete(request, selected):
            label = notices.session_label("", prompt.session_id)
            refresh = notices.input_prompt(
                ctx, label, prompt.id, request, buttons=True, selected=frozenset(selected)
            )
            return Answer(prompt, refresh=refresh)
        return _question_answer(prompt, request, selected)
    if action == "sub":
        if not _complete(request, selected):
            return Answer(prompt, reply=ctx.t("answer.pick_first"))
        return _question_answer(prompt, request, selected)
    return None


def answer_from_reply(channel: Channel, reply_to: str, text: str) -> Answer | None:
    """A reply to a prompt message: free text answers its (first) question."""
    row = Outbox.get_or_none(
        (Outbox.channel == channel)
        & (Outbox.platform_message_id == reply_to)
        & Outbox.dedup_key.startswith("ui:")
    )
    if row is None:
        return None
    prompt = InputPrompt.get_or_none(
        (InputPrompt.request_id == str(row.dedup_key).removeprefix("ui:"))
        & (InputPrompt.channel == channel)
    )
    if prompt is None:
        return None
    request = request_of(prompt)
    if request.tool_name == PLAN_TOOL:
        word = text.strip().lower()
        if word in APPROVE_WORDS or word in REJECT_WORDS:
            return Answer(
                prompt, {"approved": "true" if word in APPROVE_WORDS else "false"}, summary=word
            )
        return None
    if not request.questions:
        return None
    answers = {request.questions[0].question: text.strip()}
    for question in request.questions[1:]:
        answers.setdefault(question.question, "")
    return Answer(prompt, answers, summary=text.strip()[:100])


def answer_from_text(channel: Channel, text: str, ctx: NoticeContext) -> Answer | None:
    """A plain reply in a chat with an open prompt: option numbers/labels or a plan word."""
    prompt = (
        InputPrompt.select()
        .where((InputPrompt.channel == channel) & (InputPrompt.state == "open"))
        .order_by(InputPrompt.id.desc())
        .first()
    )
    if prompt is None:
        return None
    request = request_of(prompt)
    if request.is_expired(time.time()):
        return None
    word = text.strip().lower().strip("。.!！")
    if request.tool_name == PLAN_TOOL:
        if word in APPROVE_WORDS or word in REJECT_WORDS:
            return _plan_answer(prompt, approved=word in APPROVE_WORDS, ctx=ctx)
        return None
    if len(request.questions) != 1:
        return None
    question = request.questions[0]
    labels = [option.label for option in question.options]
    if _NUMBERS.match(text):
        picks = [int(n) - 1 for n in re.findall(r"\d+", text)]
        if not picks or any(not 0 <= p < len(labels) for p in picks):
            return None
        if len(picks) > 1 and not question.multi_select:
            return None
        return _question_answer(prompt, request, {(0, p) for p in picks})
    for index, label in enumerate(labels):
        if label.strip().lower() == word:
            return _question_answer(prompt, request, {(0, index)})
    return None


def _plan_answer(prompt: InputPrompt, *, approved: bool, ctx: NoticeContext) -> Answer:
    summary = ctx.t("answer.approved" if approved else "answer.rejected")
    return Answer(prompt, {"approved": "true" if approved else "false"}, summary=summary)


def _question_answer(
    prompt: InputPrompt, request: InputRequest, selected: set[tuple[int, int]]
) -> Answer:
    answers: dict[str, str] = {}
    for qi, question in enumerate(request.questions):
        labels = [question.options[oi].label for q, oi in sorted(selected) if q == qi]
        answers[question.question] = ", ".join(labels)
    return Answer(prompt, answers, summary="; ".join(v for v in answers.values() if v))


def _valid(request: InputRequest, qi: int, oi: int) -> bool:
    return 0 <= qi < len(request.questions) and 0 <= oi < len(request.questions[qi].options)


def _complete(request: InputRequest, selected: set[tuple[int, int]]) -> bool:
    return all(any(q == qi for q, _ in selected) for qi in range(len(request.questions)))


def _save_selection(prompt: InputPrompt, selected: set[tuple[int, int]]) -> None:
    prompt.selected = json.dumps(sorted(selected))
    InputPrompt.update(selected=prompt.selected).where(InputPrompt.id == prompt.id).execute()
