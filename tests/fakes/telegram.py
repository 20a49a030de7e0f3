"""A fake Telegram Bot API server on 127.0.0.1 speaking the real wire format."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from agent.chats.text import utf16_len
from tests.fakes.telegram_files import SEND_DOCUMENT_LIMIT, FileApi

RESERVED_V2 = set("_*[]()~`>#+-=|{}.!")
JSON_FIELDS = {
    "reply_markup",
    "entities",
    "allowed_updates",
    "reply_parameters",
    "commands",
    "scope",
    "link_preview_options",
}
INT_FIELDS = {"offset", "limit", "timeout", "message_id", "reply_to_message_id"}
CONFLICT_POLL = (
    "Conflict: terminated by other getUpdates request; make sure that only one "
    "bot instance is running"
)
CONFLICT_WEBHOOK = (
    "Conflict: can't use getUpdates method while webhook is active; use "
    "deleteWebhook to delete the webhook first"
)
OUTAGE_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n"
    "</body>\r\n</html>\r\n"
)
V2_MARKS = {"*": "bold", "_": "italic", "__": "underline", "~": "strikethrough", "||": "spoiler"}


# Telegram's nginx front answers a gateway error itself, with an HTML page, not Bot API JSON.
NGINX_PAGES = {
    502: "Bad Gateway",
    504: "Gateway Time-out",
}
MIGRATED = "Bad Request: group chat was upgraded to a supergroup chat"


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        description: str,
        retry_after: int | None = None,
        *,
        migrate_to_chat_id: int | None = None,
    ) -> None:
        super().__init__(description)
        self.status, self.description, self.retry_after = status, description, retry_after
        self.migrate_to_chat_id = migrate_to_chat_id

    def response(self) -> web.Response:
        """The answer as Telegram gives it (see ResponseParameters in the Bot API docs)."""
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        parameters: dict[str, int] = {}
        if self.retry_after is not None:
            parameters["retry_after"] = self.retry_after
        if self.migrate_to_chat_id is not None:
            parameters["migrate_to_chat_id"] = self.migrate_to_chat_id
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=self.status)


def parse_markdown_v2(source: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's MarkdownV2 rules, simplified: returns (text, entities) or raises ApiError."""
    out: list[str] = []
    entities: list[dict[str, Any]] = []
    stack: list[tuple[str, int]] = []
    pos = 0

    def fail(why: str) -> ApiError:
        return ApiError(400, f"Bad Request: can't parse entities: {why}")

    def here() -> int:
        return utf16_len("".join(out))

    while pos < len(source):
        char = source[pos]
        if char == "\\":
            if pos + 1 >= len(source):
                raise fail("Character '\\' is reserved and must be escaped with the preceding '\\'")
            out.append(source[pos + 1])
            pos += 2
        elif char == "`":
            fence = "```" if source.startswith("```", pos) else "`"
            end, body = _scan_code(source, pos + len(fence), fence)
            if end < 0:
                raise fail(
                    f"Can't find end of {'Pre' if len(fence) == 3 else 'Code'} entity "
                    f"at byte offset {len(source[:pos].encode())}"
                )
            if fence == "```" and "\n" in body:
                body = body.split("\n", 1)[1]
            entities.append(
                {
                    "type": "pre" if len(fence) == 3 else "code",
                    "offset": here(),
                    "length": utf16_len(body),
                }
            )
            out.append(body)
            pos = end
        elif char == "]" and stack and stack[-1][0] == "[":
            if not source.startswith("(", pos + 1):
                raise fail("Character ']' is reserved and must be escaped with the preceding '\\'")
            close = source.find(")", pos + 2)
            if close < 0:
                raise fail("Can't find end of a URL")
            _, start = stack.pop()
            entities.append(
                {
                    "type": "text_link",
                    "offset": start,
                    "length": here() - start,
                    "url": source[pos + 2 : close].replace("\\", ""),
                }
            )
            pos = close + 1
        elif char == ">" and (pos == 0 or source[pos - 1] == "\n"):
            pos += 1  # blockquote marker
        else:
            mark = next((m for m in ("__", "||") if source.startswith(m, pos)), char)
            if mark == "[" or mark in V2_MARKS:
                if mark != "[" and stack and stack[-1][0] == mark:
                    _, start = stack.pop()
                    if here() > start:
                        entities.append(
                            {"type": V2_MARKS[mark], "offset": start, "length": here() - start}
                        )
                elif any(m == mark for m, _ in stack):
                    raise fail(f"Can't find end of {V2_MARKS.get(mark, 'TextUrl')} entity")
                else:
                    stack.append((mark, here()))
                pos += len(mark)
            elif char in RESERVED_V2:
                raise fail(
                    f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
                )
            else:
                out.append(char)
                pos += 1
    if stack:
        raise fail(f"Can't find end of {V2_MARKS.get(stack[-1][0], 'TextUrl')} entity")
    return "".join(out), entities


def _scan_code(source: str, pos: int, fence: str) -> tuple[int, str]:
    body: list[str] = []
    while pos < len(source):
        if source[pos] == "\\" and pos + 1 < len(source):
            body.append(source[pos + 1])
            pos += 2
        elif source.startswith(fence, pos):
            return pos + len(fence), "".join(body)
        else:
            body.append(source[pos])
            pos += 1
    return -1, ""


class FakeTelegram(FileApi):
    """Bot API on 127.0.0.1:<port>; inject updates, inspect `sent`/`calls`, inject faults."""

    def __init__(self, token: str = "123456:TEST-TOKEN", bot_username: str = "poco_test_bot"):
        self.token, self.bot_username = token, bot_username
        self.blocked_chats: set[int] = set()
        self.missing_chats: set[int] = set()
        self.migrated_chats: dict[int, int] = {}  # group id -> its supergroup's id
        self.sent: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any], float]] = []
        self.confirmed_offset = 0
        self.updates_available_at: dict[int, float] = {}
        self.webhook: dict[str, Any] = {"url": ""}
        self.commands: list[dict[str, Any]] = []
        self.answered_callbacks: list[dict[str, Any]] = []
        self.chats: dict[int, dict[str, Any]] = {}
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = 1
        self._next_message_id: dict[int, int] = {}
        self._callback_ids: set[str] = set()
        self._failures: dict[str, list[tuple[int, int | None, str | None]]] = {}
        self._failures_after: dict[str, int] = {}
        self._drops: dict[str, int] = {}
        self._method_delays: dict[str, float] = {}
        self._outage = False
        self._poll_generation = 0
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._cond = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._init_files()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def bot_id(self) -> int:
        return int(self.token.split(":")[0])

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        return list(self._updates)

    async def start(self) -> None:
        app = web.Application(client_max_size=SEND_DOCUMENT_LIMIT + 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        self._stopping = True
        async with self._cond:
            self._cond.notify_all()  # ends pending long polls
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- test-side helpers -------------------------------------------------------------

    @property
    def outage(self) -> bool:
        """True: Telegram is down; every call, pending long polls too, gets 502 Bad Gateway."""
        return self._outage

    @outage.setter
    def outage(self, down: bool) -> None:
        self._outage = down
        self._notify()  # a pending long poll is cut by the outage

    def fail_next(
        self,
        method: str,
        status: int,
        *,
        retry_after: int | None = None,
        description: str | None = None,
        count: int = 1,
        after: int = 0,
    ) -> None:
        """The next `count` calls of `method` fail, once `after` more have succeeded.

        A 502 or 504 without a `description` is nginx's HTML page, as Telegram's front sends."""
        self._failures.setdefault(method.lower(), []).extend(
            [(status, retry_after, description)] * count
        )
        self._failures_after[method.lower()] = after

    def drop_next(self, method: str, count: int = 1) -> None:
        self._drops[method.lower()] = self._drops.get(method.lower(), 0) + count

    def inject_raw(self, update: dict[str, Any]) -> int:
        update.setdefault("update_id", self._next_update_id)
        self._next_update_id = max(self._next_update_id, update["update_id"]) + 1
        self._updates.append(update)
        self.updates_available_at[update["update_id"]] = time.monotonic()
        self._notify()
        return int(update["update_id"])

    def inject_message(
        self,
        chat_id: int,
        text: str,
        *,
        chat_type: str = "private",
        user_id: int | None = None,
        username: str | None = None,
        reply_to_message_id: int | None = None,
        message_id: int | None = None,
    ) -> int:
        chat = self._chat(chat_id, chat_type)
        user = {"id": user_id or abs(chat_id), "is_bot": False, "first_name": username or "User"}
        if username:
            user["username"] = username
        message: dict[str, Any] = {
            "message_id": message_id or self._message_id(chat_id),
            "from": user,
            "chat": chat,
            "date": int(time.time()),
            "text": text,
        }
        if text.startswith("/"):
            command = text.split()[0]
            message["entities"] = [
                {"type": "bot_command", "offset": 0, "length": utf16_len(command)}
            ]
        replied = self.messages.get((chat_id, reply_to_message_id or 0))
        if replied is not None:
            message["reply_to_message"] = replied
        self.messages[(chat_id, message["message_id"])] = message
        return self.inject_raw({"message": message})

    def inject_callback(
        self,
        chat_id: int,
        message_id: int,
        data: str,
        *,
        user_id: int | None = None,
        callback_id: str | None = None,
    ) -> int:
        message = self.messages.get((chat_id, message_id)) or {
            "message_id": message_id,
            "chat": self._chat(chat_id),
            "date": int(time.time()),
            "text": "",
        }
        query_id = callback_id or f"cb{self._next_update_id}"
        self._callback_ids.add(query_id)
        sender = {"id": user_id or abs(chat_id), "is_bot": False, "first_name": "User"}
        return self.inject_raw(
            {
                "callback_query": {
                    "id": query_id,
                    "from": sender,
                    "message": message,
                    "chat_instance": str(chat_id),
                    "data": data,
                }
            }
        )

    def migrate_group(self, chat_id: int, *, announce: bool = True) -> int:
        """Upgrade a group to a supergroup, as Telegram does; returns the new chat id.

        The group's id is dead from now on: a call to it answers 400 with
        `parameters.migrate_to_chat_id`. With `announce`, the bot also gets the two service
        messages: `migrate_to_chat_id` in the old group, `migrate_from_chat_id` in the new."""
        new_id = -(10**12) - abs(chat_id)  # supergroup ids look like -100xxxxxxxxxx
        self.migrated_chats[chat_id] = new_id
        old_chat = self._chat(chat_id, "group")
        new_chat = self._chat(new_id, "supergroup")
        user = {"id": abs(chat_id), "is_bot": False, "first_name": "User"}
        if announce:
            for chat, field, value in (
                (old_chat, "migrate_to_chat_id", new_id),
                (new_chat, "migrate_from_chat_id", chat_id),
            ):
                message = {
                    "message_id": self._message_id(chat["id"]),
                    "from": user,
                    "chat": chat,
                    "date": int(time.time()),
                    field: value,
                }
                self.inject_raw({"message": message})
        return new_id

    async def wait_for(self, predicate: Callable[[FakeTelegram], bool], timeout: float = 5) -> None:
        async with self._cond:
            await asyncio.wait_for(self._cond.wait_for(lambda: predicate(self)), timeout)

    # ---- server ------------------------------------------------------------------------

    def _notify(self) -> None:
        async def notify() -> None:
            async with self._cond:
                self._cond.notify_all()

        with contextlib.suppress(RuntimeError):
            task = asyncio.get_running_loop().create_task(notify())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _chat(self, chat_id: int, chat_type: str | None = None) -> dict[str, Any]:
        if chat_id not in self.chats or chat_type:
            kind = chat_type or ("private" if chat_id > 0 else "supergroup")
            name = {"first_name": "User"} if kind == "private" else {"title": "Group"}
            self.chats[chat_id] = {"id": chat_id, "type": kind, **name}
        return self.chats[chat_id]

    def _message_id(self, chat_id: int) -> int:
        self._next_message_id[chat_id] = self._next_message_id.get(chat_id, 0) + 1
        return self._next_message_id[chat_id]

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            params.update(await request.json())
        elif request.can_read_body:
            params.update(await request.post())
        for key, value in list(params.items()):
            if key in JSON_FIELDS and isinstance(value, str):
                params[key] = json.loads(value)
            elif key in INT_FIELDS or key == "chat_id":
                with contextlib.suppress(TypeError, ValueError):
                    params[key] = int(value)
        return params

    def set_method_delay(self, method: str, seconds: float) -> None:
        """Make every call of `method` answer `seconds` late (a slow Telegram)."""
        self._method_delays[method.lower()] = seconds

    @property
    def chat_actions(self) -> list[dict[str, Any]]:
        return [params for method, params, _ in self.calls if method.lower() == "sendchataction"]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params = await self._params(request)
        self.calls.append((method, params, time.monotonic()))
        if self._method_delays.get(method.lower()):
            await asyncio.sleep(self._method_delays[method.lower()])
        try:
            if self.outage:  # the front proxy answers, not the Bot API: HTML, no JSON
                return web.Response(status=502, text=OUTAGE_PAGE, content_type="text/html")
            if request.match_info["token"] != self.token:
                raise ApiError(401, "Unauthorized")
            key = method.lower()
            if self._drops.get(key):
                self._drops[key] -= 1
                assert request.transport is not None
                request.transport.close()
                return web.Response()
            if self._failures.get(key) and self._failures_after.get(key, 0) > 0:
                self._failures_after[key] -= 1
            elif self._failures.get(key):
                status, retry_after, description = self._failures[key].pop(0)
                if description is None and status in NGINX_PAGES:
                    return web.Response(
                        status=status, text=_nginx_page(status), content_type="text/html"
                    )
                if status == 429 and retry_after is None:
                    retry_after = 1
                raise ApiError(
                    status, description or _default_description(status, retry_after), retry_after
                )
            handler = getattr(self, f"_api_{key.lower()}", None)
            if handler is None:
                raise ApiError(404, "Not Found")
            result = await handler(params)
            if self.outage:  # went down while this call was pending
                return web.Response(status=502, text=OUTAGE_PAGE, content_type="text/html")
            return web.json_response({"ok": True, "result": result})
        except ApiError as err:
            return err.response()
        finally:
            self._notify()

    # ---- Bot API methods ---------------------------------------------------------------

    async def _api_getme(self, _: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "Poco",
            "username": self.bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _api_getupdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook["url"]:
            raise ApiError(409, CONFLICT_WEBHOOK)
        offset = int(params.get("offset") or 0)
        if offset < 0:
            self._updates = self._updates[offset:]
        elif offset:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            self.confirmed_offset = max(self.confirmed_offset, offset)
        limit = min(max(int(params.get("limit") or 100), 1), 100)
        self._poll_generation += 1
        mine = self._poll_generation
        async with self._cond:
            self._cond.notify_all()  # wakes an earlier poll so it sees it was superseded
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._cond.wait_for(
                        lambda: (
                            bool(self._updates)
                            or mine != self._poll_generation
                            or bool(self.webhook["url"])
                            or self._stopping
                            or self.outage
                        )
                    ),
                    float(params.get("timeout") or 0),
                )
        if mine != self._poll_generation:
            raise ApiError(409, CONFLICT_POLL)
        if self.webhook["url"]:
            raise ApiError(409, CONFLICT_WEBHOOK)
        return self._updates[:limit]

    async def _api_sendmessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._check_chat(params)
        text, entities = self._text(params)
        reply_to = params.get("reply_to_message_id")
        reply_params = params.get("reply_parameters") or {}
        reply_to = reply_params.get("message_id", reply_to)
        replied = self.messages.get((chat_id, reply_to or 0))
        if (
            reply_to
            and replied is None
            and not (
                reply_params.get("allow_sending_without_reply")
                or params.get("allow_sending_without_reply") in (True, "true")
            )
        ):
            raise ApiError(400, "Bad Request: message to be replied not found")
        markup = self._markup(params)
        message = self._message(chat_id, self._message_id(chat_id), text, entities, markup)
        if replied is not None:
            message["reply_to_message"] = replied
        self._record("sendMessage", params, message)
        return message

    async def _api_editmessagetext(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id, old = self._existing(params)
        text, entities = self._text(params)
        markup = self._markup(params)
        if (
            old["text"] == text
            and old.get("entities", []) == entities
            and (old.get("reply_markup") == markup)
        ):
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message "
                "content and reply markup are exactly the same as a current "
                "content and reply markup of the message",
            )
        message = self._message(chat_id, old["message_id"], text, entities, markup)
        self._record("editMessageText", params, message)
        return message

    async def _api_editmessagereplymarkup(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id, old = self._existing(params)
        markup = self._markup(params)
        if old.get("reply_markup") == markup:
            raise ApiError(400, "Bad Request: message is not modified")
        message = self._message(
            chat_id, old["message_id"], old["text"], old.get("entities", []), markup
        )
        self._record("editMessageReplyMarkup", params, message)
        return message

    async def _api_sendchataction(self, params: dict[str, Any]) -> bool:
        self._check_chat(params)
        return True

    async def _api_setmycommands(self, params: dict[str, Any]) -> bool:
        for command in params.get("commands") or []:
            name = command.get("command", "")
            if not re.fullmatch(r"[a-z0-9_]{1,32}", name) or not (
                1 <= len(command.get("description", "")) <= 256
            ):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        self.commands = list(params.get("commands") or [])
        return True

    async def _api_getmycommands(self, _: dict[str, Any]) -> list[dict[str, Any]]:
        return self.commands

    async def _api_setwebhook(self, params: dict[str, Any]) -> bool:
        self.webhook = {
            "url": params.get("url", ""),
            "secret_token": params.get("secret_token"),
            "allowed_updates": params.get("allowed_updates"),
        }
        return True

    async def _api_deletewebhook(self, params: dict[str, Any]) -> bool:
        self.webhook = {"url": ""}
        if params.get("drop_pending_updates") in (True, "true", "True"):
            self._updates.clear()
        return True

    async def _api_getwebhookinfo(self, _: dict[str, Any]) -> dict[str, Any]:
        info = {
            "url": self.webhook["url"],
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.webhook.get("allowed_updates"):
            info["allowed_updates"] = self.webhook["allowed_updates"]
        return info

    async def _api_answercallbackquery(self, params: dict[str, Any]) -> bool:
        if params.get("callback_query_id") not in self._callback_ids:
            raise ApiError(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        self.answered_callbacks.append(params)
        return True

    # ---- validation --------------------------------------------------------------------

    def _check_chat(self, params: dict[str, Any]) -> int:
        chat_id = params.get("chat_id")
        if chat_id in self.migrated_chats:
            raise ApiError(400, MIGRATED, migrate_to_chat_id=self.migrated_chats[chat_id])
        if not isinstance(chat_id, int) or chat_id in self.missing_chats:
            raise ApiError(400, "Bad Request: chat not found")
        if chat_id in self.blocked_chats:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return chat_id

    def _existing(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        chat_id = self._check_chat(params)
        old = self.messages.get((chat_id, params.get("message_id", 0)))
        if old is None or old.get("from", {}).get("id") != self.bot_id:
            raise ApiError(400, "Bad Request: message to edit not found")
        return chat_id, old

    def _text(self, params: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        text = str(params.get("text", ""))
        entities: list[dict[str, Any]] = params.get("entities") or []
        if params.get("parse_mode") == "MarkdownV2":
            text, entities = parse_markdown_v2(text)
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if utf16_len(text) > 4096:
            raise ApiError(400, "Bad Request: message is too long")
        size = utf16_len(text)
        for entity in entities:
            offset, length = entity.get("offset", -1), entity.get("length", 0)
            if not entity.get("type") or offset < 0 or length <= 0 or offset + length > size:
                raise ApiError(400, f"Bad Request: can't parse entities: bad entity {entity}")
        return text, entities

    def _markup(self, params: dict[str, Any]) -> dict[str, Any] | None:
        markup = params.get("reply_markup")
        for row in (markup or {}).get("inline_keyboard", []):
            for button in row:
                if not button.get("text"):
                    raise ApiError(
                        400, "Bad Request: text buttons are unallowed in the inline keyboard"
                    )
                data = button.get("callback_data")
                if data is not None and not 1 <= len(data.encode()) <= 64:
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        return markup

    def _message(
        self,
        chat_id: int,
        message_id: int,
        text: str,
        entities: list[dict[str, Any]],
        markup: dict[str, Any] | None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self._chat(chat_id),
            "from": {
                "id": self.bot_id,
                "is_bot": True,
                "first_name": "Poco",
                "username": self.bot_username,
            },
            "text": text,
        }
        if entities:
            message["entities"] = entities
        if markup and markup.get("inline_keyboard"):
            message["reply_markup"] = markup
        self.messages[(chat_id, message_id)] = message
        return message

    def _record(self, method: str, params: dict[str, Any], message: dict[str, Any]) -> None:
        self.sent.append(
            {
                "method": method,
                "chat_id": message["chat"]["id"],
                "text": message["text"],
                "parse_mode": params.get("parse_mode"),
                "entities": message.get("entities", []),
                "reply_markup": message.get("reply_markup"),
                "reply_to_message_id": message.get("reply_to_message", {}).get("message_id"),
                "message_id": message["message_id"],
                "at": time.monotonic(),
            }
        )


def _nginx_page(status: int) -> str:
    title = f"{status} {NGINX_PAGES[status]}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n"
        "</body>\r\n</html>\r\n"
    )


def _default_description(status: int, retry_after: int | None) -> str:
    if status == 429:
        return f"Too Many Requests: retry after {retry_after or 1}"
    return {
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        409: CONFLICT_POLL,
        500: "Internal Server Error",
        502: "Bad Gateway",
        504: "Gateway Time-out",
    }.get(status, "Error")
