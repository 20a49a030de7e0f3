"""The fake Poco's file routes keep the wire details of both generations (checked live
against 98d6fb0f and 619c546b without S3, and in their source)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.fakes.poco import GENERATIONS, FakePoco

pytestmark = pytest.mark.parametrize("poco_generation", GENERATIONS, ids=lambda g: f"poco-{g}")


@pytest.fixture
async def http(poco: FakePoco) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"X-User-Id": "alice", "X-Internal-Token": poco.internal_token}
    async with httpx.AsyncClient(base_url=f"{poco.url}/api/v1", headers=headers) as client:
        yield client


async def test_upload_gives_an_input_file_the_task_takes(
    http: httpx.AsyncClient, poco: FakePoco
) -> None:
    files = {"file": ("notes.txt", b"hello", "text/plain")}
    response = await http.post("/attachments/upload", files=files)
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Attachment uploaded successfully"
    item = body["data"]
    assert item["type"] == "file" and item["name"] == "notes.txt" and item["size"] == 5
    assert item["source"] == f"attachments/alice/{item['id']}/file"
    assert item["content_type"] == "text/plain" and item["path"] is None
    task = {"prompt": "read it", "config": {"input_files": [item]}}
    response = await http.post("/tasks", json=task)
    session_id = response.json()["data"]["session_id"]
    [run] = poco.runs_of(session_id)
    assert poco.input_files_of_run(run) == [item]
    # An InputFile without `source` is a validation error, as pydantic reports it.
    bad = {"prompt": "x", "config": {"input_files": [{"name": "a"}]}}
    response = await http.post("/tasks", json=bad)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "config", "input_files", 0, "source"]


async def test_upload_without_storage_and_over_the_limit(
    http: httpx.AsyncClient, poco: FakePoco
) -> None:
    poco.storage = False
    response = await http.post("/attachments/upload", files={"file": ("a.png", b"x", "image/png")})
    assert response.status_code == (500 if poco.is_new else 400)
    body = response.json()
    assert (body["code"], body["message"]) == (50201, "Failed to upload file")
    assert body["data"]["key"].startswith("attachments/alice/")
    poco.max_upload_mb = 1
    big = b"x" * (1024 * 1024 + 1)
    response = await http.post("/attachments/upload", files={"file": ("big.bin", big)})
    assert response.status_code == 413
    assert response.json() == {
        "code": 413,
        "message": "File too large. Max 1MB.",
        "data": {"max_bytes": 1024 * 1024, "actual_bytes": len(big)},
    }
    response = await http.post("/attachments/upload", data={"x": "y"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]
    assert poco.uploads == []


async def test_transcription_exists_on_the_new_generation_only(
    http: httpx.AsyncClient, poco: FakePoco
) -> None:
    files = {"file": ("voice.ogg", b"OggS...", "audio/ogg")}
    response = await http.post("/audio/transcriptions", files=files)
    if not poco.is_new:
        assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})
        return
    assert response.status_code == 400
    assert response.json() == {
        "code": 40000,
        "message": "OPENAI_API_KEY is required for audio transcription",
        "data": None,
    }
    poco.set_transcription("  list the files  ")
    response = await http.post("/audio/transcriptions", files=files, data={"language": "en"})
    assert response.json()["data"] == {"text": "list the files"}
    assert poco.transcriptions[-1]["language"] == "en"


async def test_workspace_files_before_and_after_the_export(
    http: httpx.AsyncClient, poco: FakePoco
) -> None:
    session_id = poco.create_session(user_id="alice", status="completed")
    response = await http.get(f"/sessions/{session_id}/workspace/files")
    assert response.json() == {"code": 0, "message": "Workspace export not ready", "data": []}
    poco.export_workspace(session_id, {"report.md": b"# Report", "src/b.py": b"print(1)"})
    response = await http.get(f"/sessions/{session_id}/workspace/files")
    nodes = response.json()["data"]
    assert [n["name"] for n in nodes] == ["src", "report.md"]  # folders first
    assert nodes[0]["type"] == "folder" and nodes[0]["children"][0]["path"] == "/src/b.py"
    report = nodes[1]
    assert report["oss_meta"]["size"] == 8 and report["mimeType"] == "text/markdown"
    assert ("source" in report) is poco.is_new
    async with httpx.AsyncClient() as s3:
        assert (await s3.get(report["url"])).content == b"# Report"
        assert (await s3.get(report["url"].split("?")[0])).status_code == 403
    response = await http.get(f"/sessions/{uuid.uuid4()}/workspace/files")
    assert response.json()["code"] == 40400
    poco.storage = False
    response = await http.get(f"/sessions/{session_id}/workspace/files")
    assert response.json()["code"] == 50201
