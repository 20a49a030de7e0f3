"""DingTalk outbound: markdown to a chat by sessionWebhook, robot OpenAPI or custom robot.

sessionWebhook while it is trusted and valid (see chats/dingtalk_route), else the robot
OpenAPI (groupMessages/send or oToMessages/batchSend with a cached access token), else
the DINGTALK_WEBHOOK_URL robot. A transient failure is raised at once (see `_send_part`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from agent.chats.base import ChatRef, OutboundMessage, PartsSent
from agent.chats.dingtalk_route import SessionWebhookPolicy
from agent.chats.text import DINGTALK_TEXT_LIMIT, split_text
from agent.config import DingTalkSettings
from agent.errors import DeliveryError, PermanentDeliveryError, RetryLater
from agent.logs import mask_url_credentials

log = logging.getLogger(__name__)

NAME = "dingtalk"
# Characters per markdown message. DingTalk caps a robot message body at roughly 20 KB;
# 4000 CJK characters stay well under it in UTF-8.
TEXT_LIMIT = DINGTALK_TEXT_LIMIT
TITLE_LIMIT = 20
# Use a sessionWebhook only with this much life left (seconds).
SESSION_WEBHOOK_MARGIN = 60.0
# Refresh the access token this long before DingTalk says it expires (seconds).
TOKEN_MARGIN = 300.0
# errcodes of the custom robot webhook that mean "too fast, later".
WEBHOOK_RATE_ERRCODES = {130101, 130102}


class DingTalkSender:
    """Sends for DingTalkProvider over the provider's HTTP session (never through a proxy)."""

    def __init__(
        self,
        settings: DingTalkSettings,
        http: Callable[[], aiohttp.ClientSession],
        session_webhooks: SessionWebhookPolicy,
    ) -> None:
        self.settings = settings
        self._http = http
        self._session_webhooks = session_webhooks
        self._base = settings.open_base_url.rstrip("/")
        self._token = ""
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()

    async def send(
        self,
        chat: ChatRef,
        message: OutboundMessage,
        *,
        first_part: int = 0,
        on_part: PartsSent | None = None,
    ) -> str:
        sent_id = ""
        parts = split_text(message.text, TEXT_LIMIT)
        for index, part in enumerate(parts):
            if index < first_part:
                continue  # delivered by an earlier attempt
            try:
                sent_id = await self._send_part(chat, title_of(part), part)
            except RetryLater as exc:
                exc.parts_sent = index
                raise
            if on_part is not None and index + 1 < len(parts):
                await on_part(index + 1)  # durable before the next part goes
        return sent_id

    async def _send_part(self, chat: ChatRef, title: str, text: str) -> str:
        """sessionWebhook while valid, else the robot OpenAPI, else DINGTALK_WEBHOOK_URL.

        A transient failure (429, 5xx, timeout) is raised at once: the message may have
        arrived, and another route would send it twice. The shared fallback group only
        serves when the OpenAPI is not configured, so a chat's messages never land in a
        group by accident.
        """
        try:
            result = await self._via_session_webhook(chat, title, text)
        except RetryLater:
            raise
        except DeliveryError as exc:
            log.info("DingTalk sessionWebhook refused, trying the OpenAPI: %s", exc)
            result = None
        if result is None:
            result = await self._via_openapi(chat, title, text)
        if result is None:
            result = await self._via_custom_webhook(chat, title, text)
        if result is None:
            raise PermanentDeliveryError(
                "no way to reach this DingTalk chat: no valid sessionWebhook, DINGTALK_CLIENT_ID/"
                "SECRET/ROBOT_CODE not set and no DINGTALK_WEBHOOK_URL",
                provider=NAME,
            )
        return result

    async def _via_session_webhook(self, chat: ChatRef, title: str, text: str) -> str | None:
        url = str(chat.route.get("session_webhook") or "")
        expires_at = float(chat.route.get("session_webhook_expires_at") or 0)
        # Checked again on use: a route stored by an older version was taken on trust.
        if not self._session_webhooks.usable(url, expires_at, time.time(), SESSION_WEBHOOK_MARGIN):
            return None
        await self._post_webhook(url, title, text, "sessionWebhook")
        return ""

    async def _via_custom_webhook(self, chat: ChatRef, title: str, text: str) -> str | None:
        if not self.settings.webhook_url:
            return None
        await self._post_webhook(self.settings.webhook_url, title, text, "DINGTALK_WEBHOOK_URL")
        return ""

    async def _post_webhook(self, url: str, title: str, text: str, what: str) -> None:
        body = {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
        status, data, retry_after = await self._request(url, body, {})
        _raise_for_status(status, data, retry_after, what)
        errcode = int(data.get("errcode", 0) or 0)
        if errcode in WEBHOOK_RATE_ERRCODES:
            raise RetryLater(f"{what}: {data.get('errmsg')}", provider=NAME, retry_after=60.0)
        if errcode != 0:
            raise PermanentDeliveryError(f"{what}: {errcode} {data.get('errmsg')}", provider=NAME)

    async def _via_openapi(self, chat: ChatRef, title: str, text: str) -> str | None:
        settings = self.settings
        if not (settings.client_id and settings.client_secret):
            return None
        robot_code = settings.robot_code or chat.route.get("robot_code") or settings.client_id
        body: dict[str, Any] = {
            "robotCode": robot_code,
            "msgKey": "sampleMarkdown",
            "msgParam": json.dumps({"title": title, "text": text}, ensure_ascii=False),
        }
        if chat.is_group:
            path = "/v1.0/robot/groupMessages/send"
            body["openConversationId"] = chat.chat_id
        else:
            staff_id = chat.route.get("sender_staff_id")
            if not staff_id:
                raise PermanentDeliveryError(
                    "1:1 DingTalk chat without a senderStaffId to send to", provider=NAME
                )
            path = "/v1.0/robot/oToMessages/batchSend"
            body["userIds"] = [staff_id]
        data = await self.openapi("POST", path, body)
        if data.get("flowControlledStaffIdList"):
            raise RetryLater(f"{path}: flow controlled", provider=NAME, retry_after=60.0)
        if data.get("invalidStaffIdList"):
            raise PermanentDeliveryError(f"{path}: invalid staff id", provider=NAME)
        return str(data.get("processQueryKey", ""))

    async def openapi(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One OpenAPI call with the cached access token (renewed once on a 401): its JSON
        answer. RetryLater on 429/5xx/network, else PermanentDeliveryError (a 403 names
        the permission the app lacks)."""
        status, data, retry_after = await self._openapi_once(method, path, body, force=False)
        if status == 401:  # token revoked or expired early: renew once
            status, data, retry_after = await self._openapi_once(method, path, body, force=True)
        _raise_for_status(status, data, retry_after, path)
        return data

    async def _openapi_once(
        self, method: str, path: str, body: dict[str, Any], *, force: bool
    ) -> tuple[int, dict[str, Any], float | None]:
        token = await self._access_token(force=force)
        headers = {"x-acs-dingtalk-access-token": token}
        return await self._request(self._base + path, body, headers, method=method)

    async def _access_token(self, *, force: bool = False) -> str:
        async with self._token_lock:
            if not force and self._token and time.monotonic() < self._token_expires:
                return self._token
            url = f"{self._base}/v1.0/oauth2/accessToken"
            body = {"appKey": self.settings.client_id, "appSecret": self.settings.client_secret}
            status, data, retry_after = await self._request(url, body, {})
            _raise_for_status(status, data, retry_after, "accessToken")
            self._token = str(data["accessToken"])
            ttl = float(data.get("expireIn", 7200))
            self._token_expires = time.monotonic() + max(ttl - TOKEN_MARGIN, ttl / 2)
            return self._token

    async def _request(
        self, url: str, body: dict[str, Any], headers: dict[str, str], *, method: str = "POST"
    ) -> tuple[int, dict[str, Any], float | None]:
        try:
            async with self._http().request(method, url, json=body, headers=headers) as resp:
                text = await resp.text()
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryLater(f"DingTalk unreachable: {describe(exc)}", provider=NAME) from exc
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {"message": text[:200]}
        return status, data if isinstance(data, dict) else {}, retry_after


def describe(exc: BaseException) -> str:
    """An error on one line, without the URL aiohttp quotes: the gateway URL carries the
    Stream ticket, a sessionWebhook URL its session (both work as credentials)."""
    if isinstance(exc, aiohttp.ClientResponseError):  # the websocket handshake too
        return f"HTTP {exc.status} {exc.message}".strip()
    return mask_url_credentials(str(exc) or type(exc).__name__)


def _raise_for_status(
    status: int, data: dict[str, Any], retry_after: float | None, what: str
) -> None:
    if 200 <= status < 300:
        return
    detail = f"{what}: HTTP {status} {data.get('code', '')} {data.get('message', '')}".strip()
    if missing := missing_permissions(data):
        detail += f" (the app lacks the permission {', '.join(missing)})"
    code = str(data.get("code", ""))
    if status == 429 or status >= 500 or "QpsLimit" in code or "Throttling" in code:
        raise RetryLater(detail, provider=NAME, retry_after=retry_after)
    raise PermanentDeliveryError(detail, provider=NAME)


def missing_permissions(data: dict[str, Any]) -> list[str]:
    """The permissions a 403 (AccessTokenPermissionDenied) says the app lacks:
    {"accessdenieddetail": {"requiredScopes": ["Card.Instance.Write"]}, ...}."""
    detail = data.get("accessdenieddetail")
    scopes = detail.get("requiredScopes") if isinstance(detail, dict) else None
    return [str(scope) for scope in scopes] if isinstance(scopes, list) else []


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def title_of(text: str) -> str:
    """The notification preview: first non-empty line without markdown marks."""
    for line in text.splitlines():
        plain = re.sub(r"[#>*_`\[\]]", "", line).strip()
        if plain:
            return plain[:TITLE_LIMIT]
    return "Poco"
