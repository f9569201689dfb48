"""A person as the critic: :class:`HumanCritic` pauses a durable run until someone judges the draft.

A person cannot answer inside a model call's time, so the critic does not wait: it calls
LangGraph's ``interrupt()`` with what the person needs to judge (the question, the draft's
answer, its thinking and reflections, the iteration). LangGraph saves the run's state in its
checkpointer and ends the run there; the run's result says ``awaiting_human``. Resuming the
thread with the person's verdict (``Reflector.resume(thread_id, "pass")``, or feedback text)
runs the critique node again from its start, and this time ``interrupt()`` returns the verdict.
The draft is already in the saved state, so nothing before the pause is paid for again; critics
asked before the person in a composite are asked again, which is why only cheap ones (code,
schema, functions) may come before it (:func:`check_human_order`).

The verdict a person gives (:func:`human_verdict`): ``True`` or ``"pass"`` passes; text is
feedback for the revise step, verbatim; ``False`` asks for a revision with no particular advice;
a :class:`~reflectkit.Verdict` (or a dict of its fields) is taken as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langgraph.config import get_config
from langgraph.types import interrupt

from reflectkit.critics.base import Critic, CritiqueRequest, coerce_verdict
from reflectkit.critics.compose import is_expensive
from reflectkit.errors import ConfigurationError, CriticError
from reflectkit.verdict import Verdict

__all__ = [
    "PASS_WORD",
    "HumanCritic",
    "check_human_order",
    "has_human",
    "human_verdict",
]

PASS_WORD = "pass"
"""The reply (any case, spaces around it ignored) that passes the draft; any other text is
feedback."""

_NO_ADVICE = "The reviewer did not accept the answer."


class HumanCritic:
    """Pauses a durable run for a person's verdict on each draft (see the module docstring).

    ``instructions`` is what the person is asked (shown by ``reflectkit run --human`` and
    :func:`reflectkit.ask_human`, and sent with the pause). It is ``expensive``: in an
    :class:`~reflectkit.critics.AllOf`, code critics run first and the person sees only drafts
    that passed them.

    A run with a person as (part of) its critic is durable: it gets a ``thread_id`` when given
    none, and ends with stop reason ``awaiting_human`` at each draft.
    :meth:`Reflector.resume <reflectkit.Reflector.resume>` (or :func:`~reflectkit.ask_human`)
    goes on with the person's verdict: ``True`` or ``"pass"`` passes, text is feedback for the
    revise step (verbatim), ``False`` asks for a revision with no advice, a Verdict (or a dict
    of its fields) is taken as it is. Building the reflector raises ConfigurationError for what
    such a run cannot do: a critic that calls a model asked before the person (resuming would
    ask it again), ``mode="single"``, ``checkpointer=False``, ``time_budget``, Reflexion
    (``trials`` > 1 or ``memory``).

    Args:
        instructions: What the person is asked.
        name: The label on its verdicts and in results.
    """

    expensive = True

    def __init__(
        self,
        *,
        instructions: str = "Reply pass to accept the answer, or say what to fix.",
        name: str = "human",
    ) -> None:
        self.instructions = instructions
        self.name = name

    async def acritique(self, request: CritiqueRequest) -> Verdict:
        """Pause the run with :meth:`pause`'s data; on resume, read the person's verdict."""
        try:
            get_config()
        except RuntimeError:
            raise CriticError(
                "HumanCritic pauses the run with LangGraph's interrupt(): it works only inside "
                "a run of the graph, with a checkpointer and a thread_id"
            ) from None
        reply = interrupt(self.pause(request))
        try:
            return human_verdict(reply, self.name)
        except ConfigurationError as error:
            raise CriticError(f"critic {self.name} was resumed with {error}") from None

    def pause(self, request: CritiqueRequest) -> dict[str, Any]:
        """What the run's pause carries (LangGraph's ``Interrupt.value``): plain data a person, a
        user interface or LangGraph Platform's client can show."""
        draft = request.draft
        return {
            "critic": self.name,
            "instructions": self.instructions,
            "question": request.question,
            "answer": request.answer,
            "thinking": list(draft.thinking),
            "reflections": list(draft.reflections),
            "iteration": request.iteration,
        }


def human_verdict(value: Any, critic: str = "human") -> Verdict:
    """A person's verdict as a :class:`~reflectkit.Verdict` (see the module docstring); anything
    else, an empty text included, raises ConfigurationError."""
    if isinstance(value, bool):
        return Verdict(passed=value, feedback="" if value else _NO_ADVICE, critic=critic)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ConfigurationError(f"an empty verdict: give {PASS_WORD!r} or what to fix")
        if text.casefold() == PASS_WORD:
            return Verdict(passed=True, critic=critic)
        return Verdict(passed=False, feedback=text, critic=critic)
    try:  # a Verdict, or a dict of its fields, as any critic may return them
        return coerce_verdict(value, critic)
    except CriticError as error:
        raise ConfigurationError(f"an unusable verdict: {error}") from None


def _leaves(critic: Critic) -> Iterator[Critic]:
    """The critics inside ``critic`` in the order they are asked (composites list theirs)."""
    members = getattr(critic, "critics", None)
    if isinstance(members, list):
        for member in members:
            yield from _leaves(member)
    else:
        yield critic


def has_human(critic: Critic | None) -> bool:
    """Whether ``critic`` is, or contains, a :class:`HumanCritic`."""
    return critic is not None and any(isinstance(c, HumanCritic) for c in _leaves(critic))


def check_human_order(critic: Critic | None) -> None:
    """Refuse a composite that asks a model-calling critic before a person: resuming runs the
    critique again from its start, so that critic would be asked, and paid for, twice."""
    if critic is None:
        return
    costly: str | None = None
    for leaf in _leaves(critic):
        if isinstance(leaf, HumanCritic):
            if costly is not None:
                raise ConfigurationError(
                    f"critic {costly} is asked before the HumanCritic: resuming the run would "
                    "ask it again and pay twice. Put the person first "
                    "(AllOf(HumanCritic(), ..., order='given')), or use only cheap critics "
                    "(code, schema, functions) before the person"
                )
        elif is_expensive(leaf):
            costly = leaf.name
