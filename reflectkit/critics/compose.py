"""Composing critics: all must pass, or any may; cheap code critics before LLM critics.

Feedback from outside the model (tests, validators, schemas) is what makes reflection pay, and
it is cheap; an LLM critic costs a call. ``AllOf`` therefore runs the critics that are not
``expensive`` first, in the order given, and reaches an LLM critic only when they all passed;
the first failing verdict ends the round and its feedback goes to the revise step verbatim.
``order="given"`` keeps the order as passed. A list passed as ``critic=`` means ``AllOf``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, Literal

from reflectkit.critics.base import (
    Critic,
    CriticSetup,
    CritiqueRequest,
    FunctionCritic,
    check_critic,
)
from reflectkit.errors import ConfigurationError
from reflectkit.usage import Usage
from reflectkit.verdict import Verdict

__all__ = ["AllOf", "AnyOf", "as_critic", "is_expensive"]

Order = Literal["cheap_first", "given"]


def is_expensive(critic: Critic) -> bool:
    """Whether a critic costs a model call (LLM critics say so with ``expensive = True``)."""
    return bool(getattr(critic, "expensive", False))


def _usage(verdicts: Sequence[Verdict]) -> Usage | None:
    spent = [v.usage for v in verdicts if v.usage is not None]
    if not spent:
        return None
    total = Usage()
    for usage in spent:
        total = total + usage
    return total


class _Composite(abc.ABC):
    """What AllOf and AnyOf share: the members, their order, and a round that asks them in turn
    until one's verdict settles it (``_stop_at``); :meth:`_combine` judges a round none settled."""

    expensive: bool
    name: str
    _label: str
    _stop_at: bool

    def __init__(self, *critics: Any, order: Order = "cheap_first", name: str | None = None):
        if not critics:
            raise ConfigurationError(f"{type(self).__name__} needs at least one critic")
        if order not in ("cheap_first", "given"):
            raise ConfigurationError(f"order must be 'cheap_first' or 'given', not {order!r}")
        members = [as_critic(c) for c in critics]
        if any(m is None for m in members):
            raise ConfigurationError(f"{type(self).__name__} cannot take None as a critic")
        self.critics: list[Critic] = [m for m in members if m is not None]
        if order == "cheap_first":
            self.critics.sort(key=is_expensive)  # stable: the given order within each group
        self.expensive = any(is_expensive(c) for c in self.critics)
        self.name = name or f"{self._label}({', '.join(c.name for c in self.critics)})"

    def check(self, setup: CriticSetup) -> None:
        """Check every member critic."""
        for critic in self.critics:
            check_critic(critic, setup)

    async def acritique(self, request: CritiqueRequest) -> Verdict:
        """Ask the critics in turn until one settles the round (see the class)."""
        verdicts: list[Verdict] = []
        for critic in self.critics:
            verdict = await critic.acritique(request)
            verdicts.append(verdict)
            if verdict.passed == self._stop_at:
                # What an earlier member parsed (a SchemaCritic's object) stays on the verdict.
                parsed = next((v.parsed for v in verdicts if v.parsed is not None), None)
                return verdict.model_copy(update={"usage": _usage(verdicts), "parsed": parsed})
        return self._combine(verdicts)

    @abc.abstractmethod
    def _combine(self, verdicts: list[Verdict]) -> Verdict:
        """The verdict of a round in which no member's verdict settled it."""


class AllOf(_Composite):
    """Passes when every critic passes; stops at the first that does not.

    That critic's verdict is the round's, its feedback going to the revise step verbatim; later
    critics are not asked. When all pass, the score is the lowest given. Either way ``parsed``
    is the first critic's that has one (a :class:`~reflectkit.SchemaCritic`'s object), so an
    answer that validated keeps its object even when a later critic rejects it. ``critic=[a, b]``
    means ``AllOf(a, b)``. The verdict's ``usage`` adds up every critic asked.

    Args:
        *critics: The critics: any :class:`~reflectkit.Critic`, or callables (each becomes a
            :class:`~reflectkit.FunctionCritic`), or lists of them (each an ``AllOf``).
        order: ``"cheap_first"`` asks the critics that are not ``expensive`` (code, schema,
            function critics) before those that call a model or a person, each group in the
            order given; ``"given"`` keeps the order as passed.
        name: The label on its verdicts; None: ``all(<each critic's name>)``.

    Raises:
        ConfigurationError: No critics, a None among them, or an unknown ``order``.
    """

    _label = "all"
    _stop_at = False

    def _combine(self, verdicts: list[Verdict]) -> Verdict:
        scores = [v.score for v in verdicts if v.score is not None]
        parsed = next((v.parsed for v in verdicts if v.parsed is not None), None)
        return Verdict(
            passed=True,
            score=min(scores) if scores else None,
            critic=self.name,
            usage=_usage(verdicts),
            parsed=parsed,
        )


class AnyOf(_Composite):
    """Passes when one critic passes (it stops there); otherwise every critic's feedback.

    The first passing verdict is the round's, and later critics are not asked. When none
    passes, the verdict fails with every critic's issues, their feedback joined (each headed
    by its critic's name) and the highest score given. The verdict's ``usage`` adds up every
    critic asked.

    Args:
        *critics: The critics: any :class:`~reflectkit.Critic`, or callables (each becomes a
            :class:`~reflectkit.FunctionCritic`), or lists of them (each an ``AllOf``).
        order: ``"cheap_first"`` asks the critics that are not ``expensive`` before those that
            call a model or a person, each group in the order given; ``"given"`` keeps the
            order as passed.
        name: The label on its verdicts; None: ``any(<each critic's name>)``.

    Raises:
        ConfigurationError: No critics, a None among them, or an unknown ``order``.
    """

    _label = "any"
    _stop_at = True

    def _combine(self, verdicts: list[Verdict]) -> Verdict:
        scores = [v.score for v in verdicts if v.score is not None]
        feedback = "\n\n".join(f"{v.critic}: {v.feedback}" for v in verdicts if v.feedback)
        return Verdict(
            passed=False,
            score=max(scores) if scores else None,
            issues=[issue for v in verdicts for issue in v.issues],
            feedback=feedback,
            critic=self.name,
            usage=_usage(verdicts),
        )


def as_critic(value: Any) -> Critic | None:
    """The critic for a ``critic=`` argument: a Critic as is, a callable wrapped, a list or
    tuple composed with :class:`~reflectkit.critics.AllOf` (cheap critics first), None kept."""
    if value is None or isinstance(value, Critic):
        return value
    if isinstance(value, (list, tuple)):
        composed: Critic = AllOf(*value)
        return composed
    if callable(value):
        critic: Critic = FunctionCritic(value)
        return critic
    raise ConfigurationError(
        f"critic must be a Critic, a callable (question, answer) -> verdict, or a list of "
        f"them, not {type(value).__name__}"
    )
