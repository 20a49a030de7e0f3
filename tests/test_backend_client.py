"""BackendClient against the fake Poco backend: envelope, error mapping, the traps."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from agent.backend import BackendClient, InputRequest, Message
from agent.backend.models import TERMINAL_RUN_STATUSES
from agent.config import BackendSettings
from agent.errors import (
    BackendForbidden,
    BackendNotFound,
    BackendRejected,
    BackendUnavailable,
)
from tests.fakes.poco import FakePoco

QUESTION = "Which format should the summary use?"
ASK_INPUT = {
    "questions": [
        {
            "question": QUESTION,
            "header": "Format",
            "options": [
                {"label": "Bullets", "description": "short list"},
                {"label": "Prose", "description": "paragraph"},
            ],
            "multiSelect": False,
        }
    ]
}


def settings(url: str, user_id: str = "default", timeout: float = 3.0) -> BackendSettings:
    return BackendSettings(
        url=url, user_id=user_id, frontend_url="", frontend_lang="en", timeout=timeout
    )


@pytest.fixture
async def client(poco: FakePoco) -> AsyncIterator[BackendClient]:
    backend = BackendClient(settings(poco.url))
    try:
        yield backend
    finally:
        await backend.aclose()


# --- envelope and basics ---


async def test_health_unwraps_the_envelope(poco: FakePoco, client: BackendClient) -> None:
    assert await client.health() == {"service": "OpenCoWork Backend", "status": "healthy"}
    assert poco.requests[-1].path == "/api/v1/health"


async def test_user_id_header_is_sent(poco: FakePoco) -> None:
    async with BackendClient(settings(poco.url, user_id="alice")) as backend:
        await backend.health()
        task = await backend.create_task("hello")
    assert poco.requests[-1].headers["X-User-Id"] == "alice"
    assert poco.sessions[task.session_id]["user_id"] == "alice"


async def test_create_then_continue(poco: FakePoco, client: BackendClient) -> None:
    task = await client.create_task("Summarise README please")
    assert task.status == "queued"
    assert poco.tasks_posted == [{"prompt": "Summarise README please", "session_id": None}]
    poco.start_run(task.session_id)
    poco.finish_run(task.session_id)
    again = await client.create_task("and now shorter", task.session_id)
    assert again.session_id == task.session_id and again.run_id != task.run_id
    session = await client.get_session(task.session_id)
    assert session.status == "pending" and session.title is None
    run, total = await client.latest_run(task.session_id)
    assert run is not None and run.run_id == again.run_id and run.status == "queued"
    assert total == 2


async def test_list_sessions_newest_first(poco: FakePoco, client: BackendClient) -> None:
    ids = [poco.create_session(prompt=f"p{i}") for i in range(3)]
    sessions = await client.list_sessions(limit=2)
    assert [s.session_id for s in sessions] == ids[::-1][:2]
    assert sessions[0].created_at.endswith("Z")
    assert [s.session_id for s in await client.list_sessions(limit=2, offset=2)] == ids[:1]


# --- error mapping ---


async def test_unknown_session_is_not_found(client: BackendClient) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(BackendNotFound) as info:
        await client.get_session(missing)
    assert (info.value.status, info.value.code) == (400, 40400)
    assert str(info.value) == f"Session not found: {missing}"
    with pytest.raises(BackendNotFound):
        await client.create_task("hi", missing)


async def test_other_users_session_is_forbidden(poco: FakePoco) -> None:
    session_id = poco.create_session(user_id="bob")
    async with BackendClient(settings(poco.url, user_id="alice")) as backend:
        with pytest.raises(BackendForbidden) as info:
            await backend.get_session(session_id)
        with pytest.raises(BackendForbidden):
            await backend.list_runs(session_id)
    assert (info.value.status, info.value.code) == (400, 40300)
    assert str(info.value) == "Session does not belong to the user"


async def test_blank_prompt_is_rejected_by_the_backend(poco: FakePoco) -> None:
    async with BackendClient(settings(poco.url)) as backend:
        with pytest.raises(BackendRejected) as info:
            await backend._call("POST", "/tasks", json={"prompt": "   ", "session_id": None})
        assert (info.value.status, info.value.code) == (400, 40000)
        assert str(info.value) == "Prompt cannot be empty"
        # The client refuses it before any call, with the same words.
        before = len(poco.requests)
        with pytest.raises(BackendRejected, match="Prompt cannot be empty"):
            await backend.create_task(" \n ")
        assert len(poco.requests) == before


async def test_422_is_rejected_with_a_short_summary(client: BackendClient) -> None:
    with pytest.raises(BackendRejected) as info:
        await client._call("GET", "/sessions/not-a-uuid")
    assert info.value.status == 422 and info.value.code is None
    assert str(info.value).startswith("path.session_id: Input should be a valid UUID")


async def test_malformed_ids_are_refused_before_calling(
    poco: FakePoco, client: BackendClient
) -> None:
    for call in (
        client.get_session("abc"),
        client.list_messages("abc"),
        client.latest_run("abc"),
        client.answer_input_request("12", {"a": "b"}),
        client.cancel_session("../tasks"),
        client.create_task("hi", "nope"),
    ):
        with pytest.raises(BackendRejected, match="Not a valid"):
            await call
    assert poco.requests == []


async def test_unknown_route_says_it_may_not_be_poco(client: BackendClient) -> None:
    with pytest.raises(BackendRejected, match="is this a Poco backend") as info:
        await client._call("GET", "/no-such-thing")
    assert info.value.status == 404


async def test_5xx_is_unavailable(poco: FakePoco, client: BackendClient) -> None:
    poco.fail_next(503, path_prefix="/sessions")
    with pytest.raises(BackendUnavailable) as info:
        await client.list_sessions()
    assert info.value.status == 503 and info.value.code == 50000
    assert await client.list_sessions() == []


async def test_envelope_500_on_negative_limit_never_sent(
    poco: FakePoco, client: BackendClient
) -> None:
    with pytest.raises(BackendRejected):
        await client.list_sessions(limit=-1)
    assert poco.requests == []
    with pytest.raises(BackendUnavailable) as info:
        await client._call("GET", "/sessions", params={"limit": -1})
    assert (info.value.status, info.value.code) == (500, 50000)


async def test_upstream_failure_code_is_unavailable(poco: FakePoco, client: BackendClient) -> None:
    poco.fail_next(400, body={"code": 50201, "message": "executor-manager down", "data": None})
    with pytest.raises(BackendUnavailable) as info:
        await client.health()
    assert (info.value.status, info.value.code) == (400, 50201)


async def test_non_json_is_unavailable(poco: FakePoco, client: BackendClient) -> None:
    poco.fail_next(502, body="<html>Bad Gateway</html>")
    with pytest.raises(BackendUnavailable, match="not JSON") as info:
        await client.health()
    assert info.value.status == 502
    poco.fail_next(200, body="<html>captive portal</html>")
    with pytest.raises(BackendUnavailable, match="not JSON"):
        await client.health()


async def test_server_down_then_back_on_the_same_port(
    poco: FakePoco, client: BackendClient
) -> None:
    await client.health()
    url = poco.url
    await poco.stop()
    with pytest.raises(BackendUnavailable):
        await client.health()
    await poco.start()
    assert poco.url == url
    assert (await client.health())["status"] == "healthy"


async def test_nothing_listening_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with BackendClient(settings(f"http://127.0.0.1:{port}")) as backend:
        with pytest.raises(BackendUnavailable, match="unreachable"):
            await backend.health()


async def test_slow_backend_times_out(poco: FakePoco) -> None:
    poco.set_delay(1.0)
    async with BackendClient(settings(poco.url, timeout=0.2)) as backend:
        with pytest.raises(BackendUnavailable, match="timed out"):
            await backend.health()


# --- messages: the 100 trap ---


async def test_list_messages_sees_past_the_oldest_100(
    poco: FakePoco, client: BackendClient
) -> None:
    session_id = poco.create_session(prompt="line 0")
    poco.start_run(session_id)
    for i in range(1, 106):
        poco.add_assistant_text(session_id, f"line {i}")
    messages = await client.list_messages(session_id)
    assert len(messages) == 106
    assert messages[-1].assistant_text() == "line 105"
    assert [m.id for m in messages] == sorted(m.id for m in messages)
    assert poco.count("GET", "/sessions/") == 2  # /messages was full: /messages-with-files
    since = poco.requests[-1].at
    again = await client.list_messages(session_id, known_count=len(messages))
    assert len(again) == 106
    assert [c.route.rsplit("/", 1)[-1] for c in poco.requests if c.at > since] == [
        "messages-with-files"
    ]


async def test_short_history_needs_one_call(poco: FakePoco, client: BackendClient) -> None:
    session_id = poco.create_session()
    poco.add_assistant_text(session_id, "hi")
    assert len(await client.list_messages(session_id)) == 2
    assert poco.count(path_prefix="/sessions/") == 1


async def test_assistant_text_filtering(poco: FakePoco, client: BackendClient) -> None:
    session_id = poco.create_session(prompt="Summarise README please")
    poco.start_run(session_id)
    poco.add_system_init(session_id)
    poco.add_tool_use(session_id, "Read", {"file_path": "README.md"})
    poco.add_tool_result(session_id, "toolu_1", "# Poco")
    poco.add_assistant_text(session_id, "hidden sub-agent chatter", parent_tool_use_id="toolu_1")
    poco.add_assistant_text(session_id, "Here is the summary.")
    poco.add_result(session_id, "Here is the summary.")
    poco.finish_run(session_id)
    messages = await client.list_messages(session_id)
    seen = [(m.role, m.assistant_text(), m.is_result) for m in messages]
    assert seen == [
        ("user", None, False),
        ("system", None, False),
        ("assistant", None, False),
        ("user", None, False),
        ("assistant", None, False),
        ("assistant", "Here is the summary.", False),
        ("assistant", "Here is the summary.", True),
    ]
    assert messages[-2].text_preview == "Here is the summary."
    assert messages[-1].text_preview is None


def test_assistant_text_matches_type_by_substring() -> None:
    content = {
        "_type": "claude_agent_sdk.types.AssistantMessage",
        "content": [
            {"_type": "TextBlock", "text": "one"},
            {"_type": "ToolUseBlock", "id": "t", "name": "Read", "input": {}},
            {"_type": "TextBlock", "text": "two"},
        ],
        "parent_tool_use_id": None,
    }
    message = Message(1, "assistant", content, "one", "2026-01-01T00:00:00.000000Z")
    assert message.assistant_text() == "one\n\ntwo"


# --- runs ---


async def test_latest_run_with_over_100_runs(poco: FakePoco, client: BackendClient) -> None:
    task = await client.create_task("first")
    for i in range(130):
        poco.start_run(task.session_id)
        poco.finish_run(task.session_id, "completed")
        await client.create_task(f"follow-up {i}", task.session_id)
    poco.start_run(task.session_id)
    poco.finish_run(task.session_id, "failed", error="RuntimeError: model overloaded")
    run, total = await client.latest_run(task.session_id)
    assert total == 131
    assert run is not None and run.status == "failed" and run.is_terminal
    assert run.last_error == "RuntimeError: model overloaded"
    assert run.run_id == poco.latest_run(task.session_id)["run_id"]
    # Knowing the count, it reads only the tail.
    since = poco.requests[-1].at
    run2, total2 = await client.latest_run(task.session_id, known_runs=total)
    assert (run2, total2) == (run, 131)
    tail = [c for c in poco.requests if c.at > since]
    assert [c.query for c in tail] == [{"limit": "100", "offset": "130"}]


async def test_latest_run_with_a_wrong_known_count(poco: FakePoco, client: BackendClient) -> None:
    session_id = poco.create_session(status="completed")
    run, total = await client.latest_run(session_id, known_runs=50)
    assert total == 1 and run is not None and run.status == "completed"
    assert run.status in TERMINAL_RUN_STATUSES


async def test_terminal_session_with_a_queued_follow_up(
    poco: FakePoco, client: BackendClient
) -> None:
    task = await client.create_task("one")
    poco.start_run(task.session_id)
    await client.create_task("two", task.session_id)
    poco.finish_run(task.session_id)
    assert (await client.get_session(task.session_id)).status == "completed"
    run, _ = await client.latest_run(task.session_id)
    assert run is not None and run.status == "queued" and not run.is_terminal


# --- input requests ---


async def test_answer_a_question(poco: FakePoco, client: BackendClient) -> None:
    session_id = poco.create_session(status="running")
    request_id = poco.add_input_request(session_id, "AskUserQuestion", ASK_INPUT)
    [request] = await client.list_input_requests()
    assert request.id == request_id and request.session_id == session_id
    assert request.expires_at is not None and request.expires_at.tzinfo is not None
    [question] = request.questions
    assert question.question == QUESTION and question.header == "Format"
    assert question.options == [("Bullets", "short list"), ("Prose", "paragraph")]
    assert question.options[0].label == "Bullets" and not question.multi_select
    assert request.plan is None
    answered = await client.answer_input_request(request_id, {QUESTION: "Bullets"})
    assert answered.status == "answered"
    assert poco.input_requests[request_id]["answers"] == {QUESTION: "Bullets"}
    assert poco.requests[-1].json == {"answers": {QUESTION: "Bullets"}}
    assert await client.list_input_requests() == []
    with pytest.raises(BackendRejected, match="Request is not pending: answered") as info:
        await client.answer_input_request(request_id, {QUESTION: "Prose"})
    assert (info.value.status, info.value.code) == (400, 40000)


async def test_plan_approval_and_session_filter(poco: FakePoco, client: BackendClient) -> None:
    one = poco.create_session(status="running")
    two = poco.create_session(status="running")
    plan_id = poco.add_input_request(one, "ExitPlanMode", {"plan": "## Plan\n1. Read"})
    poco.add_input_request(two, "AskUserQuestion", ASK_INPUT)
    [plan] = await client.list_input_requests(one)
    assert plan.id == plan_id and plan.plan == "## Plan\n1. Read" and plan.questions == []
    assert await client.list_input_requests(str(uuid.uuid4())) == []
    assert len(await client.list_input_requests()) == 2
    await client.answer_input_request(plan_id, {"approved": "true"})
    assert poco.input_requests[plan_id]["answers"] == {"approved": "true"}


async def test_stale_request_stays_listed_then_expires(
    poco: FakePoco, client: BackendClient
) -> None:
    session_id = poco.create_session(status="running")
    request_id = poco.add_input_request(session_id, "AskUserQuestion", ASK_INPUT, expires_in=-1.0)
    [stale] = await client.list_input_requests()
    assert stale.status == "pending" and stale.is_expired()
    assert stale.is_expired(datetime.now(UTC)) and stale.is_expired(0.0) is False
    with pytest.raises(BackendRejected, match="^Request expired$"):
        await client.answer_input_request(request_id, {QUESTION: "Bullets"})
    assert poco.input_requests[request_id]["status"] == "expired"
    with pytest.raises(BackendRejected, match="Request is not pending: expired"):
        await client.answer_input_request(request_id, {QUESTION: "Bullets"})
    assert await client.list_input_requests() == []


async def test_answer_errors(poco: FakePoco, client: BackendClient) -> None:
    with pytest.raises(BackendNotFound, match="User input request not found"):
        await client.answer_input_request(str(uuid.uuid4()), {"a": "b"})
    session_id = poco.create_session(status="running")
    request_id = poco.add_input_request(session_id, "ExitPlanMode", {"plan": "p"})
    with pytest.raises(BackendRejected, match="Answers must be text"):
        await client.answer_input_request(request_id, {"approved": True})  # type: ignore[dict-item]
    with pytest.raises(BackendRejected, match="answers.approved: Input should be a valid string"):
        await client._call(
            "POST", f"/user-input-requests/{request_id}/answer", json={"answers": {"approved": 1}}
        )
    with pytest.raises(BackendRejected, match="answers: Field required"):
        await client._call("POST", f"/user-input-requests/{request_id}/answer", json={})
    poco.answer_from_web(request_id, {"approved": "false"})
    with pytest.raises(BackendRejected, match="not pending: answered"):
        await client.answer_input_request(request_id, {"approved": "true"})


def test_input_request_from_api_round_trip() -> None:
    expires = datetime.now(UTC) + timedelta(seconds=30)
    raw = {
        "id": str(uuid.uuid4()),
        "session_id": str(uuid.uuid4()),
        "tool_name": "AskUserQuestion",
        "tool_input": ASK_INPUT,
        "status": "pending",
        "answers": None,
        "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "created_at": "2026-11-24T04:58:41.678488Z",
    }
    request = InputRequest.from_api(raw)
    assert request.raw == raw and request.expires_at == expires
    assert not request.is_expired() and request.is_expired(expires.timestamp() + 1)


# --- cancel ---


async def test_cancel_session(poco: FakePoco, client: BackendClient) -> None:
    session_id = poco.create_session(status="running")
    poco.add_input_request(session_id, "AskUserQuestion", ASK_INPUT)
    result = await client.cancel_session(session_id)
    assert result["canceled_runs"] == 1 and result["expired_user_input_requests"] == 1
    assert (await client.get_session(session_id)).status == "canceled"
    run, _ = await client.latest_run(session_id)
    assert run is not None and run.status == "canceled"
    assert poco.add_assistant_text(session_id, "late callback") == -1
    assert await client.list_input_requests() == []
