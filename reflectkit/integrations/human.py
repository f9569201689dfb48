"""Asking a person for their verdict where they sit: a terminal, or a Jupyter notebook.

:func:`ask_human` is the loop ``reflectkit run --human`` runs, as a function: while the run
waits for a person (stop reason ``awaiting_human``), show the draft, ask for ``pass`` or
feedback, and resume the thread with the reply. ``input()`` works in a terminal and in Jupyter
alike; pass ``ask`` and ``show`` to use anything else. A reply that cannot come (``ask`` raises
``EOFError``: stdin ran out) ends the loop with the run still waiting, to be resumed later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from reflectkit.critics.human import PASS_WORD

if TYPE_CHECKING:
    from reflectkit.api import Reflector
    from reflectkit.result import ReflectionResult

__all__ = ["ask_human", "waiting_text"]

QUESTION = f"{PASS_WORD}, or what to fix: "
"""What :func:`ask_human` asks by default."""


def waiting_text(result: ReflectionResult) -> str:
    """A paused run as a person reads it: the question's draft and what to reply."""
    final = result.iterations[-1] if result.iterations else None
    number = final.number if final else result.final_iteration
    lines = [f"── draft {number} awaits your verdict (thread {result.thread_id}) ──"]
    if final is not None:
        for block in final.draft.thinking:
            lines += ["── its thinking ──", block]
    lines += ["── answer ──", result.output]
    return "\n".join(lines)


def ask_human(
    reflector: Reflector,
    result: ReflectionResult,
    *,
    ask: Callable[[str], str] = input,
    show: Callable[[str], object] = print,
) -> ReflectionResult:
    """Judge a paused run's drafts in person until it ends; returns its last result.

    Each draft is shown with ``show``; ``ask(question)`` returns the reply: ``pass`` accepts
    the draft, other text is feedback for the next revision, an empty reply asks again. A
    result that does not wait for anyone is returned as it is, and so is the paused result
    when ``ask`` meets the end of its input (EOFError): the run stays paused.

    Args:
        reflector: Resumes the thread: it needs the run's settings, a
            :class:`~reflectkit.HumanCritic` among them.
        result: The paused run's result.
        ask: Asks the person and returns the reply (default: ``input``).
        show: Shows the person each draft, as text (default: ``print``).
    """
    while result.awaiting_human:
        show(waiting_text(result))
        reply = ""
        while not reply.strip():
            try:
                reply = ask(QUESTION)
            except EOFError:
                return result
        result = reflector.resume(result, reply)
    return result
