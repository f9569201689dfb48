"""Typed events that :meth:`reflectkit.Reflector.astream` yields while a run is under way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reflectkit.result import Draft, ReflectionResult, StopReason
from reflectkit.tags import TagDelta
from reflectkit.usage import Usage
from reflectkit.verdict import Verdict

__all__ = [
    "DraftDelta",
    "ReflectEvent",
    "ResultEvent",
    "StepEvent",
    "StepStarted",
    "TrialEvent",
]


@dataclass(frozen=True)
class StepStarted:
    """A node of the loop started (``iteration`` is the draft it works on)."""

    node: str
    """The step: ``"generate"``, ``"critique"``, ``"revise"`` or ``"finalize"``."""
    iteration: int
    """The draft it works on, 1-based."""


@dataclass(frozen=True)
class DraftDelta:
    """A piece of a loop draft as the model writes it; ``delta`` says which part (thinking,
    reflection, answer) and ``iteration`` which draft. The run's answer is known only when the
    critic is done, so it arrives afterwards as an :class:`~reflectkit.OutputDelta`."""

    iteration: int
    """The draft being written, 1-based."""
    delta: TagDelta
    """The piece of text and which block it belongs to."""


@dataclass(frozen=True)
class StepEvent:
    """A node of the loop finished.

    ``node`` is ``"generate"``, ``"critique"``, ``"revise"`` or ``"finalize"``; ``draft`` is set
    after generate and revise, ``verdict`` after critique; ``usage`` is what this step cost;
    ``stop_reason`` is set once the step decided that the run ends.
    """

    node: str
    """The step: ``"generate"``, ``"critique"``, ``"revise"`` or ``"finalize"``."""
    iteration: int
    """The draft it worked on, 1-based."""
    draft: Draft | None = None
    """The draft written (after generate and revise)."""
    verdict: Verdict | None = None
    """The critic's verdict (after critique)."""
    usage: Usage | None = None
    """This step's calls."""
    stop_reason: StopReason | None = None
    """Why the run stops, once a step decides it."""


@dataclass(frozen=True)
class TrialEvent:
    """A Reflexion trial failed its critic; ``lesson`` is what the model learnt for the next."""

    number: int
    """The trial that failed, 1-based."""
    result: ReflectionResult
    """That trial's result."""
    lesson: str
    """What the model wrote for the next trial to read."""


@dataclass(frozen=True)
class ResultEvent:
    """The run is over; this is its result. Always the last event of a stream."""

    result: ReflectionResult
    """The run's final result."""

    @property
    def parsed(self) -> Any:
        """The typed answer (``output_type``), validated: ``result.parsed``."""
        return self.result.parsed


ReflectEvent = StepStarted | StepEvent | DraftDelta | TrialEvent | ResultEvent | TagDelta
"""What :meth:`reflectkit.Reflector.astream` yields: steps, answer (and, on request, thinking and
reflection) deltas from :mod:`reflectkit.tags`, and the result."""
