"""Backend events as chat messages: texts, run ends, input prompts, digests. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from agent.backend.models import InputRequest
from agent.chats.base import Button, OutboundMessage
from agent.core import i18n

MAX_ERROR_CHARS = 800
DIGEST_TEXT_CHARS = 300
PLAN_TOOL = "ExitPlanMode"
# Chats where a message that is just an option number or label answers the open prompt
# (no reply threading to tie an answer to its prompt), buttons or not.
TYPED_ANSWER_PROVIDERS = frozenset({"dingtalk"})


@dataclass(frozen=True)
class NoticeContext:
    lang: str
    frontend_url: str
    link_lang: str

    def t(self, key: str, **values: object) -> str:
        return i18n.text(self.lang, key, **values)

    def link(self, session_id: str) -> str:
        return i18n.session_link(self.frontend_url, self.link_lang, session_id)


def session_label(title: str, session_id: str) -> str:
    title = " ".join((title or "").split())[:60]
    return title or session_id[:8]


def assistant_text(ctx: NoticeContext, label: str, text: str) -> OutboundMessage:
    return OutboundMessage(ctx.t("notice.text", title=label, text=text))


def run_ended(
    ctx: NoticeContext, label: str, session_id: str, status: str, error: str
) -> OutboundMessage:
    link = ctx.link(session_id)
    if status == "failed":
        error = (error or "?")[:MAX_ERROR_CHARS]
        return OutboundMessage(ctx.t("notice.failed", title=label, error=error, link=link))
    key = "notice.canceled" if status == "canceled" else "notice.completed"
    return OutboundMessage(ctx.t(key, title=label, link=link))


def truncated(ctx: NoticeContext, label: str, session_id: str) -> OutboundMessage:
    """An older backend lists only a session's first 1000 messages: say so, with the link."""
    return OutboundMessage(ctx.t("notice.truncated", title=label, link=ctx.link(session_id)))


def input_prompt(
    ctx: NoticeContext,
    label: str,
    prompt_id: int,
    request: InputRequest,
    *,
    buttons: bool,
    typed: bool = False,
    selected: frozenset[tuple[int, int]] = frozenset(),
) -> OutboundMessage:
    """The question (or plan) with buttons, or with a hint to answer by text. `typed`: the
    chat also answers by typing a number or word (DingTalk), so the hint says that.

    Each button is named too (`action_id`: option_<n> counted across the questions,
    approve, reject, submit) for platforms that draw buttons from a template."""
    text_hint = typed or not buttons
    if request.tool_name == PLAN_TOOL:
        text = ctx.t("notice.plan", title=label, plan=request.plan or "")
        hint = ctx.t("notice.hint_plan_text" if text_hint else "notice.hint_plan_buttons")
        rows = (
            [
                [
                    Button(ctx.t("button.approve"), f"plan:{prompt_id}:1", "approve"),
                    Button(ctx.t("button.reject"), f"plan:{prompt_id}:0", "reject"),
                ]
            ]
            if buttons
            else []
        )
        return OutboundMessage(f"{text}\n\n{hint}", buttons=rows)
    lines = [ctx.t("notice.question", title=label)]
    rows = []
    multi = False
    number = 0
    for qi, question in enumerate(request.questions):
        header = f"*{question.header}*: " if question.header else ""
        lines.append(f"\n{header}{question.question}")
        multi = multi or question.multi_select
        for oi, option in enumerate(question.options):
            number += 1
            mark = "☑️ " if (qi, oi) in selected else ""
            description = f" — {option.description}" if option.description else ""
            lines.append(f"{oi + 1}. {mark}{option.label}{description}")
            if buttons:
                action = "tog" if question.multi_select else "ans"
                rows.append(
                    [
                        Button(
                            f"{mark}{option.label}"[:60],
                            f"{action}:{prompt_id}:{qi}:{oi}",
                            f"option_{number}",
                        )
                    ]
                )
    if buttons and multi:
        rows.append([Button(ctx.t("button.submit"), f"sub:{prompt_id}", "submit")])
    if not text_hint:
        hint = ctx.t("notice.hint_buttons")
    else:
        hint = ctx.t("notice.hint_multi_text" if multi else "notice.hint_text")
    lines.append("\n" + hint)
    return OutboundMessage("\n".join(lines), buttons=rows)


def prompt_closed(
    ctx: NoticeContext, label: str, request: InputRequest, state: str, answer: str = ""
) -> OutboundMessage:
    """What a prompt turns into once answered or expired (buttons removed)."""
    head = (
        ctx.t("notice.plan", title=label, plan=request.plan or "")
        if request.tool_name == PLAN_TOOL
        else ctx.t("notice.question", title=label)
        + "".join(f"\n{q.question}" for q in request.questions)
    )
    if state == "expired":
        tail = ctx.t("notice.expired")
    elif answer:
        tail = ctx.t("notice.answered", answer=answer)
    else:
        tail = ctx.t("notice.answered_elsewhere")
    return OutboundMessage(f"{head}\n\n{tail}")


@dataclass(frozen=True)
class DigestEntry:
    label: str
    status: str
    last_text: str


def digest(ctx: NoticeContext, entries: list[DigestEntry]) -> OutboundMessage:
    """One message for a chat after a gap: per session, its state and its last text."""
    lines = [ctx.t("digest.header")]
    for entry in entries:
        emoji = i18n.STATUS_EMOJI.get(entry.status, "•")
        lines.append("")
        lines.append(ctx.t("digest.line", emoji=emoji, title=entry.label, status=entry.status))
        if entry.last_text:
            text = entry.last_text
            if len(text) > DIGEST_TEXT_CHARS:
                text = text[:DIGEST_TEXT_CHARS].rstrip() + "…"
            lines.append(ctx.t("digest.last", text=text))
    return OutboundMessage("\n".join(lines))
