"""The tag grammar: a scheme's tag names, and finding its tags in text.

A :class:`TagScheme` names the three blocks of the protocol (see :mod:`reflectkit.tags`, its
public home); :class:`_TagMatcher` recognises those names as tags at a ``<``: ``<`` + up to three
spaces + optional ``/`` + up to three spaces + a name in any letter case + up to three spaces +
``>``, or says that the text so far may still become one. The parser, the mention check and
:func:`escape_tags` (which makes a text's tags plain text before it goes into a prompt) all read
tags through it, so they agree on what a tag is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from reflectkit.errors import ConfigurationError

__all__ = ["REFLECTION_TAGS", "THINK_TAGS", "TagScheme", "escape_tags"]

_MAX_SPACES = 3
_MAX_NAME = 32
_FORBIDDEN_IN_NAME = re.compile(r"[\s<>/&]")
# A tag's parts: spaces, "/", spaces, name, spaces, ">". One more space or name character than
# allowed is enough to say "not a tag", so each part stops there (bounded work per "<").
_SHAPE = re.compile(r"<(\s{0,4})(/?)(\s{0,4})([^\s<>/]{0,33})(\s{0,4})(>?)")


@dataclass(frozen=True)
class TagScheme:
    """The tag names of one protocol: reasoning, self-correction and answer.

    Names may be in any script (``TagScheme("推理", "反思", "输出")``). ``reflection`` and
    ``output`` may be ``None``: a scheme without an output tag (like :data:`THINK_TAGS`) takes
    the text outside its tags as the answer.
    """

    thinking: str = "thinking"
    """The reasoning tag's name."""
    reflection: str | None = "reflection"
    """The self-correction tag's name; None for schemes without one."""
    output: str | None = "output"
    """The answer tag's name; None when the answer is the text after the reasoning."""

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for name in self.names:
            if not name or len(name) > _MAX_NAME or _FORBIDDEN_IN_NAME.search(name):
                raise ConfigurationError(
                    f"invalid tag name {name!r}: use 1-{_MAX_NAME} characters without "
                    "spaces, '<', '>', '/' or '&'"
                )
            if name.casefold() in seen:
                raise ConfigurationError(f"tag name {name!r} is used twice in one scheme")
            seen.add(name.casefold())

    @property
    def names(self) -> tuple[str, ...]:
        """The scheme's tag names, without the ones it does not use."""
        return tuple(n for n in (self.thinking, self.reflection, self.output) if n is not None)


REFLECTION_TAGS = TagScheme("thinking", "reflection", "output")
"""``<thinking>``, ``<reflection>``, ``<output>``: the scheme Reflection-70B was tuned on."""

THINK_TAGS = TagScheme("think", None, None)
"""``<think>`` as DeepSeek-R1 and Qwen reasoning models emit it; the rest of the text answers."""


class _Channel(Enum):
    THINKING = "thinking"
    REFLECTION = "reflection"
    OUTPUT = "output"
    OUTSIDE = "outside"


class _Match(Enum):
    TAG = 1
    PARTIAL = 2
    NONE = 3


class _TagMatcher:
    """Recognises the tags of a set of names at a ``<`` in a string, or says it may be one."""

    def __init__(self, names: dict[str, _Channel]) -> None:
        self._names = {name.casefold(): channel for name, channel in names.items()}
        # Where a tag may start: "<" then a space, "/", any non-ASCII character, or an ASCII
        # letter a name starts with (in either case). Finding the next one is C code, so text
        # full of other "<"s ("a<b", HTML) goes by at the speed of str.find.
        firsts = {name[0] for name in self._names if name[0].isascii()}
        ascii_firsts = "".join(sorted(firsts | {c.upper() for c in firsts}))
        self.candidates = re.compile(
            r"<(?=[\s/]|[^\x00-\x7f]|[" + re.escape(ascii_firsts) + "])"
            if ascii_firsts
            else r"<(?=[\s/]|[^\x00-\x7f])"
        )

    def find(self, s: str, p: int) -> int:
        """The next "<" at or after ``p`` that may start a tag (or a "<" ending ``s``), or -1."""
        found = self.candidates.search(s, p)
        if found is not None:
            return found.start()
        return len(s) - 1 if s.endswith("<") and len(s) - 1 >= p else -1

    def match(self, s: str, j: int) -> tuple[_Match, int, bool, _Channel | None]:
        """Match a tag starting at ``s[j] == '<'``: (result, end, is_closing, channel)."""
        shape = _SHAPE.match(s, j)
        assert shape is not None  # every part of the pattern is optional
        spaces = (shape.end(1) - shape.start(1), shape.end(3) - shape.start(3))
        if max(spaces) > _MAX_SPACES:
            return (_Match.NONE, j + 1, False, None)
        word = shape.group(4)
        if len(word) > _MAX_NAME:
            return (_Match.NONE, j + 1, False, None)
        key = word.casefold()
        n = len(s)
        if shape.end(4) == n:
            if any(name.startswith(key) for name in self._names):
                return (_Match.PARTIAL, j, False, None)
            return (_Match.NONE, j + 1, False, None)
        channel = self._names.get(key)
        if channel is None or shape.end(5) - shape.start(5) > _MAX_SPACES:
            return (_Match.NONE, j + 1, False, None)
        if shape.end(5) == n:
            return (_Match.PARTIAL, j, False, None)
        if not shape.group(6):
            return (_Match.NONE, j + 1, False, None)
        return (_Match.TAG, shape.end(), bool(shape.group(2)), channel)


def escape_tags(text: str, names: tuple[str, ...] | TagScheme) -> str:
    """Neutralise every tag of ``names`` in ``text`` so no parser or model reads it as a tag.

    The ``<`` of each tag the parser would recognise becomes ``&lt;`` (mentions too: escaping
    more than needed is harmless). Used on user text and drafts before they go into a prompt, so
    a question that contains ``<output>…</output>`` can never forge the final answer.
    """
    tag_names = names.names if isinstance(names, TagScheme) else names
    if "<" not in text or not tag_names:
        return text
    matcher = _TagMatcher(dict.fromkeys(tag_names, _Channel.OUTSIDE))
    pieces: list[str] = []
    i = 0
    while (j := matcher.find(text, i)) >= 0:
        pieces.append(text[i:j])
        kind, end, _, _ = matcher.match(text, j)
        if kind is _Match.TAG:
            pieces.append("&lt;" + text[j + 1 : end])
            i = end
        else:
            pieces.append("<")
            i = j + 1
    pieces.append(text[i:])
    return "".join(pieces)
