"""Chat text to a command: `/name args` or plain text. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Aliases → the canonical command name.
ALIASES: dict[str, str] = {
    "help": "help",
    "start": "help",
    "list": "list",
    "new": "new",
    "connect": "connect",
    "watch": "watch",
    "watches": "watches",
    "watchlist": "watches",
    "unwatch": "unwatch",
    "link": "link",
    "current": "link",
    "clear": "clear",
    "disconnect": "clear",
    "answer": "answer",
    "files": "files",
    "get": "get",
}

# What setMyCommands registers (canonical names, in menu order).
MENU: tuple[str, ...] = (
    "help",
    "list",
    "new",
    "connect",
    "watch",
    "watches",
    "unwatch",
    "link",
    "clear",
    "answer",
    "files",
    "get",
)

# Command prefixes people type: ASCII slash and the full-width one of Chinese keyboards.
_PREFIXES = ("/", "／")
_HEAD = re.compile(r"(\S+)\s*(.*)", re.DOTALL)


@dataclass(frozen=True)
class Command:
    """`name` is canonical ('' for plain text, '?' for an unknown command)."""

    name: str
    args: str
    raw_name: str = ""

    @property
    def is_plain_text(self) -> bool:
        return self.name == ""


def parse(text: str) -> Command:
    """Parse one chat message. `/cmd@Bot` suffixes are removed by the provider."""
    stripped = text.strip()
    if not stripped.startswith(_PREFIXES):
        return Command("", stripped)
    match = _HEAD.match(stripped[1:])
    if match is None:
        return Command("?", "", "")
    raw_name = match.group(1).split("@", 1)[0].lower()
    return Command(ALIASES.get(raw_name, "?"), match.group(2).strip(), raw_name)
