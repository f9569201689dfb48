"""message_text: the one reading of a chat message's text (prompts, export, the local model)."""

from __future__ import annotations

from typing import Any

import pytest

from reflectkit import messages
from reflectkit.content import message_text

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


@pytest.mark.parametrize(
    ("content", "sep", "text"),
    [
        ("plain", "\n", "plain"),
        (None, "\n", ""),
        ([{"type": "text", "text": "a"}, IMAGE, {"type": "text", "text": "b"}], "\n", "a\nb"),
        ([{"type": "text", "text": "a"}, IMAGE, {"type": "text", "text": "b"}], "", "ab"),
        ([IMAGE], "\n", ""),
        ([], "\n", ""),
    ],
)
def test_the_text_of_a_message(content: Any, sep: str, text: str) -> None:
    assert message_text(content, sep=sep) == text


def test_the_loop_reads_the_same_function() -> None:
    assert messages.message_text is message_text
