"""The public entry points: reflect, areflect and Reflector."""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from langchain_core.runnables import RunnableConfig
from langgraph.types import StreamMode

from reflectkit.config import FormatHelp, Mode, ReflectConfig, RetryPolicy
from reflectkit.errors import ConfigurationError, RunError
from reflectkit.events import (
    DraftDelta,
    ReflectEvent,
    ResultEvent,
    StepEvent,
    StepStarted,
    TrialEvent,
)
from reflectkit.graph import STREAM_KEY, LoopState, Runtime, compile_runtime
from reflectkit.messages import Conversation, to_conversation
from reflectkit.prompts import Prompts
from reflectkit.reflexion import Reflexion, open_memory
from reflectkit.result import ReflectionResult, StopReason
from reflectkit.runner import iterate_sync, run_sync
from reflectkit.tags import (
    REFLECTION_TAGS,
    OutputDelta,
    OutsideDelta,
    ReflectionDelta,
    TagDelta,
    TagScheme,
    ThinkingDelta,
)
from reflectkit.usage import Usage

__all__ = ["Prompt", "Reflector", "areflect", "reflect"]

Prompt = str | Sequence[Any]
"""A question, or a conversation: OpenAI-style message dicts or LangChain messages."""


class Reflector:
    """A configured reflection loop, built once and run many times.

    Arguments are those of :class:`~reflectkit.ReflectConfig`; extra keyword arguments pass
    through to LiteLLM on every generator call (``temperature=0``, ``api_base=...``). Templates
    are checked and the graph compiled here, so configuration errors surface before any model is
    paid for.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        critic: Any = None,
        critic_model: str | None = None,
        max_iterations: int = 3,
        mode: Mode = "auto",
        scheme: TagScheme = REFLECTION_TAGS,
        template_dir: str | Path | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = 120.0,
        critic_kwargs: dict[str, Any] | None = None,
        revise_kwargs: dict[str, Any] | None = None,
        format_help: FormatHelp | Literal["auto", "off"] = "auto",
        token_budget: int | None = None,
        cost_budget: float | None = None,
        time_budget: float | None = None,
        min_score: float | None = None,
        critic_timeout: float | None = 300.0,
        trials: int = 1,
        memory: Any = None,
        config: ReflectConfig | None = None,
        **model_kwargs: Any,
    ) -> None:
        _refuse_misspelt_settings(model_kwargs)
        if config is None:
            config = ReflectConfig(
                model=model,
                critic=critic,
                critic_model=critic_model,
                max_iterations=max_iterations,
                mode=mode,
                scheme=scheme,
                template_dir=Path(template_dir) if template_dir is not None else None,
                retry=retry or RetryPolicy(),
                timeout=timeout,
                critic_kwargs=critic_kwargs or {},
                revise_kwargs=revise_kwargs or {},
                format_help=format_help,
                token_budget=token_budget,
                cost_budget=cost_budget,
                time_budget=time_budget,
                min_score=min_score,
                critic_timeout=critic_timeout,
                trials=trials,
                memory=memory,
                model_kwargs=model_kwargs,
            )
        elif model is not None or critic is not None or model_kwargs:
            raise ConfigurationError("pass either config=... or individual settings, not both")
        self.config = config
        prompts = Prompts(config.template_dir)
        prompts.check()
        self._runtime = Runtime.create(config, prompts)
        if config.trials > 1 and self._runtime.mode == "single":
            raise ConfigurationError(
                "trials > 1 needs a critic to fail a trial: pass critic=... or mode='loop'"
            )
        self._graph = compile_runtime(self._runtime)
        self._memory, self._owns_memory = open_memory(config.memory, config.trials)

    @property
    def model(self) -> str:
        """The generator's model string."""
        return self._runtime.model

    @property
    def mode(self) -> str:
        """``"loop"`` or ``"single"``: what ``mode="auto"`` resolved to for this model."""
        return self._runtime.mode

    @property
    def graph(self) -> Any:
        """The compiled LangGraph graph this reflector runs."""
        return self._graph

    async def astream(
        self, prompt: Prompt, *, include_thinking: bool = False, task_key: str | None = None
    ) -> AsyncIterator[ReflectEvent]:
        """Run and yield events: a :class:`StepEvent` per finished step, answer text as
        :class:`OutputDelta` while a single-pass run streams it, a :class:`TrialEvent` after each
        failed Reflexion trial, and last a :class:`ResultEvent`.

        ``include_thinking`` adds the thinking and reflection deltas, and text outside the tags.
        ``task_key`` names the task in the lesson memory (default: a hash of the question). If
        the run fails, the error raised is a :class:`~reflectkit.RunError` whose ``partial``
        holds the drafts and usage so far.
        """
        wanted: tuple[type[TagDelta], ...] = (OutputDelta,)
        if include_thinking:
            wanted += (ThinkingDelta, ReflectionDelta, OutsideDelta)
        async for event in self._run(prompt, live=True, wanted=wanted, task_key=task_key):
            yield event

    async def _run(
        self,
        prompt: Prompt,
        *,
        live: bool,
        wanted: tuple[type[TagDelta], ...] = (),
        task_key: str | None = None,
    ) -> AsyncIterator[ReflectEvent]:
        conversation = to_conversation(prompt)
        self._runtime.check()
        if self._memory is None:
            async for event in self._trial(conversation, [], live, wanted):
                yield event
            return
        reflexion = Reflexion(self._runtime, self._memory, task_key)
        lessons: list[str] | None = await reflexion.start(conversation)
        number = 0
        while lessons is not None:
            number += 1
            result: ReflectionResult | None = None
            async for event in self._trial(conversation, lessons, live, wanted):
                if isinstance(event, ResultEvent):
                    result = event.result
                else:
                    yield event
            assert result is not None  # a trial always ends with its result
            lessons = await reflexion.after(number, result, conversation)
            if lessons is None:
                yield ResultEvent(reflexion.finish(result))
            else:
                yield TrialEvent(number, result, reflexion.records[-1].lesson or "")

    async def _trial(
        self,
        conversation: Conversation,
        lessons: list[str],
        live: bool,
        wanted: tuple[type[TagDelta], ...],
    ) -> AsyncIterator[ReflectEvent]:
        """One run of the graph: its events, then its result."""
        state: LoopState = {"messages": list(conversation.messages)}
        if lessons:
            state["lessons"] = lessons
        config: RunnableConfig | None = {"configurable": {STREAM_KEY: True}} if live else None
        modes: list[StreamMode] = ["updates", "custom"] if live else ["updates"]
        try:
            async for mode, chunk in self._graph.astream(state, config, stream_mode=modes):
                if mode == "custom":
                    if _wanted(chunk, wanted):
                        yield cast("ReflectEvent", chunk)
                    continue
                for node, change in cast("dict[str, Any]", chunk).items():
                    if not change:
                        continue
                    state.update(change)
                    yield _step_event(node, change)
        except RunError as error:
            if state.get("iterations"):
                error.partial = self._runtime.result(state, StopReason.ERROR)
            raise
        yield ResultEvent(state["result"])

    async def arun(self, prompt: Prompt, *, task_key: str | None = None) -> ReflectionResult:
        """Run the loop on ``prompt`` and return the result."""
        async for event in self._run(prompt, live=False, task_key=task_key):
            if isinstance(event, ResultEvent):
                return event.result
        raise AssertionError("the run ended without a result")  # astream always ends with one

    def run(self, prompt: Prompt, *, task_key: str | None = None) -> ReflectionResult:
        """Sync :meth:`arun`."""
        return run_sync(self.arun(prompt, task_key=task_key))

    def stream(
        self, prompt: Prompt, *, include_thinking: bool = False, task_key: str | None = None
    ) -> Iterator[ReflectEvent]:
        """Sync :meth:`astream`; breaking out of the loop stops the run."""
        return iterate_sync(
            self.astream(prompt, include_thinking=include_thinking, task_key=task_key)
        )

    def close(self) -> None:
        """Close the lesson store this reflector opened (one passed in is the caller's)."""
        if self._memory is not None and self._owns_memory:
            self._memory.close()

    def __enter__(self) -> Reflector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_SETTINGS = (*ReflectConfig.model_fields, "config")


def _wanted(event: Any, deltas: tuple[type[TagDelta], ...]) -> bool:
    """Whether a custom-stream event goes to the caller: steps always; tag deltas (bare, or of a
    loop draft) only of the kinds asked for."""
    if isinstance(event, DraftDelta):
        return isinstance(event.delta, deltas)
    return isinstance(event, (StepStarted, *deltas))


def _refuse_misspelt_settings(model_kwargs: dict[str, Any]) -> None:
    """Extra keywords go to LiteLLM, so a misspelt setting would be sent there silently."""
    for name in model_kwargs:
        close = difflib.get_close_matches(name, _SETTINGS, n=1, cutoff=0.8)
        if close:
            raise ConfigurationError(
                f"unknown setting {name!r}: did you mean {close[0]!r}? (unknown keywords are "
                "passed to LiteLLM, so reflectkit refuses near-misses of its own settings)"
            )


def _step_event(node: str, change: dict[str, Any]) -> StepEvent:
    iterations = change.get("iterations")
    last = iterations[-1] if iterations else None
    stop = change.get("stop_reason")
    if node == "finalize":
        result: ReflectionResult = change["result"]
        return StepEvent(node, result.final_iteration, usage=Usage(), stop_reason=stop)
    if last is None:
        return StepEvent(node, 0, stop_reason=stop)
    if node == "critique":
        return StepEvent(
            node, last.number, verdict=last.verdict, usage=last.critique_usage, stop_reason=stop
        )
    return StepEvent(node, last.number, draft=last.draft, usage=last.draft_usage, stop_reason=stop)


async def areflect(
    prompt: Prompt, model: str | None = None, *, task_key: str | None = None, **settings: Any
) -> ReflectionResult:
    """Make ``model`` reason, check itself and correct itself on ``prompt``; return the result.

    ``settings`` are :class:`Reflector`'s: ``critic``, ``critic_model``, ``max_iterations``,
    ``mode`` ("auto" | "loop" | "single"), ``scheme``, ``template_dir``, ``retry``,
    ``timeout``; anything else passes through to LiteLLM.
    """
    with Reflector(model, **settings) as reflector:
        return await reflector.arun(prompt, task_key=task_key)


def reflect(
    prompt: Prompt, model: str | None = None, *, task_key: str | None = None, **settings: Any
) -> ReflectionResult:
    """Sync :func:`areflect`."""
    return run_sync(areflect(prompt, model, task_key=task_key, **settings))
