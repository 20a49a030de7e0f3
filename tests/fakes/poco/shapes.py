"""How the fake Poco shows its rows on the wire, per generation (the response schemas)."""

from __future__ import annotations

from tests.fakes.poco.wire import Json

STATE_PATCH_KEYS = ("todos", "mcp_status", "browser", "workspace_state", "current_step")
INTERNAL_KEYS = ("kind", "cancel_target_worker_id")


def session(row: Json, queue_summary: Json, new: bool) -> Json:
    """SessionResponse; the new generation adds pinning and the queued-query summary."""
    if not new:
        return {k: v for k, v in row.items() if k not in INTERNAL_KEYS}
    return {
        "session_id": row["session_id"],
        "user_id": row["user_id"],
        "project_id": row["project_id"],
        "sdk_session_id": row["sdk_session_id"],
        "title": row["title"],
        "is_pinned": row["is_pinned"],
        "pinned_at": row["pinned_at"],
        "config_snapshot": row["config_snapshot"],
        "workspace_archive_url": row["workspace_archive_url"],
        "state_patch": render_state_patch(row["state_patch"]),
        "workspace_export_status": row["workspace_export_status"],
        **queue_summary,
        "status": row["status"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def state(row: Json, queue_summary: Json, new: bool) -> Json:
    """SessionStateResponse."""
    if not new:
        keys = ("session_id", "status", "state_patch", "workspace_export_status", "updated_at")
        return {k: row[k] for k in keys}
    return {
        "session_id": row["session_id"],
        "status": row["status"],
        "state_patch": render_state_patch(row["state_patch"]),
        "workspace_export_status": row["workspace_export_status"],
        **queue_summary,
        "updated_at": row["updated_at"],
    }


def run(row: Json, new: bool) -> Json:
    """RunResponse; the new generation's carries state_patch and workspace_* (stored)."""
    if not new:
        return dict(row)
    return {**row, "state_patch": render_state_patch(row["state_patch"])}


def item(row: Json) -> Json:
    """SessionQueueItemResponse: attachments are the item's input_files."""
    snapshot = row["run_config_snapshot"] or {}
    files = snapshot.get("input_files")
    return {
        **{k: v for k, v in row.items() if k != "run_config_snapshot"},
        "attachments": list(files) if isinstance(files, list) else [],
    }


def first_text(content: Json) -> str | None:
    """98d6fb0f's text_preview: the first TextBlock's text."""
    blocks = content.get("content")
    if isinstance(blocks, list):
        for block in blocks:
            if isinstance(block, dict) and "TextBlock" in str(block.get("_type", "")):
                return str(block.get("text", ""))
    return None


def visible_text(content: Json) -> str | None:
    """619c546b's text_preview: every non-blank TextBlock stripped and joined by a blank
    line, else a ResultMessage's `result`, else `text`."""
    blocks = content.get("content")
    if isinstance(blocks, list):
        texts = [
            b["text"].strip()
            for b in blocks
            if isinstance(b, dict)
            and "TextBlock" in str(b.get("_type", ""))
            and isinstance(b.get("text"), str)
            and b["text"].strip()
        ]
        if texts:
            return "\n\n".join(texts)
    for key in ("result", "text"):
        value = content.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def render_state_patch(patch: Json | None) -> Json | None:
    """619c546b serializes state_patch through AgentCurrentState: every key, defaults filled."""
    if patch is None:
        return None
    defaults: Json = {"todos": [], "mcp_status": []}
    return {k: patch.get(k, defaults.get(k)) for k in STATE_PATCH_KEYS}
