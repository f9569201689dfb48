"""What the tag parser gives back: a reply split into its parts, and the deltas of a stream.

The data of :mod:`reflectkit.tags` (its public home, which re-exports every name here): the
:class:`Parsed` reply and its :class:`ParseStatus`, which :func:`~reflectkit.tags.parse` and
:attr:`~reflectkit.tags.StreamParser.result` return, and the :class:`TagDelta` kinds a
:class:`~reflectkit.tags.StreamParser` emits as it reads. Plain data: this module imports
nothing from reflectkit, so the modules that only hold a parse's result (``result.py``) need not
load the parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "OutputDelta",
    "OutputReset",
    "OutsideDelta",
    "ParseStatus",
    "Parsed",
    "ReflectionDelta",
    "TagDelta",
    "ThinkingDelta",
]


class ParseStatus(StrEnum):
    """How far a reply kept to the tag format."""

    COMPLETE = "complete"
    """Every block was closed and the answer came from an output block (or, for a scheme
    without an output tag, from the text outside the tags)."""
    UNCLOSED = "unclosed"
    """A block was still open when the text ended; its text runs to the end."""
    MISSING_OUTPUT = "missing_output"
    """Tags were used but there was no output block; the answer is the text outside the tags."""
    UNTAGGED = "untagged"
    """No tag at all; the whole text is the answer."""
    EMPTY = "empty"
    """The text was empty or only whitespace."""

    # A run's checkpoints keep a draft's status with this class's module path, and the
    # checkpoint serializer rebuilds only classes at the paths it allows: the path stays the
    # public one, reflectkit.tags, whatever module defines the class.
    __module__ = "reflectkit.tags"


@dataclass(frozen=True)
class TagDelta:
    """A piece of one channel's text, emitted by :class:`StreamParser` as soon as it is sure.

    ``index`` is the block the text belongs to: ``Parsed.thinking[index]`` for thinking,
    ``Parsed.reflections[index]`` for reflections, always 0 for output and outside text.
    """

    text: str
    index: int = 0


@dataclass(frozen=True)
class ThinkingDelta(TagDelta):
    """Text of a thinking block."""


@dataclass(frozen=True)
class ReflectionDelta(TagDelta):
    """Text of a reflection block."""


@dataclass(frozen=True)
class OutputDelta(TagDelta):
    """Text of the answer.

    The texts of the output deltas after the last :class:`OutputReset` join to the answer,
    ``result.output``. ``provisional`` marks outside text streamed as the answer because no
    output block has come: it is the answer only if none comes (see :data:`PROVISIONAL_AFTER`).
    """

    provisional: bool = False


@dataclass(frozen=True)
class OutputReset(OutputDelta):
    """The answer streamed so far is withdrawn; the output deltas after this one are the answer.

    Sent when an output block replaces provisional outside text, and when the model reconsidered
    (a thinking or reflection block) and wrote a new output block. ``withdrawn`` is the text taken
    back. ``text`` is a blank line: what a consumer that cannot take text back (a chat client, a
    terminal) appends, so the new answer starts a paragraph of its own; a consumer that can
    (a live view) clears its answer instead.
    """

    text: str = "\n\n"
    withdrawn: str = ""


@dataclass(frozen=True)
class OutsideDelta(TagDelta):
    """Text outside every block (the answer only if no output block ever comes)."""


@dataclass(frozen=True)
class Parsed:
    """A reply split into its parts. ``output`` is what a user should see as the answer."""

    output: str
    thinking: list[str] = field(default_factory=list)
    reflections: list[str] = field(default_factory=list)
    outside: str = ""
    status: ParseStatus = ParseStatus.COMPLETE
    outputs: list[str] = field(default_factory=list)
    """Every output block's text, in order, including replaced and empty ones."""
    superseded: int = 0
    """How many of :attr:`outputs` (from the first) a later answer replaced; the answer is the
    rest, joined by a blank line."""

    @property
    def followed_format(self) -> bool:
        """True when the answer came from a real, closed output block."""
        return self.status is ParseStatus.COMPLETE
