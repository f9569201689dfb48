"""The parser's time grows linearly with the text, whatever the text and however it is fed.

Each test times the same work on a text and on one eight times as long, in CPU seconds of this
process (the best of three), and allows three times the linear growth: linear time gives about
8x. On the audit's texts at these sizes the parser before the fix took 36x (``a<`` repeated),
40x (HTML) and 54x (whitespace in a block, streamed in 64-byte chunks). No test compares with a
fixed wall-clock limit.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import pytest

from reflectkit.tags import REFLECTION_TAGS, StreamParser, escape_tags, parse

GROWTH = 8
SLACK = 3


def _seconds(work: Callable[[], object]) -> float:
    best = float("inf")
    gc.disable()  # a collection inside one run would count against it
    try:
        for _ in range(3):
            start = time.process_time()
            work()
            best = min(best, time.process_time() - start)
    finally:
        gc.enable()
    return max(best, 1e-6)


def _assert_linear(make: Callable[[int], str], run: Callable[[str], object], size: int) -> None:
    small, large = make(size), make(size * GROWTH)
    ratio = _seconds(lambda: run(large)) / _seconds(lambda: run(small))
    assert ratio < GROWTH * SLACK, f"{GROWTH}x the text took {ratio:.1f}x the time"


def _fed(chunk: int) -> Callable[[str], object]:
    def run(text: str) -> object:
        parser = StreamParser()
        for start in range(0, len(text), chunk):
            parser.feed(text[start : start + chunk])
        parser.close()
        return parser.result

    return run


def _angle_brackets(n: int) -> str:
    return "a<" * (n // 2)  # the audit: parse("a<" * 400_000) took 10-19 s


def _html(n: int) -> str:
    return "<output>" + '<td class="x"><b>cell</b></td>\n' * (n // 32)  # 5 MB took 399 s


def _whitespace_in_a_block(n: int) -> str:
    return "<output>x" + " \n\t" * (n // 3) + "y</output>"


def _tag_soup(n: int) -> str:
    # Tags and mentions close together: every tag asks the mention rules.
    piece = "<thinking>the <output> tags</thinking><output>`<reflection>`, then</output>< out"
    return piece * (n // len(piece))


def _open_quotes(n: int) -> str:
    # Tags whose mention check reads its whole lookahead, 200 characters (an opening quote that
    # does not close on the line).
    return ('"<output>' + "x" * 190 + "\n") * (n // 200)


TEXTS: dict[str, Callable[[int], str]] = {
    "angle brackets": _angle_brackets,
    "html": _html,
    "whitespace in a block": _whitespace_in_a_block,
    "tag soup": _tag_soup,
    "open quotes": _open_quotes,
}


@pytest.mark.parametrize("make", [_angle_brackets, _html], ids=["angle brackets", "html"])
def test_parse_is_linear_on_the_audits_texts(make: Callable[[int], str]) -> None:
    _assert_linear(make, parse, 128_000)


def test_the_stream_parser_is_linear_on_long_whitespace_in_a_block() -> None:
    _assert_linear(_whitespace_in_a_block, _fed(64), 128_000)


@pytest.mark.parametrize("kind", TEXTS)
def test_parse_is_linear(kind: str) -> None:
    _assert_linear(TEXTS[kind], parse, 16_000)


@pytest.mark.parametrize("kind", TEXTS)
def test_the_stream_parser_is_linear_in_64_byte_chunks(kind: str) -> None:
    _assert_linear(TEXTS[kind], _fed(64), 16_000)


@pytest.mark.parametrize("kind", ["whitespace in a block", "angle brackets", "open quotes"])
def test_the_stream_parser_is_linear_one_character_at_a_time(kind: str) -> None:
    _assert_linear(TEXTS[kind], _fed(1), 2_000)


def test_escaping_is_linear() -> None:
    _assert_linear(_tag_soup, lambda text: escape_tags(text, REFLECTION_TAGS), 16_000)
