"""Answers to input prompts without JSON: buttons, replies to the prompt, numbers and words.

Buttons (Telegram) carry `ans`/`tog`/`sub`/`plan` actions; a reply to the prompt message is
a free-text answer; elsewhere (DingTalk) a message that is just an option number or label,
or an approve/reject word, answers the chat's open prompt: when several are open, only a
label of one of them does, else the chat is asked which. Whatever matches a prompt that
takes no answer any more (answered, expired) gets a reply saying so and posts nothing.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from agent.backend.models import InputRequest
from agent.chats.base import OutboundMessage
from agent.core import notices, prompts
from agent.core.notices import PLAN_TOOL, NoticeContext
from agent.core.prompts import request_of
from agent.store.models import Channel, InputPrompt, Outbox, TrackedSession

APPROVE_WORDS = frozenset({"approve", "approved", "yes", "y", "ok", "批准", "同意", "是", "好"})
REJECT_WORDS = frozenset({"reject", "rejected", "no", "n", "deny", "拒绝", "不同意", "否", "不"})
_NUMBERS = re.compile(r"^\s*\d+(\s*[,，、\s]\s*\d+)*\s*$")


@dataclass(frozen=True)
class Answer:
    """What to post, or what to tell the chat instead (`reply`) when not ready to post.
    `via` (button | reply | text) says how it came, for the wording of a late reply."""

    prompt: InputPrompt
    answers: dict[str, str] | None = None
    summary: str = ""
    reply: str = ""
    refresh: OutboundMessage | None = None
    via: str = ""


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
    late = prompts.late_state(prompt, request, time.time())
    if late:  # a button left on a closed prompt (its edit failed, or crossed the answer)
        return Answer(prompt, reply=prompts.late_reply(prompt, late, channel, ctx, "button"))
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
            typed = channel.provider in notices.TYPED_ANSWER_PROVIDERS
            refresh = notices.input_prompt(
                ctx,
                label,
                prompt.id,
                request,
                buttons=True,
                typed=typed,
                selected=frozenset(selected),
            )
            return Answer(prompt, refresh=refresh)
        return _question_answer(prompt, request, selected)
    if action == "sub":
        if not _complete(request, selected):
            return Answer(prompt, reply=ctx.t("answer.pick_first"))
        return _question_answer(prompt, request, selected)
    return None


def answer_from_reply(
    channel: Channel, reply_to: str, text: str, ctx: NoticeContext
) -> Answer | None:
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
    answer = _reply_answer(prompt, request, text)
    if answer is None:
        return None
    late = prompts.late_state(prompt, request, time.time())
    if late:
        return Answer(prompt, reply=prompts.late_reply(prompt, late, channel, ctx, "reply"))
    return answer


def _reply_answer(prompt: InputPrompt, request: InputRequest, text: str) -> Answer | None:
    if request.tool_name == PLAN_TOOL:
        word = text.strip().lower()
        if word in APPROVE_WORDS or word in REJECT_WORDS:
            approved = "true" if word in APPROVE_WORDS else "false"
            return Answer(prompt, {"approved": approved}, summary=word, via="reply")
        return None
    if not request.questions:
        return None
    answers = {request.questions[0].question: text.strip()}
    for question in request.questions[1:]:
        answers.setdefault(question.question, "")
    return Answer(prompt, answers, summary=text.strip()[:100], via="reply")


def answer_from_text(channel: Channel, text: str, ctx: NoticeContext) -> Answer | None:
    """A message that is just option numbers, a label or a plan word, in a chat with an
    open prompt it fits, or with one that closed lately (then a reply, nothing to post)."""
    now = time.time()
    live: list[InputPrompt] = []
    late: list[tuple[InputPrompt, str]] = []
    hits: list[tuple[InputPrompt, _Match]] = []
    for prompt in (
        InputPrompt.select()
        .where((InputPrompt.channel == channel) & (InputPrompt.state == "open"))
        .order_by(InputPrompt.id.desc())
    ):
        request = request_of(prompt)
        if request.is_expired(now):
            late.append((prompt, "expired"))
            continue
        live.append(prompt)
        if (match := _match(request, text)) is not None:
            hits.append((prompt, match))
    if hits:
        prompt, match = hits[0]
        # A bare "1" or "ok" is for the one open prompt; a label, for the one that has it.
        if len(live) == 1 or (len(hits) == 1 and match.by_label):
            return _matched_answer(prompt, match, ctx)
        return Answer(prompt, reply=_which(ctx, live, text), via="text")
    for prompt, state in late + prompts.recently_closed(channel, now):
        if _match(request_of(prompt), text) is not None:
            reply = prompts.late_reply(prompt, state, channel, ctx, "text")
            return Answer(prompt, reply=reply, via="text")
    return None


@dataclass(frozen=True)
class _Match:
    """What a typed text means for one prompt: a plan decision or the options picked."""

    approved: bool | None = None
    picks: frozenset[int] = frozenset()
    by_label: bool = False


def _match(request: InputRequest, text: str) -> _Match | None:
    """The whole text as an answer to `request`: never a sentence that merely contains one."""
    word = text.strip().lower().strip("。.!！")
    if request.tool_name == PLAN_TOOL:
        if word in APPROVE_WORDS or word in REJECT_WORDS:
            return _Match(approved=word in APPROVE_WORDS)
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
        return _Match(picks=frozenset(picks))
    for index, label in enumerate(labels):
        if label.strip().lower() == word:
            return _Match(picks=frozenset({index}), by_label=True)
    return None


def _matched_answer(prompt: InputPrompt, match: _Match, ctx: NoticeContext) -> Answer:
    if match.approved is not None:
        answer = _plan_answer(prompt, approved=match.approved, ctx=ctx)
    else:
        picks = {(0, p) for p in match.picks}
        answer = _question_answer(prompt, request_of(prompt), picks)
    return Answer(prompt, answer.answers, summary=answer.summary, via="text")


def _which(ctx: NoticeContext, live: list[InputPrompt], text: str) -> str:
    """Several open prompts fit a bare answer: list them, each with an /answer to copy."""
    quoted = " ".join(text.split())[:40]
    lines = [ctx.t("answer.which", text=quoted)]
    for prompt in reversed(live):  # oldest first, as they were shown
        request = request_of(prompt)
        tracked = TrackedSession.get_or_none(TrackedSession.session_id == prompt.session_id)
        label = notices.session_label(tracked.title if tracked else "", prompt.session_id)
        if request.tool_name == PLAN_TOOL:
            what = ctx.t("answer.which_plan")
        else:
            what = " / ".join(q.question for q in request.questions)
        example = json.dumps(_example(request, text), ensure_ascii=False)
        lines.append(f"• *{label}*: {what}\n`/answer {prompt.request_id} {example}`")
    return "\n".join(lines)


def _example(request: InputRequest, text: str) -> dict[str, str]:
    """The answers `text` would give `request`, else its first options: ready to edit."""
    match = _match(request, text)
    if request.tool_name == PLAN_TOOL:
        approved = match is None or match.approved is not False
        return {"approved": "true" if approved else "false"}
    example: dict[str, str] = {}
    for qi, question in enumerate(request.questions):
        labels = [option.label for option in question.options]
        picks = sorted(match.picks) if match is not None and qi == 0 else [0]
        example[question.question] = ", ".join(labels[p] for p in picks if p < len(labels))
    return example


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
