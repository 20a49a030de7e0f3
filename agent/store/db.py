"""Open the SQLite store (WAL), create or migrate its schema, prune old rows."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import peewee

from agent import paths
from agent.errors import StoreError
from agent.store import file_jobs
from agent.store.models import (
    ALL_MODELS,
    Inbound,
    InputPrompt,
    Meta,
    Outbox,
    PromptClosure,
    database_proxy,
)

SCHEMA_VERSION = 1
# Done journal rows and sent outbox rows older than this are deleted: the cursors keep
# dedup, so these rows only serve a restart in the middle of work.
RETENTION_SECONDS = 7 * 24 * 3600

# Each entry upgrades the schema from version N-1 to N. Version 1 is the initial schema.
MIGRATIONS: dict[int, str] = {}
# SQLite's companions of the database file, holding the same data.
COMPANION_SUFFIXES = ("-wal", "-shm", "-journal")
# A transaction that reads before it writes takes the write lock first: begun deferred,
# it fails at once ("database is locked", no busy wait) when another process wrote since
# its read, e.g. `pair revoke` while the agent runs.
WRITE_AT_ONCE = "IMMEDIATE"


def open_database(path: Path) -> peewee.SqliteDatabase:
    """Open (creating if needed) the store at `path` and bind the models to it."""
    try:
        _private_files(path)
        db = peewee.SqliteDatabase(
            str(path),
            pragmas={
                "journal_mode": "wal",
                # NORMAL in WAL mode survives a process crash (kill -9); only power loss
                # can drop the last transactions (see durable_transaction for the ones
                # that must survive it).
                "synchronous": "normal",
                "foreign_keys": 1,
                "busy_timeout": 5000,
            },
            check_same_thread=False,
        )
        database_proxy.initialize(db)
        db.connect(reuse_if_open=True)
        _migrate(db)
    except (peewee.PeeweeException, OSError) as exc:
        raise StoreError(f"cannot open the database {path}: {exc}") from exc
    return db


def _private_files(path: Path) -> None:
    """The database and its companions are the owner's only: SQLite gives the -wal and
    -shm files the mode of the database file, so that one is created 0600 first."""
    paths.private_dir(path.parent, tighten=False)  # IM_DATABASE_URL may name a shared dir
    paths.create_private_file(path)
    for suffix in COMPANION_SUFFIXES:
        paths.private_file(path.with_name(path.name + suffix))


@contextlib.contextmanager
def durable_transaction() -> Iterator[None]:
    """A transaction that survives power loss, for a commit a platform is told about.

    synchronous=FULL syncs the WAL at this commit; the other commits stay NORMAL (safe
    against a crash of the process, cheaper). SQLite refuses to change it inside a
    transaction, so this one must not be nested.
    """
    database_proxy.execute_sql("PRAGMA synchronous = FULL")
    try:
        with database_proxy.atomic():
            yield
    finally:
        database_proxy.execute_sql("PRAGMA synchronous = NORMAL")


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """The store's failures that may pass (locked by another process, busy, I/O error,
    disk full) as StoreError, so `core` catches only ours."""
    try:
        yield
    except peewee.OperationalError as exc:
        raise StoreError(f"the database failed: {exc}") from exc


def _migrate(db: peewee.SqliteDatabase) -> None:
    with db.atomic(WRITE_AT_ONCE):
        db.create_tables(ALL_MODELS, safe=True)
        row = Meta.get_or_none(Meta.key == "schema_version")
        version = int(row.value) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the database was written by a newer poco-im-agent (schema {version}); "
                "upgrade poco-im-agent or point IM_DATA_DIR elsewhere"
            )
        for target in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
            db.execute_sql(MIGRATIONS[target])
        Meta.replace(key="schema_version", value=str(SCHEMA_VERSION)).execute()


def prune(now: float | None = None) -> int:
    """Delete old handled journal rows, delivered outbox rows and closed input prompts;
    return how many."""
    cutoff = (time.time() if now is None else now) - RETENTION_SECONDS
    removed = (
        Inbound.delete()
        .where((Inbound.status == "done") & (Inbound.received_at < cutoff))
        .execute()
    )
    removed += (
        Outbox.delete().where((Outbox.status != "pending") & (Outbox.created_at < cutoff)).execute()
    )
    # A closed prompt lives as long as its message's outbox row, so that a reply to that
    # message is still known for an answer to it (told "already answered", never a prompt).
    closed_lately = PromptClosure.select(PromptClosure.prompt).where(
        PromptClosure.closed_at >= cutoff
    )
    removed += (
        InputPrompt.delete()
        .where(
            (InputPrompt.state != "open")
            & (InputPrompt.created_at < cutoff)
            & InputPrompt.id.not_in(closed_lately)
        )
        .execute()
    )
    removed += file_jobs.prune(cutoff)
    return int(removed)


def close_database() -> None:
    db = database_proxy.obj
    if db is not None and not db.is_closed():
        db.close()
