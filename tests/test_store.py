"""The local store: schema version, journal dedup, outbox dedup and order, pruning."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.chats.base import Button, InboundMessage, OutboundMessage
from agent.errors import StoreError
from agent.store import db, intents, queries
from agent.store.models import Channel, Inbound, Meta, Outbox, Pairing


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "im.db"
    db.open_database(path)
    yield path
    db.close_database()


def message(key: str, chat: str = "1", text: str = "hi") -> InboundMessage:
    return InboundMessage(provider="telegram", key=key, chat_id=chat, text=text)


def test_wal_and_schema_version(store: Path) -> None:
    database = db.database_proxy.obj
    assert database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert queries.get_meta("schema_version") == str(db.SCHEMA_VERSION)


def test_a_newer_schema_is_refused(store: Path) -> None:
    Meta.replace(key="schema_version", value=str(db.SCHEMA_VERSION + 1)).execute()
    db.close_database()
    with pytest.raises(StoreError, match="newer"):
        db.open_database(store)


def test_journal_skips_a_redelivered_key(store: Path) -> None:
    first = queries.record_inbound([message("telegram:1"), message("telegram:2")])
    again = queries.record_inbound([message("telegram:2"), message("telegram:3")])
    assert [row.key for row in first] == ["telegram:1", "telegram:2"]
    assert [row.key for row in again] == ["telegram:3"]
    assert [row.key for row in queries.inbound_rows("pending")] == [
        "telegram:1",
        "telegram:2",
        "telegram:3",
    ]
    assert queries.inbound_message(first[0]).text == "hi"


def test_outbox_dedup_and_per_chat_heads(store: Path) -> None:
    one = queries.ensure_channel("telegram", "1")
    two = queries.ensure_channel("telegram", "2")
    assert queries.enqueue(one, OutboundMessage("a"), dedup_key="k") is not None
    assert queries.enqueue(one, OutboundMessage("a again"), dedup_key="k") is None
    queries.enqueue(one, OutboundMessage("b"))
    queries.enqueue(two, OutboundMessage("c"))
    heads = queries.outbox_heads()
    assert [queries.outbox_message(h).text for h in heads] == ["a", "c"]
    queries.mark_sent(heads[0], "100")
    assert queries.outbox_message(queries.outbox_head(one.id)).text == "b"
    assert queries.outbox_pending_count() == 2


def test_prune_removes_only_old_finished_rows(store: Path) -> None:
    channel = queries.ensure_channel("telegram", "1")
    rows = queries.record_inbound([message("telegram:1"), message("telegram:2")])
    queries.mark_inbound(rows[0], "done")
    sent = queries.enqueue(channel, OutboundMessage("old"))
    queries.mark_sent(sent, "1")
    queries.enqueue(channel, OutboundMessage("still pending"))
    later = time.time() + db.RETENTION_SECONDS + 60
    assert db.prune(now=later) == 2
    assert [r.key for r in Inbound.select()] == ["telegram:2"]
    assert [queries.outbox_message(r).text for r in Outbox.select()] == ["still pending"]


# ---- a chat that moves (Telegram group upgraded to a supergroup) ---------------------------


def _group_with_state(chat_id: str = "-400") -> tuple[int, int]:
    """An approved group bound to a session, watching two, one pending and one sent row."""
    channel = queries.ensure_channel("telegram", chat_id)
    Channel.update(allowed=True, is_group=True).where(Channel.id == channel.id).execute()
    queries.bind(channel, "s-bound")
    queries.watch(channel, "s-watched")
    sent = queries.enqueue(channel, OutboundMessage("old news"), dedup_key="old")
    assert sent is not None
    queries.mark_sent(sent, "7")
    pending = queries.enqueue(channel, OutboundMessage("for the new id"), dedup_key="new")
    assert pending is not None
    return channel.id, pending.id


def test_migrate_channel_moves_everything_to_the_new_id(store: Path) -> None:
    channel_id, pending_id = _group_with_state()
    Pairing.create(provider="telegram", chat_id="-400", code="ABCD-EFGH", expires_at=2e9)

    moved = queries.migrate_channel("telegram", "-400", "-100400")

    assert moved is not None and moved.id == channel_id and moved.chat_id == "-100400"
    assert moved.allowed and moved.is_group
    assert queries.bound_session(moved) == "s-bound"
    assert queries.watched_session_ids(moved) == {"s-bound", "s-watched"}
    head = queries.outbox_head(moved.id)
    assert head is not None and head.id == pending_id
    assert Pairing.get(Pairing.code == "ABCD-EFGH").chat_id == "-100400"
    # The old id still finds the chat (a late message, an old code); nothing new is made.
    assert queries.find_channel("telegram", "-400") == moved
    assert queries.channel_for(message("telegram:9", chat="-400")).id == channel_id
    assert Channel.select().count() == 1
    # Applying it again changes nothing.
    assert queries.migrate_channel("telegram", "-400", "-100400") == moved


def test_migrate_channel_merges_into_a_channel_the_new_id_already_has(store: Path) -> None:
    _, pending_id = _group_with_state()
    # Someone wrote in the supergroup before the move was known: a refused, unbound channel.
    newcomer = queries.channel_for(message("telegram:5", chat="-100400"))
    code = queries.enqueue(newcomer, OutboundMessage("pairing code"))
    assert code is not None

    moved = queries.migrate_channel("telegram", "-400", "-100400")

    assert moved is not None and moved.id == newcomer.id
    assert moved.allowed
    assert queries.bound_session(moved) == "s-bound"
    assert queries.watched_session_ids(moved) == {"s-bound", "s-watched"}
    pending = Outbox.select().where(Outbox.status == "pending").order_by(Outbox.id)
    assert [(row.channel_id, row.id) for row in pending] == [
        (moved.id, pending_id),
        (moved.id, code.id),
    ]
    assert Channel.select().count() == 1


def test_a_journaled_move_is_applied_not_handled(store: Path) -> None:
    channel_id, _ = _group_with_state()
    move = InboundMessage(
        provider="telegram", key="telegram:20", chat_id="-400", text="", moved_to="-100400"
    )
    created = queries.record_inbound([move, message("telegram:21", chat="-100400")])
    assert [row.key for row in created] == ["telegram:21"]
    channel = queries.find_channel("telegram", "-100400")
    assert channel is not None and channel.id == channel_id
    assert queries.bound_session(channel) == "s-bound"


SYNCHRONOUS = re.compile(r"PRAGMA synchronous\s*=\s*(\w+)", re.IGNORECASE)


def test_the_journal_commit_survives_power_loss(store: Path) -> None:
    """The platform is told "received" once `record_inbound` returns: that commit must be
    synced (synchronous=FULL in WAL mode), not only written (NORMAL)."""
    connection = db.database_proxy.connection()
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    try:
        queries.record_inbound([message("telegram:1")])
    finally:
        connection.set_trace_callback(None)
    level, levels_at_commit, journal_written = "NORMAL", [], False
    for sql in statements:
        if match := SYNCHRONOUS.search(sql):
            level = match.group(1).upper()
        journal_written = journal_written or "INTO inbound" in sql
        if sql.strip().upper() == "COMMIT" and journal_written:
            levels_at_commit.append(level)
    assert levels_at_commit and levels_at_commit[0] in {"FULL", "2", "EXTRA", "3"}
    # Other writes (outbox bookkeeping, cursors) stay cheap.
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_intents_are_pruned_once_old_and_their_message_handled(store: Path) -> None:
    rows = queries.record_inbound([message(f"k{n}") for n in range(3)])
    channel = queries.channel_for(message("k0"))
    old_done, old_open, recent = (intents.record(r.key, channel, "hi") for r in rows)
    queries.mark_inbound(rows[0], "done")
    queries.mark_inbound(rows[1], "started")  # still to be settled: kept however old
    queries.mark_inbound(rows[2], "done")
    intents.mark_sent(old_done, "s1")
    later = time.time() + intents.RETENTION_SECONDS + 60
    intents.mark_sent(recent, "s1")
    recent.updated_at = later - 10
    recent.save()
    assert intents.prune(now=later) == 1
    assert intents.find("k0") is None
    assert intents.find("k1") is not None and intents.find("k2") is not None


def test_a_card_press_is_journaled_in_its_cards_chat_as_its_button(store: Path) -> None:
    group = queries.ensure_channel("dingtalk", "cid-group")
    Channel.update(is_group=True).where(Channel.id == group.id).execute()
    yes_no = (
        (Button("Yes", "ans:1:0:0", "option_1"), Button("No", "ans:1:0:1", "option_2")),
        (Button("Yes", "ans:1:1:0", "option_3"), Button("No", "ans:1:1:1", "option_4")),
    )
    row = queries.enqueue(group, OutboundMessage("two questions", buttons=yes_no))
    assert row is not None
    queries.mark_sent(row, "poco_card_1")
    # Edits of it carry the same platform id: the press is about the message as sent.
    edit = queries.enqueue(group, OutboundMessage("refreshed"), kind="edit")
    assert edit is not None
    queries.mark_sent(edit, "poco_card_1")

    def press(key: str, card: str = "poco_card_1", **button: str) -> InboundMessage:
        return InboundMessage("dingtalk", f"dingtalk:card:{key}", "", "", card, **button)

    rows = queries.record_inbound(
        [
            press("a", button_label="No", button_action="option_4"),  # label ambiguous
            press("b", button_label="☑️ Yes", button_action="option_3"),  # label changed
            press("c", button_action="option_2"),
            press("d", button_label="Maybe"),  # no such button
            press("e", "poco_card_unknown", button_action="option_1"),  # not ours
            press("f", "", button_action="option_1"),
        ]
    )
    assert [r.key for r in rows] == ["dingtalk:card:a", "dingtalk:card:b", "dingtalk:card:c"]
    pressed = [queries.inbound_message(r) for r in rows]
    assert [m.callback_data for m in pressed] == ["ans:1:1:1", "ans:1:1:0", "ans:1:0:1"]
    assert {(m.chat_id, m.is_group) for m in pressed} == {("cid-group", True)}
    assert {r.chat_id for r in rows} == {"cid-group"}
    # Unique labels need no action id.
    one = queries.enqueue(group, OutboundMessage("q", buttons=((Button("A", "ans:2:0:0"),),)))
    assert one is not None
    queries.mark_sent(one, "poco_card_2")
    [row] = queries.record_inbound([press("g", "poco_card_2", button_label="A")])
    assert queries.inbound_message(row).callback_data == "ans:2:0:0"
