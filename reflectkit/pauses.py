"""Runs that pause for a person: what :class:`~reflectkit.Reflector` needs to start, end and
resume them (the critic that pauses is :class:`~reflectkit.critics.HumanCritic`).

A run whose critic is (or contains) a person is durable whatever the caller asked: it gets a
``thread_id`` of its own when given none (:func:`new_thread_id`), since its result must say
which thread to resume. Its graph stream ends with LangGraph's interrupt update
(:data:`PAUSED`) instead of ``finalize``; the run's result then says ``awaiting_human``. Resuming
first checks that the thread is really waiting (:func:`waiting_messages`), so a mistyped id or
a finished run is a one-line :class:`~reflectkit.ConfigurationError` before anything is
recorded, then sends the verdict as LangGraph's ``Command(resume=...)`` (:func:`resume_input`).
"""

from __future__ import annotations

import uuid
from typing import Any

from langgraph.types import Command

from reflectkit.config import ReflectConfig
from reflectkit.critics.human import has_human, human_verdict
from reflectkit.errors import ConfigurationError
from reflectkit.runtime import Runtime

__all__ = [
    "PAUSED",
    "check_human_settings",
    "new_thread_id",
    "resume_input",
    "waiting_messages",
]

PAUSED = "__interrupt__"
"""The key of the update LangGraph streams when a node called ``interrupt()`` (its constant for
it is private)."""


def check_human_settings(runtime: Runtime, config: ReflectConfig) -> None:
    """Refuse, before any model is paid for, the settings a run that pauses cannot keep."""
    if not has_human(runtime.critic):
        return
    if runtime.mode == "single":
        raise ConfigurationError(
            "a HumanCritic judges drafts in the loop, and mode='single' has no critic: use "
            "mode='loop' or 'auto'"
        )
    if config.checkpointer is False:
        raise ConfigurationError(
            "a HumanCritic pauses the run until a person answers, which needs a checkpointer, "
            "and checkpointer=False"
        )
    if config.trials > 1 or config.memory not in (None, False):
        raise ConfigurationError(
            "a HumanCritic cannot be combined with Reflexion (trials > 1 or memory=) yet"
        )


def new_thread_id() -> str:
    """A fresh thread id for a run that pauses and was given none."""
    return f"human-{uuid.uuid4().hex}"


def resume_input(verdict: Any) -> Command[Any]:
    """The graph input that resumes a paused thread with a person's ``verdict`` (checked here:
    a bad one raises ConfigurationError before the run is recorded). The verdict travels as a
    plain dict, which every checkpointer's serializer keeps."""
    checked = human_verdict(verdict)
    return Command(resume=checked.model_dump(mode="json", exclude={"critic", "usage", "parsed"}))


async def waiting_messages(graph: Any, thread_id: str) -> list[Any]:
    """The conversation of the run paused on ``thread_id`` (its saved messages); raises
    ConfigurationError, saying what became of it, if no run there waits for a person."""
    saved = await graph.aget_state({"configurable": {"thread_id": thread_id}})
    if not saved.values:
        raise ConfigurationError(f"thread {thread_id!r} has no run in this checkpointer")
    if saved.interrupts:
        return list(saved.values.get("messages") or [])
    result = saved.values.get("result")
    if result is not None and not saved.next:
        state = f"finished (stop reason {result.stop_reason.value})"
    else:
        state = "stopped before it was judged: run it again with its prompt and thread_id"
    raise ConfigurationError(f"thread {thread_id!r} is not waiting for a person: its run {state}")
