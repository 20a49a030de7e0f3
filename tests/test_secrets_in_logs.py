"""No configured secret ever reaches the log file, stderr or a chat, even at DEBUG and on errors."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from agent.chats.base import ProviderState
from agent.config import build_settings
from agent.logs import SecretFilter, setup_logging
from tests.conftest import RunningAgent, agent_environment, run_agent, subprocess_env
from tests.fakes.dingtalk import FakeDingTalk
from tests.fakes.poco import FakePoco
from tests.fakes.telegram import FakeTelegram

CHAT = 3003
WEBHOOK_SECRET = "tg-hook-secret-Zq9vX2"
DT_WEBHOOK_TOKEN = "dt-hook-token-Wm4pL7"
NOISY = ("httpx", "httpcore", "telegram", "dingtalk_stream", "aiohttp.access")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """setup_logging replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in NOISY}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


async def eventually(predicate: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def state(agent: RunningAgent, provider: str) -> ProviderState:
    return agent.runtime.status.providers[provider].state


async def say(fake: FakeTelegram, text: str) -> None:
    before = len(fake.sent)
    fake.inject_message(CHAT, text)
    try:
        await fake.wait_for(lambda f: len(f.sent) > before, timeout=10)
    except TimeoutError:
        got = [m["text"][:40] for m in fake.sent]
        raise AssertionError(f"no reply to {text!r}; replies so far: {got}") from None


async def polling_and_stream_run(
    env: dict[str, str], telegram: FakeTelegram, dingtalk: FakeDingTalk, poco: FakePoco
) -> None:
    """Commands on both platforms, a 401 from DingTalk's token call, a Telegram 409."""
    async with run_agent(env) as agent:
        for text in ("/help", "/new summarise the logs", "/list", "/link"):
            await say(telegram, text)
        # A user pastes a secret: DEBUG logs carry message texts, the filter must catch it.
        await say(telegram, f"/new rotate {WEBHOOK_SECRET} and {DT_WEBHOOK_TOKEN}")
        telegram.inject_message(CHAT, "and more")  # continues the session (typing, no reply)
        await poco.wait_for(lambda p: any(b["prompt"] == "and more" for b in p.tasks_posted), 10)
        await dingtalk.wait_for(lambda: dingtalk.open_connections >= 1, 10)
        await dingtalk.push_message("conv-secret", "/help")
        await dingtalk.wait_for(lambda: len(dingtalk.sent) >= 1, 10)

        # An expiring sessionWebhook sends through the OpenAPI, whose token call fails.
        dingtalk.fail_next(
            "token", 401, {"code": "InvalidAuthentication", "message": "appSecret is wrong"}
        )
        await dingtalk.push_message("conv-secret", "/list", session_webhook_ttl_ms=1000)
        await eventually(lambda: not dingtalk._failures.get("token"))
        sent_before = len(dingtalk.sent)
        await dingtalk.push_message("conv-secret", "/help")
        await dingtalk.wait_for(lambda: len(dingtalk.sent) > sent_before, 10)

        telegram.fail_next("getUpdates", 409)
        await eventually(lambda: state(agent, "telegram") is ProviderState.ERROR)
        assert "Conflict" in agent.runtime.status.providers["telegram"].detail


async def webhook_run(env: dict[str, str], telegram: FakeTelegram, dingtalk: FakeDingTalk) -> None:
    """The webhook modes, with refused (wrong secret/token) and accepted calls."""
    env = env | {
        "TELEGRAM_MODE": "webhook",
        "TELEGRAM_WEBHOOK_URL": "https://bot.example.com",
        "DINGTALK_STREAM_ENABLED": "false",
    }
    async with run_agent(env) as agent, httpx.AsyncClient() as client:
        await eventually(lambda: state(agent, "telegram") is ProviderState.CONNECTED)
        base = f"http://127.0.0.1:{agent.runtime.port}/api/v1/webhooks"
        telegram.inject_message(CHAT, "/help")
        update = telegram.pending_updates[-1]
        header = "X-Telegram-Bot-Api-Secret-Token"
        wrong = await client.post(f"{base}/telegram", json=update, headers={header: "nope"})
        right = await client.post(f"{base}/telegram", json=update, headers={header: WEBHOOK_SECRET})
        assert (wrong.status_code, right.status_code) == (403, 200)
        payload = dingtalk.message_payload("conv-secret", "/help")
        wrong = await client.post(f"{base}/dingtalk", json=payload, params={"token": "nope"})
        right = await client.post(
            f"{base}/dingtalk", json=payload, params={"token": DT_WEBHOOK_TOKEN}
        )
        assert (wrong.status_code, right.status_code) == (403, 200)
        health = await client.get(agent.health_url)
        assert health.status_code == 200


async def test_no_secret_in_logs_stderr_or_chats(
    telegram_api: FakeTelegram,
    dingtalk_api: FakeDingTalk,
    poco: FakePoco,
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    env = agent_environment(
        data_dir,
        telegram=telegram_api,
        dingtalk=dingtalk_api,
        poco=poco,
        IM_LOG_LEVEL="DEBUG",
        TELEGRAM_WEBHOOK_SECRET_TOKEN=WEBHOOK_SECRET,
        DINGTALK_WEBHOOK_TOKEN=DT_WEBHOOK_TOKEN,
    )
    settings = build_settings(env)
    log_file = tmp_path / "logs" / "agent.log"
    setup_logging(settings.log_level, log_file, settings.secrets())

    await polling_and_stream_run(env, telegram_api, dingtalk_api, poco)
    await webhook_run(env, telegram_api, dingtalk_api)

    logged = log_file.read_text(encoding="utf-8")
    stderr = capsys.readouterr().err
    chats = [m["text"] for m in telegram_api.sent] + [s.markdown["text"] for s in dingtalk_api.sent]
    # The run did log its failures (so the check below means something).
    assert " DEBUG " in logged
    assert "accessToken: HTTP 401" in logged
    assert "Telegram webhook set to https://bot.example.com" in logged
    assert "refused" in logged
    assert logged.strip() and stderr.strip()
    secrets = {
        "TELEGRAM_BOT_TOKEN": telegram_api.token,
        "DINGTALK_CLIENT_SECRET": dingtalk_api.client_secret,
        "TELEGRAM_WEBHOOK_SECRET_TOKEN": WEBHOOK_SECRET,
        "DINGTALK_WEBHOOK_TOKEN": DT_WEBHOOK_TOKEN,
    }
    for name, value in secrets.items():
        assert value not in logged, f"{name} in the log file"
        assert value not in stderr, f"{name} on stderr"
        assert not [text for text in chats if value in text], f"{name} in a chat reply"


async def test_failed_gateway_handshake_shows_no_ticket(
    dingtalk_api: FakeDingTalk,
    poco: FakePoco,
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    """The Stream ticket (a credential for one connection) is not in health, status or logs."""
    env = agent_environment(data_dir, dingtalk=dingtalk_api, poco=poco, IM_LOG_LEVEL="DEBUG")
    settings = build_settings(env)
    log_file = tmp_path / "logs" / "agent.log"
    setup_logging(settings.log_level, log_file, settings.secrets())
    dingtalk_api.handshake_refusal = 403
    async with run_agent(env) as agent, httpx.AsyncClient() as client:
        await dingtalk_api.wait_for(lambda: dingtalk_api.refused_handshakes >= 2, 15)
        await eventually(lambda: state(agent, "dingtalk") is ProviderState.ERROR)
        health = (await client.get(agent.health_url)).text
        status = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "agent", "status", "--json"],
            env=subprocess_env(**env),
            capture_output=True,
            text=True,
            timeout=60,
        )
    logged = log_file.read_text(encoding="utf-8")
    stderr = capsys.readouterr().err
    # The failures were reported (so the checks below mean something).
    assert "403" in json.loads(status.stdout)["providers"]["dingtalk"]["detail"]
    assert "403" in logged
    tickets = dingtalk_api.tickets_issued
    assert len(tickets) >= 2
    for where, text in {"health": health, "status": status.stdout, "log": logged}.items():
        assert not [t for t in tickets if t in text], f"a ticket in {where}"
        assert "ticket=" not in text, where
    assert not [t for t in tickets if t in stderr]


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "403, message='Invalid response status', url='wss://x/connect?ticket=abc123'",
            "403, message='Invalid response status', url='wss://x/connect?ticket=****'",
        ),
        (
            "Connection timeout to host https://oapi.dingtalk.com/robot/sendBySession?session=s1",
            "Connection timeout to host https://oapi.dingtalk.com/robot/sendBySession?session=****",
        ),
        (
            "https://h/robot/send?x=1&access_token=t&y=2",
            "https://h/robot/send?x=1&access_token=****&y=2",
        ),
        ("session 1234 ended; token expired", "session 1234 ended; token expired"),
    ],
)
def test_url_credentials_are_masked(text: str, masked: str) -> None:
    assert SecretFilter([]).mask(text) == masked
