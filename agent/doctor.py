"""`poco-im-agent doctor`: one check per line (config, data dir, backend, Telegram, DingTalk)."""

from __future__ import annotations

import asyncio
import socket
import tempfile
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

import httpx

from agent import __version__
from agent.backend.client import BackendClient
from agent.chats.dingtalk_send import missing_permissions
from agent.config import Settings
from agent.errors import BackendError, BackendUnauthorized

TIMEOUT_SECONDS = 10.0
DINGTALK_ROBOT_TOPIC = "/v1.0/im/bot/messages/get"


class Check(NamedTuple):
    name: str
    ok: bool
    detail: str
    fix: str = ""


def format_check(check: Check) -> str:
    mark = "ok  " if check.ok else "FAIL"
    line = f"{mark}  {check.name}: {check.detail}"
    if not check.ok and check.fix:
        line += f"\n      fix: {check.fix}"
    return line


def config_failure(problem: str, fix: str) -> Check:
    return Check("config", False, problem, fix)


def check_config(settings: Settings) -> Check:
    enabled = []
    if settings.telegram.enabled:
        enabled.append(f"telegram ({settings.telegram.mode})")
    if settings.dingtalk.enabled:
        enabled.append(f"dingtalk ({'stream' if settings.dingtalk.stream_enabled else 'webhook'})")
    if not enabled:
        return Check(
            "config",
            False,
            f"no chat platform configured ({settings.config_file})",
            f"Set TELEGRAM_BOT_TOKEN, or DINGTALK_CLIENT_ID and DINGTALK_CLIENT_SECRET, in "
            f"{settings.config_file} (`poco-im-agent config init` writes a template).",
        )
    return Check("config", True, ", ".join(enabled) + f"; access policy {settings.access_policy}")


def check_data_dir(settings: Settings) -> Check:
    data_dir = settings.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check(
            "data dir",
            False,
            f"{data_dir} is not writable: {exc.strerror or exc}",
            "Fix the folder's permissions, or set IM_DATA_DIR to a writable folder.",
        )
    return Check("data dir", True, f"{data_dir} is writable")


def _network_error(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return str(exc) or type(exc).__name__


async def check_backend(settings: Settings) -> Check:
    url = f"{settings.backend.url}/api/v1/health"
    fix = f"Start the Poco backend, or set BACKEND_URL to its address (now {settings.backend.url})."
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        return Check("backend", False, f"{url}: {_network_error(exc)}", fix)
    try:
        body = response.json()
    except ValueError:
        body = None
    data = body.get("data") if isinstance(body, dict) else None
    if response.status_code != 200 or not isinstance(data, dict) or not data.get("service"):
        return Check(
            "backend",
            False,
            f"{url} answered HTTP {response.status_code}, not as a Poco backend",
            f"BACKEND_URL ({settings.backend.url}) points at something else: use the Poco "
            "backend's base URL (the one the web UI calls, usually port 8000).",
        )
    return await check_backend_auth(settings, str(data["service"]))


async def check_backend_auth(settings: Settings, service: str) -> Check:
    """A user route, as the agent calls it: April 2026 backends answer 401 without a token."""
    async with BackendClient(settings.backend) as backend:
        try:
            await backend.list_sessions(limit=1)
        except BackendUnauthorized:
            given = "a wrong one is set" if settings.backend.internal_token else "none is set"
            return Check(
                "backend",
                False,
                f"{settings.backend.url} answers as {service} but refuses the agent "
                f"(HTTP 401: BACKEND_INTERNAL_TOKEN, {given})",
                "Set BACKEND_INTERNAL_TOKEN to the backend's INTERNAL_API_TOKEN "
                "(from its .env), then start the agent again.",
            )
        except BackendError as exc:
            return Check(
                "backend",
                False,
                f"{settings.backend.url} answers as {service}, but listing sessions failed: "
                f"{str(exc)[:200]}",
                "Check the backend's log; BACKEND_USER_ID must be a user the backend knows.",
            )
    return Check("backend", True, f"{settings.backend.url} answers as {service}")


async def _telegram_call(
    client: httpx.AsyncClient, settings: Settings, method: str
) -> tuple[bool, Any, str]:
    """(ok, result, error text) of one Bot API call; the token never shows in the text."""
    token = settings.telegram.token
    url = f"{settings.telegram.api_base_url}/bot{token}/{method}"
    try:
        response = await client.get(url)
        body = response.json()
    except httpx.HTTPError as exc:
        return False, None, _network_error(exc).replace(token, "****")
    except ValueError:
        return False, None, f"HTTP {response.status_code}, not a Bot API answer"
    if isinstance(body, dict) and body.get("ok"):
        return True, body.get("result"), ""
    description = body.get("description", "") if isinstance(body, dict) else ""
    return False, None, f"HTTP {response.status_code} {description}".strip()


async def check_telegram(settings: Settings) -> list[Check]:
    telegram = settings.telegram
    proxy = telegram.proxy_url or None
    async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS, proxy=proxy) as client:
        ok, me, error = await _telegram_call(client, settings, "getMe")
        if not ok:
            unauthorized = "401" in error or "404" in error
            fix = (
                "The token is wrong or revoked: copy it again from @BotFather into "
                "TELEGRAM_BOT_TOKEN."
                if unauthorized
                else f"Telegram ({telegram.api_base_url}) is not reachable from here: set "
                "TELEGRAM_PROXY_URL (http:// or socks5://) if a firewall blocks it."
            )
            return [Check("telegram getMe", False, error, fix)]
        checks = [Check("telegram getMe", True, f"bot @{me.get('username', '?')}")]
        ok, info, error = await _telegram_call(client, settings, "getWebhookInfo")
    if not ok:
        checks.append(Check("telegram webhook", False, error, "Retry; check TELEGRAM_PROXY_URL."))
        return checks
    webhook = str(info.get("url", "")) if isinstance(info, dict) else ""
    if telegram.mode == "polling" and webhook:
        checks.append(
            Check(
                "telegram webhook",
                False,
                f"a webhook is set ({webhook}) while TELEGRAM_MODE=polling: getUpdates gets 409 "
                "and no message arrives",
                "Stop whatever set it (an old IM service?), then restart poco-im-agent: it "
                "deletes the webhook when it starts polling.",
            )
        )
    elif telegram.mode == "webhook" and not webhook.startswith(telegram.webhook_url):
        checks.append(
            Check(
                "telegram webhook",
                False,
                f"webhook is {webhook or 'not set'}",
                f"Start poco-im-agent: it sets {telegram.webhook_url}/api/v1/webhooks/telegram.",
            )
        )
    else:
        checks.append(Check("telegram webhook", True, webhook or "none (polling)"))
    return checks


async def check_dingtalk(settings: Settings) -> list[Check]:
    dingtalk = settings.dingtalk
    base = dingtalk.open_base_url
    wrong_credentials = (
        "Copy appKey/appSecret again from the DingTalk developer console into "
        "DINGTALK_CLIENT_ID and DINGTALK_CLIENT_SECRET."
    )
    unreachable = f"Check the network to {base} (DINGTALK_OPEN_BASE_URL)."
    async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as client:
        try:
            response = await client.post(
                f"{base}/v1.0/oauth2/accessToken",
                json={"appKey": dingtalk.client_id, "appSecret": dingtalk.client_secret},
            )
        except httpx.HTTPError as exc:
            return [Check("dingtalk token", False, _network_error(exc), unreachable)]
        token = str(_json(response).get("accessToken", ""))
        token_ok = response.status_code == 200 and bool(token)
        checks = [
            Check(
                "dingtalk token",
                token_ok,
                "access token issued" if token_ok else _dingtalk_error(response),
                wrong_credentials if response.status_code < 500 else unreachable,
            )
        ]
        if token_ok and dingtalk.card_template_id:
            card_id = f"poco_doctor_{uuid.uuid4().hex}"
            card = await check_dingtalk_card(client, settings, token, card_id)
            checks.append(card)
            if card.ok:
                checks.append(await check_dingtalk_streaming(client, settings, token, card_id))
        if not dingtalk.stream_enabled:
            return checks
        try:
            response = await client.post(
                f"{base}/v1.0/gateway/connections/open", json=_open_body(settings)
            )
        except httpx.HTTPError as exc:
            return [*checks, Check("dingtalk gateway", False, _network_error(exc), unreachable)]
    body = _json(response)
    gateway_ok = response.status_code == 200 and bool(body.get("endpoint"))
    checks.append(
        Check(
            "dingtalk gateway",
            gateway_ok,
            "Stream gateway open" if gateway_ok else _dingtalk_error(response),
            wrong_credentials + " Enable Stream mode for the robot."
            if response.status_code < 500
            else unreachable,
        )
    )
    return checks


async def check_dingtalk_card(
    client: httpx.AsyncClient, settings: Settings, token: str, card_id: str = ""
) -> Check:
    """A card instance from DINGTALK_CARD_TEMPLATE_ID can be created (it is delivered to
    nobody): the template is published and the app has Card.Instance.Write."""
    dingtalk = settings.dingtalk
    if not dingtalk.stream_enabled:
        return Check(
            "dingtalk card",
            False,
            "DINGTALK_CARD_TEMPLATE_ID is set but cards need Stream mode (presses come over it)",
            "Set DINGTALK_STREAM_ENABLED=true, or leave DINGTALK_CARD_TEMPLATE_ID empty.",
        )
    body = {
        "cardTemplateId": dingtalk.card_template_id,
        "outTrackId": card_id or f"poco_doctor_{uuid.uuid4().hex}",
        "callbackType": "STREAM",
        "cardData": {"cardParamMap": {"title": "doctor", "content": "doctor", "options": "[]"}},
        "imGroupOpenSpaceModel": {"supportForward": False},
        "imRobotOpenSpaceModel": {"supportForward": False},
        "userIdType": 1,
    }
    unreachable = f"Check the network to {dingtalk.open_base_url} (DINGTALK_OPEN_BASE_URL)."
    try:
        response = await client.post(
            f"{dingtalk.open_base_url}/v1.0/card/instances",
            json=body,
            headers={"x-acs-dingtalk-access-token": token},
        )
    except httpx.HTTPError as exc:
        return Check("dingtalk card", False, _network_error(exc), unreachable)
    if 200 <= response.status_code < 300:
        return Check("dingtalk card", True, f"template {dingtalk.card_template_id} usable")
    missing = missing_permissions(_json(response))
    if response.status_code == 403:
        lacking = ", ".join(missing) or "Card.Instance.Write"
        return Check(
            "dingtalk card",
            False,
            f"{_dingtalk_error(response)}: the app lacks the permission {lacking}",
            f"In the DingTalk developer console, add {lacking} to the app (Permissions, "
            "权限管理) and publish a new version; until then prompts go as text.",
        )
    fix = (
        "Check DINGTALK_CARD_TEMPLATE_ID: publish the template in DingTalk's card platform "
        "and copy its id (it ends in .schema)."
        if response.status_code < 500
        else unreachable
    )
    return Check("dingtalk card", False, _dingtalk_error(response), fix)


async def check_dingtalk_streaming(
    client: httpx.AsyncClient, settings: Settings, token: str, card_id: str
) -> Check:
    """The doctor's card (just created, delivered to nobody) can be streamed into: the app
    has Card.Streaming.Write, which progress cards need."""
    dingtalk = settings.dingtalk
    body = {
        "outTrackId": card_id,
        "guid": uuid.uuid4().hex,
        "key": "content",
        "content": "doctor",
        "isFull": True,
        "isFinalize": True,
        "isError": False,
    }
    try:
        response = await client.put(
            f"{dingtalk.open_base_url}/v1.0/card/streaming",
            json=body,
            headers={"x-acs-dingtalk-access-token": token},
        )
    except httpx.HTTPError as exc:
        unreachable = f"Check the network to {dingtalk.open_base_url} (DINGTALK_OPEN_BASE_URL)."
        return Check("dingtalk card streaming", False, _network_error(exc), unreachable)
    if 200 <= response.status_code < 300:
        return Check("dingtalk card streaming", True, "progress cards can be streamed")
    lacking = ", ".join(missing_permissions(_json(response))) or "Card.Streaming.Write"
    if response.status_code == 403:
        return Check(
            "dingtalk card streaming",
            False,
            f"{_dingtalk_error(response)}: the app lacks the permission {lacking}",
            f"In the DingTalk developer console, add {lacking} to the app (Permissions, "
            "权限管理) and publish a new version; until then progress cards show only "
            "their first state.",
        )
    return Check(
        "dingtalk card streaming",
        False,
        _dingtalk_error(response),
        "Mark `content` as the template's streaming variable (see README, DingTalk cards).",
    )


def _open_body(settings: Settings) -> dict[str, Any]:
    subscriptions = [{"type": "CALLBACK", "topic": DINGTALK_ROBOT_TOPIC}]
    if settings.dingtalk.subscribe_events:
        subscriptions.append({"type": "EVENT", "topic": "*"})
    return {
        "clientId": settings.dingtalk.client_id,
        "clientSecret": settings.dingtalk.client_secret,
        "subscriptions": subscriptions,
        "ua": f"poco-im-agent/{__version__} doctor",
        "localIp": _local_ip(),
    }


def _local_ip() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _dingtalk_error(response: httpx.Response) -> str:
    body = _json(response)
    reason = " ".join(str(body[k]) for k in ("code", "message") if body.get(k))
    return f"HTTP {response.status_code} {reason}".strip()


async def run_checks(settings: Settings) -> list[Check]:
    checks = [check_config(settings), check_data_dir(settings)]
    network: list[Any] = [check_backend(settings)]
    if settings.telegram.enabled:
        network.append(check_telegram(settings))
    if settings.dingtalk.enabled:
        network.append(check_dingtalk(settings))
    for result in await asyncio.gather(*network):
        checks.extend(result if isinstance(result, list) else [result])
    return checks


def all_ok(checks: Sequence[Check]) -> bool:
    return all(check.ok for check in checks)
