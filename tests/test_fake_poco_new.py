"""The fake Poco's new generation (poco-agent 619c546b) keeps the rules of the real one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.fakes.poco import GEN_NEW, FakePoco

USER = "alice"


@pytest.fixture
async def new_poco() -> AsyncIterator[FakePoco]:
    fake = FakePoco(generation=GEN_NEW)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def api(new_poco: FakePoco) -> AsyncIterator[httpx.AsyncClient]:
    """A client the new backend lets in: the internal token and a user id."""
    headers = {"X-Internal-Token": new_poco.internal_token, "X-User-Id": USER}
    async with httpx.AsyncClient(base_url=f"{new_poco.url}/api/v1", headers=headers) as client:
        yield client


async def post_task(
    api: httpx.AsyncClient, prompt: str, session_id: str | None = None, **extra: Any
) -> Any:
    response = await api.post("/tasks", json={"prompt": prompt, "session_id": session_id, **extra})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def prompts(poco: FakePoco, session_id: str) -> list[str]:
    return [m["text_preview"] for m in poco.messages_of(session_id) if m["role"] == "user"]


async def test_new_auth_wants_token_and_user(new_poco: FakePoco) -> None:
    token = new_poco.internal_token
    denied = {"code": 401, "message": "Authentication required", "data": None}
    cases = [
        ({}, 401),
        ({"X-User-Id": USER}, 401),
        ({"X-Internal-Token": "wrong", "X-User-Id": USER}, 401),
        ({"X-Internal-Token": token}, 401),
        ({"X-Internal-Token": token, "X-User-Id": ""}, 401),
        ({"X-Internal-Token": token, "X-User-Id": USER, "Authorization": "Bearer x"}, 401),
        ({"X-Internal-Token": token, "X-User-Id": USER, "Cookie": "poco_session=x"}, 401),
        ({"X-Internal-Token": token, "X-User-Id": USER, "Authorization": "Basic x"}, 200),
        ({"X-Internal-Token": token, "X-User-Id": USER}, 200),
    ]
    async with httpx.AsyncClient(base_url=f"{new_poco.url}/api/v1") as client:
        for headers, status in cases:
            response = await client.get("/sessions", headers=headers)
            assert response.status_code == status, headers
            if status == 401:
                assert response.json() == denied
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/nope")).json() == {"detail": "Not Found"}
        assert (await client.get("/sessions/xyz")).status_code == 401  # auth before validation
        bad_json = await client.post("/tasks", content=b"{x", headers={"content-type": "x"})
        assert bad_json.json()["detail"][0]["type"] == "json_invalid"  # decoded before auth
    assert new_poco.tasks_posted == []


async def test_single_user_mode_needs_no_token() -> None:
    fake = FakePoco(generation=GEN_NEW, auth_mode="single_user")
    await fake.start()
    try:
        mine = fake.create_session()
        async with httpx.AsyncClient(base_url=f"{fake.url}/api/v1") as client:
            response = await client.get(f"/sessions/{mine}", headers={"X-User-Id": "bob"})
            assert response.json()["data"]["user_id"] == "default"  # whatever X-User-Id says
            response = await client.get("/sessions", headers={"Authorization": "Bearer x"})
            assert response.status_code == 401
    finally:
        await fake.stop()


async def test_new_app_errors_use_real_statuses(new_poco: FakePoco, api: httpx.AsyncClient) -> None:
    missing = str(uuid.uuid4())
    response = await api.get(f"/sessions/{missing}")
    assert response.status_code == 404
    assert response.json() == {
        "code": 40400,
        "message": f"Session not found: {missing}",
        "data": None,
    }
    theirs = new_poco.create_session(user_id="bob")
    response = await api.get(f"/runs/session/{theirs}")
    assert (response.status_code, response.json()["code"]) == (403, 40300)
    response = await api.post("/tasks", json={"prompt": " ", "session_id": None})
    assert (response.status_code, response.json()["code"]) == (400, 40000)
    response = await api.get("/sessions", params={"limit": -1})
    assert (response.status_code, response.json()["code"]) == (500, 50000)
    response = await api.post(f"/user-input-requests/{missing}/answer", json={"answers": {}})
    assert (response.status_code, response.json()["code"]) == (404, 40400)
    response = await api.post("/tasks", json={"prompt": "x", "permission_mode": None})
    assert response.status_code == 422  # 619c546b wants a string or no key at all


async def test_new_shapes_of_sessions_state_and_runs(
    new_poco: FakePoco, api: httpx.AsyncClient
) -> None:
    data = await post_task(api, "  hello  ")
    assert data["accepted_type"] == "run" and data["queue_item_id"] is None
    assert data["status"] == "queued" and data["queued_query_count"] == 0
    session = (await api.get(f"/sessions/{data['session_id']}")).json()["data"]
    assert session["is_pinned"] is False and session["pinned_at"] is None
    assert session["queued_query_count"] == 0 and session["next_queued_query_preview"] is None
    assert session["state_patch"]["todos"] == [] and session["state_patch"]["browser"] is None
    assert session["config_snapshot"]["memory_enabled"] is False
    [run] = (await api.get(f"/runs/session/{data['session_id']}")).json()["data"]
    assert run["state_patch"] is None and run["workspace_export_status"] is None
    [message] = new_poco.messages_of(data["session_id"])
    assert message["text_preview"] == "hello"  # the prompt is stripped
    assert "parent_tool_use_id" not in message["content"]


async def test_delta_pages_past_a_thousand_messages(
    new_poco: FakePoco, api: httpx.AsyncClient
) -> None:
    session_id = new_poco.create_session(user_id=USER)
    for i in range(1204):
        new_poco.add_assistant_text(session_id, f"line {i}")
    route = f"/sessions/{session_id}/messages/delta"
    first = (await api.get(route)).json()["data"]
    assert len(first["items"]) == 200 and first["has_more"] is True
    seen, after = [], 0
    while True:
        page = (await api.get(route, params={"after_message_id": after, "limit": 1000})).json()
        data = page["data"]
        seen += [m["id"] for m in data["items"]]
        after = data["next_after_message_id"]
        if not data["has_more"]:
            break
    assert seen == [m["id"] for m in new_poco.messages_of(session_id)] and len(seen) == 1205
    idle = (await api.get(route, params={"after_message_id": after})).json()["data"]
    assert idle == {"items": [], "next_after_message_id": after, "has_more": False}
    files = await api.get(f"/sessions/{session_id}/messages-with-files/delta?limit=1")
    assert files.json()["data"]["items"][0]["attachments"] == []
    for params in ({"limit": 0}, {"limit": 1001}, {"after_message_id": -1}):
        assert (await api.get(route, params=params)).status_code == 422
    bare = new_poco.create_session(user_id=USER)
    new_poco.messages[bare].clear()  # as POST /sessions leaves it: no message yet
    data = (await api.get(f"/sessions/{bare}/messages/delta")).json()["data"]
    assert data == {"items": [], "next_after_message_id": None, "has_more": False}


async def test_follow_up_behind_a_run_is_queued_then_promoted(
    new_poco: FakePoco, api: httpx.AsyncClient
) -> None:
    session_id = (await post_task(api, "first"))["session_id"]
    new_poco.start_run(session_id)
    queued = await post_task(api, "second", session_id, client_request_id="m-2")
    assert queued["accepted_type"] == "queued_query" and queued["run_id"] is None
    assert queued["status"] == "queued" and queued["queued_query_count"] == 1
    assert prompts(new_poco, session_id) == ["first"] and len(new_poco.runs_of(session_id)) == 1
    state = (await api.get(f"/sessions/{session_id}/state")).json()["data"]
    assert state["status"] == "running" and state["queued_query_count"] == 1
    assert state["next_queued_query_preview"] == "second"
    again = await post_task(api, "second", session_id, client_request_id="m-2")
    assert again == queued and len(new_poco.queued_queries(session_id)) == 1
    [listed] = (await api.get(f"/sessions/{session_id}/queued-queries")).json()["data"]
    assert listed["queue_item_id"] == queued["queue_item_id"]
    assert listed["client_request_id"] == "m-2" and listed["attachments"] == []

    new_poco.add_assistant_text(session_id, "done")
    new_poco.finish_run(session_id)
    assert prompts(new_poco, session_id) == ["first", "second"]
    first_run, promoted = new_poco.runs_of(session_id)
    assert (first_run["status"], promoted["status"]) == ("completed", "queued")
    assert new_poco.sessions[session_id]["status"] == "pending"
    assert new_poco.queued_queries(session_id) == []
    [item] = new_poco.queued_queries(session_id, all_statuses=True)
    assert item["status"] == "promoted" and item["linked_run_id"] == promoted["run_id"]
    after = await post_task(api, "second", session_id, client_request_id="m-2")
    assert after["accepted_type"] == "run" and after["run_id"] == promoted["run_id"]
    assert len(new_poco.runs_of(session_id)) == 2


async def test_a_failed_run_pauses_the_queue_until_send_now(
    new_poco: FakePoco, api: httpx.AsyncClient
) -> None:
    session_id = new_poco.create_session(status="running", user_id=USER)
    one = await post_task(api, "one", session_id)
    two = await post_task(api, "two", session_id)
    new_poco.finish_run(session_id, "failed", error="RuntimeError: boom")
    assert new_poco.sessions[session_id]["status"] == "failed"
    assert [i["status"] for i in new_poco.queued_queries(session_id)] == ["paused", "paused"]
    assert new_poco.latest_run(session_id)["last_error"] == "RuntimeError: boom"
    route = f"/sessions/{session_id}/queued-queries/{two['queue_item_id']}/send-now"
    sent = (await api.post(route)).json()["data"]
    assert sent["accepted_type"] == "run" and sent["queued_query_count"] == 1
    assert prompts(new_poco, session_id)[-1] == "two"
    assert new_poco.sessions[session_id]["status"] == "pending"
    [left] = new_poco.queued_queries(session_id)
    assert (left["queue_item_id"], left["status"]) == (one["queue_item_id"], "paused")
    new_poco.start_run(session_id)
    new_poco.finish_run(session_id)  # a paused item is not promoted
    assert new_poco.sessions[session_id]["status"] == "completed"
    missing = await api.post(f"/sessions/{session_id}/queued-queries/{uuid.uuid4()}/send-now")
    assert (missing.status_code, missing.json()["code"]) == (404, 40400)


async def test_queued_queries_edit_delete_and_jump_the_queue(
    new_poco: FakePoco, api: httpx.AsyncClient
) -> None:
    session_id = new_poco.create_session(status="running", user_id=USER)
    ids = [(await post_task(api, p, session_id))["queue_item_id"] for p in ("a", "b", "c")]
    route = f"/sessions/{session_id}/queued-queries"
    edited = (await api.patch(f"{route}/{ids[0]}", json={"prompt": " a2 "})).json()["data"]
    assert edited["prompt"] == "a2"
    deleted = (await api.delete(f"{route}/{ids[1]}")).json()["data"]
    assert deleted["status"] == "canceled"
    assert (await api.delete(f"{route}/{ids[1]}")).status_code == 404
    jumped = (await api.post(f"{route}/{ids[2]}/send-now")).json()["data"]
    assert jumped["accepted_type"] == "queued_query"  # a run still blocks: head of the queue
    assert [i["prompt"] for i in new_poco.queued_queries(session_id)] == ["c", "a2"]
    new_poco.finish_run(session_id)
    assert prompts(new_poco, session_id)[-1] == "c"


async def test_a_follow_up_on_a_scheduled_session_is_a_run(
    new_poco: FakePoco, api: httpx.AsyncClient
) -> None:
    session_id = new_poco.create_session(status="running", user_id=USER, kind="scheduled")
    data = await post_task(api, "more", session_id)
    assert data["accepted_type"] == "run"  # only chat sessions queue follow-ups
    assert [r["status"] for r in new_poco.runs_of(session_id)] == ["running", "queued"]


async def test_client_request_id_dedups_queued_queries_only(
    new_poco: FakePoco, api: httpx.AsyncClient
) -> None:
    a = await post_task(api, "new one", client_request_id="same")
    b = await post_task(api, "new one", client_request_id="same")
    assert a["session_id"] != b["session_id"]  # a new session is created again
    session_id = new_poco.create_session(status="completed", user_id=USER)
    first = await post_task(api, "follow", session_id, client_request_id="f")
    retry = await post_task(api, "follow", session_id, client_request_id="f")
    assert first["accepted_type"] == "run"
    assert retry["accepted_type"] == "queued_query"  # queued behind the first one's run
    assert [p["prompt"] for p in new_poco.queued_queries(session_id)] == ["follow"]


async def test_cancel_goes_through_canceling(new_poco: FakePoco, api: httpx.AsyncClient) -> None:
    session_id = new_poco.create_session(user_id=USER)
    new_poco.start_run(session_id)
    await post_task(api, "later", session_id)
    request_id = new_poco.add_question(session_id, "Which?", ["A", "B"])
    data = (await api.post(f"/sessions/{session_id}/cancel", json={})).json()["data"]
    assert data == {
        "session_id": session_id,
        "status": "canceling",
        "canceled_runs": 0,
        "canceled_queued_queries": 1,
        "expired_user_input_requests": 1,
        "executor_cancel_status": "pending",
        "executor_cancel_target_worker_id": "executor-sim",
        "executor_cancelled": False,
    }
    assert new_poco.input_requests[request_id]["status"] == "expired"
    assert new_poco.latest_run(session_id)["status"] == "canceling"
    assert new_poco.add_assistant_text(session_id, "ignored") == -1
    assert new_poco.finish_run(session_id) is None
    response = await api.post("/tasks", json={"prompt": "x", "session_id": session_id})
    assert response.status_code == 400
    assert response.json()["message"] == "Session cancellation is still in progress"
    assert new_poco.complete_cancellation(session_id) == 1
    assert new_poco.sessions[session_id]["status"] == "canceled"
    assert new_poco.latest_run(session_id)["status"] == "canceled"
    assert (await post_task(api, "again", session_id))["accepted_type"] == "run"


async def test_cancel_with_only_queued_runs_is_at_once(
    new_poco: FakePoco, api: httpx.AsyncClient
) -> None:
    session_id = (await post_task(api, "never claimed"))["session_id"]
    data = (await api.post(f"/sessions/{session_id}/cancel", json={})).json()["data"]
    assert data["status"] == "canceled" and data["canceled_runs"] == 1
    assert data["executor_cancel_status"] == "not_required"
    assert new_poco.latest_run(session_id)["status"] == "canceled"


async def test_a_repeated_result_is_not_stored_on_the_new_generation(
    poco: FakePoco, new_poco: FakePoco
) -> None:
    for fake, stored in ((poco, True), (new_poco, False)):
        session_id = fake.create_session(status="running")
        fake.add_assistant_text(session_id, "  all done  ")
        assert (fake.add_result(session_id, "all done") > 0) is stored
        assert fake.latest_run(session_id)["usage"] is not None
        assert (fake.add_result(session_id, "something else") > 0) is True
    assert new_poco.messages[session_id][-1]["text_preview"] == "something else"


async def test_hold_tasks_keeps_the_answer_and_optionally_the_task(
    new_poco: FakePoco, api: httpx.AsyncClient
) -> None:
    for create in (True, False):
        new_poco.hold_tasks(create=create)
        sessions_before = len(new_poco.sessions)
        call = asyncio.create_task(post_task(api, f"held {create}"))
        await new_poco.wait_for(lambda p: p.tasks_held == 1)
        assert new_poco.count("POST", "/tasks") >= 1
        assert (len(new_poco.sessions) > sessions_before) is create
        assert not call.done()
        new_poco.release_tasks()
        data = await asyncio.wait_for(call, 5)
        assert data["session_id"] in new_poco.sessions and new_poco.tasks_held == 0


async def test_stop_cuts_off_a_held_task(new_poco: FakePoco, api: httpx.AsyncClient) -> None:
    new_poco.hold_tasks()
    call = asyncio.create_task(api.post("/tasks", json={"prompt": "cut", "session_id": None}))
    await new_poco.wait_for(lambda p: p.tasks_held == 1)
    await asyncio.wait_for(new_poco.stop(), 5)
    with pytest.raises(httpx.TransportError):
        await call
    await new_poco.start()
    assert [t["prompt"] for t in new_poco.tasks_posted] == ["cut"]
    assert (await post_task(api, "after restart"))["accepted_type"] == "run"


async def test_count_by_route_and_web_tasks(new_poco: FakePoco, api: httpx.AsyncClient) -> None:
    data = new_poco.post_task_from_web("from the web UI", user_id=USER)
    session_id = data["session_id"]
    await api.get(f"/sessions/{session_id}/messages/delta")
    await api.get(f"/sessions/{session_id}/messages/delta")
    await api.get("/sessions")
    counts = new_poco.count_by_route()
    assert counts["GET /sessions/{session_id}/messages/delta"] == 2
    assert counts["GET /sessions"] == 1 and new_poco.tasks_posted == []
