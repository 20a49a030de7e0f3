"""The fake Poco backend keeps the wire details of poco-backend-api.md."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.fakes.poco import GEN_OLD, GENERATIONS, FakePoco

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture
async def http(poco: FakePoco) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{poco.url}/api/v1") as client:
        yield client


async def test_envelope_and_trace_headers(http: httpx.AsyncClient) -> None:
    response = await http.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "code": 0,
        "message": "Success",
        "data": {"service": "OpenCoWork Backend", "status": "healthy"},
    }
    assert response.headers["x-request-id"] and response.headers["x-trace-id"]


async def test_unknown_route_and_validation_shapes(http: httpx.AsyncClient) -> None:
    response = await http.get("/nope")
    assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})
    response = await http.get("/sessions/xyz")
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["type"] == "uuid_parsing" and error["loc"] == ["path", "session_id"]
    response = await http.post("/tasks", json={"session_id": None})
    assert response.json()["detail"][0]["loc"] == ["body", "prompt"]
    response = await http.post("/tasks", content=b"{not json", headers={"content-type": "x"})
    assert response.json()["detail"][0]["type"] == "json_invalid"
    response = await http.get("/sessions", params={"limit": -1})
    assert response.status_code == 500
    assert response.json() == {"code": 50000, "message": "Internal server error", "data": None}
    response = await http.post(f"/sessions/{uuid.uuid4()}/cancel")  # no body at all
    assert response.json()["detail"] == [
        {"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}
    ]


async def test_app_errors_are_400(poco: FakePoco, http: httpx.AsyncClient) -> None:
    response = await http.post("/tasks", json={"prompt": "  ", "session_id": None})
    assert response.status_code == 400
    assert response.json() == {"code": 40000, "message": "Prompt cannot be empty", "data": None}
    missing = str(uuid.uuid4())
    response = await http.get(f"/runs/session/{missing}")
    assert response.json()["code"] == 40400
    mine = poco.create_session(user_id="alice")
    response = await http.get(f"/sessions/{mine}", headers={"X-User-Id": ""})
    assert response.json()["code"] == 40300  # blank header = "default"
    response = await http.get(f"/sessions/{mine}", headers={"X-User-Id": "alice"})
    assert response.json()["data"]["user_id"] == "alice"
    assert poco.tasks_posted == []


async def test_new_session_rows_share_a_timestamp(poco: FakePoco, http: httpx.AsyncClient) -> None:
    data = (await http.post("/tasks", json={"prompt": "hi", "session_id": None})).json()["data"]
    session = poco.sessions[data["session_id"]]
    [run] = poco.runs_of(data["session_id"])
    [message] = poco.messages_of(data["session_id"])
    assert STAMP.match(session["created_at"])
    assert session["created_at"] == run["created_at"] == message["created_at"]
    assert message["text_preview"] == "hi" and session["status"] == "pending"
    assert run["status"] == "queued" and data["status"] == "queued"


async def test_message_ids_are_global_and_messages_ignores_params(
    poco: FakePoco, http: httpx.AsyncClient
) -> None:
    one, two = poco.create_session(), poco.create_session()
    ids = [poco.add_assistant_text(s, "x") for s in (one, two, one)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    for i in range(120):
        poco.add_assistant_text(one, f"m{i}")
    response = await http.get(f"/sessions/{one}/messages", params={"limit": 5, "after_id": 999})
    items = response.json()["data"]
    assert len(items) == 100 and items[0]["id"] < items[-1]["id"]
    with_files = (await http.get(f"/sessions/{one}/messages-with-files")).json()["data"]
    assert len(with_files) == 123 and with_files[-1]["attachments"] == []


async def test_follow_up_and_state_updated_at(poco: FakePoco, http: httpx.AsyncClient) -> None:
    session_id = poco.create_session(status="completed")
    before = (await http.get(f"/sessions/{session_id}/state")).json()["data"]["updated_at"]
    poco.add_assistant_text(session_id, "a message does not move updated_at")
    state = (await http.get(f"/sessions/{session_id}/state")).json()["data"]
    assert state["updated_at"] == before
    body = {"prompt": "again", "session_id": session_id}
    assert (await http.post("/tasks", json=body)).json()["data"]["status"] == "queued"
    assert poco.sessions[session_id]["status"] == "pending"
    assert [r["status"] for r in poco.runs_of(session_id)] == ["completed", "queued"]
    poco.start_run(session_id)
    assert poco.sessions[session_id]["status"] == "running"


async def test_wait_for_wakes_on_requests_and_controls(
    poco: FakePoco, http: httpx.AsyncClient
) -> None:
    waiter = asyncio.create_task(poco.wait_for(lambda p: len(p.tasks_posted) == 1, timeout=5))
    await http.post("/tasks", json={"prompt": "go", "session_id": None})
    await waiter
    session_id = next(iter(poco.sessions))

    async def executor() -> None:
        poco.start_run(session_id)
        poco.finish_run(session_id)

    task = asyncio.create_task(executor())
    await poco.wait_for(lambda: poco.sessions[session_id]["status"] == "completed", timeout=5)
    await task
    with pytest.raises(TimeoutError):
        await poco.wait_for(lambda: False, timeout=0.05)


async def test_fail_next_counts_and_prefix(poco: FakePoco, http: httpx.AsyncClient) -> None:
    poco.fail_next(503, count=2, path_prefix="/sessions")
    assert (await http.get("/health")).status_code == 200
    assert (await http.get("/sessions")).status_code == 503
    assert (await http.get("/api/v1/sessions".removeprefix("/api/v1"))).status_code == 503
    assert (await http.get("/sessions")).status_code == 200
    assert poco.count("GET", "/sessions") == 3
    assert poco.count(path_prefix="/api/v1/health") == 1


@pytest.mark.parametrize("poco_generation", GENERATIONS)
async def test_poco_fixture_follows_the_generation(poco: FakePoco, poco_generation: str) -> None:
    assert poco.generation == poco_generation
    assert FakePoco().generation == GEN_OLD


async def test_old_generation_ignores_the_token(http: httpx.AsyncClient) -> None:
    response = await http.get("/sessions", headers={"X-Internal-Token": "anything"})
    assert response.status_code == 200
    assert (await http.get(f"/sessions/{uuid.uuid4()}/messages/delta")).status_code == 404
