"""How one run of a :class:`~reflectkit.Reflector` is set up: its options, where it starts (a
new run, a saved thread going on, a paused thread resumed by a person's verdict, a finished one),
and the LangGraph config its graph runs with."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.callbacks import Callbacks
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from reflectkit import tracing
from reflectkit.errors import ConfigurationError
from reflectkit.events import DraftDelta, StepStarted
from reflectkit.graph import CONVERSATION_KEY, STREAM_KEY
from reflectkit.messages import Conversation
from reflectkit.runtime import LoopState
from reflectkit.tags import TagDelta

__all__ = ["FINISHED", "RunOptions", "graph_config", "starting_point", "thread_of", "wanted"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """How one run is made: streamed live or not, which deltas the caller wants, its task key,
    its thread (durable runs), LangChain callbacks, and the input that resumes a paused thread
    with a person's verdict."""

    live: bool
    wanted: tuple[type[TagDelta], ...]
    task_key: str | None
    thread_id: str | None
    callbacks: Callbacks
    resume: Command[Any] | None = None


FINISHED = object()
"""What :func:`starting_point` gives as input for a thread whose run finished."""


async def starting_point(
    graph: Any,
    config: RunnableConfig,
    run: RunOptions,
    conversation: Conversation,
    state: LoopState,
) -> tuple[LoopState, Any]:
    """Where a run starts: from ``state`` (a new run), or from its thread's saved state: then
    the input is None (go on), the person's verdict (a resume), or :data:`FINISHED`."""
    if run.thread_id is None:
        return state, state
    saved = await graph.aget_state(config)
    if not saved.values:
        return state, state
    _same_question(run.thread_id, saved.values, conversation)
    state = cast("LoopState", dict(saved.values))
    if run.resume is not None:  # aresume checked that the thread waits
        return state, run.resume
    if not saved.next and "result" in state:
        logger.info("thread %s finished before; returning its result", run.thread_id)
        return state, FINISHED
    logger.info("resuming thread %s before %s", run.thread_id, list(saved.next))
    return state, None


def graph_config(run: RunOptions, span: Any, conversation: Conversation) -> RunnableConfig:
    """The graph's config for a run: live streaming, the trace parent, the thread, callbacks,
    and the conversation, validated once for the run's nodes."""
    configurable: dict[str, Any] = {CONVERSATION_KEY: conversation}
    if run.live:
        configurable[STREAM_KEY] = True
    if span is not None:
        configurable[tracing.PARENT_KEY] = span
    if run.thread_id is not None:
        configurable["thread_id"] = run.thread_id
    config: RunnableConfig = {"configurable": configurable}
    if run.callbacks is not None:
        config["callbacks"] = run.callbacks
    return config


def thread_of(thread_id: str | None) -> str | None:
    """A run's thread id, stripped; :class:`ConfigurationError` for one that is not a
    non-empty string."""
    if thread_id is None:
        return None
    if not isinstance(thread_id, str) or not thread_id.strip():
        raise ConfigurationError(f"thread_id must be a non-empty string, not {thread_id!r}")
    return thread_id.strip()


def _same_question(thread_id: str, saved: Any, conversation: Conversation) -> None:
    """A thread belongs to one conversation: resuming it with another would mix two runs."""
    if list(saved.get("messages") or []) != list(conversation.messages):
        raise ConfigurationError(
            f"thread {thread_id!r} holds a run on a different prompt: resume it with the same "
            "prompt, or start a new thread_id"
        )


def wanted(event: Any, deltas: tuple[type[TagDelta], ...]) -> bool:
    """Whether a custom-stream event goes to the caller: steps always; tag deltas (bare, or of a
    loop draft) only of the kinds asked for."""
    if isinstance(event, DraftDelta):
        return isinstance(event.delta, deltas)
    return isinstance(event, (StepStarted, *deltas))
