"""Webhook modes end to end: the real agent in-process, Telegram and DingTalk POSTing to it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.chats.base import InboundMessage, ProviderState
from agent.chats.dingtalk_webhook import sign, signature_ok
from agent.chats.telegram import ALLOWED_UPDATES
from agent.chats.telegram_webhook import TelegramWebhookProvider
from agent.config import build_settings
from agent.errors import ConfigError, StoreError
from tests.conftest import RunningAgent, agent_environment, run_agent
from tests.fakes.dingtalk import FakeDingTalk
from tests.fakes.poco import FakePoco
from tests.fakes.telegram import FakeTelegram

CHAT = 2002
SECRET = "tg-webhook-secret-0123456789"
DT_TOKEN = "dt-webhook-token-9876543210"
PUBLIC = "https://bot.example.com"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


async def eventually(predicate: Callable[[], bool], timeout: float = 10) -> None:
    """Wait until `predicate()` holds (checked every 20 ms), or fail after `timeout`."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def telegram_env(data_dir: Path, telegram: FakeTelegram, poco: FakePoco, **more: str):
    return agent_environment(
        data_dir,
        telegram=telegram,
        poco=poco,
        TELEGRAM_MODE="webhook",
        TELEGRAM_WEBHOOK_URL=PUBLIC,
        TELEGRAM_WEBHOOK_SECRET_TOKEN=SECRET,
        **more,
    )


def dingtalk_env(data_dir: Path, dingtalk: FakeDingTalk, poco: FakePoco, **more: str):
    env = agent_environment(data_dir, dingtalk=dingtalk, poco=poco, DINGTALK_STREAM_ENABLED="false")
    env.update(more)
    return env


def url(agent: RunningAgent, provider: str) -> str:
    return f"http://127.0.0.1:{agent.runtime.port}/api/v1/webhooks/{provider}"


def state(agent: RunningAgent, provider: str) -> ProviderState:
    return agent.runtime.status.providers[provider].state


def telegram_texts(fake: FakeTelegram, chat_id: int = CHAT) -> list[str]:
    return [m["text"] for m in fake.sent if m["chat_id"] == chat_id]


def new_update(fake: FakeTelegram, text: str, chat_id: int = CHAT) -> dict[str, Any]:
    """An update as Telegram would POST it (the fake also learns the chat and message)."""
    fake.inject_message(chat_id, text)
    return fake.pending_updates[-1]


async def post_update(
    client: httpx.AsyncClient, agent: RunningAgent, update: dict[str, Any], secret: str | None
) -> httpx.Response:
    headers = {SECRET_HEADER: secret} if secret is not None else {}
    return await client.post(url(agent, "telegram"), json=update, headers=headers)


def prompts(poco: FakePoco) -> list[str]:
    return [body["prompt"] for body in poco.tasks_posted]


def backend_calls(poco: FakePoco) -> list[dict[str, Any]]:
    """What chats caused: not the agent's own listings (`kind=all`) or health checks."""
    return [
        r
        for r in poco.requests
        if r["path"] != "/api/v1/health"
        and not (r["path"] == "/api/v1/sessions" and r["query"].get("kind") == "all")
    ]


# ---- Telegram ------------------------------------------------------------------------------


async def test_telegram_sets_its_webhook_and_runs_a_redelivery_once(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(telegram_env(data_dir, telegram_api, poco)) as agent:
        await eventually(lambda: state(agent, "telegram") is ProviderState.CONNECTED)
        assert telegram_api.webhook == {
            "url": f"{PUBLIC}/api/v1/webhooks/telegram",
            "secret_token": SECRET,
            "allowed_updates": list(ALLOWED_UPDATES),
        }
        assert not [c for c in telegram_api.calls if c[0] in ("getUpdates", "deleteWebhook")]
        assert agent.runtime.status.providers["telegram"].mode == "webhook"

        update = new_update(telegram_api, "/new webhook task")
        async with httpx.AsyncClient() as client:
            first, second = await asyncio.gather(
                post_update(client, agent, update, SECRET),
                post_update(client, agent, update, SECRET),
            )
            assert (first.status_code, second.status_code) == (200, 200)
            assert first.json() == {}
            third = await post_update(client, agent, new_update(telegram_api, "/help"), SECRET)
            assert third.status_code == 200
        # Chats run in order: once /help is answered, a duplicate would have run before it.
        await telegram_api.wait_for(lambda f: any("/list" in t for t in telegram_texts(f)), 10)
        assert prompts(poco) == ["webhook task"]
        assert len(telegram_texts(telegram_api)) == 2
        assert agent.runtime.status.providers["telegram"].last_ok_at is not None


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x", SECRET[:-1]])
async def test_telegram_wrong_secret_is_403_and_nothing_runs(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path, secret: str | None
) -> None:
    async with run_agent(telegram_env(data_dir, telegram_api, poco)) as agent:
        await eventually(lambda: state(agent, "telegram") is ProviderState.CONNECTED)
        update = new_update(telegram_api, "/new must not run")
        async with httpx.AsyncClient() as client:
            refused = await post_update(client, agent, update, secret)
            assert refused.status_code == 403
            assert SECRET not in refused.text
            assert telegram_texts(telegram_api) == []
            assert backend_calls(poco) == []
            # Not journaled either: the same update with the right secret still runs.
            accepted = await post_update(client, agent, update, SECRET)
            assert accepted.status_code == 200
        await telegram_api.wait_for(lambda f: len(telegram_texts(f)) == 1, 10)
        assert prompts(poco) == ["must not run"]


async def test_telegram_bad_bodies(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(telegram_env(data_dir, telegram_api, poco)) as agent:
        await eventually(lambda: state(agent, "telegram") is ProviderState.CONNECTED)
        headers = {SECRET_HEADER: SECRET, "Content-Type": "application/json"}
        async with httpx.AsyncClient() as client:
            for body in (b"{not json", b"[1, 2]", b"null", b'{"message": {}}', b"\xff\xfe"):
                answer = await client.post(url(agent, "telegram"), content=body, headers=headers)
                assert answer.status_code == 400, body
                assert "Traceback" not in answer.text
            # A malformed body without the secret is refused before it is read.
            answer = await client.post(url(agent, "telegram"), content=b"{not json")
            assert answer.status_code == 403
            too_big = b'{"update_id": 1, "x": "' + b"a" * 1_000_001 + b'"}'
            answer = await client.post(url(agent, "telegram"), content=too_big, headers=headers)
            assert answer.status_code == 413
            answer = await client.get(url(agent, "telegram"), headers=headers)
            assert answer.status_code == 405
        assert telegram_texts(telegram_api) == []
        assert backend_calls(poco) == []


async def test_telegram_paused_answers_503_then_takes_the_retry(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(telegram_env(data_dir, telegram_api, poco)) as agent:
        await eventually(lambda: state(agent, "telegram") is ProviderState.CONNECTED)
        agent.runtime.set_paused(True)
        await eventually(lambda: state(agent, "telegram") is ProviderState.CONNECTING)
        update = new_update(telegram_api, "/help")
        async with httpx.AsyncClient() as client:
            assert (await post_update(client, agent, update, SECRET)).status_code == 503
            agent.runtime.set_paused(False)
            await eventually(lambda: state(agent, "telegram") is ProviderState.CONNECTED)
            assert (await post_update(client, agent, update, SECRET)).status_code == 200
        await telegram_api.wait_for(lambda f: len(telegram_texts(f)) == 1, 10)


async def test_back_to_polling_deletes_the_webhook(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    async with run_agent(telegram_env(data_dir, telegram_api, poco)) as agent:
        await eventually(lambda: state(agent, "telegram") is ProviderState.CONNECTED)
    assert telegram_api.webhook["url"] == f"{PUBLIC}/api/v1/webhooks/telegram"
    # Sent while the webhook was set and the agent was away: kept by Telegram.
    telegram_api.inject_message(CHAT, "/help")

    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env) as agent:
        await telegram_api.wait_for(lambda f: len(telegram_texts(f)) == 1, 10)
        deletes = [params for name, params, _ in telegram_api.calls if name == "deleteWebhook"]
        assert len(deletes) == 1
        assert deletes[0].get("drop_pending_updates") in (False, "false", "False")
        assert telegram_api.webhook == {"url": ""}
        assert agent.runtime.status.providers["telegram"].mode == "polling"
        async with httpx.AsyncClient() as client:
            answer = await client.post(url(agent, "telegram"), json={"update_id": 9})
        assert answer.status_code == 404


def test_webhook_mode_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    env = {
        "IM_DATA_DIR": str(tmp_path),
        "TELEGRAM_BOT_TOKEN": "1:x",
        "TELEGRAM_MODE": "webhook",
        "TELEGRAM_WEBHOOK_URL": PUBLIC,
    }
    with pytest.raises(ConfigError) as caught:
        build_settings(env)
    assert caught.value.variable == "TELEGRAM_WEBHOOK_SECRET_TOKEN"


class FlakySink:
    def __init__(self) -> None:
        self.fail = True
        self.stored: list[InboundMessage] = []

    async def __call__(self, batch: Sequence[InboundMessage]) -> None:
        if self.fail:
            raise StoreError("disk full")
        self.stored.extend(batch)


async def test_telegram_answers_500_when_not_stored(telegram_api: FakeTelegram) -> None:
    settings = build_settings(
        {
            "TELEGRAM_BOT_TOKEN": telegram_api.token,
            "TELEGRAM_API_BASE_URL": telegram_api.url,
            "TELEGRAM_MODE": "webhook",
            "TELEGRAM_WEBHOOK_URL": PUBLIC,
            "TELEGRAM_WEBHOOK_SECRET_TOKEN": SECRET,
        }
    ).telegram
    provider = TelegramWebhookProvider(settings)
    sink = FlakySink()
    task = asyncio.create_task(provider.run(sink))
    try:
        await eventually(lambda: provider.status.state is ProviderState.CONNECTED)
        body = json.dumps(new_update(telegram_api, "hello")).encode()
        headers = {SECRET_HEADER: SECRET}
        assert (await provider.handle_webhook(headers, {}, body))[0] == 500
        assert provider.status.last_ok_at is not None  # set by the connect, not the failure
        sink.fail = False
        assert await provider.handle_webhook(headers, {}, body) == (200, {})
        assert [m.text for m in sink.stored] == ["hello"]
    finally:
        await provider.close()
        await asyncio.gather(task, return_exceptions=True)


# ---- DingTalk ------------------------------------------------------------------------------


def signed_headers(secret: str, *, age_seconds: float = 0, tamper: bool = False) -> dict[str, str]:
    timestamp = str(int((time.time() - age_seconds) * 1000))
    signature = sign(timestamp, secret)
    if tamper:
        signature = sign(timestamp, secret + "x")
    return {"timestamp": timestamp, "sign": signature}


def dingtalk_texts(fake: FakeDingTalk) -> list[str]:
    return [s.markdown.get("text", "") for s in fake.sent]


async def post_dingtalk(
    client: httpx.AsyncClient,
    agent: RunningAgent,
    payload: dict[str, Any],
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(url(agent, "dingtalk"), json=payload, headers=headers, params=params)


@pytest.mark.parametrize("where", ["query", "header", "payload"])
async def test_dingtalk_token_in_query_header_or_payload(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path, where: str
) -> None:
    env = dingtalk_env(data_dir, dingtalk_api, poco, DINGTALK_WEBHOOK_TOKEN=DT_TOKEN)
    async with run_agent(env) as agent:
        await eventually(lambda: state(agent, "dingtalk") is ProviderState.CONNECTED)
        payload = dingtalk_api.message_payload("conv-1", "/help")
        headers, params = {}, {}
        if where == "query":
            params["token"] = DT_TOKEN
        elif where == "header":
            headers["X-DingTalk-Token"] = DT_TOKEN
        else:
            payload["token"] = DT_TOKEN
        async with httpx.AsyncClient() as client:
            answer = await post_dingtalk(client, agent, payload, headers, params)
        assert (answer.status_code, answer.json()) == (200, {})
        await dingtalk_api.wait_for(lambda: len(dingtalk_api.sent) == 1, 10)
        assert "/new" in dingtalk_texts(dingtalk_api)[0]
        assert dingtalk_api.sent[0].route == "session_webhook"
        assert dingtalk_api.open_attempts == 0  # no Stream connection in webhook mode
        assert agent.runtime.status.providers["dingtalk"].mode == "webhook"
        assert agent.runtime.status.providers["dingtalk"].last_ok_at is not None


@pytest.mark.parametrize(
    ("token", "where"),
    [("", "none"), ("wrong", "query"), ("wrong", "header"), ("wrong", "payload")],
)
async def test_dingtalk_wrong_or_missing_token_is_403(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path, token: str, where: str
) -> None:
    env = dingtalk_env(data_dir, dingtalk_api, poco, DINGTALK_WEBHOOK_TOKEN=DT_TOKEN)
    async with run_agent(env) as agent:
        await eventually(lambda: state(agent, "dingtalk") is ProviderState.CONNECTED)
        payload = dingtalk_api.message_payload("conv-1", "/new must not run")
        headers, params = {}, {}
        if where == "query":
            params["token"] = token
        elif where == "header":
            headers["X-DingTalk-Token"] = token
        elif where == "payload":
            payload["token"] = token
        async with httpx.AsyncClient() as client:
            refused = await post_dingtalk(client, agent, payload, headers, params)
            assert refused.status_code == 403
            assert DT_TOKEN not in refused.text
            # Not journaled: the same msgId with the right token runs.
            accepted = await post_dingtalk(client, agent, payload, {"X-DingTalk-Token": DT_TOKEN})
            assert accepted.status_code == 200
        await dingtalk_api.wait_for(lambda: len(dingtalk_api.sent) == 1, 10)
        assert prompts(poco) == ["must not run"]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("good", 200), ("bad", 403), ("stale", 403), ("future", 403), ("none", 403)],
)
async def test_dingtalk_signature_without_a_token(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path, kind: str, expected: int
) -> None:
    async with run_agent(dingtalk_env(data_dir, dingtalk_api, poco)) as agent:
        await eventually(lambda: state(agent, "dingtalk") is ProviderState.CONNECTED)
        secret = dingtalk_api.client_secret
        headers = {
            "good": signed_headers(secret),
            "bad": signed_headers(secret, tamper=True),
            "stale": signed_headers(secret, age_seconds=3700),
            "future": signed_headers(secret, age_seconds=-3700),
            "none": {},  # no token configured and no signature: secure by default
        }[kind]
        payload = dingtalk_api.message_payload("conv-1", "/new signed task")
        async with httpx.AsyncClient() as client:
            answer = await post_dingtalk(client, agent, payload, headers)
        assert answer.status_code == expected
        if expected == 200:
            await dingtalk_api.wait_for(lambda: len(dingtalk_api.sent) == 1, 10)
            assert prompts(poco) == ["signed task"]
        else:
            assert backend_calls(poco) == []
            assert dingtalk_api.sent == []


async def test_dingtalk_signature_and_token_both_checked(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = dingtalk_env(data_dir, dingtalk_api, poco, DINGTALK_WEBHOOK_TOKEN=DT_TOKEN)
    async with run_agent(env) as agent:
        await eventually(lambda: state(agent, "dingtalk") is ProviderState.CONNECTED)
        secret = dingtalk_api.client_secret
        payload = dingtalk_api.message_payload("conv-1", "/help")
        async with httpx.AsyncClient() as client:
            good_sign_no_token = await post_dingtalk(client, agent, payload, signed_headers(secret))
            bad_sign_good_token = await post_dingtalk(
                client,
                agent,
                payload,
                {**signed_headers(secret, tamper=True), "X-DingTalk-Token": DT_TOKEN},
            )
            both = await post_dingtalk(
                client, agent, payload, {**signed_headers(secret), "X-DingTalk-Token": DT_TOKEN}
            )
        assert [good_sign_no_token.status_code, bad_sign_good_token.status_code] == [403, 403]
        assert both.status_code == 200
        await dingtalk_api.wait_for(lambda: len(dingtalk_api.sent) == 1, 10)


async def test_dingtalk_redelivery_runs_once_and_bad_bodies(
    dingtalk_api: FakeDingTalk, poco: FakePoco, data_dir: Path
) -> None:
    env = dingtalk_env(data_dir, dingtalk_api, poco, DINGTALK_WEBHOOK_TOKEN=DT_TOKEN)
    async with run_agent(env) as agent:
        await eventually(lambda: state(agent, "dingtalk") is ProviderState.CONNECTED)
        headers = {"X-DingTalk-Token": DT_TOKEN}
        payload = dingtalk_api.message_payload("conv-1", "/new only once")
        async with httpx.AsyncClient() as client:
            answers = await asyncio.gather(
                *(post_dingtalk(client, agent, payload, headers) for _ in range(3))
            )
            assert [a.status_code for a in answers] == [200, 200, 200]
            help_payload = dingtalk_api.message_payload("conv-1", "/help")
            assert (await post_dingtalk(client, agent, help_payload, headers)).status_code == 200
            json_headers = {**headers, "Content-Type": "application/json"}
            for body in (b"{nope", b"[]", b'"text"', b"{}", b"\xff"):
                answer = await client.post(
                    url(agent, "dingtalk"), content=body, headers=json_headers
                )
                assert answer.status_code == 400, body
                assert "Traceback" not in answer.text
            too_big = b"{" + b" " * 1_000_001 + b"}"
            answer = await client.post(url(agent, "dingtalk"), content=too_big, headers=headers)
            assert answer.status_code == 413
        await dingtalk_api.wait_for(lambda: len(dingtalk_api.sent) == 2, 10)
        assert prompts(poco) == ["only once"]


# ---- the signature itself ------------------------------------------------------------------


def test_sign_matches_dingtalk_example() -> None:
    # The documented recipe, written out independently of agent.chats.dingtalk_webhook.
    secret, timestamp = "SECxxxxxxxx", "1577262236757"
    expected = base64.b64encode(
        hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    ).decode()
    assert sign(timestamp, secret) == expected
    assert signature_ok(timestamp, expected, secret, now=1577262236.757)
    assert not signature_ok(timestamp, expected, secret, now=1577262236.757 + 3601)
    assert not signature_ok(timestamp, expected, "", now=1577262236.757)
    assert not signature_ok("-1577262236757", expected, secret, now=1577262236.757)


@given(
    secret=st.text(min_size=1, max_size=40),
    timestamp=st.integers(min_value=0, max_value=2**42),
    skew=st.integers(min_value=-3_599_000, max_value=3_599_000),
    other=st.text(max_size=60),
)
def test_signature_property(secret: str, timestamp: int, skew: int, other: str) -> None:
    ts = str(timestamp)
    now = (timestamp + skew) / 1000
    good = sign(ts, secret)
    assert signature_ok(ts, good, secret, now=now)
    if other != good:
        assert not signature_ok(ts, other, secret, now=now)
