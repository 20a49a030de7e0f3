"""One followed session read (its runs, then its new messages) into each chat's outbox.

Messages carry no run id: a run's messages are those after its prompt (`user_message_id`)
and before the next run's prompt. So every run's texts and then its terminal notice reach a
chat in order, also when a follow-up queued behind a running run starts before the poll
sees the first run end, or when two runs end between two polls. Runs are read before
messages: a run that ended in the first read has all its texts in the second.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from agent.backend.client import BackendClient
from agent.backend.models import TERMINAL_RUN_STATUSES, Message, Run, parse_time
from agent.core import file_commands, notices
from agent.core.notices import NoticeContext
from agent.store import queries
from agent.store.models import Channel, TrackedSession, Watch

FIRST_SIGHT_TEXTS = 3
# A first read of a long session pages through it to find its last texts, up to this.
HISTORY_PAGES = 20
NO_END = 1 << 62  # the last run ends after every message read so far


@dataclass
class SessionRead:
    """What one check of a session found."""

    tracked: TrackedSession
    runs: list[Run]  # from index `tracked.run_count` on, in schedule order
    messages: list[Message]  # new since the session's cursor (or all: `from_start`)
    from_start: bool
    complete: bool  # every message up to now was read (no page left)
    truncated: bool = False  # an older backend cannot list this session's newest messages

    @property
    def latest_run(self) -> Run | None:
        return self.runs[-1] if self.runs else None


@dataclass
class DigestBook:
    """Digest entries per chat, collected over every session of one catch-up."""

    entries: dict[int, tuple[Channel, list[notices.DigestEntry]]] = field(default_factory=dict)

    def add(self, channel: Channel, entry: notices.DigestEntry) -> None:
        self.entries.setdefault(channel.id, (channel, []))[1].append(entry)


async def read_session(backend: BackendClient, tracked: TrackedSession) -> SessionRead:
    """Runs first, then messages: from the cursor, or from the start for a new chat."""
    session_id = tracked.session_id
    runs = await backend.list_runs_from(session_id, tracked.run_count)
    if not runs and tracked.run_count:
        # The runs we counted are gone (or reordered): read them all again.
        tracked.run_count = 0
        runs = await backend.list_runs_from(session_id, 0)
    from_start = queries.has_new_watcher(session_id) or tracked.max_message_id == 0
    after = 0 if from_start else tracked.max_message_id
    messages: list[Message] = []
    truncated = False
    for _ in range(HISTORY_PAGES if from_start else 1):
        page = await backend.messages_after(session_id, after, known_count=tracked.message_count)
        messages.extend(page.items)
        truncated = page.truncated
        after = max((m.id for m in page.items), default=after)
        if not page.has_more:
            return SessionRead(tracked, runs, messages, from_start, True, truncated)
    return SessionRead(tracked, runs, messages, from_start, False, truncated)


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


def run_ends(read: SessionRead) -> list[tuple[int, Run]]:
    """(position, run) of each ended run whose texts were all read: the run's notice goes
    after every message up to id `position` and before later ones.

    A run's messages are the ones written until it finished: a follow-up's prompt can be
    written while the previous run still talks (Feb 2026 backends), so the next run's
    prompt id is no boundary; the run's `finished_at` is (same clock as `created_at`).
    """
    last_read = max((m.id for m in read.messages), default=read.tracked.max_message_id)
    ends: list[tuple[int, Run]] = []
    for index, run in enumerate(read.runs):
        if run.status not in TERMINAL_RUN_STATUSES:
            continue
        finished = parse_time(run.finished_at)
        if finished is None:  # no time given: before the next run's prompt, else at the end
            following = read.runs[index + 1] if index + 1 < len(read.runs) else None
            position = following.user_message_id if following else 0
            position = position or NO_END
        else:
            position = max(
                (m.id for m in read.messages if (parse_time(m.created_at) or finished) <= finished),
                default=read.tracked.max_message_id,
            )
            if position >= last_read:  # every message read so far was written before its end
                position = NO_END
        if position == NO_END and not read.complete:
            break  # its last texts may be on a page not read yet
        ends.append((position, run))
    return ends


class SessionFeed:
    """Turns session reads into outbox rows; the caller holds the transaction."""

    def __init__(self, ctx: NoticeContext) -> None:
        self.ctx = ctx

    def apply(self, read: SessionRead, digest: DigestBook | None) -> None:
        tracked = read.tracked
        label = notices.session_label(tracked.title, tracked.session_id)
        texts = visible_texts(read.messages)
        ends = run_ends(read)
        max_id = max((m.id for m in read.messages), default=tracked.max_message_id)
        for watch in queries.watches_of(tracked.session_id):
            if digest is not None and watch.message_cursor is not None:
                entry = self._digest_entry(watch, label, read, texts, ends, max_id)
                if entry is not None:
                    digest.add(watch.channel, entry)
            elif watch.message_cursor is None:
                self._first_sight(watch, label, read, texts, max_id)
            else:
                self._in_order(watch, label, texts, ends, max_id)
        if read.truncated:
            self._say_truncated(tracked.session_id, label)
        self._advance(read, ends, max_id)

    # --- per chat ---

    def _in_order(
        self,
        watch: Watch,
        label: str,
        texts: Sequence[tuple[int, str]],
        ends: Sequence[tuple[int, Run]],
        max_id: int,
    ) -> None:
        cursor = watch.message_cursor or 0
        pending_ends = [(pos, run) for pos, run in ends if not self._told_end(watch, run, ends)]
        notified = watch.notified_run_id
        for message_id, text in texts:
            while pending_ends and pending_ends[0][0] < message_id:
                # The run ended before this message was written: its end goes first.
                notified = self._enqueue_end(watch, label, pending_ends.pop(0)[1])
            if message_id > cursor:
                self._enqueue_text(watch, label, message_id, text)
        for _, run in pending_ends:
            notified = self._enqueue_end(watch, label, run)
        self._move_cursors(watch, max(cursor, max_id), notified)

    def _first_sight(
        self, watch: Watch, label: str, read: SessionRead, texts: list[tuple[int, str]], max_id: int
    ) -> None:
        """A chat new to the session: its last few texts, and the end of its latest run."""
        for message_id, text in texts[-FIRST_SIGHT_TEXTS:]:
            self._enqueue_text(watch, label, message_id, text)
        # Earlier ended runs count as told: only the latest run's end is news to this chat.
        ended = [run for run in read.runs if run.status in TERMINAL_RUN_STATUSES]
        notified = ended[-1].run_id if ended else watch.notified_run_id
        latest = read.latest_run
        if latest is not None and latest.status in TERMINAL_RUN_STATUSES and read.complete:
            notified = self._enqueue_end(watch, label, latest)
        self._move_cursors(watch, max_id, notified)

    def _digest_entry(
        self,
        watch: Watch,
        label: str,
        read: SessionRead,
        texts: list[tuple[int, str]],
        ends: Sequence[tuple[int, Run]],
        max_id: int,
    ) -> notices.DigestEntry | None:
        """What the chat missed of this session (None: nothing); cursors moved past it."""
        cursor = watch.message_cursor
        unseen_text = cursor is None or any(mid > cursor for mid, _ in texts)
        unseen_ends = [run for _, run in ends if not self._told_end(watch, run, ends)]
        notified = unseen_ends[-1].run_id if unseen_ends else watch.notified_run_id
        self._move_cursors(watch, max(cursor or 0, max_id), notified)
        if not (unseen_text or unseen_ends):
            return None
        latest = read.latest_run
        status = latest.status if latest else (read.tracked.status or "?")
        return notices.DigestEntry(label, status, texts[-1][1] if texts else "")

    # --- helpers ---

    @staticmethod
    def _told_end(watch: Watch, run: Run, ends: Sequence[tuple[int, Run]]) -> bool:
        """Ends are told in order: a run at or before the chat's last told end was told."""
        if not watch.notified_run_id:
            return False
        order = [r.run_id for _, r in ends]
        if watch.notified_run_id not in order:
            return False
        return order.index(run.run_id) <= order.index(watch.notified_run_id)

    def _enqueue_text(self, watch: Watch, label: str, message_id: int, text: str) -> None:
        queries.enqueue(
            watch.channel,
            notices.assistant_text(self.ctx, label, text),
            dedup_key=f"msg:{watch.session_id}:{message_id}",
        )

    def _enqueue_end(self, watch: Watch, label: str, run: Run) -> str:
        message = notices.run_ended(
            self.ctx, label, watch.session_id, run.status, run.last_error or ""
        )
        if note := file_commands.changed_files_note(self.ctx.lang, run):
            message = dataclasses.replace(message, text=message.text + note)
        queries.enqueue(watch.channel, message, dedup_key=f"run:{run.run_id}:{run.status}")
        return run.run_id

    @staticmethod
    def _move_cursors(watch: Watch, cursor: int, notified_run_id: str) -> None:
        if (watch.message_cursor, watch.notified_run_id) != (cursor, notified_run_id):
            Watch.update(message_cursor=cursor, notified_run_id=notified_run_id).where(
                Watch.id == watch.id
            ).execute()

    def _say_truncated(self, session_id: str, label: str) -> None:
        """Once per chat: this (older) backend cannot show the session's newest messages."""
        message = notices.truncated(self.ctx, label, session_id)
        for watch in queries.watches_of(session_id):
            queries.enqueue(watch.channel, message, dedup_key=f"truncated:{session_id}")

    @staticmethod
    def _advance(read: SessionRead, ends: Sequence[tuple[int, Run]], max_id: int) -> None:
        """The session's cursors: runs before `run_count` are ended and told everywhere."""
        tracked = read.tracked
        ended = {run.run_id for _, run in ends}
        done = 0
        for run in read.runs:
            if run.run_id not in ended:
                break
            done += 1
        # Keep the last ended run in the next read: a new run's prompt id places its end.
        done = max(done - 1, 0)
        latest = read.latest_run
        tracked.run_count += done
        tracked.max_message_id = max_id
        tracked.message_count = (0 if read.from_start else tracked.message_count) + len(
            read.messages
        )
        if latest is not None:
            tracked.latest_run_id = latest.run_id
            tracked.latest_run_status = latest.status
            tracked.latest_run_error = latest.last_error or ""
        tracked.active = not read.complete or (
            latest is not None and latest.status not in TERMINAL_RUN_STATUSES
        )
        tracked.checked_at = time.time()
        tracked.save()
