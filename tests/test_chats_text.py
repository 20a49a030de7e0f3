"""Splitting: no chunk over the limit, nothing lost, breaks at line boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.chats.text import TELEGRAM_TEXT_LIMIT, split_text, utf16_len

texts = st.text(
    alphabet=st.sampled_from(["a", "b", " ", "\n", "\r", "é", "😀", "\u2028", "*", "_"]),
    max_size=400,
)
lines = st.lists(st.text(alphabet="xyz😀", max_size=30), max_size=40).map("\n".join)


@given(st.one_of(texts, lines, st.text()), st.integers(min_value=2, max_value=50))
def test_chunks_fit_and_rejoin(text: str, limit: int) -> None:
    for measure in (len, utf16_len):
        chunks = split_text(text, limit, measure=measure)
        assert "".join(chunks) == text
        assert all(0 < measure(chunk) <= limit for chunk in chunks)


@given(lines, st.integers(min_value=61, max_value=200))
def test_breaks_only_at_line_ends_when_lines_fit(text: str, limit: int) -> None:
    # Every line here is at most 30 chars, 60 UTF-16 units plus its newline: with a limit
    # of 61 or more no hard cut is needed (below, 30 emoji on one line must be cut).
    chunks = split_text(text, limit, measure=utf16_len)
    for chunk in chunks[:-1]:
        assert chunk.endswith("\n")


@given(lines, st.integers(min_value=40, max_value=200))
def test_chunks_are_greedy(text: str, limit: int) -> None:
    chunks = split_text(text, limit)
    for chunk, following in zip(chunks, chunks[1:], strict=False):
        next_line = following.splitlines(keepends=True)[0]
        assert len(chunk) + len(next_line) > limit


def test_examples() -> None:
    assert split_text("", 10) == []
    assert split_text("short", 10) == ["short"]
    assert split_text("aaa\nbbb\nccc", 8) == ["aaa\nbbb\n", "ccc"]
    assert split_text("abcdefghij", 4) == ["abcd", "efgh", "ij"]
    assert split_text("ab\n" + "x" * 5 + "\ncd", 4) == ["ab\n", "xxxx", "x\ncd"]
    # A surrogate pair is never cut in half.
    assert split_text("😀😀😀", 3, measure=utf16_len) == ["😀", "😀", "😀"]


def test_telegram_limit_and_small_limits() -> None:
    text = ("line of text\n" * 1000)[:-1]
    chunks = split_text(text, TELEGRAM_TEXT_LIMIT)
    assert all(len(c) <= TELEGRAM_TEXT_LIMIT for c in chunks)
    assert "".join(chunks) == text
    with pytest.raises(ValueError):
        split_text("abc", 1)
