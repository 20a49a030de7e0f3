"""The local HTTP server (aiohttp): health always, webhook routes in webhook modes.

Every answer is JSON and none carries a traceback: a body over `MAX_BODY_BYTES` is 413,
a wrong method 405, an unknown route (or a webhook of a provider not in webhook mode) 404,
and a bug 500 with the trace in the log only. Secrets are masked out of the health JSON.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from aiohttp import web

log = logging.getLogger(__name__)

HEALTH_PATH = "/api/v1/health"
WEBHOOK_PATH = "/api/v1/webhooks/{provider}"
MAX_BODY_BYTES = 1_000_000

Snapshot = Callable[[], dict[str, Any]]
# (headers, query, raw body) -> (HTTP status, JSON body)
WebhookHandler = Callable[
    [Mapping[str, str], Mapping[str, str], bytes], Awaitable[tuple[int, dict[str, Any]]]
]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@runtime_checkable
class WebhookReceiver(Protocol):
    """A provider that takes its platform's events over HTTP (webhook mode)."""

    name: str

    async def handle_webhook(
        self, headers: Mapping[str, str], query: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]: ...


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's HTTP errors as JSON; anything else as a bare 500 (trace in the log)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error(exc.status, exc.reason.lower())
        if exc.status == 405:
            response.headers["Allow"] = exc.headers.get("Allow", "")
        return response
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, "internal error")


class LocalServer:
    def __init__(
        self, host: str, port: int, snapshot: Snapshot, *, secrets: Iterable[str] = ()
    ) -> None:
        self.host = host
        self.port = port
        self.snapshot = snapshot
        self.webhooks: dict[str, WebhookHandler] = {}
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._runner: web.AppRunner | None = None

    def add_webhook(self, provider: str, handler: WebhookHandler) -> None:
        self.webhooks[provider] = handler

    async def start(self) -> int:
        """Start serving; return the bound port (useful when `port` was 0)."""
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_json_errors])
        app.router.add_get(HEALTH_PATH, self._health)
        app.router.add_post(WEBHOOK_PATH, self._webhook)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        if not is_loopback(self.host):
            log.warning(
                "local HTTP bound to %s:%s, reachable from other machines (IM_HTTP_HOST); "
                "use 127.0.0.1 unless a reverse proxy on another host forwards webhooks",
                self.host,
                self.port,
            )
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        text = json.dumps(self.snapshot(), ensure_ascii=False)
        for secret in self._secrets:
            text = text.replace(secret, "****")
        return web.json_response(text=text)

    async def _webhook(self, request: web.Request) -> web.StreamResponse:
        handler = self.webhooks.get(request.match_info["provider"])
        if handler is None:
            return _error(404, "not found")
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return _error(413, "request entity too large")
        body = await request.read()  # raises 413 past client_max_size (chunked bodies)
        status, answer = await handler(request.headers, request.query, body)
        return web.json_response(answer, status=status)
