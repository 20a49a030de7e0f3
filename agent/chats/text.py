"""Platform text limits and line-boundary splitting; pure, no chat library imported."""

from __future__ import annotations

from collections.abc import Callable

# Telegram counts message length after entity parsing, in UTF-16 code units.
TELEGRAM_TEXT_LIMIT = 4096
TELEGRAM_CALLBACK_DATA_LIMIT = 64
# DingTalk documents no hard cap for robot markdown; the service we replace split at 1,800
# characters and its messages arrived whole, so we keep that proven size.
DINGTALK_TEXT_LIMIT = 1800  # bytes (UTF-8)

Measure = Callable[[str], int]


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit Telegram uses for limits and entity offsets."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def split_text(text: str, limit: int, *, measure: Measure = len) -> list[str]:
    """Split `text` into chunks of at most `limit` (as counted by the additive `measure`).

    Chunks end at line boundaries and keep their newlines, so nothing is dropped:
    `"".join(split_text(t, n)) == t`. A single line longer than `limit` is cut hard.
    The empty string gives `[]`. `limit` must be at least 2 so a surrogate-pair
    character (2 UTF-16 units) always fits.
    """
    if limit < 2:
        raise ValueError("limit must be at least 2")
    chunks: list[str] = []
    current, size = "", 0
    for line in text.splitlines(keepends=True):
        line_size = measure(line)
        if current and size + line_size > limit:
            chunks.append(current)
            current, size = "", 0
        if line_size <= limit:
            current, size = current + line, size + line_size
            continue
        pieces = _hard_split(line, limit, measure)
        chunks.extend(pieces[:-1])
        current, size = pieces[-1], measure(pieces[-1])
    if current:
        chunks.append(current)
    return chunks


def _hard_split(line: str, limit: int, measure: Measure) -> list[str]:
    """Cut one over-long line into pieces of at most `limit`, never inside a character."""
    pieces: list[str] = []
    rest = line
    while measure(rest) > limit:
        cut = _longest_prefix(rest, limit, measure)
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    return pieces


def _longest_prefix(text: str, limit: int, measure: Measure) -> int:
    """The largest n with measure(text[:n]) <= limit (binary search; measure is monotone)."""
    low, high = 1, min(len(text), limit)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(text[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    return low
