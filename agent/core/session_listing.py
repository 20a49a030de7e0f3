"""The session listings: what changed among the followed sessions, without reading them.

The backend lists sessions newest first (by creation), with no "changed since" filter. The
recent listing asks for a window just deep enough to hold the followed sessions (20 to
100); the full pass lists 100 to size that window and looks up each followed session
older than that one by one (never a walk through the whole history). A session whose
status or `updated_at` differs from what we knew has moved.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from agent.backend.client import BackendClient
from agent.backend.models import TERMINAL_SESSION_STATUSES, Session
from agent.errors import BackendNotFound
from agent.store import queries
from agent.store.models import TrackedSession

log = logging.getLogger(__name__)

RECENT_LIMIT = 20
FULL_PAGE = 100
WINDOW_MARGIN = 5

# (session id, whether it was already followed closely) of a session that moved.
Moved = tuple[str, bool]


class Listings:
    def __init__(self, backend: BackendClient) -> None:
        self.backend = backend
        self.window = RECENT_LIMIT
        self.listed: set[str] = set()  # followed sessions the window holds
        self.deep: set[str] = set()  # followed sessions older than the 100 newest
        self.widened = False

    async def recent(self, followed: set[str]) -> list[Moved]:
        """The newest sessions (nothing followed: one, a cheap probe of the backend)."""
        limit = self.window if followed else 1
        sessions = await self.backend.list_sessions(limit=limit, kind="all")
        self.widened = False
        if not followed:
            return []
        seen = {s.session_id for s in sessions} & followed
        moved = note(sessions, followed)
        dropped = (self.listed & followed) - seen - self.deep
        if dropped and limit < FULL_PAGE:
            # Newer sessions pushed a followed one out of the window: widen it.
            self.window = min(FULL_PAGE, limit + len(dropped) + WINDOW_MARGIN)
            self.widened = True
        self.listed = seen | dropped
        return moved

    async def full(self, followed: set[str]) -> list[Moved]:
        if not followed:
            return []
        sessions = await self.backend.list_sessions(limit=FULL_PAGE, kind="all")
        moved = note(sessions, followed)
        depth = {s.session_id: i for i, s in enumerate(sessions) if s.session_id in followed}
        deepest = max(depth.values(), default=0)
        self.window = max(RECENT_LIMIT, min(FULL_PAGE, deepest + 1 + WINDOW_MARGIN))
        self.listed = set(depth)
        self.deep = followed - set(depth)
        # Older than the 100 newest: one lookup each (cheaper than paging through history).
        for session_id in sorted(self.deep):
            try:
                session = await self.backend.get_session(session_id)
            except BackendNotFound:
                log.info("session %s is gone; no longer followed", session_id)
                queries.forget_session(session_id)
                continue
            moved += note([session], followed)
        return moved


def note(sessions: Iterable[Session], followed: set[str]) -> list[Moved]:
    """Compare with what we knew: one read for the whole listing, a write per change."""
    listed = [s for s in sessions if s.session_id in followed]
    known_rows = TrackedSession.select().where(
        TrackedSession.session_id.in_([s.session_id for s in listed])
    )
    known = {row.session_id: row for row in known_rows}
    moved: list[Moved] = []
    for session in listed:
        tracked = known.get(session.session_id)
        created = tracked is None
        if tracked is None:
            tracked, _ = TrackedSession.get_or_create(session_id=session.session_id)
        changed = (session.status, session.updated_at) != (tracked.status, tracked.updated_at)
        first_sight = created or tracked.updated_at == ""
        if not changed and (session.title or "") == tracked.title:
            continue
        tracked.status = session.status
        tracked.updated_at = session.updated_at
        tracked.title = session.title or ""
        if changed and not first_sight:
            moved.append((session.session_id, bool(tracked.active)))
            tracked.active = True
        elif first_sight and session.status not in TERMINAL_SESSION_STATUSES:
            tracked.active = True
        tracked.save()
    return moved
