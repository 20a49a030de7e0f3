"""`/stop` (`/cancel`), the Stop button and `/status` (`/progress`): a run stopped once,
a session's state on demand.

A cancel is posted once per run however often Stop is pressed, in however many chats:
the run is claimed in the store (`StopRequest`) before the call, and a run the backend
already shows `canceling` is not canceled again. A run that already ended is not canceled
either (the backend would mark the finished session canceled): the chat is told so.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.backend.client import BackendClient
from agent.backend.models import (
    ACTIVE_RUN_STATUSES,
    RUN_CANCELING,
    TERMINAL_RUN_STATUSES,
    UNFINISHED_RUN_STATUSES,
    Run,
)
from agent.chats.base import OutboundMessage
from agent.core import notices
from agent.core.notices import NoticeContext
from agent.core.progress import STOP_PREFIX, RunView, render
from agent.errors import BackendError, BackendNotFound
from agent.store import progress as store
from agent.store import queries
from agent.store.models import Channel, TrackedSession

# (value, numbered ids) -> (session id, error reply): Handlers._resolve.
Resolver = Callable[[str, Callable[[], list[str]]], tuple[str, str]]
# A reply: a text (Markdown), or a message as it should go out.
Reply = str | OutboundMessage


class RunCommands:
    def __init__(
        self,
        backend: BackendClient,
        ctx: NoticeContext,
        resolve: Resolver,
        listing: Callable[[Channel], list[str]],
        *,
        on_stop: Callable[[str], None] | None = None,
    ) -> None:
        self.backend = backend
        self.ctx = ctx
        self.resolve = resolve
        self.listing = listing
        # Called after a cancel was posted, so the progress shows it soon.
        self.on_stop = on_stop

    def t(self, key: str, **values: object) -> str:
        return self.ctx.t(key, **values)

    # --- /stop and the Stop button ---

    async def stop(self, channel: Channel, args: str) -> list[Reply]:
        session_id, error = self._session(channel, args)
        if error:
            return [error]
        try:
            runs = await self._runs(session_id)
        except BackendNotFound:
            return [self.t("not_found", session_id=session_id)]
        short_id = session_id[:8]
        target = _current(runs)
        if target is None:
            if not runs:
                return [self.t("stop_no_runs", short_id=short_id)]
            status = self._status_word(runs[-1].status)
            return [self.t("stop_nothing", short_id=short_id, status=status)]
        outcome = await self._cancel(session_id, target)
        return [self.t(outcome, short_id=short_id)]

    async def stop_button(self, channel: Channel, data: str) -> list[Reply]:
        """A Stop pressed under a progress message: the progress shows what happens."""
        run_id = data.removeprefix(STOP_PREFIX)
        session_id = store.session_of_run(run_id)
        if session_id is None:
            return [self.t("stop_unknown")]
        runs = await self._runs(session_id)
        target = next((r for r in runs if r.run_id == run_id), None)
        if target is None or target.status in TERMINAL_RUN_STATUSES:
            status = target.status if target is not None else "completed"
            return [self.t("stop_finished", status=self._status_word(status))]
        await self._cancel(session_id, target)
        return []

    async def _cancel(self, session_id: str, run: Run) -> str:
        """Post the cancel unless it was posted (or the backend is stopping the run); the
        key of the reply."""
        if run.status == RUN_CANCELING or not store.claim_stop(run.run_id, session_id):
            return "stop_already"
        try:
            answer = await self.backend.cancel_session(session_id)
        except BackendError:
            store.release_stop(run.run_id)  # it did not go through: a later Stop may retry
            raise
        if self.on_stop is not None:
            self.on_stop(session_id)
        return "stop_sent" if answer.get("status") == RUN_CANCELING else "stop_canceled"

    # --- /status ---

    async def status(self, channel: Channel, args: str) -> list[Reply]:
        session_id, error = self._session(channel, args)
        if error:
            return [error]
        try:
            state = await self.backend.get_state(session_id)
            runs = await self._runs(session_id)
        except BackendNotFound:
            return [self.t("not_found", session_id=session_id)]
        if not runs:
            return [self.t("status_none", short_id=session_id[:8])]
        run = _current(runs) or runs[-1]
        stored = store.run_view(run.run_id)
        view = RunView.from_json(stored) if stored else RunView(run.run_id, session_id)
        tracked = TrackedSession.get_or_none(TrackedSession.session_id == session_id)
        view.label = notices.session_label(tracked.title if tracked else "", session_id)
        view.take_run(run)
        if run.status in UNFINISHED_RUN_STATUSES:
            view.take_state_patch(state.state_patch)
            later = runs[runs.index(run) + 1 :]
            view.queued = state.queued_query_count + sum(1 for r in later if r.status == "queued")
            view.stopping = store.stop_requested(run.run_id)
        message = render(self.ctx, view, time.time(), stop_button=False)
        return [OutboundMessage(f"{message.text}\n{self.ctx.link(session_id)}", markdown=False)]

    # --- helpers ---

    def _session(self, channel: Channel, args: str) -> tuple[str, str]:
        """The session named in `args` (an id or a /list number), else the connected one."""
        if args:
            return self.resolve(args, lambda: self.listing(channel))
        session_id = queries.bound_session(channel)
        if session_id is None:
            return "", self.t("not_bound")
        return session_id, ""

    async def _runs(self, session_id: str) -> list[Run]:
        """The session's runs from the last one the notifier knows as ended (cheap)."""
        tracked = TrackedSession.get_or_none(TrackedSession.session_id == session_id)
        offset = max((tracked.run_count if tracked else 0) - 1, 0)
        runs = await self.backend.list_runs_from(session_id, offset)
        if not runs and offset:
            runs = await self.backend.list_runs_from(session_id, 0)
        return runs

    def _status_word(self, status: str) -> str:
        key = f"progress.status.{status}"
        try:
            return self.t(key)
        except KeyError:
            return status


def _current(runs: list[Run]) -> Run | None:
    """The run to stop: the one going on, else the oldest one waiting to start."""
    active = [r for r in runs if r.status in ACTIVE_RUN_STATUSES]
    if active:
        return active[-1]
    return next((r for r in runs if r.status in UNFINISHED_RUN_STATUSES), None)
