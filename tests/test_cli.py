"""The command line, in-process and as the real `poco-im-agent` subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from agent import __version__
from agent.cli import main
from tests.conftest import agent_environment, subprocess_env
from tests.fakes.poco import FakePoco
from tests.fakes.telegram import FakeTelegram

AGENT = [sys.executable, "-m", "agent"]


def clean_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """A subprocess environment with no user config and no stray agent variables."""
    return subprocess_env(
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
        **variables,
    )


def run_cli(tmp_path: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENT, *args],
        env=clean_env(tmp_path, **variables),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_version(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_bad_value_exits_2_naming_the_variable(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "run", TELEGRAM_BOT_TOKEN="1:x", POLL_HTTP_TIMEOUT_SECONDS="soon")
    assert result.returncode == 2
    assert "POLL_HTTP_TIMEOUT_SECONDS" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_provider_says_what_to_set_and_where(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "run")
    assert result.returncode == 2
    assert "TELEGRAM_BOT_TOKEN" in result.stderr
    assert "agent.env" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_init_show_and_path(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "config", "init")
    assert result.returncode == 0
    config_file = Path(result.stdout.split("wrote ", 1)[1].strip())
    assert config_file.is_file()
    if os.name == "posix":
        assert config_file.stat().st_mode & 0o777 == 0o600
    assert str(config_file) in run_cli(tmp_path, "config", "path").stdout
    shown = run_cli(tmp_path, "config", "show", TELEGRAM_BOT_TOKEN="123456:SECRETSECRETSECRET")
    assert shown.returncode == 0
    assert "SECRETSECRET" not in shown.stdout
    assert "TELEGRAM_BOT_TOKEN=****" in shown.stdout


def test_status_when_not_running(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "status", IM_DATA_DIR=str(tmp_path / "d"), IM_HTTP_PORT="0")
    assert result.returncode == 3


def test_pair_commands_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IM_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.chdir(tmp_path)
    assert main(["pair", "approve", "AAAA-BBBB"]) == 1
    assert main(["pair", "list"]) == 0
    assert main(["pair", "revoke", "telegram:1"]) == 1


async def wait_healthy(port_file: Path, timeout: float = 20) -> str:
    async with httpx.AsyncClient() as client:
        for _ in range(int(timeout * 20)):
            if port_file.exists():
                url = f"http://127.0.0.1:{port_file.read_text()}/api/v1/health"
                try:
                    if (await client.get(url)).json()["status"] == "ok":
                        return url
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
            await asyncio.sleep(0.05)
    raise AssertionError("the agent did not become healthy")


async def start_agent(tmp_path: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *AGENT,
        "run",
        env=clean_env(tmp_path, **env),
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_subprocess_run_status_second_instance_and_sigterm(
    tmp_path: Path, telegram_api: FakeTelegram, poco: FakePoco
) -> None:
    data_dir = tmp_path / "data"
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    process = await start_agent(tmp_path, env)
    try:
        await wait_healthy(data_dir / "agent.port")
        status = await asyncio.to_thread(run_cli, tmp_path, "status", "--json", **env)
        assert status.returncode == 0
        assert json.loads(status.stdout)["providers"]["telegram"]["state"] == "connected"
        second = await asyncio.to_thread(run_cli, tmp_path, "run", **env)
        assert second.returncode == 1
        assert "already running" in second.stderr
        telegram_api.inject_message(7, "/help")
        await telegram_api.wait_for(lambda f: any(m["chat_id"] in (7, "7") for m in f.sent), 10)
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=20) == 0
    stderr = (await process.stderr.read()).decode()
    assert telegram_api.token not in stderr
    log_text = (data_dir / "logs" / "agent.log").read_text()
    assert telegram_api.token not in log_text
    assert "stopping" in log_text


def doubted(fake: FakeTelegram) -> set[str]:
    """Messages the agent told their chat it may not have delivered (cut off by a kill)."""
    return {
        m["text"].split("«")[1].split("»")[0]
        for m in fake.sent
        if "may not have reached" in (m["text"] or "")
    }


async def test_kill_9_during_a_burst_handles_each_update_once(
    tmp_path: Path, telegram_api: FakeTelegram, poco: FakePoco
) -> None:
    data_dir = tmp_path / "data"
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    chats = [9000 + i for i in range(10)]
    sessions = {chat: poco.create_session(prompt=f"chat {chat}") for chat in chats}
    process = await start_agent(tmp_path, env)
    await wait_healthy(data_dir / "agent.port")
    for chat in chats:
        telegram_api.inject_message(chat, f"/connect {sessions[chat]}")
    await telegram_api.wait_for(lambda f: len(f.sent) >= len(chats), timeout=20)
    expected = []
    for round_ in range(20):
        for chat in chats:
            telegram_api.inject_message(chat, f"msg {chat} {round_}")
            expected.append(f"msg {chat} {round_}")
    await poco.wait_for(lambda p: len(p.tasks_posted) >= 40, timeout=20)
    process.kill()
    await process.wait()
    process = await start_agent(tmp_path, env)
    try:
        await wait_healthy(data_dir / "agent.port")

        def settled(p: FakePoco) -> bool:
            return {b["prompt"] for b in p.tasks_posted} >= set(expected)

        await poco.wait_for(settled, timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=20)
    prompts = [b["prompt"] for b in poco.tasks_posted]
    duplicates = [p for p, n in Counter(prompts).items() if n > 1]
    assert duplicates == []
    # A message cut off mid-handling is settled with the backend: sent once, not doubted.
    assert set(prompts) == set(expected)
    assert doubted(telegram_api) == set()
    for chat in chats:  # each chat in order
        mine = [p for p in prompts if p.startswith(f"msg {chat} ")]
        assert mine == sorted(mine, key=lambda p: int(p.rsplit(" ", 1)[1]))


def test_config_path_follows_data_dir_and_env_file(tmp_path: Path) -> None:
    by_env = run_cli(tmp_path, "config", "path", IM_DATA_DIR=str(tmp_path / "by-env"))
    assert f"data dir:    {tmp_path / 'by-env'}\n" in by_env.stdout
    assert str(tmp_path / "by-env" / "logs" / "agent.log") in by_env.stdout
    env_file = tmp_path / "other.env"
    env_file.write_text(
        f"IM_DATA_DIR={tmp_path / 'by-file'}\nIM_DATABASE_URL=sqlite:///{tmp_path / 'x.db'}\n"
    )
    by_file = run_cli(tmp_path, "--env-file", str(env_file), "config", "path")
    assert by_file.returncode == 0
    assert f"data dir:    {tmp_path / 'by-file'}\n" in by_file.stdout
    assert f"database:    {tmp_path / 'x.db'}\n" in by_file.stdout
