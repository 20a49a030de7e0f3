"""Private files: the data dir holds chat texts, DingTalk session webhooks and (in the log)
pairing codes, so it is the owner's only where the OS has modes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
from pathlib import Path

import pytest

from agent.logs import PrivateFileHandler
from tests.conftest import agent_environment
from tests.fakes.poco import FakePoco
from tests.fakes.telegram import FakeTelegram
from tests.test_cli import start_agent, wait_healthy

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_data_dir_database_and_log_are_private(
    tmp_path: Path, telegram_api: FakeTelegram, poco: FakePoco
) -> None:
    data_dir = tmp_path / "data"
    # Left by an older version: created with the usual 0755/0644.
    (data_dir / "logs").mkdir(parents=True)
    (data_dir / "logs" / "agent.log").write_text("old line\n")
    (data_dir / "logs" / "agent.log.1").write_text("older line\n")
    for path in (data_dir, data_dir / "logs"):
        path.chmod(0o755)
    for path in (data_dir / "logs").iterdir():
        path.chmod(0o644)
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    process = await start_agent(tmp_path, env)
    try:
        await wait_healthy(data_dir / "agent.port")
        telegram_api.inject_message(5, "/help")  # a journal write: the WAL is in use
        await telegram_api.wait_for(lambda f: len(f.sent) >= 1, timeout=10)
        assert mode(data_dir) == 0o700
        assert mode(data_dir / "logs") == 0o700
        files = ["im.db", "im.db-wal", "im.db-shm", "logs/agent.log", "logs/agent.log.1"]
        assert {name: mode(data_dir / name) for name in files} == dict.fromkeys(files, 0o600)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=20)


def test_a_fresh_database_is_private(tmp_path: Path) -> None:
    from agent.store import db

    db.open_database(tmp_path / "new" / "im.db")
    try:
        db.database_proxy.execute_sql("CREATE TABLE IF NOT EXISTS probe (x)")  # WAL in use
        assert mode(tmp_path / "new") == 0o700
        for name in ("im.db", "im.db-wal", "im.db-shm"):
            assert mode(tmp_path / "new" / name) == 0o600, name
    finally:
        db.close_database()


def test_rotated_logs_are_private(tmp_path: Path) -> None:
    log_file = tmp_path / "agent.log"
    handler = PrivateFileHandler(log_file, maxBytes=200, backupCount=2, encoding="utf-8")
    try:
        for n in range(20):
            handler.emit(logging.makeLogRecord({"msg": f"line {n} " + "x" * 40}))
    finally:
        handler.close()
    files = sorted(tmp_path.glob("agent.log*"))
    assert len(files) == 3  # rolled over: the log and two backups
    assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}
