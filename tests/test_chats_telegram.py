"""TelegramProvider against the fake Bot API, through the real python-telegram-bot."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.chats import telegram as tg
from agent.chats.base import Button, ChatRef, InboundMessage, OutboundMessage, ProviderState
from agent.chats.telegram import TelegramProvider
from agent.config import TelegramSettings
from agent.errors import ChatMoved, PermanentDeliveryError, RetryLater
from agent.retry import Backoff
from tests.fakes.telegram import FakeTelegram

COMMANDS = [("help", "Show help"), ("list", "List sessions")]


class Sink:
    """Collects batches; fails the first `failures` calls like a broken journal."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.batches: list[list[InboundMessage]] = []
        self.calls = 0

    async def __call__(self, batch: Sequence[InboundMessage]) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")
        self.batches.append(list(batch))

    @property
    def messages(self) -> list[InboundMessage]:
        return [m for batch in self.batches for m in batch]


def settings_for(fake: FakeTelegram, **changes: Any) -> TelegramSettings:
    values: dict[str, Any] = {
        "token": fake.token,
        "mode": "polling",
        "api_base_url": fake.url,
        "proxy_url": "",
        "poll_timeout": 1,
        "webhook_url": "",
        "webhook_secret": "",
    }
    values.update(changes)
    return TelegramSettings(**values)


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # PTB 22 warns when RetryAfter.retry_after is an int; opt in to timedelta like users will.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    monkeypatch.setattr(tg, "CONFLICT_RETRY_DELAY", 0.05)
    monkeypatch.setattr(tg, "TOKEN_RETRY_DELAY", 0.05)
    monkeypatch.setattr(tg, "PRIVATE_RATE", 1000.0)  # test_private_chat_rate_limit restores it
    monkeypatch.setattr(tg, "GROUP_RATE", 1000.0)


@contextlib.asynccontextmanager
async def running(provider: TelegramProvider, sink: Sink) -> AsyncIterator[asyncio.Task[None]]:
    provider.backoff = Backoff(initial=0.01, maximum=0.05)
    task = asyncio.create_task(provider.run(sink))
    try:
        yield task
    finally:
        await provider.close()
        await asyncio.wait_for(task, 5)


@pytest.fixture
async def provider(telegram_api: FakeTelegram) -> AsyncIterator[TelegramProvider]:
    provider = TelegramProvider(settings_for(telegram_api), commands=COMMANDS)
    await provider.bot.initialize()
    yield provider
    await provider.close()


# ---- receiving -----------------------------------------------------------------------


async def test_backlog_reaches_sink_in_order_then_offset_confirmed(telegram_api: FakeTelegram):
    # Sent while the agent was down: must be processed, not dropped.
    ids = [telegram_api.inject_message(42, f"hello {n}", username="ann") for n in range(3)]
    provider = TelegramProvider(settings_for(telegram_api), commands=COMMANDS)
    sink = Sink()
    async with running(provider, sink):
        await telegram_api.wait_for(lambda f: f.confirmed_offset == ids[-1] + 1)
        assert provider.status.state is ProviderState.CONNECTED
        assert provider.status.last_ok_at is not None
    assert [m.text for m in sink.messages] == ["hello 0", "hello 1", "hello 2"]
    first = sink.messages[0]
    assert first.key == f"telegram:{ids[0]}"
    assert (first.chat_id, first.sender_name, first.is_group) == ("42", "ann", False)
    assert first.message_id
    assert telegram_api.commands == [{"command": c, "description": d} for c, d in COMMANDS]
    assert telegram_api.pending_updates == []
    polls = [p for m, p, _ in telegram_api.calls if m == "getUpdates"]
    assert json_list(polls[0]["allowed_updates"]) == ["message", "callback_query"]


def json_list(value: Any) -> list[str]:
    return list(value)


async def test_sink_failure_keeps_offset_and_redelivers(telegram_api: FakeTelegram):
    update_id = telegram_api.inject_message(7, "persist me")
    provider = TelegramProvider(settings_for(telegram_api))
    sink = Sink(failures=2)
    async with running(provider, sink):
        await telegram_api.wait_for(lambda f: f.confirmed_offset == update_id + 1)
    assert sink.calls == 3
    assert [m.key for m in sink.messages] == [f"telegram:{update_id}"]
    offsets = [p.get("offset") for m, p, _ in telegram_api.calls if m == "getUpdates"]
    assert offsets[:3] == [None, None, None]  # nothing confirmed while the sink failed


async def test_commands_for_us_are_stripped_for_others_ignored(telegram_api: FakeTelegram):
    telegram_api.inject_message(-1001, "/list@Poco_Test_Bot 3", chat_type="supergroup")
    other = telegram_api.inject_message(-1001, "/list@OtherBot", chat_type="supergroup")
    telegram_api.inject_message(-1001, "/help", chat_type="group")
    provider = TelegramProvider(settings_for(telegram_api))
    sink = Sink()
    async with running(provider, sink):
        await telegram_api.wait_for(lambda f: f.confirmed_offset > other + 1)
    assert [m.text for m in sink.messages] == ["/list 3", "/help"]
    assert all(m.is_group for m in sink.messages)


async def test_callbacks_replies_and_non_text(telegram_api: FakeTelegram):
    first = telegram_api.inject_message(5, "question")
    telegram_api.inject_message(5, "answer", reply_to_message_id=1)
    telegram_api.inject_callback(5, 1, "opt:1", callback_id="cb-1")
    chat = {"id": 5, "type": "private", "first_name": "U"}
    sender = {"id": 5, "is_bot": False, "first_name": "U"}
    photo = [{"file_id": "f", "file_unique_id": "u", "width": 1, "height": 1}]
    telegram_api.inject_raw(
        {
            "message": {
                "message_id": 9,
                "date": 0,
                "chat": chat,
                "from": sender,
                "photo": photo,
                "caption": "look",
            }
        }
    )
    sticker = {"file_id": "s", "file_unique_id": "su", "width": 1, "height": 1}
    sticker.update(type="regular", is_animated=False, is_video=False)
    telegram_api.inject_raw(
        {"message": {"message_id": 11, "date": 0, "chat": chat, "from": sender, "sticker": sticker}}
    )
    last = telegram_api.inject_raw(
        {
            "message": {
                "message_id": 10,
                "date": 0,
                "chat": chat,
                "from": sender,
                "new_chat_title": "x",
            }
        }
    )
    provider = TelegramProvider(settings_for(telegram_api))
    sink = Sink()
    async with running(provider, sink):
        await telegram_api.wait_for(lambda f: f.confirmed_offset == last + 1)
    question, answer, press, picture, sticker_message = sink.messages
    assert question.key == f"telegram:{first}"
    assert answer.reply_to_message_id == "1"
    assert (press.callback_data, press.callback_id, press.chat_id) == ("opt:1", "cb-1", "5")
    assert press.message_id == "1"
    assert not picture.unsupported and picture.text == "look"
    [photo_file] = picture.attachments
    assert (photo_file.kind, photo_file.ref, photo_file.unique_id) == ("photo", "f", "u")
    assert sticker_message.unsupported and not sticker_message.attachments


async def test_conflict_with_another_poller_then_recovery(telegram_api: FakeTelegram):
    provider = TelegramProvider(settings_for(telegram_api, poll_timeout=5))
    sink = Sink()
    async with running(provider, sink):
        await telegram_api.wait_for(lambda f: provider.status.state is ProviderState.CONNECTED)
        await telegram_api.wait_for(lambda f: f._poll_generation >= 1)
        # A second bot instance with the same token starts polling.
        url = f"{telegram_api.url}/bot{telegram_api.token}/getUpdates"
        async with aiohttp.ClientSession() as session:
            rival = asyncio.create_task(session.post(url, json={"timeout": 5}))
            await telegram_api.wait_for(lambda f: provider.status.state is ProviderState.ERROR)
            assert "terminated by other getUpdates request" in provider.status.detail
            response = await asyncio.wait_for(rival, 5)
            assert response.status == 409  # our retry took the poll back
            response.release()
        update_id = telegram_api.inject_message(3, "after conflict")
        await telegram_api.wait_for(lambda f: f.confirmed_offset == update_id + 1)
        assert provider.status.state is ProviderState.CONNECTED


async def test_webhook_conflict_is_reported(telegram_api: FakeTelegram):
    telegram_api.fail_next(
        "getUpdates",
        409,
        count=2,
        description=(
            "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook "
            "to delete the webhook first"
        ),
    )
    provider = TelegramProvider(settings_for(telegram_api))
    async with running(provider, Sink()):
        await telegram_api.wait_for(lambda f: provider.status.state is ProviderState.ERROR)
        assert "webhook is active" in provider.status.detail
        await telegram_api.wait_for(lambda f: provider.status.state is ProviderState.CONNECTED)
    # Polling mode removes a stale webhook itself, keeping pending updates.
    deletes = [p for m, p, _ in telegram_api.calls if m == "deleteWebhook"]
    assert deletes and deletes[0].get("drop_pending_updates") in (None, "false", False)


async def test_rejected_token_then_fixed(telegram_api: FakeTelegram):
    provider = TelegramProvider(settings_for(telegram_api, token="999:WRONG"))
    async with running(provider, Sink()):
        await telegram_api.wait_for(lambda f: provider.status.state is ProviderState.ERROR)
        assert provider.status.detail == "token rejected"
        telegram_api.token = "999:WRONG"  # the owner fixed it on the other side
        await telegram_api.wait_for(lambda f: provider.status.state is ProviderState.CONNECTED)


async def test_dropped_and_failing_polls_recover(telegram_api: FakeTelegram):
    telegram_api.drop_next("getUpdates")
    telegram_api.fail_next("getUpdates", 502)
    telegram_api.fail_next("getUpdates", 429, retry_after=0)
    update_id = telegram_api.inject_message(8, "still here")
    provider = TelegramProvider(settings_for(telegram_api))
    sink = Sink()
    async with running(provider, sink):
        await telegram_api.wait_for(lambda f: f.confirmed_offset == update_id + 1)
    assert [m.text for m in sink.messages] == ["still here"]


async def test_transient_502_is_one_short_line_not_a_traceback(
    telegram_api: FakeTelegram, caplog: pytest.LogCaptureFixture
):
    # Telegram's front answers a 502 with nginx's HTML page, which PTB cannot parse as JSON.
    caplog.set_level(logging.DEBUG)
    telegram_api.fail_next("getUpdates", 502, count=2)
    update_id = telegram_api.inject_message(8, "after the outage")
    provider = TelegramProvider(settings_for(telegram_api))
    sink = Sink()
    async with running(provider, sink):
        await telegram_api.wait_for(lambda f: f.confirmed_offset == update_id + 1)
        telegram_api.fail_next("sendMessage", 502)
        with pytest.raises(RetryLater) as caught:
            await provider.send(chat(9), OutboundMessage("x"))
    assert "<html" not in str(caught.value)
    assert "Bad Gateway" in str(caught.value)
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert noisy == [], [(r.name, r.levelname, r.getMessage()[:80]) for r in noisy]
    ours = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    lines = [r for r in ours if "Bad Gateway" in r.getMessage()]
    assert len(lines) == 2  # one per failed poll
    for record in lines:
        assert record.levelno in (logging.INFO, logging.WARNING)
        assert "\n" not in record.getMessage() and "<html" not in record.getMessage()


# ---- sending -------------------------------------------------------------------------


def chat(chat_id: int, **kw: Any) -> ChatRef:
    return ChatRef("telegram", str(chat_id), **kw)


async def test_send_plain_and_reply(telegram_api: FakeTelegram, provider: TelegramProvider):
    telegram_api.inject_message(11, "hi")
    first = await provider.send(chat(11), OutboundMessage("hello", reply_to_message_id="1"))
    second = await provider.send(chat(11), OutboundMessage("again", markdown=False))
    assert (first, second) == ("2", "3")
    assert telegram_api.sent[0]["reply_to_message_id"] == 1
    assert [s["text"] for s in telegram_api.sent] == ["hello", "again"]


async def test_errors_are_mapped(telegram_api: FakeTelegram, provider: TelegramProvider):
    message = OutboundMessage("x")
    telegram_api.fail_next("sendMessage", 429, retry_after=7)
    with pytest.raises(RetryLater) as caught:
        await provider.send(chat(12), message)
    assert caught.value.retry_after == 7
    for status in (500, 502):
        telegram_api.fail_next("sendMessage", status)
        with pytest.raises(RetryLater) as caught:
            await provider.send(chat(13), message)
        assert caught.value.retry_after is None
    telegram_api.drop_next("sendMessage")
    with pytest.raises(RetryLater):
        await provider.send(chat(14), message)
    telegram_api.blocked_chats.add(15)
    telegram_api.missing_chats.add(16)
    for chat_id in (15, 16):
        with pytest.raises(PermanentDeliveryError):
            await provider.send(chat(chat_id), message)
    assert telegram_api.sent == []


async def test_send_to_an_upgraded_group_says_where_it_went(
    telegram_api: FakeTelegram, provider: TelegramProvider
):
    new_id = telegram_api.migrate_group(-4001, announce=False)
    with pytest.raises(ChatMoved) as caught:
        await provider.send(chat(-4001, is_group=True), OutboundMessage("hello"))
    assert caught.value.new_chat_id == str(new_id)
    assert str(new_id).startswith("-100")
    await provider.send(chat(new_id, is_group=True), OutboundMessage("hello"))
    assert [(m["chat_id"], m["text"]) for m in telegram_api.sent] == [(new_id, "hello")]


async def test_upgrade_service_messages_become_moves(telegram_api: FakeTelegram):
    telegram_api.inject_message(-4002, "before", chat_type="group")
    new_id = telegram_api.migrate_group(-4002)
    telegram_api.inject_message(new_id, "after")
    provider = TelegramProvider(settings_for(telegram_api))
    sink = Sink()
    async with running(provider, sink):
        await telegram_api.wait_for(lambda f: f.confirmed_offset == 5)
    moves = [(m.chat_id, m.moved_to, m.text) for m in sink.messages]
    assert moves == [
        ("-4002", "", "before"),
        ("-4002", str(new_id), ""),  # in the old group: migrate_to_chat_id
        ("-4002", str(new_id), ""),  # in the new supergroup: migrate_from_chat_id
        (str(new_id), "", "after"),
    ]


async def test_long_text_is_split_in_order(telegram_api: FakeTelegram, provider: TelegramProvider):
    text = "\n".join(f"line {n:05d} " + "é😀" * 20 for n in range(400))
    noted: list[tuple[int, int]] = []

    async def on_part(parts_sent: int) -> None:
        noted.append((parts_sent, len(telegram_api.sent)))

    last = await provider.send(chat(21), OutboundMessage(text, markdown=False), on_part=on_part)
    parts = [s["text"] for s in telegram_api.sent]
    assert len(parts) > 1
    # Each part but the last is reported as soon as it went out (delivery records it).
    assert noted == [(n, n) for n in range(1, len(parts))]
    assert last == str(telegram_api.sent[-1]["message_id"])  # the part an edit must reach
    assert "".join(parts) == text
    assert all(len(p.encode("utf-16-le")) // 2 <= 4096 for p in parts)
    ids = [s["message_id"] for s in telegram_api.sent]
    assert ids == sorted(ids)


NASTY = [
    "a_b*c [x](y) 1.2! ```code```",
    "unbalanced *bold and _italic and `code",
    "# Title\n- item (1)\n> quote | pipe {braces} ~tilde~ #hash +plus -minus =eq .dot !bang",
    "```python\nprint('a_b')\n```\n**bold** __under__ [link](https://example.com/a_(b))",
    "1. first\n2. second\n\n| a | b |\n|---|---|\n| 1 | 2 |",
    "\\ backslash \\* star ||spoiler|| <b>html</b> &amp;",
    "*" * 50 + "_" * 50,
    ("word_with_underscores " * 300 + "\n") * 3 + "```\n" + "code line\n" * 300 + "```",
]


@pytest.mark.parametrize("text", NASTY)
async def test_markdown_never_rejected(
    telegram_api: FakeTelegram, provider: TelegramProvider, text: str
):
    await provider.send(chat(-1002, is_group=True), OutboundMessage(text))
    sends = [c for c in telegram_api.calls if c[0] == "sendMessage"]
    assert telegram_api.sent and len(sends) == len(telegram_api.sent)  # no 400s, no retries
    assert all(len(s["text"].encode("utf-16-le")) // 2 <= 4096 for s in telegram_api.sent)


async def test_entity_error_falls_back_to_plain(
    telegram_api: FakeTelegram, provider: TelegramProvider
):
    telegram_api.fail_next(
        "sendMessage", 400, description="Bad Request: can't parse entities: unsupported"
    )
    await provider.send(chat(22), OutboundMessage("**bold** text"))
    assert [(s["text"], s["entities"]) for s in telegram_api.sent] == [("bold text", [])]


async def test_buttons_edit_typing_and_ack(telegram_api: FakeTelegram, provider: TelegramProvider):
    buttons = ((Button("Yes", "ans:1:yes"), Button("No", "ans:1:no")), (Button("Later", "l"),))
    message_id = await provider.send(chat(23), OutboundMessage("Approve?", buttons=buttons))
    keyboard = telegram_api.sent[0]["reply_markup"]["inline_keyboard"]
    assert [[b["text"] for b in row] for row in keyboard] == [["Yes", "No"], ["Later"]]
    assert keyboard[0][0]["callback_data"] == "ans:1:yes"

    await provider.edit(chat(23), message_id, OutboundMessage("Approved"))
    await provider.edit(chat(23), message_id, OutboundMessage("Approved"))  # not modified: fine
    edits = [s for s in telegram_api.sent if s["method"] == "editMessageText"]
    assert [(e["text"], e["reply_markup"]) for e in edits] == [("Approved", None)]

    await provider.show_typing(chat(23))
    telegram_api.inject_callback(23, int(message_id), "ans:1:yes", callback_id="q1")
    await provider.acknowledge_button("q1", "Thanks")
    await provider.acknowledge_button("unknown")  # too old: ignored
    assert telegram_api.answered_callbacks[0]["text"] == "Thanks"
    assert any(c[0] == "sendChatAction" and c[1]["action"] == "typing" for c in telegram_api.calls)

    with pytest.raises(PermanentDeliveryError):
        await provider.send(chat(23), OutboundMessage("x", buttons=((Button("b", "x" * 65),),)))


async def test_private_chat_rate_limit(
    telegram_api: FakeTelegram, provider: TelegramProvider, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(tg, "PRIVATE_RATE", 1.0)
    for n in range(5):
        await provider.send(chat(24), OutboundMessage(f"m{n}", markdown=False))
    times = [s["at"] for s in telegram_api.sent]
    # A burst of 3, then about one a second.
    assert times[2] - times[0] < 0.5
    assert times[4] - times[2] > 1.5


# ---- proxy ---------------------------------------------------------------------------


async def test_proxy_carries_polling_and_sending(telegram_api: FakeTelegram):
    seen: list[str] = []

    async def forward(request: web.Request) -> web.StreamResponse:
        seen.append(request.path.rsplit("/", 1)[-1])
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                f"{telegram_api.url}{request.rel_url}",
                data=await request.read(),
                headers={"Content-Type": request.content_type},
            ) as upstream,
        ):
            return web.Response(
                status=upstream.status, body=await upstream.read(), content_type="application/json"
            )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        settings = settings_for(telegram_api, proxy_url=f"http://127.0.0.1:{port}")
        provider = TelegramProvider(settings)
        update_id = telegram_api.inject_message(30, "via proxy")
        async with running(provider, Sink()):
            await telegram_api.wait_for(lambda f: f.confirmed_offset == update_id + 1)
            await provider.send(chat(30), OutboundMessage("out via proxy"))
    finally:
        await runner.cleanup()
    assert {"getMe", "getUpdates", "sendMessage"} <= set(seen)


# ---- the fake itself -------------------------------------------------------------------


async def call(fake: FakeTelegram, method: str, token: str | None = None, **params: Any):
    url = f"{fake.url}/bot{token or fake.token}/{method}"
    async with aiohttp.ClientSession() as session, session.post(url, json=params) as response:
        return response.status, await response.json()


async def test_fake_validates_like_telegram(telegram_api: FakeTelegram):
    fake = telegram_api
    assert (await call(fake, "getMe", token="1:bad"))[0] == 401
    assert (await call(fake, "noSuchMethod"))[1] == {
        "ok": False,
        "error_code": 404,
        "description": "Not Found",
    }
    status, body = await call(fake, "sendMessage", chat_id=1, text="1.2", parse_mode="MarkdownV2")
    assert status == 400 and "can't parse entities" in body["description"]
    for bad in ("*open", "a_b", "[x]", "(", "x!"):
        assert (await call(fake, "sendMessage", chat_id=1, text=bad, parse_mode="MarkdownV2"))[
            0
        ] == 400, bad
    status, body = await call(
        fake,
        "sendMessage",
        chat_id=1,
        parse_mode="MarkdownV2",
        text="*bold* \\_x\\_ `a_b` [t](https://e.com) 1\\.2\\!",
    )
    assert status == 200 and body["result"]["text"] == "bold _x_ a_b t 1.2!"
    assert [e["type"] for e in body["result"]["entities"]] == ["bold", "code", "text_link"]
    bad_entity = [{"type": "bold", "offset": 2, "length": 5}]
    assert (await call(fake, "sendMessage", chat_id=1, text="abc", entities=bad_entity))[0] == 400
    assert (await call(fake, "sendMessage", chat_id=1, text="x" * 4097))[1]["description"] == (
        "Bad Request: message is too long"
    )
    assert (await call(fake, "sendMessage", chat_id=1, text=" "))[1]["description"] == (
        "Bad Request: message text is empty"
    )
    status, body = await call(fake, "sendMessage", chat_id=1, text="x", reply_to_message_id=99)
    assert body["description"] == "Bad Request: message to be replied not found"


async def test_fake_get_updates_semantics(telegram_api: FakeTelegram):
    fake = telegram_api
    ids = [fake.inject_message(1, f"m{n}") for n in range(3)]
    assert [u["update_id"] for u in (await call(fake, "getUpdates", limit=2))[1]["result"]] == (
        ids[:2]
    )
    result = (await call(fake, "getUpdates", offset=ids[1]))[1]["result"]
    assert [u["update_id"] for u in result] == ids[1:] and fake.confirmed_offset == ids[1]
    assert (await call(fake, "getUpdates", offset=ids[2] + 1, timeout=0))[1]["result"] == []
    waiting = asyncio.create_task(call(fake, "getUpdates", offset=ids[2] + 1, timeout=5))
    await fake.wait_for(lambda f: len(f.calls) == 4)
    new = fake.inject_message(1, "late")
    status, body = await asyncio.wait_for(waiting, 2)  # answered at once, not after 5 s
    assert [u["update_id"] for u in body["result"]] == [new]
    await call(fake, "setWebhook", url="https://example.com/hook", secret_token="s")
    status, body = await call(fake, "getUpdates")
    assert status == 409 and "webhook is active" in body["description"]
    assert (await call(fake, "getWebhookInfo"))[1]["result"]["url"] == "https://example.com/hook"
