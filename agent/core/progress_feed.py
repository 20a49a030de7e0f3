"""Session reads into progress messages: what each chat's message for a run should show.

The notifier hands every read here: `look` adds one request while a run goes on and a
chat shows its progress (`GET /sessions/{id}/state`: step, todos, queued follow-ups), none
otherwise; `apply`, inside the notifier's transaction, updates the run's view (status and
times from the runs, the tool in use and the final figures from the new messages) and
writes what each following chat's message should show. `ProgressSender` sends and edits.
A chat gets a progress message only for a run it saw going on; once the run ends, that
message is finalised (never one that starts out final).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agent.backend.client import BackendClient
from agent.backend.models import (
    ACTIVE_RUN_STATUSES,
    RUN_CANCELING,
    RUN_QUEUED,
    Message,
    Run,
    SessionState,
)
from agent.core import notices
from agent.core.notices import NoticeContext
from agent.core.progress import RunView, render
from agent.core.session_feed import SessionRead
from agent.errors import BackendError
from agent.store import progress as store
from agent.store import queries
from agent.store.models import Channel

log = logging.getLogger(__name__)


class ProgressFeed:
    """Progress views of followed runs, for the chats of `providers` (none: off)."""

    def __init__(
        self,
        ctx: NoticeContext,
        providers: frozenset[str],
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.ctx = ctx
        self.providers = providers
        self.wake = wake
        self._states: dict[str, SessionState] = {}
        self._state_failed = False

    @property
    def enabled(self) -> bool:
        return bool(self.providers)

    def chats(self, session_id: str) -> list[Channel]:
        """The chats following the session that show progress messages."""
        return [w.channel for w in queries.watches_of(session_id) if self._shows(w.channel)]

    def _shows(self, channel: Channel) -> bool:
        return channel.provider in self.providers

    async def look(self, backend: BackendClient, read: SessionRead) -> None:
        """Read the session's state (one request) while a run goes on that a chat shows."""
        session_id = read.tracked.session_id
        if not self.enabled or _active_run(read.runs) is None:
            self._states.pop(session_id, None)
            return
        if not self.chats(session_id):
            return
        try:
            self._states[session_id] = await backend.get_state(session_id)
        except BackendError as exc:
            # Progress without the step is still progress: the notifications go on.
            if not self._state_failed:
                log.info("session state unavailable (%s); progress shows no step", exc)
            self._state_failed = True
        else:
            self._state_failed = False

    def apply(self, read: SessionRead) -> None:
        """Update the views of the session's runs and what their messages should show."""
        if not self.enabled:
            return
        session_id = read.tracked.session_id
        active = _active_run(read.runs)
        open_ids = set(store.open_run_ids(session_id))
        chats = self.chats(session_id) if active is not None else []
        targets = [r for r in read.runs if r.run_id in open_ids or (r is active and chats)]
        label = notices.session_label(read.tracked.title, session_id)
        changed = False
        for run in targets:
            view = self._view(run, label, read, active)
            message = render(self.ctx, view, time.time())
            if view.ended:
                # Every message of the run gets its last word, also in a chat that stopped
                # following meanwhile; a chat that never saw the run going on gets none.
                changed |= store.finish(run.run_id, message)
                continue
            for chat in chats:
                changed |= store.show(chat, run.run_id, message)
        if changed:
            self.wake()

    def _view(self, run: Run, label: str, read: SessionRead, active: Run | None) -> RunView:
        session_id = read.tracked.session_id
        stored = store.run_view(run.run_id)
        view = RunView.from_json(stored) if stored else RunView(run.run_id, session_id)
        before = view.to_json()
        view.label = label
        view.take_run(run)
        view.take_messages(_messages_of(run, read))
        if run is active:
            state = self._states.get(session_id)
            queued = _queued_runs_after(run, read.runs)
            if state is not None:
                view.take_state_patch(state.state_patch)
                queued += state.queued_query_count
                if state.status == RUN_CANCELING and not view.ended:
                    view.status = RUN_CANCELING
            view.queued = queued
        if not view.ended:
            view.stopping = store.stop_requested(run.run_id)
        if stored is None or view.to_json() != before or stored.get("_ended") != view.ended:
            store.save_run_view(run.run_id, session_id, view.to_json(), ended=view.ended)
        return view


def _active_run(runs: list[Run]) -> Run | None:
    """The run going on (claimed, running or stopping): the latest such."""
    return next((r for r in reversed(runs) if r.status in ACTIVE_RUN_STATUSES), None)


def _queued_runs_after(run: Run, runs: list[Run]) -> int:
    """Follow-ups waiting as runs of their own (Feb 2026 backends queue them so)."""
    index = runs.index(run)
    return sum(1 for r in runs[index + 1 :] if r.status == RUN_QUEUED)


def _messages_of(run: Run, read: SessionRead) -> list[Message]:
    """The new messages written during the run: after its prompt and before the prompt
    of a later run that has started (a queued follow-up's prompt is no boundary)."""
    index = read.runs.index(run)
    later = [
        r.user_message_id
        for r in read.runs[index + 1 :]
        if r.user_message_id and r.status != RUN_QUEUED
    ]
    end = min(later, default=None)
    return [m for m in read.messages if m.id > run.user_message_id and (end is None or m.id < end)]
