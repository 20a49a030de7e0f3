"""A fake Poco backend: a real aiohttp server speaking the wire format of poco-backend-api.md,
in either backend generation.

`FakePoco(generation=GEN_OLD)` is poco-agent 98d6fb0f (Feb 2026): no auth, app errors as
HTTP 400 with 40400/40300/40000. `FakePoco(generation=GEN_NEW)` is 619c546b (Apr 2026):
`X-Internal-Token` + `X-User-Id` or 401, real HTTP statuses (403/404/400/500), queued
queries behind a blocking run with `client_request_id` dedup, `canceling`, the
`/messages/delta` routes. Both keep the traps: `/messages` returns only the oldest 100 and
ignores its parameters, the pending list does not check `expires_at`, a terminal session
status can be temporary. FastAPI's 422 `{"detail": [...]}`, 404 `{"detail": "Not Found"}`
for unknown routes and 500/50000 for unhandled errors are the same in both.

Modules: `wire` (constants, errors, parsing, responses), `state` (rows and shared
transitions), `executor` (the test plays the executor: `start_run`, `add_assistant_text`,
`finish_run`, ...), `routes` (routes of both generations), `routes_new` (the new
generation's rules and routes), `server` (FakePoco: auth, recording, fault controls).
"""

from tests.fakes.poco.server import FakePoco
from tests.fakes.poco.wire import (
    DEFAULT_INTERNAL_TOKEN,
    GEN_NEW,
    GEN_OLD,
    GENERATIONS,
    Call,
    PostedTask,
    iso,
)

__all__ = [
    "DEFAULT_INTERNAL_TOKEN",
    "GENERATIONS",
    "GEN_NEW",
    "GEN_OLD",
    "Call",
    "FakePoco",
    "PostedTask",
    "iso",
]
