"""Markdown to Telegram text: nothing the writer typed is lost (angle brackets included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.chats.base import OutboundMessage
from agent.chats.telegram_render import render
from tests.conftest import agent_environment, run_agent
from tests.fakes.poco import FakePoco
from tests.fakes.telegram import FakeTelegram
from tests.test_e2e_telegram import say


@pytest.mark.parametrize(
    ("markdown", "shown"),
    [
        ("Usage: /new <task description>", "Usage: /new <task description>"),
        ("Connect with /connect <n>.", "Connect with /connect <n>."),
        ("use `List<String>` and <div> here", "use List<String> and <div> here"),
        ("```\nif a < b: <x>\n```\nafter <y>", "if a < b: <x>\nafter <y>"),
        ("*bold* <b>x</b>", "bold <b>x</b>"),
        ("a \\<b", "a \\<b"),
        ("a <= b and c > d", "a <= b and c > d"),
    ],
)
def test_angle_brackets_survive(markdown: str, shown: str) -> None:
    [(text, _)] = render(OutboundMessage(markdown))
    assert text == shown


async def test_the_help_shows_its_placeholders(
    telegram_api: FakeTelegram, poco: FakePoco, data_dir: Path
) -> None:
    env = agent_environment(data_dir, telegram=telegram_api, poco=poco)
    async with run_agent(env):
        assert "/new <task>" in await say(telegram_api, 5005, "/help")
        assert "/new <task description>" in await say(telegram_api, 5005, "/new")
