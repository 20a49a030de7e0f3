"""`poco-im-agent doctor` against the fakes: all green, then each failure named with its fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import build_settings
from agent.doctor import Check, format_check, run_checks
from tests.conftest import agent_environment
from tests.fakes.dingtalk import FakeDingTalk
from tests.fakes.dingtalk_cards import STREAMING_WRITE, TEMPLATE_ID
from tests.fakes.poco import FakePoco
from tests.fakes.telegram import FakeTelegram


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


@pytest.fixture
def full_env(
    data_dir: Path, telegram_api: FakeTelegram, poco: FakePoco, dingtalk_api: FakeDingTalk
) -> dict[str, str]:
    return agent_environment(data_dir, telegram=telegram_api, poco=poco, dingtalk=dingtalk_api)


async def test_all_green(full_env: dict[str, str], dingtalk_api: FakeDingTalk) -> None:
    checks = await run_checks(build_settings(full_env))
    assert [c.name for c in checks] == [
        "config",
        "data dir",
        "backend",
        "telegram getMe",
        "telegram webhook",
        "dingtalk token",
        "dingtalk gateway",
    ]
    assert all(c.ok for c in checks), [format_check(c) for c in checks if not c.ok]
    named = by_name(checks)
    assert "@poco_test_bot" in named["telegram getMe"].detail
    assert "OpenCoWork Backend" in named["backend"].detail
    assert dingtalk_api.open_calls[-1]["clientId"] == dingtalk_api.client_id


async def test_backend_down_and_not_poco(
    full_env: dict[str, str], telegram_api: FakeTelegram
) -> None:
    down = by_name(
        await run_checks(build_settings({**full_env, "BACKEND_URL": "http://127.0.0.1:9"}))
    )
    assert not down["backend"].ok and "BACKEND_URL" in down["backend"].fix
    # Something answers there, but not as Poco (the Telegram fake: 404 without the envelope).
    other = by_name(await run_checks(build_settings({**full_env, "BACKEND_URL": telegram_api.url})))
    assert not other["backend"].ok
    assert "not as a Poco backend" in other["backend"].detail


async def test_telegram_bad_token(full_env: dict[str, str]) -> None:
    named = by_name(
        await run_checks(build_settings({**full_env, "TELEGRAM_BOT_TOKEN": "999:WRONG"}))
    )
    check = named["telegram getMe"]
    assert not check.ok and "401" in check.detail and "@BotFather" in check.fix
    assert "999:WRONG" not in check.detail
    assert "telegram webhook" not in named


async def test_webhook_set_while_polling(
    full_env: dict[str, str], telegram_api: FakeTelegram
) -> None:
    telegram_api.webhook = {"url": "https://old-service.example/hook"}
    check = by_name(await run_checks(build_settings(full_env)))["telegram webhook"]
    assert not check.ok
    assert "https://old-service.example/hook" in check.detail and "409" in check.detail
    assert "deletes the webhook" in check.fix


async def test_telegram_unreachable_suggests_the_proxy(full_env: dict[str, str]) -> None:
    env = {**full_env, "TELEGRAM_API_BASE_URL": "http://127.0.0.1:9"}
    check = by_name(await run_checks(build_settings(env)))["telegram getMe"]
    assert not check.ok and "TELEGRAM_PROXY_URL" in check.fix


async def test_dingtalk_wrong_secret(full_env: dict[str, str]) -> None:
    named = by_name(
        await run_checks(build_settings({**full_env, "DINGTALK_CLIENT_SECRET": "nope"}))
    )
    assert (
        not named["dingtalk token"].ok and "DINGTALK_CLIENT_SECRET" in named["dingtalk token"].fix
    )
    assert not named["dingtalk gateway"].ok and "401" in named["dingtalk gateway"].detail


async def test_dingtalk_gateway_down(full_env: dict[str, str], dingtalk_api: FakeDingTalk) -> None:
    dingtalk_api.set_gateway_available(False)
    named = by_name(await run_checks(build_settings(full_env)))
    assert named["dingtalk token"].ok
    gateway = named["dingtalk gateway"]
    assert not gateway.ok and "503" in gateway.detail and "DINGTALK_OPEN_BASE_URL" in gateway.fix


async def test_dingtalk_card_template_checked(
    full_env: dict[str, str], dingtalk_api: FakeDingTalk
) -> None:
    env = {**full_env, "DINGTALK_CARD_TEMPLATE_ID": TEMPLATE_ID}
    card = by_name(await run_checks(build_settings(env)))["dingtalk card"]
    assert card.ok and TEMPLATE_ID in card.detail
    assert dingtalk_api.cards.delivered() == []  # created to check, delivered to nobody
    assert ("POST", "/v1.0/card/instances") in dingtalk_api.cards.calls
    assert "dingtalk card" not in by_name(await run_checks(build_settings(full_env)))


async def test_dingtalk_card_permission_missing_is_named(
    full_env: dict[str, str], dingtalk_api: FakeDingTalk
) -> None:
    dingtalk_api.cards.scopes.clear()
    env = {**full_env, "DINGTALK_CARD_TEMPLATE_ID": TEMPLATE_ID}
    card = by_name(await run_checks(build_settings(env)))["dingtalk card"]
    assert not card.ok and "403" in card.detail and "Card.Instance.Write" in card.detail
    assert "Card.Instance.Write" in card.fix and "publish" in card.fix


async def test_dingtalk_card_streaming_permission_checked(
    full_env: dict[str, str], dingtalk_api: FakeDingTalk
) -> None:
    env = {**full_env, "DINGTALK_CARD_TEMPLATE_ID": TEMPLATE_ID}
    streaming = by_name(await run_checks(build_settings(env)))["dingtalk card streaming"]
    assert streaming.ok
    [card] = dingtalk_api.cards.cards.values()
    assert card.streams and card.streams[0]["key"] == "content"
    dingtalk_api.cards.scopes.discard(STREAMING_WRITE)
    named = by_name(await run_checks(build_settings(env)))
    streaming = named["dingtalk card streaming"]
    assert named["dingtalk card"].ok and not streaming.ok
    assert "403" in streaming.detail and STREAMING_WRITE in streaming.detail
    assert STREAMING_WRITE in streaming.fix and "progress" in streaming.fix


async def test_dingtalk_card_template_wrong_or_without_stream(full_env: dict[str, str]) -> None:
    wrong = {**full_env, "DINGTALK_CARD_TEMPLATE_ID": "no-such.schema"}
    card = by_name(await run_checks(build_settings(wrong)))["dingtalk card"]
    assert not card.ok and "400" in card.detail and "DINGTALK_CARD_TEMPLATE_ID" in card.fix
    webhook_mode = {
        **full_env,
        "DINGTALK_CARD_TEMPLATE_ID": TEMPLATE_ID,
        "DINGTALK_STREAM_ENABLED": "false",
        "DINGTALK_WEBHOOK_TOKEN": "t0ken",
    }
    card = by_name(await run_checks(build_settings(webhook_mode)))["dingtalk card"]
    assert not card.ok and "DINGTALK_STREAM_ENABLED" in card.fix


async def test_data_dir_not_writable(full_env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    check = by_name(
        await run_checks(build_settings({**full_env, "IM_DATA_DIR": str(blocker / "data")}))
    )
    assert not check["data dir"].ok and "IM_DATA_DIR" in check["data dir"].fix


async def test_no_platform_configured(data_dir: Path, poco: FakePoco) -> None:
    check = by_name(await run_checks(build_settings(agent_environment(data_dir, poco=poco))))
    assert not check["config"].ok and "TELEGRAM_BOT_TOKEN" in check["config"].fix


def test_format_check() -> None:
    assert format_check(Check("backend", True, "fine")) == "ok    backend: fine"
    assert format_check(Check("backend", False, "down", "start it")) == (
        "FAIL  backend: down\n      fix: start it"
    )


def doctor_cli(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TELEGRAM_", "DINGTALK_", "IM_", "BACKEND_", "POLL_"))
    }
    env.update(
        {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "cfg"), **variables}
    )
    return subprocess.run(
        [sys.executable, "-m", "agent", "doctor"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_exit_codes(tmp_path: Path, full_env: dict[str, str]) -> None:
    import asyncio

    good = await asyncio.to_thread(doctor_cli, tmp_path, **full_env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert len(good.stdout.splitlines()) == 7
    assert all(line.startswith("ok") for line in good.stdout.splitlines())
    bad = await asyncio.to_thread(
        doctor_cli, tmp_path, **{**full_env, "BACKEND_URL": "http://127.0.0.1:9"}
    )
    assert bad.returncode == 1
    assert "FAIL  backend" in bad.stdout and "fix:" in bad.stdout
    config = await asyncio.to_thread(doctor_cli, tmp_path, **{**full_env, "IM_HTTP_PORT": "many"})
    assert config.returncode == 1 and "FAIL  config: IM_HTTP_PORT" in config.stdout
