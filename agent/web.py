"""The local HTTP server (aiohttp): health always, webhook routes in webhook modes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

HEALTH_PATH = "/api/v1/health"
MAX_BODY_BYTES = 1_000_000

Snapshot = Callable[[], dict[str, Any]]
WebhookHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LocalServer:
    def __init__(self, host: str, port: int, snapshot: Snapshot) -> None:
        self.host = host
        self.port = port
        self.snapshot = snapshot
        self.webhooks: dict[str, WebhookHandler] = {}
        self._runner: web.AppRunner | None = None

    def add_webhook(self, provider: str, handler: WebhookHandler) -> None:
        self.webhooks[provider] = handler

    async def start(self) -> int:
        """Start serving; return the bound port (useful when `port` was 0)."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_get(HEALTH_PATH, self._health)
        app.router.add_post("/api/v1/webhooks/{provider}", self._webhook)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _webhook(self, request: web.Request) -> web.StreamResponse:
        handler = self.webhooks.get(request.match_info["provider"])
        if handler is None:
            raise web.HTTPNotFound(text='{"error":"not found"}', content_type="application/json")
        return await handler(request)
