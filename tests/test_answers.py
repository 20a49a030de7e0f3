"""Typed answers against the real store: what fits a prompt, what is late, what is pruned.

The end-to-end cases are in test_e2e_late_answers.py; these are the ones whose timing the
loopback fakes cannot pin down (a prompt whose time is up before the notifier closed it).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.backend.models import InputRequest
from agent.core import answers, prompts
from agent.core.notices import NoticeContext
from agent.store import db, queries
from agent.store.models import Channel, InputPrompt, PromptClosure

CTX = NoticeContext("en", "http://localhost:3000", "en")


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[Channel]:
    db.open_database(tmp_path / "im.db")
    yield queries.ensure_channel("dingtalk", "cid-1")
    db.close_database()


def question(expires_in: float = 600) -> InputRequest:
    expires = datetime.now(UTC) + timedelta(seconds=expires_in)
    return InputRequest.from_api(
        {
            "id": str(uuid.uuid4()),
            "session_id": str(uuid.uuid4()),
            "tool_name": "AskUserQuestion",
            "tool_input": {
                "questions": [
                    {
                        "question": "Which format?",
                        "multiSelect": False,
                        "options": [{"label": "Bullets"}, {"label": "Prose"}],
                    }
                ]
            },
            "status": "pending",
            "expires_at": expires.isoformat(),
        }
    )


def show(chat: Channel, request: InputRequest) -> InputPrompt:
    prompts.open_prompt(chat, request, "s", CTX, buttons=False)
    return InputPrompt.get(InputPrompt.request_id == request.id)


def test_a_prompt_whose_time_is_up_is_expired_before_the_notifier_closes_it(
    chat: Channel,
) -> None:
    show(chat, question(expires_in=-1))
    answer = answers.answer_from_text(chat, "1", CTX)
    assert answer is not None and answer.answers is None
    assert "expired" in answer.reply


def test_only_the_whole_text_answers(chat: Channel) -> None:
    show(chat, question())
    assert answers.answer_from_text(chat, "Prose is better, I think", CTX) is None
    assert answers.answer_from_text(chat, "3", CTX) is None  # no such option
    answer = answers.answer_from_text(chat, " prose. ", CTX)
    assert answer is not None and answer.answers == {"Which format?": "Prose"}


def test_prune_keeps_open_and_lately_closed_prompts(chat: Channel) -> None:
    still_open = show(chat, question())
    old, lately = show(chat, question()), show(chat, question())
    for prompt in (old, lately):
        prompts.close_prompt(prompt, "answered", CTX, ())
    later = time.time() + db.RETENTION_SECONDS + 60
    PromptClosure.update(closed_at=later - 60).where(PromptClosure.prompt == lately.id).execute()
    db.prune(now=later)
    assert {p.id for p in InputPrompt.select()} == {still_open.id, lately.id}
    assert [c.prompt_id for c in PromptClosure.select()] == [lately.id]
