"""What a critic is, what it is given, and how plain callables become critics."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from langgraph.errors import GraphBubbleUp

from reflectkit.errors import ConfigurationError, CriticError, ReflectkitError
from reflectkit.verdict import Verdict

if TYPE_CHECKING:
    from reflectkit.config import RetryPolicy
    from reflectkit.messages import Conversation, Message, PromptBuilder
    from reflectkit.result import Draft
    from reflectkit.trajectory import Trajectory

__all__ = [
    "Critic",
    "CriticSetup",
    "CritiqueRequest",
    "FunctionCritic",
    "TrajectoryCritic",
    "ask_critic",
    "check_critic",
    "coerce_verdict",
    "critic_label",
]


@dataclass(frozen=True)
class CriticSetup:
    """What a run offers its critic before the first draft: the generator's model and the
    settings a critic that calls a model starts from (see :meth:`Critic.check`)."""

    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    retry: RetryPolicy | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class CritiqueRequest:
    """Everything a critic may look at, plus what an LLM critic needs to make its call."""

    question: str
    """The text of the user's last turn."""
    answer: str
    """The draft's answer, tags stripped."""
    draft: Draft
    """The whole draft: raw text, thinking, reflections, parse status."""
    iteration: int
    """The draft's number, 1-based."""
    messages: list[Message] = field(default_factory=list)
    """The user's conversation (a copy)."""
    prompts: PromptBuilder | None = None
    """The rendered templates (what an LLM critic sends)."""
    default_model: str | None = None
    """The generator's model, for a critic given none."""
    default_model_kwargs: dict[str, Any] = field(default_factory=dict)
    """The generator's LiteLLM keywords, for a critic given none."""
    retry: RetryPolicy | None = None
    """The run's retry policy, for a critic's model calls."""
    timeout: float | None = None
    """The run's per-call timeout in seconds, for a critic's model calls."""
    conversation: Conversation | None = None
    """The validated conversation ``messages`` come from (set by the loop), so a critic that
    reads it needs not validate the messages again."""
    trajectory: Trajectory | None = None
    """The whole run of a runnable or agent wrapped by :func:`reflectkit.reflective`: every
    message from the request to the answer, tool calls and results included. None in the loop."""


@runtime_checkable
class Critic(Protocol):
    """Decides whether a draft passes. Implement ``acritique``; ``name`` labels its verdicts.

    A critic may also define ``check(self, setup: CriticSetup) -> None``: it is called before
    every run, before any model is called, and raising there (a ConfigurationError, say) fails
    the run at once. Without one there is nothing to check. ``label(self, setup) -> str``, where
    defined, is the name the run's result records (an LLM critic without a model of its own
    names the generator's). ``expensive = True`` (LLM and human critics) makes
    :class:`~reflectkit.AllOf` ask it after the cheap critics.
    """

    name: str
    """A label for results and logs (``llm:gpt-4o-mini``, a function's name)."""

    async def acritique(self, request: CritiqueRequest) -> Verdict:
        """Return a verdict on ``request.answer``. Raising fails the run with a CriticError
        (its ``partial`` keeps the work so far), unless ``on_critic_error="keep_best"``."""
        ...


def coerce_verdict(value: Any, critic: str) -> Verdict:
    """Turn what a function critic returned into a Verdict.

    ``True`` passes, ``False`` asks for a revision; a non-empty string asks for a revision with
    that string, verbatim, as the feedback, and an empty string passes; a dict is read as a
    Verdict's fields. Anything else (including ``None``, usually a missing ``return``) is an error.
    """
    if isinstance(value, Verdict):
        return value if value.critic else value.model_copy(update={"critic": critic})
    if isinstance(value, bool):
        feedback = "" if value else "The answer did not pass the check."
        return Verdict(passed=value, feedback=feedback, critic=critic)
    if isinstance(value, str):
        return Verdict(passed=not value.strip(), feedback=value, critic=critic)
    if isinstance(value, dict):
        try:
            return Verdict(**{"critic": critic, **value})
        except Exception as error:
            raise CriticError(f"critic {critic} returned an unusable dict: {error}") from None
    raise CriticError(
        f"critic {critic} returned {type(value).__name__}; return a bool, a str or a Verdict"
    )


class FunctionCritic:
    """A critic made from a callable ``(question, answer) -> bool | str | Verdict | dict``.

    A plain callable passed as ``critic=`` is wrapped in one. What it returns: ``True`` passes,
    ``False`` asks for a revision; a non-empty string asks for a revision with that text as the
    feedback, verbatim, with no model paraphrasing it in between; an empty string passes; a
    Verdict is taken as it is, a dict as a Verdict's fields. Anything else (``None`` included,
    usually a missing ``return``) is a :class:`~reflectkit.CriticError`.

    The callable may be sync or async. Sync callables run in a worker thread so a slow check
    (running tests, calling a service) does not stall other runs on the event loop.

    Args:
        fn: The check, called with the question (the user's last turn) and the answer (tags
            stripped).
        name: The label on its verdicts and in results; None: ``fn``'s ``__name__`` (or its
            type's name).

    Raises:
        ConfigurationError: ``fn`` is not callable.
    """

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None) -> None:
        if not callable(fn):
            raise ConfigurationError("FunctionCritic needs a callable")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", type(fn).__name__))
        self.expensive = False

    async def acritique(self, request: CritiqueRequest) -> Verdict:
        """``fn(question, answer)``, its return value read as a verdict."""
        return coerce_verdict(await _call(self.fn, request.question, request.answer), self.name)


class TrajectoryCritic(FunctionCritic):
    """A critic made from a callable ``(trajectory) -> bool | str | Verdict | dict`` that judges
    the whole run of a runnable wrapped by :func:`reflectkit.reflective` (its
    :class:`~reflectkit.trajectory.Trajectory`: tool calls, their results, the answer). What it
    returns is read as :class:`FunctionCritic` reads it; sync callables run in a worker thread.
    A run without a trajectory (the plain loop) fails with a CriticError.

    Args:
        fn: The check, called with the run's :class:`~reflectkit.Trajectory`.
        name: The label on its verdicts and in results; None: ``fn``'s ``__name__`` (or its
            type's name).
    """

    async def acritique(self, request: CritiqueRequest) -> Verdict:
        """``fn(trajectory)``, its return value read as a verdict."""
        if request.trajectory is None:
            raise CriticError(f"critic {self.name} judges a trajectory, and this run has none")
        return coerce_verdict(await _call(self.fn, request.trajectory), self.name)


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, awaited if async; a sync ``fn`` runs in a worker thread, so a slow check
    does not stall other runs on the event loop."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    value = await asyncio.to_thread(fn, *args)
    return await value if inspect.isawaitable(value) else value


def check_critic(critic: Critic, setup: CriticSetup) -> None:
    """Call ``critic.check(setup)`` if the critic has one (the default is to check nothing)."""
    check = getattr(critic, "check", None)
    if check is not None:
        check(setup)


def critic_label(critic: Critic, setup: CriticSetup) -> str:
    """The name a run records for ``critic``: its ``label(setup)`` if it has one, else its name."""
    label = getattr(critic, "label", None)
    return str(label(setup)) if label is not None else critic.name


async def ask_critic(critic: Critic, request: CritiqueRequest, limit: float | None) -> Verdict:
    """Ask the critic, turning a crash or a hang (``limit`` seconds) into a CriticError;
    reflectkit's own errors (a provider failing under an LLM critic) pass as they are, and so
    does LangGraph's pause (a :class:`~reflectkit.critics.HumanCritic`'s ``interrupt()``)."""
    try:
        async with asyncio.timeout(limit):
            return await critic.acritique(request)
    except (ReflectkitError, GraphBubbleUp):
        raise
    except TimeoutError:
        raise CriticError(f"critic {critic.name} gave no verdict within {limit} s") from None
    except Exception as error:
        raise CriticError(f"critic {critic.name} raised {type(error).__name__}: {error}") from error
