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
from reflectkit.events import ReflectEvent, ResultEvent, StepEvent
from reflectkit.graph import STREAM_KEY, LoopState, Runtime, compile_runtime
from reflectkit.messages import to_conversation
from reflectkit.prompts import Prompts
from reflectkit.result import ReflectionResult, StopReason
from reflectkit.runner import iterate_sync, run_sync
from reflectkit.tags import (
    REFLECTION_TAGS,
    OutputDelta,
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
        format_help: FormatHelp | Literal["auto", "off"] = "auto",
        token_budget: int | None = None,
        cost_budget: float | None = None,
        time_budget: float | None = None,
        min_score: float | None = None,
        critic_timeout: float | None = 300.0,
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
                format_help=format_help,
                token_budget=token_budget,
                cost_budget=cost_budget,
                time_budget=time_budget,
                min_score=min_score,
                critic_timeout=critic_timeout,
                model_kwargs=model_kwargs,
            )
        elif model is not None or critic is not None or model_kwargs:
            raise ConfigurationError("pass either config=... or individual settings, not both")
        self.config = config
        prompts = Prompts(config.template_dir)
        prompts.check()
        self._runtime = Runtime.create(config, prompts)
        self._graph = compile_runtime(self._runtime)

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
        self, prompt: Prompt, *, include_thinking: bool = False
    ) -> AsyncIterator[ReflectEvent]:
        """Run and yield events: a :class:`StepEvent` per finished step, answer text as
        :class:`OutputDelta` while a single-pass run streams it, and last a :class:`ResultEvent`.

        ``include_thinking`` adds the thinking and reflection deltas of single-pass runs. If the
        run fails, the error raised is a :class:`~reflectkit.RunError` whose ``partial`` holds
        the drafts and usage so far.
        """
        async for event in self._run(prompt, live=True, include_thinking=include_thinking):
            yield event

    async def _run(
        self, prompt: Prompt, *, live: bool, include_thinking: bool = False
    ) -> AsyncIterator[ReflectEvent]:
        conversation = to_conversation(prompt)
        self._runtime.check()
        state: LoopState = {"messages": list(conversation.messages)}
        wanted: tuple[type[TagDelta], ...] = (OutputDelta,)
        if include_thinking:
            wanted += (ThinkingDelta, ReflectionDelta)
        config: RunnableConfig | None = {"configurable": {STREAM_KEY: True}} if live else None
        modes: list[StreamMode] = ["updates", "custom"] if live else ["updates"]
        try:
            async for mode, chunk in self._graph.astream(state, config, stream_mode=modes):
                if mode == "custom":
                    if isinstance(chunk, wanted):
                        yield chunk
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

    async def arun(self, prompt: Prompt) -> ReflectionResult:
        """Run the loop on ``prompt`` and return the result."""
        async for event in self._run(prompt, live=False):
            if isinstance(event, ResultEvent):
                return event.result
        raise AssertionError("the run ended without a result")  # astream always ends with one

    def run(self, prompt: Prompt) -> ReflectionResult:
        """Sync :meth:`arun`."""
        return run_sync(self.arun(prompt))

    def stream(self, prompt: Prompt, *, include_thinking: bool = False) -> Iterator[ReflectEvent]:
        """Sync :meth:`astream`; breaking out of the loop stops the run."""
        return iterate_sync(self.astream(prompt, include_thinking=include_thinking))


_SETTINGS = (*ReflectConfig.model_fields, "config")


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


async def areflect(prompt: Prompt, model: str | None = None, **settings: Any) -> ReflectionResult:
    """Make ``model`` reason, check itself and correct itself on ``prompt``; return the result.

    ``settings`` are :class:`Reflector`'s: ``critic``, ``critic_model``, ``max_iterations``,
    ``mode`` ("auto" | "loop" | "single"), ``scheme``, ``template_dir``, ``retry``,
    ``timeout``; anything else passes through to LiteLLM.
    """
    return await Reflector(model, **settings).arun(prompt)


def reflect(prompt: Prompt, model: str | None = None, **settings: Any) -> ReflectionResult:
    """Sync :func:`areflect`."""
    return run_sync(areflect(prompt, model, **settings))
