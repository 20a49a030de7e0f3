"""The fake Poco's file routes (both generations unless noted), faithful to 619c546b/98d6fb0f:

* `POST /attachments/upload` (multipart `file`) -> an InputFile `{id, type: "file", name,
  source: "attachments/{user}/{id}/file", size, content_type, path: null}`; over
  MAX_UPLOAD_SIZE_MB (100) 413 `{"code": 413, "message": "File too large. Max 100MB.",
  "data": {max_bytes, actual_bytes}}`; without S3 code 50201 "Failed to upload file" (HTTP
  400 old, 500 new) after the size check.
* `POST /audio/transcriptions` (new generation only; multipart `file`, optional `language`)
  -> `{text}`; without OPENAI_API_KEY 400/40000 "OPENAI_API_KEY is required for audio
  transcription"; over MAX_AUDIO_UPLOAD_SIZE_MB (25) 413 `{"detail": "Audio file too
  large. Max 25MB."}` (an HTTPException, no envelope).
* `GET /sessions/{id}/workspace/files`: `[]` with message "Workspace export not ready"
  until the executor exported the workspace (`export_workspace`), then FileNodes (folders
  first, by name) whose files carry a presigned `url` and `oss_meta.size`; reading the
  manifest without S3 is 50201 "Failed to fetch workspace manifest".
* The presigned URLs point at this server's `/s3/...` (the "S3"), outside the API.
* `POST /tasks` validates `config.input_files` (name and source required); the old
  generation keeps them on the run's config_snapshot as the new one does.

Test controls: `storage` (S3 configured or not), `max_upload_mb`, `set_transcription`,
`hold_uploads`/`release_uploads`, and the records `uploads`, `transcriptions`, `objects`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import mimetypes
import re
import uuid
from typing import Any

from aiohttp import BodyPartReader, web

from tests.fakes.poco.state import PocoState
from tests.fakes.poco.wire import (
    CURRENT_USER,
    AppError,
    Invalid,
    Json,
    envelope_error,
    http_status,
    ok,
    path_uuid,
)

S3_PREFIX = "/s3/"
DEFAULT_MAX_UPLOAD_MB = 100  # MAX_UPLOAD_SIZE_MB
MAX_AUDIO_UPLOAD_MB = 25  # MAX_AUDIO_UPLOAD_SIZE_MB
CHUNK = 64 * 1024
MISSING_FILE: Json = {
    "type": "missing",
    "loc": ["body", "file"],
    "msg": "Field required",
    "input": None,
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


class FileRoutes(PocoState):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.storage = True  # S3 configured: False answers 50201 as the live backends do
        self.max_upload_mb = DEFAULT_MAX_UPLOAD_MB
        self.transcription: str | None = None  # None: no OPENAI_API_KEY on the backend
        self.uploads: list[Json] = []  # every stored upload: user, name, size, sha256, ...
        self.upload_attempts = 0  # upload requests that reached the route (any outcome)
        self.transcriptions: list[Json] = []
        self.objects: dict[str, bytes] = {}  # the "S3": key -> content
        self.uploads_held = 0
        self._hold_after = -1  # hold uploads once this many are stored (-1: none)
        self._upload_gate = asyncio.Event()
        self._upload_gate.set()

    # -- test controls -------------------------------------------------------------------

    def set_transcription(self, text: str | None) -> None:
        """Configure OPENAI_API_KEY (every recording is heard as `text`), or remove it."""
        self.transcription = text

    def hold_uploads(self, *, skip: int = 0) -> None:
        """After the next `skip` uploads, hold every upload once it is stored (the backend
        has the file, the client has no answer) until `release_uploads()`;
        `uploads_held` counts the waiting ones."""
        self._hold_after = len(self.uploads) + skip
        self._upload_gate.clear()

    def release_uploads(self) -> None:
        self._hold_after = -1
        self._upload_gate.set()

    def input_files_of_run(self, run: Json) -> list[Json]:
        snapshot = run.get("config_snapshot") or {}
        return list(snapshot.get("input_files") or [])

    # -- executor side -------------------------------------------------------------------

    def export_workspace(self, session_id: str, files: dict[str, bytes]) -> None:
        """The executor-manager exported the session's workspace: a manifest in S3 listing
        `files` (path -> content), stored under the session's prefix."""
        prefix = f"workspaces/{session_id}/files"
        entries = []
        for path, content in files.items():
            clean = "/" + path.strip("/")
            key = f"{prefix}{clean}"
            self.objects[key] = content
            mime = mimetypes.guess_type(clean)[0]
            entries.append({"path": clean, "key": key, "size": len(content), "mimeType": mime})
        manifest_key = f"workspaces/{session_id}/manifest.json"
        self.objects[manifest_key] = json.dumps({"files": entries}).encode()
        self._touch_session(
            session_id,
            workspace_files_prefix=prefix,
            workspace_manifest_key=manifest_key,
            workspace_archive_key=f"workspaces/{session_id}/workspace.zip",
            workspace_export_status="ready",
        )
        self._poke()

    def set_file_changes(self, session_id: str, paths: list[str]) -> None:
        """A callback's state_patch whose workspace_state lists these changed files."""
        changes = [
            {"path": p, "status": "added", "added_lines": 1, "deleted_lines": 0, "diff": None}
            for p in paths
        ]
        patch = {
            "todos": [],
            "mcp_status": [],
            "browser": None,
            "current_step": None,
            "workspace_state": {
                "repository": None,
                "branch": None,
                "total_added_lines": len(paths),
                "total_deleted_lines": 0,
                "file_changes": changes,
                "last_change": self._clock.stamp(),
            },
        }
        self.set_state_patch(session_id, patch)  # type: ignore[attr-defined]

    # -- routes --------------------------------------------------------------------------

    def _file_routes(self, app: web.Application) -> None:
        r = app.router
        base = "/api/v1"
        r.add_post(f"{base}/attachments/upload", self._upload)
        r.add_get(f"{base}/sessions/{{session_id}}/workspace/files", self._workspace_files)
        if self.is_new:
            r.add_post(f"{base}/audio/transcriptions", self._transcribe)
        r.add_get(S3_PREFIX + "{key:.+}", self._s3_get)

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        self.upload_attempts += 1
        form = await _read_form(request)
        upload = form.get("file")
        if not isinstance(upload, _Upload):
            raise Invalid(MISSING_FILE)
        user = CURRENT_USER.get()
        name = _normalize_name(upload.filename)
        attachment_id = str(uuid.uuid4())
        key = f"attachments/{user}/{attachment_id}/file"
        max_bytes = self.max_upload_mb * 1024 * 1024
        if upload.size > max_bytes:
            body = {
                "code": 413,
                "message": f"File too large. Max {self.max_upload_mb}MB.",
                "data": {"max_bytes": max_bytes, "actual_bytes": upload.size},
            }
            return web.json_response(body, status=413)
        if not self.storage:
            data = {"key": key, "error": 'Could not connect to the endpoint URL: "s3"'}
            body = {"code": 50201, "message": "Failed to upload file", "data": data}
            return web.json_response(body, status=http_status(50201, self.generation))
        self.objects[key] = upload.content
        input_file = {
            "id": attachment_id,
            "type": "file",
            "name": name,
            "source": key,
            "size": upload.size,
            "content_type": upload.content_type,
            "path": None,
        }
        self.uploads.append(
            {
                "user": user,
                "name": name,
                "size": upload.size,
                "content_type": upload.content_type,
                "sha256": hashlib.sha256(upload.content).hexdigest(),
                "input_file": input_file,
            }
        )
        self._poke()
        if 0 <= self._hold_after < len(self.uploads) and not self._upload_gate.is_set():
            self.uploads_held += 1
            self._poke()
            try:
                await self._upload_gate.wait()
            finally:
                self.uploads_held -= 1
        return ok(input_file, "Attachment uploaded successfully")

    async def _transcribe(self, request: web.Request) -> web.StreamResponse:
        form = await _read_form(request)
        upload = form.get("file")
        if not isinstance(upload, _Upload):
            raise Invalid(MISSING_FILE)
        if upload.size > MAX_AUDIO_UPLOAD_MB * 1024 * 1024:
            detail = f"Audio file too large. Max {MAX_AUDIO_UPLOAD_MB}MB."
            return web.json_response({"detail": detail}, status=413)
        if self.transcription is None:
            raise AppError(40000, "OPENAI_API_KEY is required for audio transcription")
        language = form.get("language")
        self.transcriptions.append(
            {
                "name": upload.filename,
                "size": upload.size,
                "content_type": upload.content_type,
                "language": language if isinstance(language, str) else None,
                "sha256": hashlib.sha256(upload.content).hexdigest(),
            }
        )
        self._poke()
        return ok({"text": self.transcription.strip()}, "Audio transcribed successfully")

    async def _workspace_files(self, request: web.Request) -> web.StreamResponse:
        session = self._owned_session(path_uuid(request, "session_id"), CURRENT_USER.get())
        manifest_key = session.get("workspace_manifest_key")
        if not manifest_key:
            return ok([], "Workspace export not ready")
        if not self.storage:
            return envelope_error(
                http_status(50201, self.generation), 50201, "Failed to fetch workspace manifest"
            )
        manifest = json.loads(self.objects[manifest_key])
        nodes = _tree(manifest["files"], self._presign, self.is_new)
        return ok(nodes, "Workspace files retrieved")

    def _presign(self, key: str) -> str:
        signature = hashlib.sha256(key.encode()).hexdigest()
        return f"{self.url}{S3_PREFIX}{key}?X-Amz-Expires=3600&X-Amz-Signature={signature}"  # type: ignore[attr-defined]

    async def _s3_get(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        signature = hashlib.sha256(key.encode()).hexdigest()
        content = self.objects.get(key)
        if request.query.get("X-Amz-Signature") != signature or content is None:
            body = "<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>"
            return web.Response(status=403, text=body, content_type="application/xml")
        mime = mimetypes.guess_type(key)[0] or "application/octet-stream"
        response = web.StreamResponse(headers={"Content-Type": mime})
        response.content_length = len(content)
        await response.prepare(request)
        for start in range(0, len(content), CHUNK):
            await response.write(content[start : start + CHUNK])
        await response.write_eof()
        return response

    # -- POST /tasks: config.input_files -------------------------------------------------

    def _enqueue(self, body: Json, user: str) -> Json:
        files = _input_files(body)
        data = super()._enqueue(body, user)  # type: ignore[misc]
        if files and not self.is_new and data.get("run_id"):
            # 98d6fb0f TaskService: input_files go on the run's snapshot only.
            run = next(r for r in self.runs[data["session_id"]] if r["run_id"] == data["run_id"])
            run["config_snapshot"] = {**(run["config_snapshot"] or {}), "input_files": files}
        return dict(data)


class _Upload:
    def __init__(self, filename: str, content_type: str, content: bytes) -> None:
        self.filename, self.content_type, self.content = filename, content_type, content

    @property
    def size(self) -> int:
        return len(self.content)


async def _read_form(request: web.Request) -> dict[str, Any]:
    """A multipart form as FastAPI reads it (files spooled whole, text fields as str)."""
    if not request.content_type.startswith("multipart/form-data"):
        return dict(await request.post())  # a urlencoded form has no file
    form: dict[str, Any] = {}
    reader = await request.multipart()
    while True:
        part = await reader.next()
        if part is None:
            return form
        assert isinstance(part, BodyPartReader)
        chunks = []
        while chunk := await part.read_chunk(CHUNK):
            chunks.append(chunk)
        content = b"".join(chunks)
        if part.filename is not None:
            content_type = part.headers.get("Content-Type", "application/octet-stream")
            form[part.name or ""] = _Upload(part.filename, content_type, content)
        else:
            form[part.name or ""] = content.decode()


def _normalize_name(filename: str) -> str:
    """619c546b _normalize_upload_filename."""
    raw = (filename or "").strip().replace("\\", "/").split("/")[-1].strip()
    raw = _CONTROL.sub("", raw).strip()
    return raw or "upload.bin"


def _input_files(body: Json) -> list[Json]:
    """TaskConfig.input_files as pydantic validates InputFile: name and source required."""
    config = body.get("config")
    files = config.get("input_files") if isinstance(config, dict) else None
    if files is None:
        return []
    if not isinstance(files, list):
        raise Invalid(
            {
                "type": "list_type",
                "loc": ["body", "config", "input_files"],
                "msg": "Input should be a valid list",
                "input": files,
            }
        )
    errors = []
    for index, item in enumerate(files):
        for name in ("name", "source"):
            if not isinstance(item, dict) or not isinstance(item.get(name), str):
                loc = ["body", "config", "input_files", index, name]
                errors.append(
                    {"type": "missing", "loc": loc, "msg": "Field required", "input": item}
                )
    if errors:
        raise Invalid(*errors)
    return [
        {
            "id": f.get("id"),
            "type": f.get("type", "file"),
            "name": f["name"],
            "source": f["source"],
            "size": f.get("size"),
            "content_type": f.get("content_type"),
            "path": f.get("path"),
        }
        for f in files
    ]


def _tree(entries: list[Json], presign: Any, new: bool) -> list[Json]:
    """workspace_manifest._build_tree_from_files + build_workspace_file_nodes: folders
    first then files, each by name (case-insensitive); files get a presigned url."""
    root: dict[str, Any] = {}
    for entry in entries:
        parts = [p for p in entry["path"].strip("/").split("/") if p]
        level = root
        for depth, part in enumerate(parts):
            if depth == len(parts) - 1:
                level[part] = ("file", entry)
            else:
                folder = level.setdefault(part, ("folder", "/" + "/".join(parts[: depth + 1]), {}))
                level = folder[2]
    return _nodes(root, presign, new)


def _nodes(level: dict[str, Any], presign: Any, new: bool) -> list[Json]:
    def order(item: tuple[str, Any]) -> tuple[int, str]:
        return (1 if item[1][0] == "file" else 0, item[0].lower())

    nodes = []
    for name, payload in sorted(level.items(), key=order):
        if payload[0] == "file":
            entry = payload[1]
            node = _node(name, "file", entry["path"], None, new)
            node.update(
                url=presign(entry["key"]),
                mimeType=entry.get("mimeType"),
                oss_meta={"key": entry["key"], "size": entry["size"]},
            )
        else:
            node = _node(name, "folder", payload[1], _nodes(payload[2], presign, new), new)
        nodes.append(node)
    return nodes


def _node(name: str, kind: str, path: str, children: list[Json] | None, new: bool) -> Json:
    node: Json = {
        "id": path,
        "name": name,
        "type": kind,
        "path": path,
        "children": children,
        "url": None,
        "mimeType": None,
        "oss_status": None,
        "oss_meta": None,
    }
    if new:  # 619c546b FileNode adds where a file lives (workspace or a local mount)
        node.update(source="workspace", mount_id=None, access_mode=None)
    return node
