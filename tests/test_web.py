"""The local HTTP server: status codes, limits, no tracebacks, no secrets; and in the agent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.chats.base import ProviderState
from agent.web import MAX_BODY_BYTES, LocalServer, is_loopback
from tests.conftest import agent_environment, run_agent
from tests.fakes.dingtalk import FakeDingTalk
from tests.fakes.poco import FakePoco
from tests.fakes.telegram import FakeTelegram

SECRET = "tg-webhook-secret-0123456789"


class Recorder:
    """A webhook handler that records calls and answers what it is told."""

    def __init__(self, answer: tuple[int, dict[str, Any]] = (200, {})) -> None:
        self.answer = answer
        self.bodies: list[bytes] = []
        self.fail = False

    async def __call__(
        self, headers: Mapping[str, str], query: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        if self.fail:
            raise RuntimeError("handler bug with a secret-looking value inside")
        self.bodies.append(body)
        return self.answer


@contextlib.asynccontextmanager
async def serving(
    snapshot: Callable[[], dict[str, Any]] = dict, host: str = "127.0.0.1", **kwargs: Any
) -> AsyncIterator[tuple[LocalServer, Recorder, str]]:
    server = LocalServer(host, 0, snapshot, **kwargs)
    recorder = Recorder()
    server.add_webhook("telegram", recorder)
    port = await server.start()
    try:
        yield server, recorder, f"http://127.0.0.1:{port}"
    finally:
        await server.stop()


async def test_routes_and_methods() -> None:
    async with serving(lambda: {"status": "ok"}) as (_, recorder, base), httpx.AsyncClient() as c:
        health = await c.get(f"{base}/api/v1/health")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        answer = await c.post(f"{base}/api/v1/webhooks/telegram", content=b"{}")
        assert (answer.status_code, answer.json()) == (200, {})
        assert recorder.bodies == [b"{}"]

        for method, path, status in [
            ("POST", "/api/v1/health", 405),
            ("DELETE", "/api/v1/health", 405),
            ("GET", "/api/v1/webhooks/telegram", 405),
            ("PUT", "/api/v1/webhooks/telegram", 405),
            ("POST", "/api/v1/webhooks/dingtalk", 404),  # not in webhook mode
            ("POST", "/api/v1/webhooks/other", 404),
            ("GET", "/nope", 404),
        ]:
            answer = await c.request(method, base + path, content=b"{}")
            assert answer.status_code == status, (method, path)
            assert answer.headers["Content-Type"].startswith("application/json")
            assert "error" in answer.json()
        assert recorder.bodies == [b"{}"]


async def test_body_limit() -> None:
    async with serving() as (_, recorder, base), httpx.AsyncClient() as c:
        target = f"{base}/api/v1/webhooks/telegram"
        fits = b"x" * MAX_BODY_BYTES
        assert (await c.post(target, content=fits)).status_code == 200
        answer = await c.post(target, content=fits + b"x")
        assert answer.status_code == 413
        assert answer.json() == {"error": "request entity too large"}

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the read is capped
            for _ in range(20):
                yield b"y" * 100_000

        answer = await c.post(target, content=chunks())
        assert answer.status_code == 413
        assert len(recorder.bodies) == 1


async def test_handler_bug_is_a_bare_500(caplog: pytest.LogCaptureFixture) -> None:
    async with serving() as (_, recorder, base), httpx.AsyncClient() as c:
        recorder.fail = True
        answer = await c.post(f"{base}/api/v1/webhooks/telegram", content=b"{}")
        assert (answer.status_code, answer.json()) == (500, {"error": "internal error"})
        assert "Traceback" not in answer.text and "secret-looking" not in answer.text
    assert "handler bug" in caplog.text  # the trace goes to the log


async def test_health_masks_secrets() -> None:
    snapshot = {"providers": {"telegram": {"detail": f"refused 123:tok {SECRET}"}}}
    masked = serving(lambda: snapshot, secrets=[SECRET, "123:tok", ""])
    async with masked as (_, _r, base), httpx.AsyncClient() as c:
        text = (await c.get(f"{base}/api/v1/health")).text
    assert SECRET not in text and "123:tok" not in text
    assert json.loads(text)["providers"]["telegram"]["detail"] == "refused **** ****"


async def test_wide_binding_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.web"):
        async with serving(host="127.0.0.1"):
            pass
        assert "reachable from other machines" not in caplog.text
        async with serving(host="0.0.0.0"):  # noqa: S104
            pass
    assert "reachable from other machines" in caplog.text


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),  # noqa: S104
        ("::", False),
        ("192.168.1.10", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# ---- in the agent --------------------------------------------------------------------------


async def test_webhook_routes_are_404_outside_webhook_mode(
    telegram_api: FakeTelegram, dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, dingtalk=dingtalk_api, poco=poco)
    async with run_agent(env) as agent, httpx.AsyncClient() as client:
        base = f"http://127.0.0.1:{agent.runtime.port}/api/v1/webhooks"
        for provider in ("telegram", "dingtalk"):
            answer = await client.post(
                f"{base}/{provider}",
                json={"update_id": 1},
                headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
            )
            assert answer.status_code == 404
        health = (await client.get(agent.health_url)).json()
        assert health["providers"]["telegram"]["mode"] == "polling"
        assert health["providers"]["dingtalk"]["mode"] == "stream"


async def test_health_in_webhook_modes_leaks_nothing(
    telegram_api: FakeTelegram, dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(
        data_dir,
        telegram=telegram_api,
        dingtalk=dingtalk_api,
        poco=poco,
        TELEGRAM_MODE="webhook",
        TELEGRAM_WEBHOOK_URL="https://bot.example.com",
        TELEGRAM_WEBHOOK_SECRET_TOKEN=SECRET,
        DINGTALK_STREAM_ENABLED="false",
        DINGTALK_WEBHOOK_TOKEN="dt-token-value-123",
    )
    async with run_agent(env) as agent, httpx.AsyncClient() as client:
        statuses = agent.runtime.status.providers
        async with asyncio.timeout(10):
            while any(s.state is not ProviderState.CONNECTED for s in statuses.values()):
                await asyncio.sleep(0.02)
        telegram_api.inject_message(4242, "/help")
        update = telegram_api.pending_updates[-1]
        answer = await client.post(
            f"http://127.0.0.1:{agent.runtime.port}/api/v1/webhooks/telegram",
            json=update,
            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
        )
        assert answer.status_code == 200
        payload = dingtalk_api.message_payload("cid-secret-conversation", "/help")
        answer = await client.post(
            f"http://127.0.0.1:{agent.runtime.port}/api/v1/webhooks/dingtalk",
            json=payload,
            params={"token": "dt-token-value-123"},
        )
        assert answer.status_code == 200
        await telegram_api.wait_for(lambda f: len(f.sent) == 1, 10)
        await dingtalk_api.wait_for(lambda: len(dingtalk_api.sent) == 1, 10)
        health = (await client.get(agent.health_url)).json()
    assert health["providers"]["telegram"] | {"last_ok_at": None} == {
        "enabled": True,
        "mode": "webhook",
        "state": "connected",
        "detail": "",
        "last_ok_at": None,
    }
    assert health["providers"]["dingtalk"]["mode"] == "webhook"
    assert health["providers"]["dingtalk"]["state"] == "connected"
    text = json.dumps(health)
    for leak in (
        telegram_api.token,
        SECRET,
        dingtalk_api.client_secret,
        "dt-token-value-123",
        "4242",
        "cid-secret-conversation",
        "bot.example.com",
    ):
        assert leak not in text
