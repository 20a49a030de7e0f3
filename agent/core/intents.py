"""Every prompt reaches the backend once, across crashes and lost answers.

Before `POST /tasks` the prompt is recorded as an intent (store/intents), with what the
backend had just before the call: for a follow-up the session's newest message id, for
`/new` the newest session's `created_at` (the backend's own clock: no skew with ours).
The call carries a `client_request_id` derived from the inbound message's key.

When the answer never came (the agent was killed, the request timed out), `settle` looks
at the backend before sending anything again:
- a follow-up: the session's user prompts after the recorded id (not tool results), not
  already matched with another intent, are matched one-to-one, in order, with the
  session's unsettled intents, so the same text sent twice is counted twice;
- `/new`: the sessions created after the recorded newest one, not created by another
  intent, whose first user prompt is this prompt, matched the same way.
Only what is not there is sent again, with the same `client_request_id`. A follow-up the
April 2026 backend queued behind a running run has no user message until it is promoted;
that backend answers the same id with the same queued item (it deduplicates queued items,
and only those), so the resend does not queue it twice.

The backend cannot tell in one case: a Feb 2026 backend lists only a session's first 1000
messages, so a follow-up to a longer session that is not among them is unknown (`None`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from agent.backend.client import BackendClient
from agent.backend.models import Message, Session, TaskRef, parse_time
from agent.errors import AgentError, BackendError, BackendUnavailable
from agent.store import intents as store
from agent.store.models import Channel, Intent

SESSIONS_PAGE = 20
REQUEST_ID_PREFIX = "poco-im-"


class PromptInDoubt(AgentError):
    """`POST /tasks` got no answer: the prompt may or may not be at the backend."""


@dataclass(frozen=True)
class Sent:
    """Where a prompt went: its session, and whether it waits behind the running run."""

    session_id: str
    queued: bool = False
    queued_count: int = 0


def client_request_id(key: str) -> str:
    """Stable per inbound message, short and opaque (the backend keeps up to 255 chars)."""
    return REQUEST_ID_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:32]


def user_prompt(message: Message) -> str | None:
    """The text of a prompt the user sent (stripped, as the backend stores it); None for
    tool results, sub-agent turns and everything that is not a user message."""
    if message.role != "user" or "UserMessage" not in message.type_name:
        return None
    if message.content.get("parent_tool_use_id") is not None:
        return None
    blocks: Any = message.content.get("content")
    if isinstance(blocks, str):
        return blocks.strip()
    if not isinstance(blocks, list) or not blocks:
        return None
    texts: list[str] = []
    for block in blocks:
        if not isinstance(block, dict) or "TextBlock" not in str(block.get("_type") or ""):
            return None  # a tool result (ToolResultBlock) or something else, not a prompt
        texts.append(str(block.get("text") or ""))
    return "".join(texts).strip()


class PromptSender:
    """Sends prompts through intents; `settle` finishes one whose answer never came."""

    def __init__(self, backend: BackendClient) -> None:
        self.backend = backend
        # One look at a time per session (and one for /new): a look counts what others
        # already matched, so two must not match the same message.
        self._locks: dict[str, asyncio.Lock] = {}

    async def send(
        self,
        key: str,
        channel: Channel,
        prompt: str,
        session_id: str | None,
        *,
        config: dict[str, Any] | None = None,
    ) -> Sent:
        """Record the intent, then `POST /tasks` (with `config`, e.g. a file message's
        input_files). Raises PromptInDoubt when the request may have reached the backend
        but no answer came; other BackendErrors mean the prompt is not there."""
        config_json = json.dumps(config) if config else ""
        if session_id:
            after_id, blind = await self._newest_message(session_id)
            intent = store.record(
                key,
                channel,
                prompt,
                session_id,
                after_message_id=after_id,
                blind=blind,
                config=config_json,
            )
        else:
            newest = await self.backend.list_sessions(limit=1)
            sessions_after = newest[0].created_at if newest else ""
            intent = store.record(
                key, channel, prompt, sessions_after=sessions_after, config=config_json
            )
        return await self._post(intent)

    def unsettled(self, key: str) -> Intent | None:
        """The intent of an inbound message, unless it never went out (or was refused)."""
        intent = store.find(key)
        return intent if intent is not None and intent.state != store.FAILED else None

    async def settle(self, intent: Intent) -> Sent | None:
        """What became of a prompt whose answer never came: found at the backend, or sent
        again now. None when the backend cannot tell. BackendUnavailable or PromptInDoubt:
        look again later."""
        lock = self._locks.setdefault(intent.session_id or "/new", asyncio.Lock())
        async with lock:
            intent = store.reload(intent)  # another look may have settled it meanwhile
            if intent.state == store.SENT:
                return _sent_of(intent)
            if intent.session_id:
                found, hidden = await self._find_follow_up(intent)
                if found is None and (hidden or intent.blind):
                    return None
            else:
                found = await self._find_new(intent)
            if found is not None:
                store.mark_sent(intent, found.session_id, message_id=found.message_id)
                return Sent(found.session_id)
            return await self._post(intent)

    def prune(self) -> int:
        return store.prune()

    # -- sending -------------------------------------------------------------------------

    async def _post(self, intent: Intent) -> Sent:
        try:
            ref = await self.backend.create_task(
                intent.prompt,
                intent.session_id or None,
                client_request_id=client_request_id(intent.key),
                config=json.loads(intent.config) if intent.config else None,
            )
        except BackendUnavailable as exc:
            if exc.code is None:  # no answer from the app: it may have created the task
                raise PromptInDoubt(str(exc)) from exc
            store.mark_failed(intent)
            raise
        except BackendError:
            store.mark_failed(intent)  # refused: nothing was created
            raise
        return _record_answer(intent, ref)

    async def _newest_message(self, session_id: str) -> tuple[int, bool]:
        """The session's newest message id now, and whether the backend hid some."""
        after, count = store.known_messages(session_id)
        while True:
            page = await self.backend.messages_after(session_id, after, known_count=count)
            after = max([after, *(m.id for m in page.items)])
            if page.truncated or not page.has_more or not page.items:
                return after, page.truncated

    # -- looking -------------------------------------------------------------------------

    async def _find_follow_up(self, intent: Intent) -> tuple[_Found | None, bool]:
        """The user message this intent became, if any; and whether some were hidden."""
        unsettled = store.unsettled_follow_ups(intent.session_id)
        # A queued follow-up that went out earlier gets its user message only when promoted:
        # it takes part in the matching, first in line, so it is never taken for ours.
        queued = store.queued_unmatched(intent.session_id)
        group = sorted(unsettled + queued, key=lambda i: i.id)
        claimed = store.claimed_message_ids(intent.session_id)
        after = min(i.after_message_id for i in group)
        prompts: list[tuple[int, str]] = []
        hidden = False
        while True:
            page = await self.backend.messages_after(intent.session_id, after)
            for message in page.items:
                text = user_prompt(message)
                if text is not None and message.id not in claimed:
                    prompts.append((message.id, text))
            after = max([after, *(m.id for m in page.items)])
            if page.truncated or not page.has_more or not page.items:
                hidden = page.truncated
                break
        used: set[int] = set()
        for member in group:
            match = next(
                (
                    message_id
                    for message_id, text in prompts
                    if message_id not in used
                    and message_id > member.after_message_id
                    and text == member.prompt.strip()
                ),
                None,
            )
            if match is not None:
                used.add(match)
                if member.id == intent.id:
                    return _Found(intent.session_id, match), hidden
        return None, hidden

    async def _find_new(self, intent: Intent) -> _Found | None:
        group = store.unsettled_new()
        claimed = store.claimed_sessions()
        baseline = min(i.sessions_after for i in group)
        candidates = [
            s for s in await self._sessions_since(baseline) if s.session_id not in claimed
        ]
        firsts: dict[str, str | None] = {}
        used: set[str] = set()
        for member in group:
            for session in candidates:
                if session.session_id in used or not _later(
                    session.created_at, member.sessions_after
                ):
                    continue
                if session.session_id not in firsts:
                    firsts[session.session_id] = await self._first_prompt(session.session_id)
                if firsts[session.session_id] == member.prompt.strip():
                    used.add(session.session_id)
                    if member.id == intent.id:
                        return _Found(session.session_id, None)
                    break
        return None

    async def _sessions_since(self, baseline: str) -> list[Session]:
        """Sessions created after `baseline`, oldest first."""
        newer: list[Session] = []
        offset = 0
        while True:
            page = await self.backend.list_sessions(limit=SESSIONS_PAGE, offset=offset)
            fresh = [s for s in page if _later(s.created_at, baseline)]
            newer.extend(fresh)
            if len(fresh) < len(page) or len(page) < SESSIONS_PAGE:
                return newer[::-1]
            offset += SESSIONS_PAGE

    async def _first_prompt(self, session_id: str) -> str | None:
        page = await self.backend.messages_after(session_id, 0)
        return next(_texts(page.items), None)


@dataclass(frozen=True)
class _Found:
    session_id: str
    message_id: int | None


def _texts(messages: Iterable[Message]) -> Iterator[str]:
    for message in messages:
        text = user_prompt(message)
        if text is not None:
            yield text


def _later(created_at: str, baseline: str) -> bool:
    """Created after the baseline (both the backend's timestamps; "" is before all)."""
    if not baseline:
        return True
    moment, base = parse_time(created_at), parse_time(baseline)
    return moment is not None and base is not None and moment > base


def _record_answer(intent: Intent, ref: TaskRef) -> Sent:
    store.mark_sent(intent, ref.session_id, queued=ref.queued, queued_count=ref.queued_query_count)
    return Sent(ref.session_id, ref.queued, ref.queued_query_count)


def _sent_of(intent: Intent) -> Sent:
    return Sent(intent.result_session_id, intent.queued, intent.queued_count)
