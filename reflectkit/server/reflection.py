"""Reflected requests: a chat request run through a :class:`~reflectkit.Reflector`, its events
turned into OpenAI deltas.

What a client sees (docs/server.md has the full story): in a single pass, the answer streams as
the model writes it; in a loop, the answer arrives in one piece once the critic is done. The
answer is the parser's (:mod:`reflectkit.tags`): when a single pass replaces an answer it has
already streamed (a reflection, then a new output block), an OpenAI stream cannot take text
back, so the new answer follows after a blank line (an ``OutputReset``'s text); a whole reply
carries the new answer alone. With
``include_reasoning``, reasoning goes to ``reasoning_content``: a single pass's thinking and
reflections as they are written; a loop's drafts (thinking and answer, each headed
``Draft N:``) and each critique's verdict and feedback.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, cast

from reflectkit.api import Reflector
from reflectkit.config import ReflectConfig
from reflectkit.critics.llm_critic import LLMCritic
from reflectkit.events import DraftDelta, ReflectEvent, ResultEvent, StepEvent, StepStarted
from reflectkit.result import ReflectionResult
from reflectkit.runtime import resolve_mode
from reflectkit.server.protocol import Answer, ChatRequest, Delta, Usage
from reflectkit.server.settings import ServerSettings
from reflectkit.tags import OutputDelta, OutputReset, ReflectionDelta, TagDelta, ThinkingDelta

__all__ = ["PROGRESS", "Reflectors", "output_type_of", "reflect_complete", "reflect_stream"]

PROGRESS = object()
"""Yielded when a step finished without anything for the client: the upstream has answered."""

Message = dict[str, Any]


class Reflectors:
    """Reflectors for the configurations requests ask for, built once and kept (least recently
    used first out): building one checks templates and compiles the graph, about 10 ms."""

    def __init__(self, settings: ServerSettings, size: int = 64) -> None:
        self.settings = settings
        self.size = size
        self._kept: OrderedDict[str, Reflector] = OrderedDict()

    def get(self, model: str, request: ChatRequest) -> Reflector:
        settings = self.settings
        options = request.reflectkit
        mode = (options.mode if options else None) or settings.mode
        critic_model = (options.critic_model if options else None) or settings.critic_model
        iterations = (options.max_iterations if options else None) or settings.max_iterations
        on_error = (options.on_critic_error if options else None) or settings.on_critic_error
        params = {**settings.upstream_kwargs, **request.params}
        # A response_format makes the answer typed: the loop validates it (and sends the schema
        # natively where that suits the model, see reflectkit.typed), so it is not forwarded.
        output_type = output_type_of(params.pop("response_format", None))
        # The library's own rule for "auto" (the server gives no critic object, only a model).
        chosen = ReflectConfig(mode=mode, critic_model=critic_model, output_type=output_type)
        mode = resolve_mode(chosen, model)
        key = json.dumps(
            [model, mode, critic_model, iterations, on_error, output_type, params], default=repr
        )
        reflector = self._kept.get(key)
        if reflector is not None:
            self._kept.move_to_end(key)
            return reflector
        # The critic gets the upstream settings only: not the request's tools or max_tokens,
        # which are meant for the answer, and would spoil a JSON verdict.
        critic = None
        if mode == "loop":
            critic = LLMCritic(critic_model or model, **settings.upstream_kwargs)
        reflector = Reflector(
            model,
            mode=mode,
            critic=critic,
            max_iterations=iterations,
            on_critic_error=on_error,
            output_type=output_type,
            timeout=settings.timeout,
            retry=settings.retry,
            run_log=settings.run_log,
            checkpointer=False,
            **params,
        )
        self._kept[key] = reflector
        if len(self._kept) > self.size:
            _, oldest = self._kept.popitem(last=False)
            oldest.close()
        return reflector

    def close(self) -> None:
        for reflector in self._kept.values():
            reflector.close()
        self._kept.clear()


def output_type_of(response_format: Any) -> dict[str, Any] | None:
    """The JSON Schema a request's ``response_format`` asks the answer to match (checked by
    :mod:`reflectkit.server.checks` already): ``json_schema``'s schema (``{}``, any JSON, when it
    gives none), an object for ``json_object``; None for ``text`` or no format."""
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_object":
        return {"type": "object"}
    if response_format.get("type") == "json_schema":
        schema = response_format["json_schema"].get("schema")
        return dict(schema) if schema is not None else {}
    return None


def _verdict_note(event: StepEvent) -> str:
    verdict = event.verdict
    if verdict is None:
        return ""
    decision = "pass" if verdict.passed else "revise"
    score = f" (score {verdict.score:g})" if verdict.score is not None else ""
    feedback = f": {verdict.feedback}" if verdict.feedback else ""
    return f"\n\nCritique of draft {event.iteration}: {decision}{score}{feedback}"


class _Translator:
    """Turns one run's events into deltas for the client."""

    def __init__(self, include_reasoning: bool) -> None:
        self.include_reasoning = include_reasoning
        self.reasoned = False  # any reasoning sent yet
        self.last_kind: type[TagDelta] | None = None

    def _reasoning(self, text: str) -> Delta | None:
        if not text:
            return None
        self.reasoned = True
        return Delta(reasoning=text)

    def _part(self, delta: TagDelta, in_draft: bool, header: str = "") -> Delta | None:
        """A thinking, reflection or (for drafts) answer piece as reasoning text; a new kind of
        piece starts on a new line, a draft's answer after ``Answer: ``."""
        kind = type(delta)
        prefix = ""
        if kind is not self.last_kind:
            prefix = "\n" if self.last_kind is not None else ""
            if in_draft and kind is OutputDelta:
                prefix += "Answer: "
            self.last_kind = kind
        return self._reasoning(header + prefix + delta.text)

    def feed(self, event: Any) -> Delta | object | None:
        if isinstance(event, OutputDelta):
            return Delta(content=event.text)
        if not self.include_reasoning:
            return PROGRESS if isinstance(event, StepEvent) else None
        if isinstance(event, StepStarted):
            self.last_kind = None  # a new draft (or a critique, which writes no parts)
            return None
        if isinstance(event, DraftDelta):
            if isinstance(event.delta, OutputReset):
                self.last_kind = OutputReset  # the draft's next answer text starts "Answer: "
                return None
            header = ""
            if self.last_kind is None:
                separator = "\n\n" if self.reasoned else ""
                header = f"{separator}Draft {event.iteration}:\n"
            return self._part(event.delta, in_draft=True, header=header)
        if isinstance(event, (ThinkingDelta, ReflectionDelta)):
            return self._part(event, in_draft=False)
        if isinstance(event, StepEvent):
            return self._reasoning(_verdict_note(event)) or PROGRESS
        return None


def _summary(result: ReflectionResult) -> dict[str, Any]:
    summary = {
        "mode": result.mode,
        "stop_reason": result.stop_reason.value,
        "iterations": len(result.iterations),
        "final_iteration": result.final_iteration,
        "run_id": result.run_id,
    }
    if result.critic_error is not None:  # stop reason critic_error (on_critic_error=keep_best)
        summary["critic_error"] = result.critic_error
    return summary


def _tool_calls(result: ReflectionResult, indexed: bool) -> list[dict[str, Any]] | None:
    calls = [dict(call) for call in result.tool_calls]
    if indexed:  # stream deltas say which call each piece belongs to
        calls = [{"index": index, **call} for index, call in enumerate(calls)]
    return calls or None


def end_of(result: ReflectionResult) -> Answer:
    """The end of a reflected reply: finish reason, usage and a summary of the run."""
    usage = Usage(result.usage.prompt_tokens, result.usage.completion_tokens)
    finish = "tool_calls" if _tool_calls(result, False) else "stop"
    return Answer(content=None, finish_reason=finish, usage=usage, extra=_summary(result))


def _reasoning_of(result: ReflectionResult) -> str:
    """The reasoning text a stream with ``include_reasoning`` sends, from the finished run."""
    if result.mode == "single":
        return "\n".join([*result.thinking, *result.reflections])
    notes = []
    for iteration in result.iterations:
        draft = iteration.draft
        parts = [*draft.thinking, *draft.reflections, f"Answer: {draft.output}"]
        notes.append(f"Draft {iteration.number}:\n" + "\n".join(parts))
        verdict = iteration.verdict
        if verdict is not None:
            step = StepEvent("critique", iteration.number, verdict=verdict)
            notes[-1] += _verdict_note(step)
    return "\n\n".join(notes)


async def reflect_complete(
    reflector: Reflector, messages: list[Message], include_reasoning: bool
) -> Answer:
    """A whole reflected reply."""
    result = await reflector.arun(messages)
    answer = end_of(result)
    answer.content = result.output
    answer.tool_calls = _tool_calls(result, False)
    if include_reasoning:
        answer.reasoning = _reasoning_of(result)
    return answer


async def reflect_stream(
    reflector: Reflector, messages: list[Message], include_reasoning: bool
) -> AsyncGenerator[Delta | Answer | object]:
    """The run's deltas for the client, :data:`PROGRESS` after steps that showed nothing, and
    last an :class:`Answer` (content None: the deltas carried it)."""
    translator = _Translator(include_reasoning)
    run = cast(
        "AsyncGenerator[ReflectEvent]",
        reflector.astream(messages, include_thinking=include_reasoning),
    )
    async with aclosing(run) as events:
        async for event in events:
            if isinstance(event, ResultEvent):
                calls = _tool_calls(event.result, True)
                if calls:
                    yield Delta(tool_calls=calls)
                yield end_of(event.result)
                return
            item = translator.feed(event)
            if item is not None:
                yield item
