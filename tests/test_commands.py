"""The command parser: table of examples plus properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.core.commands import ALIASES, parse


@pytest.mark.parametrize(
    ("text", "name", "args"),
    [
        ("/help", "help", ""),
        ("/start", "help", ""),
        ("/list 5", "list", "5"),
        ("/LIST", "list", ""),
        ("/new write a poem", "new", "write a poem"),
        ("/new\nline one\nline two", "new", "line one\nline two"),
        ("/connect@poco_bot 3", "connect", "3"),
        ("/current", "link", ""),
        ("/disconnect", "clear", ""),
        ("/watchlist", "watches", ""),
        ("／help", "help", ""),
        ("/nope x", "?", "x"),
        ("/", "?", ""),
        ("hello /new", "", "hello /new"),
        ("  plain  ", "", "plain"),
        ("", "", ""),
    ],
)
def test_examples(text: str, name: str, args: str) -> None:
    command = parse(text)
    assert (command.name, command.args) == (name, args)


@given(st.text())
def test_any_text_parses(text: str) -> None:
    command = parse(text)
    assert command.name in set(ALIASES.values()) | {"", "?"}


@given(st.sampled_from(sorted(ALIASES)), st.text(min_size=1).filter(lambda s: s.strip() != ""))
def test_args_survive(name: str, args: str) -> None:
    command = parse(f"/{name} {args}")
    assert command.name == ALIASES[name]
    assert command.args == args.strip()
