"""One build for both backend generations: the April 2026 token, errors by code, queued
follow-ups, delta reads, and what a 401 looks like to the owner (health, doctor, chat)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agent.backend import BackendClient
from agent.config import BackendSettings, build_settings
from agent.doctor import run_checks
from agent.errors import (
    BackendForbidden,
    BackendNotFound,
    BackendRejected,
    BackendUnauthorized,
)
from tests.conftest import agent_environment, run_agent
from tests.fakes.poco import GEN_NEW, GEN_OLD, GENERATIONS, FakePoco
from tests.fakes.telegram import FakeTelegram
from tests.test_e2e_telegram import say, texts_to

MISSING = "00000000-0000-4000-8000-000000000000"
CHAT = 4004


def backend_settings(poco: FakePoco, token: str | None = None) -> BackendSettings:
    return BackendSettings(
        url=poco.url,
        user_id="default",
        frontend_url="",
        frontend_lang="en",
        timeout=3.0,
        internal_token=poco.internal_token if token is None else token,
    )


@pytest.fixture
async def client(poco: FakePoco) -> AsyncIterator[BackendClient]:
    async with BackendClient(backend_settings(poco)) as backend:
        yield backend


@pytest.mark.parametrize("poco_generation", GENERATIONS)
async def test_the_token_goes_with_every_request(poco: FakePoco, client: BackendClient) -> None:
    await client.list_sessions(limit=1)
    await client.create_task("hello")
    assert all(c.headers.get("X-Internal-Token") == poco.internal_token for c in poco.requests)
    assert all(c.headers.get("X-User-Id") == "default" for c in poco.requests)
    assert not any("Authorization" in c.headers for c in poco.requests)


@pytest.mark.parametrize("poco_generation", [GEN_NEW])
@pytest.mark.parametrize("token", ["", "wrong-token"])
async def test_no_or_a_wrong_token_is_unauthorized_not_an_outage(
    poco: FakePoco, token: str
) -> None:
    async with BackendClient(backend_settings(poco, token)) as backend:
        with pytest.raises(BackendUnauthorized):
            await backend.list_sessions(limit=1)
        with pytest.raises(BackendUnauthorized):
            await backend.create_task("hello")


@pytest.mark.parametrize("poco_generation", GENERATIONS)
async def test_errors_are_mapped_by_code_whatever_the_status(
    poco: FakePoco, client: BackendClient
) -> None:
    with pytest.raises(BackendNotFound) as missing:
        await client.get_session(MISSING)
    assert missing.value.status == (404 if poco.is_new else 400)
    with pytest.raises(BackendNotFound):
        await client.create_task("hi", MISSING)
    other = poco.create_session(user_id="someone-else")
    with pytest.raises(BackendForbidden) as forbidden:
        await client.get_session(other)
    assert forbidden.value.status == (403 if poco.is_new else 400)
    with pytest.raises(BackendNotFound):
        await client.answer_input_request(MISSING, {"q": "a"})
    with pytest.raises(BackendRejected) as empty:
        await client.create_task("   ")
    assert "empty" in str(empty.value)


@pytest.mark.parametrize("poco_generation", GENERATIONS)
async def test_a_follow_up_behind_a_running_run(poco: FakePoco, client: BackendClient) -> None:
    session_id = poco.create_session(prompt="first")
    poco.start_run(session_id)
    task = await client.create_task("second", session_id, client_request_id="im:tg:1:42")
    again = await client.create_task("second", session_id, client_request_id="im:tg:1:42")
    if poco.is_new:
        assert task.queued and task.run_id is None and task.queued_query_count == 1
        assert again.queue_item_id == task.queue_item_id  # deduplicated by the backend
        assert len(poco.queued_queries(session_id)) == 1
    else:
        assert not task.queued and task.run_id is not None
        assert poco.tasks_posted[-1]["client_request_id"] == "im:tg:1:42"  # ignored, harmless


@pytest.mark.parametrize("poco_generation", GENERATIONS)
async def test_messages_after_reads_one_page_and_remembers_a_missing_delta_route(
    poco: FakePoco, client: BackendClient
) -> None:
    session_id = poco.create_session(prompt="long")
    poco.start_run(session_id)
    ids = [poco.add_assistant_text(session_id, f"text {i}") for i in range(1500)]
    page = await client.messages_after(session_id, 0, known_count=0)
    if poco.is_new:
        assert client.has_delta is True
        assert len(page.items) == 1000 and page.has_more
        rest = await client.messages_after(session_id, page.items[-1].id)
        assert [m.id for m in rest.items] == ids[999:] and not rest.has_more
        assert poco.count("GET", "/messages") == 0  # never the full list
    else:
        assert client.has_delta is False and page.truncated
        delta_calls = poco.count(path_prefix=f"/sessions/{session_id}/messages/delta")
        await client.messages_after(session_id, ids[10])
        # The missing route was asked once, and is not asked again.
        assert poco.count(path_prefix=f"/sessions/{session_id}/messages/delta") == delta_calls


@pytest.mark.parametrize("poco_generation", [GEN_NEW])
async def test_without_the_token_health_doctor_and_chats_name_the_variable(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    env["BACKEND_INTERNAL_TOKEN"] = ""
    async with run_agent(env) as agent:
        status = agent.runtime.status
        await telegram_api.wait_for(lambda f: status.backend.unauthorized, timeout=5)
        async with httpx.AsyncClient() as http:
            health = (await http.get(agent.health_url)).json()
        assert health["status"] == "degraded"
        assert health["backend"]["state"] == "unauthorized"
        assert "BACKEND_INTERNAL_TOKEN" in health["backend"]["detail"]
        reply = await say(telegram_api, CHAT, "/new do something")
        assert "BACKEND_INTERNAL_TOKEN" in reply and "401" in reply
        assert poco.tasks_posted == []
        assert len(texts_to(telegram_api, CHAT)) == 1  # one short reply, nothing else
    checks = {c.name: c for c in await run_checks(build_settings(env))}
    assert not checks["backend"].ok
    assert "401" in checks["backend"].detail
    assert "BACKEND_INTERNAL_TOKEN" in checks["backend"].fix


@pytest.mark.parametrize("poco_generation", [GEN_OLD])
async def test_the_older_backend_needs_no_token(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = {**agent_environment(data_dir, telegram=telegram_api, poco=poco)}
    env["BACKEND_INTERNAL_TOKEN"] = ""
    checks = {c.name: c for c in await run_checks(build_settings(env))}
    assert checks["backend"].ok, checks["backend"]


@pytest.mark.parametrize("poco_generation", [GEN_NEW])
async def test_canceling_is_stopping_not_an_end(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        await say(telegram_api, CHAT, "/new cancel me later")
        session_id = list(poco.sessions)[-1]
        poco.start_run(session_id)
        poco.add_assistant_text(session_id, "working on it")
        await telegram_api.wait_for(lambda f: any("working on it" in t for t in texts_to(f, CHAT)))
        async with httpx.AsyncClient(base_url=poco.url) as http:  # Stop in the web UI
            headers = {"X-User-Id": "default", "X-Internal-Token": poco.internal_token}
            answer = await http.post(
                f"/api/v1/sessions/{session_id}/cancel", json={}, headers=headers
            )
            assert answer.json()["data"]["status"] == "canceling"
        listing = await say(telegram_api, CHAT, "/list")
        assert "⏹️" in listing
        assert not any("canceled" in t or "failed" in t for t in texts_to(telegram_api, CHAT))
        poco.complete_cancellation(session_id)
        await telegram_api.wait_for(
            lambda f: sum("was canceled" in t for t in texts_to(f, CHAT)) == 1, timeout=10
        )


def test_settings_carry_the_token_and_hide_it(data_dir: Path) -> None:
    settings = build_settings(
        {"IM_DATA_DIR": str(data_dir), "BACKEND_INTERNAL_TOKEN": "s3cret-tok"}
    )
    assert settings.backend.internal_token == "s3cret-tok"
    assert "s3cret-tok" in settings.secrets()
    assert dataclasses.replace(settings.backend, internal_token="").internal_token == ""
