"""Backend polls turned into outbox rows, at a cost that does not grow with history.

Only sessions some chat binds or watches are followed. Jobs, each on its own interval:
- listing: the newest sessions, every POLL_SESSIONS_RECENT_INTERVAL_SECONDS (also at idle:
  it is what notices a run started elsewhere, and it keeps the backend state in health
  fresh). Its size covers the followed sessions (20 to 100 newest); a followed session
  whose status or `updated_at` changed is checked in the same cycle.
- full: every POLL_SESSIONS_FULL_INTERVAL_SECONDS, one listing of 100 to size the window,
  and a lookup of each followed session older than that (never a walk of all sessions).
- active: each session whose latest run is not over is read (runs, then new messages)
  every POLL_SESSION_MESSAGES_INTERVAL_SECONDS. A session whose run only waits in the
  queue is not read again until the listing shows it moved.
- requests: one `GET /user-input-requests` for all sessions, only while something runs or
  a prompt is open.
While the backend is down or refuses us, only the listing is retried, at its interval.
After any start or wake the first catch-up is one digest per chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

from agent.backend.client import BackendClient
from agent.backend.models import (
    ACTIVE_RUN_STATUSES,
    RUN_QUEUED,
    InputRequest,
)
from agent.config import PollSettings
from agent.core import notices, prompts
from agent.core.notices import NoticeContext
from agent.core.progress_feed import ProgressFeed
from agent.core.session_feed import DigestBook, SessionFeed, SessionRead, read_session
from agent.core.session_listing import Listings, Moved
from agent.core.typing_indicator import TypingIndicator
from agent.errors import BackendError, BackendNotFound, BackendUnauthorized, StoreError
from agent.status import BackendStatus
from agent.store import queries
from agent.store.db import WRITE_AT_ONCE, store_errors
from agent.store.models import TrackedSession, database_proxy

log = logging.getLogger(__name__)

# Health must never be older than 2 x the listing interval, and at most 30 s.
MAX_LISTING_SECONDS = 15.0
NEVER = math.inf
# After a failed cycle the next one waits at least this long, whatever else seems due.
RETRY_FLOOR_SECONDS = 1.0


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
        typing: TypingIndicator | None = None,
        is_paused: Callable[[], bool] = lambda: False,
        progress: ProgressFeed | None = None,
    ) -> None:
        self.backend = backend
        self.poll = poll
        self.ctx = ctx
        self.backend_status = backend_status
        self.wake_delivery = wake_delivery
        self.button_providers = button_providers
        self.typing = typing
        self.is_paused = is_paused
        self.feed = SessionFeed(ctx)
        # Progress messages (off: a feed without providers, which reads nothing).
        self.progress = progress or ProgressFeed(ctx, frozenset())
        self._wake = asyncio.Event()
        self._due: dict[str, float] = {"full": 0.0, "listing": 0.0}
        # Any start is a gap: what chats missed meanwhile arrives as one digest each.
        self._digest_pending = True
        self._failing = False
        self._cycle_failed = False  # the last cycle ended in a store error or a bug
        # Sessions to read in the next cycle whatever their interval says.
        self._check_now: set[str] = set()
        # Sessions a prompt was just sent to (a new run may not show in the runs read yet).
        self._prompted: set[str] = set()
        self._waiting_until: dict[str, float] = {}
        self.listings = Listings(backend)
        # Followed sessions with a run going on (not only waiting in the queue).
        self._running: list[str] = []

    # --- wiring ---

    def follow(self, session_id: str) -> None:
        """A prompt was just sent to this session (or a chat began following it)."""
        self._prompted.add(session_id)
        self._waiting_until.pop(session_id, None)
        TrackedSession.insert(session_id=session_id, active=True).on_conflict(
            conflict_target=[TrackedSession.session_id], update={TrackedSession.active: True}
        ).execute()
        # Within one poll interval, not at once: a burst of prompts is one fetch.
        self._pull_forward("active", self.poll.session_messages_interval)
        self._pull_forward("requests", self.poll.session_messages_interval)
        if session_id not in self.listings.listed and session_id not in self.listings.deep:
            # Not in any listing yet (new, or just connected): size the window around it.
            self._pull_forward("full", self.poll.session_messages_interval)

    def note_wake(self) -> None:
        """The machine slept (or the clock jumped): catch up now, as one digest per chat."""
        self._digest_pending = True
        for job in ("full", "listing"):
            self._due[job] = 0.0
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        stop_waiter = asyncio.create_task(stop.wait())
        stop_waiter.add_done_callback(lambda _: self._wake.set())
        try:
            while not stop.is_set():
                self._wake.clear()
                await self._cycle()
                delay = self._next_wait(time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=min(delay, 3600.0))
        finally:
            stop_waiter.cancel()

    # --- scheduling ---

    def _next_wait(self, now: float) -> float:
        """Until the next job. Paused, failing or after a failed cycle only the one job that
        retries counts: a job left due in the past must not turn the loop into a spin."""
        if self.is_paused():
            return max(self._due.get("paused", now + 1.0) - now, 0.0)
        if self._failing or self._cycle_failed:
            return max(self._due.get("listing", 0.0) - now, RETRY_FLOOR_SECONDS)
        return max(min(self._due.values()) - now, 0.0)

    def _pull_forward(self, job: str, seconds: float) -> None:
        soon = time.monotonic() + seconds
        if soon < self._due.get(job, NEVER):
            self._due[job] = soon
            self._wake.set()

    def _take(self, job: str, now: float, next_in: float) -> bool:
        """Is `job` due? If so it is rescheduled first, so a failure can never make it spin."""
        if self._due.get(job, NEVER) > now:
            return False
        self._due[job] = now + next_in
        return True

    @property
    def _deep_recheck(self) -> float:
        return self.poll.sessions_full_interval

    @property
    def listing_interval(self) -> float:
        return min(self.poll.sessions_recent_interval, MAX_LISTING_SECONDS)

    async def _cycle(self) -> None:
        if self.is_paused():
            self._due["paused"] = time.monotonic() + 1.0
            return
        self._due.pop("paused", None)
        now = time.monotonic()
        responses_before = self.backend.responses
        try:
            with store_errors():
                followed = queries.followed_session_ids()
                if self._failing:
                    # An outage costs one listing per interval, nothing more.
                    if not self._take("listing", now, self.listing_interval):
                        return
                    await self._listing(followed)
                    self._failing = False
                if self._take("full", now, self.poll.sessions_full_interval):
                    try:
                        await self._full_pass(followed)
                    except BackendError:
                        self._due["full"] = 0.0  # right after the backend is back
                        raise
                if self._take("listing", now, self.listing_interval):
                    await self._listing(followed)
                await self._check_sessions(followed, now)
                await self._check_requests(followed, now)
                self._schedule_typing(now)
        except BackendUnauthorized as exc:
            if not self.backend_status.unauthorized:
                log.warning("backend refuses the agent (401): set BACKEND_INTERNAL_TOKEN (%s)", exc)
            self.backend_status.refused_auth()
            self._failing = True
            return
        except BackendError as exc:
            if not self._failing:
                log.warning("backend poll failed: %s", exc)
            self.backend_status.failed(str(exc)[:200])
            self._failing = True
            return
        except StoreError as exc:  # locked by another program: the next cycle tries again
            log.warning("notifier: %s; retrying", exc)
            self._cycle_failed = True
            return
        except Exception:
            # A bug must not stop notifications for good: log, go on.
            log.exception("notifier cycle failed")
            self._cycle_failed = True
            return
        self._cycle_failed = False
        if self.backend.responses > responses_before:  # only an answer proves reachability
            self.backend_status.ok()

    def _schedule_typing(self, now: float) -> None:
        if self.typing is not None and self.typing.tick():
            self._due["typing"] = now + max(self.typing.due_in(), 0.5)
        else:
            self._due.pop("typing", None)

    # --- listings: notice what changed without reading finished sessions ---

    async def _listing(self, followed: set[str]) -> None:
        moved = await self.listings.recent(followed)
        if self.listings.widened:
            self._due["listing"] = 0.0  # a followed session fell out of the window: again
        self._note_moved(moved)

    async def _full_pass(self, followed: set[str]) -> None:
        self._note_moved(await self.listings.full(followed))

    def _note_moved(self, moved: list[Moved]) -> None:
        """Sessions that moved since we last looked (a run started in the web UI, a
        schedule...): read now, unless already read at every interval."""
        for session_id, was_active in moved:
            if not was_active or session_id in self._waiting_until:
                self._check_now.add(session_id)
            self._waiting_until.pop(session_id, None)

    # --- reading sessions ---

    def _active_ids(self, followed: set[str]) -> list[str]:
        rows = TrackedSession.select(TrackedSession.session_id).where(
            TrackedSession.active & TrackedSession.session_id.in_(list(followed))
        )
        return [row.session_id for row in rows]

    def _is_waiting(self, session_id: str, now: float) -> bool:
        return self._waiting_until.get(session_id, 0.0) > now

    async def _check_sessions(self, followed: set[str], now: float) -> None:
        interval_due = self._take("active", now, self.poll.session_messages_interval)
        check_now, self._check_now = self._check_now, set()
        prompted, self._prompted = self._prompted, set()
        chosen = [
            session_id
            for session_id in self._active_ids(followed)
            if session_id in check_now
            or self._digest_pending
            or (interval_due and not self._is_waiting(session_id, now))
        ]
        digest = DigestBook() if self._digest_pending else None
        reads: list[SessionRead] = []
        try:
            for session_id in chosen:
                tracked = tracked_session(session_id)
                try:
                    read = await read_session(self.backend, tracked)
                    await self.progress.look(self.backend, read)
                except BackendNotFound:
                    log.info("session %s is gone; no longer followed", session_id)
                    queries.forget_session(session_id)
                    continue
                if digest is None:
                    self._apply([read], None, prompted, now)
                else:
                    reads.append(read)
        except BaseException:
            self._check_now |= check_now  # not lost: looked at again once the backend answers
            self._prompted |= prompted
            raise
        if digest is not None:
            self._apply(reads, digest, prompted, now)
            self._digest_pending = False
        self._reschedule_active(followed, now)

    def _reschedule_active(self, followed: set[str], now: float) -> None:
        """Next read: one interval away while a run goes on, else when a wait is over."""
        active = self._active_ids(followed)
        self._running = [s for s in active if not self._is_waiting(s, now)]
        if self._running:
            next_due = now + self.poll.session_messages_interval
        else:
            next_due = min(
                (self._waiting_until[s] for s in active if s in self._waiting_until), default=NEVER
            )
        current = self._due.get("active", NEVER)
        self._due["active"] = min(current, next_due) if current > now else next_due

    def _apply(
        self,
        reads: list[SessionRead],
        digest: DigestBook | None,
        prompted: set[str],
        now: float,
    ) -> None:
        """Outbox rows and the cursors that say so, in one transaction."""
        with database_proxy.atomic(WRITE_AT_ONCE):
            for read in reads:
                self.feed.apply(read, digest)
                self.progress.apply(read)
                self._after_read(read, prompted, now)
            if digest is not None:
                stamp = f"{time.time():.0f}"
                for channel, entries in digest.entries.values():
                    message = notices.digest(self.ctx, entries)
                    queries.enqueue(channel, message, dedup_key=f"digest:{stamp}")
        self.wake_delivery()

    def _after_read(self, read: SessionRead, prompted: set[str], now: float) -> None:
        tracked, latest = read.tracked, read.latest_run
        session_id = tracked.session_id
        if session_id in prompted or session_id in self._prompted:
            # A prompt sent while we read: its run may not have shown yet.
            if not tracked.active:
                tracked.active = True
                tracked.save()
            return
        if (
            tracked.active
            and latest is not None
            and latest.status == RUN_QUEUED
            and not any(run.status in ACTIVE_RUN_STATUSES for run in read.runs)
        ):
            # Only waiting for an executor: the listing shows when it starts (a session
            # too old to be listed is looked at again with the full pass).
            listed = session_id in self.listings.listed
            self._waiting_until[session_id] = NEVER if listed else now + self._deep_recheck
        else:
            self._waiting_until.pop(session_id, None)

    # --- input requests ---

    async def _check_requests(self, followed: set[str], now: float) -> None:
        if not self._running and not prompts.open_prompt_count():
            self._due.pop("requests", None)
            return
        if not self._take("requests", now, self.poll.user_input_interval):
            return
        requests = await self.backend.list_input_requests()
        live = {
            r.id: r for r in requests if r.session_id in followed and not r.is_expired(time.time())
        }
        with database_proxy.atomic(WRITE_AT_ONCE):
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


def tracked_session(session_id: str) -> TrackedSession:
    tracked, _ = TrackedSession.get_or_create(session_id=session_id)
    return tracked
