"""The local store: schema version, journal dedup, outbox dedup and order, pruning."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.chats.base import InboundMessage, OutboundMessage
from agent.errors import StoreError
from agent.store import db, intents, queries
from agent.store.models import Inbound, Meta, Outbox


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
