"""Backend polls turned into outbox rows, at a cost that does not grow with history.

Only sessions some chat binds or watches are followed. An *active* session (latest run not
ended) is fetched every POLL_SESSION_MESSAGES_INTERVAL_SECONDS: runs first, then messages,
so a run's terminal notice always follows its texts. An ended session costs nothing of its
own: the newest sessions are listed every POLL_SESSIONS_RECENT_INTERVAL_SECONDS while
something runs (every IDLE_RECENT_SECONDS otherwise), and every followed session is found
in the full listing every POLL_SESSIONS_FULL_INTERVAL_SECONDS; a changed status or
`updated_at` (a follow-up from the web UI) makes it active again. One
`GET /user-input-requests` covers all sessions, and only while something runs or a prompt
is open. What is enqueued and the cursors that say so are written in one transaction, so a
restart neither repeats nor loses a notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from agent.backend.client import BackendClient
from agent.backend.models import InputRequest, Message, Run, Session
from agent.config import PollSettings
from agent.core import notices, prompts
from agent.core.notices import NoticeContext
from agent.errors import BackendError, BackendNotFound
from agent.status import BackendStatus
from agent.store import queries
from agent.store.models import Channel, TrackedSession, Watch, database_proxy

log = logging.getLogger(__name__)

FIRST_SIGHT_TEXTS = 3
IDLE_RECENT_SECONDS = 60.0
RECENT_LIMIT = 20
FULL_PAGE = 100
TYPING_SECONDS = 4.5
# A wall-clock jump this long between cycles (agent stopped, laptop asleep) means a gap:
# chats get one digest per session instead of a flood.
GAP_SECONDS = 300.0
TERMINAL_RUN = frozenset({"completed", "failed", "canceled"})
RUNNING_RUN = frozenset({"claimed", "running"})

TypingHook = Callable[[Channel], Awaitable[None]]


class Notifier:
    def __init__(
        self,
        backend: BackendClient,
        poll: PollSettings,
        ctx: NoticeContext,
        backend_status: BackendStatus,
        wake_delivery: Callable[[], None],
        *,
        button_providers: frozenset[str] = frozenset({"telegram"}),
        typing: TypingHook | None = None,
        is_paused: Callable[[], bool] = lambda: False,
    ) -> None:
        self.backend = backend
        self.poll = poll
        self.ctx = ctx
        self.backend_status = backend_status
        self.wake_delivery = wake_delivery
        self.button_providers = button_providers
        self.typing = typing
        self.is_paused = is_paused
        self._wake = asyncio.Event()
        self._due: dict[str, float] = {}
        self._digest_pending = False
        self._last_cycle_wall = time.time()
        self._sleep_until = 0.0
        # Sessions marked active by `follow` since the last check (cleared after each check).
        self._followed_active: set[str] = set()

    # --- wiring ---

    def follow(self, session_id: str) -> None:
        """A prompt was just sent to this session: follow it closely from now on."""
        if session_id in self._followed_active:
            return  # already followed closely (a burst of prompts costs one write)
        self._followed_active.add(session_id)
        TrackedSession.insert(session_id=session_id, active=True).on_conflict(
            conflict_target=[TrackedSession.session_id], update={TrackedSession.active: True}
        ).execute()
        # Start following within one poll interval (not at once: a burst of prompts must
        # not turn into a burst of fetches).
        soon = time.monotonic() + self.poll.session_messages_interval
        for job in ("active", "requests"):
            self._due[job] = min(self._due.get(job, soon), soon)
        if soon < self._sleep_until:
            self._wake.set()

    def note_gap_since(self, last_alive: float | None) -> None:
        """At start: if the agent was away long, the first catch-up becomes a digest."""
        if last_alive is not None and time.time() - last_alive > GAP_SECONDS:
            self._digest_pending = True

    def note_wake(self) -> None:
        self._digest_pending = True

    async def run(self, stop: asyncio.Event) -> None:
        stop_waiter = asyncio.create_task(stop.wait())
        stop_waiter.add_done_callback(lambda _: self._wake.set())
        try:
            while not stop.is_set():
                self._detect_sleep()
                self._wake.clear()
                await self._cycle()
                self._last_cycle_wall = time.time()
                delay = max(0.0, min(self._due.values()) - time.monotonic()) if self._due else 1.0
                self._sleep_until = time.monotonic() + delay
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
        finally:
            stop_waiter.cancel()

    def _detect_sleep(self) -> None:
        if time.time() - self._last_cycle_wall > GAP_SECONDS:
            log.info(
                "woke after %.0fs away: next catch-up is a digest",
                time.time() - self._last_cycle_wall,
            )
            self._digest_pending = True
            self._due = {}

    # --- scheduling ---

    def _is_due(self, job: str, now: float) -> bool:
        return self._due.get(job, 0.0) <= now

    def _schedule(self, job: str, seconds: float) -> None:
        self._due[job] = time.monotonic() + seconds

    async def _cycle(self) -> None:
        if self.is_paused():
            self._schedule("paused", 1.0)
            return
        self._due.pop("paused", None)
        now = time.monotonic()
        responses_before = self.backend.responses
        followed = queries.followed_session_ids()
        try:
            if self._is_due("full", now) or self._digest_pending:
                await self._full_listing(followed)
                self._schedule("full", self.poll.sessions_full_interval)
            was_active = bool(active_sessions(followed))
            if self._is_due("recent", now):
                await self._recent_listing(followed)
            active = active_sessions(followed)
            if active and not was_active:  # a listing revealed activity: look at it now
                self._due["active"] = self._due["requests"] = now
            idle = max(IDLE_RECENT_SECONDS, self.poll.sessions_recent_interval)
            if self._is_due("recent", now):
                self._schedule("recent", self.poll.sessions_recent_interval if active else idle)
            # Jobs are rescheduled even when they had nothing to do (a due time left in the
            # past would make the loop spin); while idle they wait long, `follow` and the
            # listings above pull them forward when something starts.
            if self._is_due("active", now):
                self._followed_active.clear()
                await self._check_sessions(active)
                self._schedule("active", self.poll.session_messages_interval if active else idle)
            open_prompts = prompts.open_prompt_count()
            if self._is_due("requests", now):
                if active or open_prompts:
                    await self._check_input_requests(followed)
                busy = active or open_prompts
                self._schedule("requests", self.poll.user_input_interval if busy else idle)
            if self._is_due("typing", now):
                await self._show_typing()
                self._schedule("typing", TYPING_SECONDS if active else idle)
        except BackendError as exc:
            self.backend_status.failed(str(exc)[:200])
            log.warning("backend poll failed: %s", exc)
            self._back_off()
            return
        except Exception:
            # A bug or a store error must not stop notifications for good: log, wait, retry.
            log.exception("notifier cycle failed")
            self._back_off()
            return
        self._digest_pending = False
        if self.backend.responses > responses_before:  # only an answer proves reachability
            self.backend_status.ok()

    def _back_off(self) -> None:
        for job in ("active", "requests", "recent"):
            self._schedule(job, max(self.poll.session_messages_interval, 5.0))

    # --- listings: notice what changed without fetching ended sessions ---

    async def _recent_listing(self, followed: set[str]) -> None:
        if not followed:
            return
        sessions = await self.backend.list_sessions(limit=RECENT_LIMIT, kind="all")
        self._note_listing(sessions, followed)

    async def _full_listing(self, followed: set[str]) -> None:
        missing = set(followed)
        offset = 0
        while missing:
            page = await self.backend.list_sessions(limit=FULL_PAGE, offset=offset, kind="all")
            self._note_listing(page, followed)
            missing -= {s.session_id for s in page}
            if len(page) < FULL_PAGE:
                break
            offset += FULL_PAGE
        # Absent from every page: deleted, or the pages shifted under us. Ask to be sure.
        for session_id in missing:
            try:
                await self.backend.get_session(session_id)
            except BackendNotFound:
                log.info("session %s is gone; no longer followed", session_id)
                queries.forget_session(session_id)

    def _note_listing(self, sessions: Iterable[Session], followed: set[str]) -> None:
        for session in sessions:
            if session.session_id not in followed:
                continue
            tracked = tracked_session(session.session_id)
            changed = (tracked.status, tracked.updated_at) != (session.status, session.updated_at)
            # On first sight only a live status counts: a newly followed session is checked
            # anyway, so a finished one need not be fetched again.
            reactivated = changed and (
                tracked.updated_at != "" or session.status not in TERMINAL_RUN
            )
            if changed or session.title != tracked.title:
                TrackedSession.update(
                    status=session.status,
                    updated_at=session.updated_at,
                    title=session.title or "",
                    active=tracked.active or reactivated,
                ).where(TrackedSession.session_id == session.session_id).execute()

    # --- one active session: runs, then messages, then notify ---

    async def _check_sessions(self, active: list[TrackedSession]) -> None:
        """Fetch each active session; after a gap, all first, so each chat gets one digest."""
        fetched: list[_Fetched] = []
        for tracked in active:
            result = await self._fetch(tracked)
            if result is None:
                continue
            if self._digest_pending:
                fetched.append(result)
            else:
                self._apply([result])
        if fetched:
            self._apply(fetched)

    async def _fetch(self, tracked: TrackedSession) -> _Fetched | None:
        """Runs first, then messages: a run that ended has all its texts in the second read."""
        session_id = tracked.session_id
        try:
            run, run_count = await self.backend.latest_run(session_id, known_runs=tracked.run_count)
            if (
                run is not None
                and _still_waiting(run, tracked)
                and not queries.has_new_watcher(session_id)
            ):
                # Queued and unchanged (no executor free yet): nothing can have been said.
                return _Fetched(tracked, run, run_count, None)
            messages = await self.backend.list_messages(
                session_id, known_count=tracked.message_count
            )
        except BackendNotFound:
            queries.forget_session(session_id)
            return None
        return _Fetched(tracked, run, run_count, messages)

    def _apply(self, results: list[_Fetched]) -> None:
        """Outbox rows and the cursors that say so, in one transaction."""
        digests: dict[int, tuple[Channel, list[notices.DigestEntry]]] = {}
        with database_proxy.atomic():
            for result in results:
                tracked, run = result.tracked, result.run
                messages = result.messages if result.messages is not None else []
                session_id = tracked.session_id
                texts = visible_texts(messages)
                max_id = max((m.id for m in messages), default=tracked.max_message_id)
                message_count = (
                    len(messages) if result.messages is not None else (tracked.message_count)
                )
                label = notices.session_label(tracked.title, session_id)
                for watch in queries.watches_of(session_id):
                    if self._digest_pending:
                        entry = self._digest_entry(watch, label, run, texts, max_id)
                        if entry is not None:
                            digests.setdefault(watch.channel_id, (watch.channel, []))[1].append(
                                entry
                            )
                    else:
                        self._enqueue_texts(watch, label, texts, max_id)
                        self._enqueue_run_end(watch, label, run)
                TrackedSession.update(
                    latest_run_id=run.run_id if run else "",
                    latest_run_status=run.status if run else "",
                    latest_run_error=(run.last_error or "") if run else "",
                    run_count=result.run_count,
                    message_count=message_count,
                    max_message_id=max_id,
                    # A prompt sent while we fetched (follow()) keeps it active: its new run
                    # may not have shown in the runs we read.
                    active=(run is not None and run.status not in TERMINAL_RUN)
                    or session_id in self._followed_active,
                    checked_at=time.time(),
                ).where(TrackedSession.session_id == session_id).execute()
            for channel, entries in digests.values():
                queries.enqueue(
                    channel,
                    notices.digest(self.ctx, entries),
                    dedup_key=f"digest:{time.time():.0f}",
                )
        self.wake_delivery()

    def _enqueue_texts(
        self, watch: Watch, label: str, texts: list[tuple[int, str]], max_id: int
    ) -> None:
        if watch.message_cursor is None:
            new = texts[-FIRST_SIGHT_TEXTS:]
        else:
            new = [(mid, text) for mid, text in texts if mid > watch.message_cursor]
        channel = watch.channel
        for message_id, text in new:
            queries.enqueue(
                channel,
                notices.assistant_text(self.ctx, label, text),
                dedup_key=f"msg:{watch.session_id}:{message_id}",
            )
        if watch.message_cursor != max_id:
            Watch.update(message_cursor=max_id).where(Watch.id == watch.id).execute()

    def _enqueue_run_end(self, watch: Watch, label: str, run: Run | None) -> None:
        if run is None or run.status not in TERMINAL_RUN or watch.notified_run_id == run.run_id:
            return
        message = notices.run_ended(
            self.ctx, label, watch.session_id, run.status, run.last_error or ""
        )
        queries.enqueue(watch.channel, message, dedup_key=f"run:{run.run_id}:{run.status}")
        Watch.update(notified_run_id=run.run_id).where(Watch.id == watch.id).execute()

    def _digest_entry(
        self, watch: Watch, label: str, run: Run | None, texts: list[tuple[int, str]], max_id: int
    ) -> notices.DigestEntry | None:
        """What the chat missed of this session (None: nothing), cursors moved past it."""
        unseen = watch.message_cursor is None or any(m > watch.message_cursor for m, _ in texts)
        ended_unseen = (
            run is not None and run.status in TERMINAL_RUN and (watch.notified_run_id != run.run_id)
        )
        entry = None
        if unseen or ended_unseen:
            status = run.status if run else "?"
            entry = notices.DigestEntry(label, status, texts[-1][1] if texts else "")
        Watch.update(
            message_cursor=max_id,
            notified_run_id=run.run_id
            if run and run.status in TERMINAL_RUN
            else watch.notified_run_id,
        ).where(Watch.id == watch.id).execute()
        return entry

    # --- input requests ---

    async def _check_input_requests(self, followed: set[str]) -> None:
        requests = await self.backend.list_input_requests()
        live = {
            r.id: r for r in requests if r.session_id in followed and not r.is_expired(time.time())
        }
        with database_proxy.atomic():
            for request in live.values():
                self._show_prompt(request)
            for prompt, state in prompts.closed_prompts(set(live), followed, time.time()):
                prompts.close_prompt(prompt, state, self.ctx, self.button_providers)
        self.wake_delivery()

    def _show_prompt(self, request: InputRequest) -> None:
        tracked = tracked_session(request.session_id)
        label = notices.session_label(tracked.title, request.session_id)
        for watch in queries.watches_of(request.session_id):
            prompts.open_prompt(
                watch.channel,
                request,
                label,
                self.ctx,
                buttons=watch.channel.provider in self.button_providers,
            )

    # --- typing indicator for chats bound to a running session ---

    async def _show_typing(self) -> None:
        if self.typing is None:
            return
        for channel in queries.channels_bound_to_runs(RUNNING_RUN):
            await self.typing(channel)


@dataclass(frozen=True)
class _Fetched:
    tracked: TrackedSession
    run: Run | None
    run_count: int
    messages: list[Message] | None  # None: not fetched, nothing can have changed


def _still_waiting(run: Run, tracked: TrackedSession) -> bool:
    return run.status == "queued" and (tracked.latest_run_id, tracked.latest_run_status) == (
        run.run_id,
        "queued",
    )


def tracked_session(session_id: str) -> TrackedSession:
    tracked, _ = TrackedSession.get_or_create(session_id=session_id)
    return tracked


def active_sessions(followed: set[str]) -> list[TrackedSession]:
    return list(
        TrackedSession.select().where(
            TrackedSession.active & TrackedSession.session_id.in_(list(followed))
        )
    )


def visible_texts(messages: Iterable[Message]) -> list[tuple[int, str]]:
    """(id, text) of what a chat should read, the final result not repeating the last text."""
    texts: list[tuple[int, str]] = []
    for message in messages:
        text = message.assistant_text()
        if not text:
            continue
        if message.is_result and texts and texts[-1][1].strip() == text.strip():
            continue
        texts.append((message.id, text))
    return texts
