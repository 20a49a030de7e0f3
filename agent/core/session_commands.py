"""Commands about which sessions a chat follows: /list, /connect, /watch, /watches,
/unwatch, /link, /clear (and reading a session id or a number from a listing)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from agent.backend.client import BackendClient
from agent.core import i18n
from agent.core.notices import NoticeContext
from agent.errors import BackendForbidden, BackendNotFound
from agent.store import queries
from agent.store.models import Channel

LIST_DEFAULT = 10
LIST_MAX = 30
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class SessionCommands:
    def __init__(
        self,
        backend: BackendClient,
        ctx: NoticeContext,
        on_watch: Callable[[str], None] | None = None,
    ) -> None:
        self.backend = backend
        self.ctx = ctx
        # Called when a chat starts following a session, so its notifications start soon.
        self.on_watch = on_watch

    def t(self, key: str, **values: object) -> str:
        return self.ctx.t(key, **values)

    async def list_sessions(self, channel: Channel, args: str) -> list[str]:
        count = LIST_DEFAULT
        if args:
            if not args.isdigit() or not 1 <= int(args) <= LIST_MAX:
                return [self.t("bad_count", value=args[:40])]
            count = int(args)
        sessions = await self.backend.list_sessions(limit=count)
        if not sessions:
            return [self.t("list_empty")]
        queries.set_meta(_list_key(channel), json.dumps([s.session_id for s in sessions]))
        bound = queries.bound_session(channel)
        watched = queries.watched_session_ids(channel)
        lines = [self.t("list_header")]
        for index, session in enumerate(sessions, start=1):
            marks = ("🔗" if session.session_id == bound else "") + (
                "👀" if session.session_id in watched else ""
            )
            emoji = i18n.STATUS_EMOJI.get(session.status, "•")
            title = _one_line(session.title) or self.t("untitled")
            lines.append(f"{index}. {emoji} {title} `{session.session_id[:8]}` {marks}".rstrip())
        lines.append(self.t("list_footer"))
        return ["\n".join(lines)]

    async def connect(self, channel: Channel, args: str) -> list[str]:
        if not args:
            return [self.t("connect_usage")]
        session_id, error = self.resolve(args, lambda: last_listing(channel))
        if error:
            return [error]
        try:
            session = await self.backend.get_session(session_id)
        except BackendNotFound:
            return [self.t("not_found", session_id=session_id)]
        except BackendForbidden:
            return [self.t("forbidden", session_id=session_id)]
        queries.bind(channel, session.session_id)
        self._watch_started(session.session_id)
        return [
            self.t(
                "connected",
                title=_one_line(session.title) or self.t("untitled"),
                session_id=session.session_id,
                status=session.status,
                link=self.ctx.link(session.session_id),
            )
        ]

    async def watch(self, channel: Channel, args: str) -> list[str]:
        if not args:
            return [self.t("watch_usage")]
        session_id, error = self.resolve(args, lambda: last_listing(channel))
        if error:
            return [error]
        try:
            await self.backend.get_session(session_id)
        except BackendNotFound:
            return [self.t("not_found", session_id=session_id)]
        except BackendForbidden:
            return [self.t("forbidden", session_id=session_id)]
        if not queries.watch(channel, session_id):
            return [self.t("already_watching", session_id=session_id)]
        self._watch_started(session_id)
        return [self.t("watching", session_id=session_id)]

    async def watches(self, channel: Channel, args: str) -> list[str]:
        watches = queries.watches(channel)
        if not watches:
            return [self.t("watches_empty")]
        ids = [w.session_id for w in watches]
        lines = [self.t("watches_header")]
        lines += [f"{i}. `{sid}`" for i, sid in enumerate(ids, start=1)]
        return ["\n".join(lines)]

    async def unwatch(self, channel: Channel, args: str) -> list[str]:
        if not args:
            return [self.t("unwatch_usage")]
        # Numbers refer to the /watches order, which is the order watches were added.
        session_id, error = self.resolve(
            args, lambda: [w.session_id for w in queries.watches(channel)]
        )
        if error:
            return [error]
        if session_id == queries.bound_session(channel):
            # A chat hears about the session it is connected to: /clear disconnects it.
            return [self.t("unwatch_bound", session_id=session_id)]
        if not queries.unwatch(channel, session_id):
            return [self.t("not_watching", session_id=session_id)]
        return [self.t("unwatched", session_id=session_id)]

    async def link(self, channel: Channel, args: str) -> list[str]:
        session_id = queries.bound_session(channel)
        if session_id is None:
            return [self.t("not_bound")]
        return [self.t("link", link=self.ctx.link(session_id))]

    async def clear(self, channel: Channel, args: str) -> list[str]:
        session_id = queries.unbind(channel)
        if session_id is None:
            return [self.t("nothing_to_clear")]
        return [self.t("cleared", session_id=session_id)]

    def resolve(self, value: str, numbered: Callable[[], list[str]]) -> tuple[str, str]:
        """A session id from an id, or from a 1-based number into the `numbered` list."""
        value = value.split()[0]
        if value.isdigit():
            ids = numbered()
            index = int(value)
            if not 1 <= index <= len(ids):
                return "", self.t("bad_index", index=index)
            return ids[index - 1], ""
        if not UUID.match(value):
            return "", self.t("bad_id", value=value[:40])
        return value.lower(), ""

    def _watch_started(self, session_id: str) -> None:
        if self.on_watch is not None:
            self.on_watch(session_id)


def last_listing(channel: Channel) -> list[str]:
    """The session ids of the chat's last /list, in its order (what /connect n means)."""
    ids: list[str] = json.loads(queries.get_meta(_list_key(channel), "[]"))
    return ids


def _list_key(channel: Channel) -> str:
    return f"list:{channel.id}"


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())[:60]
