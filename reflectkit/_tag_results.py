"""What a parse gives back: a reply split into its parts, and how far it kept to the format.

The :class:`Parsed` reply and its :class:`ParseStatus`, which :func:`~reflectkit.tags.parse` and
:attr:`~reflectkit.tags.StreamParser.result` return (:mod:`reflectkit.tags` is their public
home and re-exports them). Plain data: this module imports nothing from reflectkit, so a module
that only holds a parse's result need not load the parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["ParseStatus", "Parsed"]


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
class Parsed:
    """A reply split into its parts. ``output`` is what a user should see as the answer."""

    output: str
    """The answer: the last output block, else the text outside the tags."""
    thinking: list[str] = field(default_factory=list)
    """Every thinking block, in order."""
    reflections: list[str] = field(default_factory=list)
    """Every reflection block, in order."""
    outside: str = ""
    """Text outside every block."""
    status: ParseStatus = ParseStatus.COMPLETE
    """How well the text kept to the format."""
    outputs: list[str] = field(default_factory=list)
    """Every output block's text, in order, including replaced and empty ones."""
    superseded: int = 0
    """How many of :attr:`outputs` (from the first) a later answer replaced; the answer is the
    rest, joined by a blank line."""

    @property
    def followed_format(self) -> bool:
        """True when the answer came from a real, closed output block."""
        return self.status is ParseStatus.COMPLETE
