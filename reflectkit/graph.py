"""The LangGraph state machine: generate → critique → (revise → critique)* → finalize.

A model that answers in one pass (``mode="single"``, or ``"auto"`` with a tuned or reasoning
model and no explicit critic) runs generate → finalize. A draft that calls tools goes straight
to finalize too (stop reason ``tool_calls``): the calls are passed back unjudged. The compiled
graph takes ``{"messages": [...]}`` and returns ``{"result": ReflectionResult, "output": str,
"stop_reason": StopReason}``, so it can be a node or subgraph of a larger graph.

The configuration is bound into the nodes when the graph is built, so the graph's state holds
only data (messages, iterations, usage), which is what a checkpointer saves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from reflectkit.config import ReflectConfig
from reflectkit.critics.base import Critic, CritiqueRequest, ask_critic
from reflectkit.drafting import DeltaSink
from reflectkit.errors import RunError
from reflectkit.events import DraftDelta, StepEvent, StepStarted
from reflectkit.messages import Conversation, to_conversation
from reflectkit.redaction import is_secret_name, one_line
from reflectkit.result import Iteration, ReflectionResult, StopReason
from reflectkit.runtime import LoopInput, LoopOutput, LoopState, Runtime, resolve_mode
from reflectkit.stopping import (
    after_critique,
    after_generate,
    after_revise,
    recursion_limit,
)
from reflectkit.tags import OutputDelta
from reflectkit.tracing import traced_node
from reflectkit.usage import Usage
from reflectkit.verdict import Verdict

__all__ = [
    "CONVERSATION_KEY",
    "STREAM_KEY",
    "LoopInput",
    "LoopOutput",
    "LoopState",
    "Runtime",
    "build_graph",
    "resolve_mode",
    "step_event",
]

STREAM_KEY = "reflectkit_stream_output"
"""Set in ``config["configurable"]`` to have single-pass runs write tag deltas to the graph's
custom stream (``stream_mode="custom"``) as the model produces them."""

CONVERSATION_KEY = "reflectkit_conversation"
"""Set in ``config["configurable"]`` to the run's :class:`~reflectkit.messages.Conversation`,
already validated from the input's messages (without lessons), so the nodes do not validate and
copy the messages again."""


def _request(runtime: Runtime, conversation: Conversation, last: Iteration) -> CritiqueRequest:
    config = runtime.config
    return CritiqueRequest(
        question=conversation.question,
        answer=last.draft.output,
        draft=last.draft,
        iteration=last.number,
        messages=list(conversation.messages),
        conversation=conversation,
        prompts=runtime.builder,
        default_model=runtime.model,
        default_model_kwargs=runtime.critic_kwargs,
        retry=config.retry,
        timeout=config.timeout,
    )


async def _verdict(
    critic: Critic, request: CritiqueRequest, config: ReflectConfig
) -> Verdict | str:
    """The critic's verdict; or, when it fails (raises, hangs, its model fails) and
    ``on_critic_error`` is ``"keep_best"``, the failure's message, for the run to end on."""
    try:
        return await ask_critic(critic, request, config.critic_timeout)
    except RunError as error:  # all the critic's: the generator is not called here
        if config.on_critic_error != "keep_best":
            raise
        return _failure(error, config)


def _failure(error: RunError, config: ReflectConfig) -> str:
    """A failed critique's message as the result keeps it: one line, with the environment's
    secrets, key-like strings and the run's secret-named model arguments redacted."""
    kwargs = {**config.model_kwargs, **config.critic_kwargs}
    secrets = [v for k, v in kwargs.items() if isinstance(v, str) and is_secret_name(k)]
    return one_line(error, secrets)


def _conversation(state: LoopState, config: RunnableConfig | None) -> Conversation:
    """The run's conversation with the state's lessons. It is validated once per run: a caller
    that validated it already puts it in the config (:data:`CONVERSATION_KEY`, as
    :class:`~reflectkit.Reflector` does); else the state's messages are validated here."""
    given = (config.get("configurable") or {}).get(CONVERSATION_KEY) if config else None
    conversation = given if given is not None else to_conversation(state["messages"])
    lessons = state.get("lessons")
    return replace(conversation, lessons=tuple(lessons)) if lessons else conversation


def _elapsed(state: LoopState) -> float:
    return time.time() - state["started_at"]


class _TimeBudget:
    """Cuts the step in progress when the run's time budget runs out."""

    def __init__(self, runtime: Runtime, state: LoopState) -> None:
        budget = runtime.config.time_budget
        self.remaining = None if budget is None else max(0.0, budget - _elapsed(state))
        self.expired = False
        self._scope = asyncio.timeout(self.remaining)

    async def __aenter__(self) -> _TimeBudget:
        await self._scope.__aenter__()
        return self

    async def __aexit__(self, kind: Any, error: Any, trace: Any) -> bool:
        try:
            await self._scope.__aexit__(kind, error, trace)
        except TimeoutError:
            if not self._scope.expired():
                raise
            self.expired = True
            return True
        return False


def _live(config: RunnableConfig | None) -> Callable[[Any], None] | None:
    """The custom stream writer when the caller streams (see :data:`STREAM_KEY`), else None."""
    if config and (config.get("configurable") or {}).get(STREAM_KEY):
        return get_stream_writer()
    return None


def _draft_sink(write: Callable[[Any], None] | None, iteration: int) -> DeltaSink | None:
    if write is None:
        return None
    return lambda delta: write(DraftDelta(iteration, delta))


def _stop_now(stop: StopReason) -> Command[str]:
    return Command(update={"stop_reason": stop}, goto="finalize")


def _unjudged(expired: bool, failure: Verdict | str, iterations: list[Iteration]) -> Command[str]:
    """The end of a run whose critique gave no verdict: the time budget cut it, or the critic
    failed under ``on_critic_error="keep_best"`` (``failure`` is then its message)."""
    if expired or not isinstance(failure, str):
        return _stop_now(StopReason.TIME_BUDGET)
    update = {"iterations": iterations, "critic_error": failure}
    return Command(update={**update, "stop_reason": StopReason.CRITIC_ERROR}, goto="finalize")


async def _validated(runtime: Runtime, state: LoopState, config: RunnableConfig) -> dict[str, Any]:
    """For a single pass with an ``output_type``, the state's iterations with the answer
    validated (a verdict on the draft, so ``result.parsed`` is set; no revision follows,
    whatever it says); else nothing to change. A loop validated every draft already."""
    check = runtime.output_check
    if check is None or runtime.mode != "single":
        return {}
    iterations = state["iterations"]
    last = iterations[-1]
    if last.draft.tool_calls:
        return {}  # tool calls are handed back unjudged
    request = _request(runtime, _conversation(state, config), last)
    verdict = await ask_critic(check, request, runtime.config.critic_timeout)
    return {"iterations": [*iterations[:-1], last.model_copy(update={"verdict": verdict})]}


def _nodes(runtime: Runtime) -> dict[str, Any]:
    builder = runtime.builder
    writer = runtime.writer
    settings = runtime.config

    async def generate(state: LoopState, config: RunnableConfig) -> Command[str] | dict[str, Any]:
        started = time.time()
        conversation = _conversation(state, config)
        clock = time.perf_counter()
        write = _live(config)
        if write is not None:
            write(StepStarted("generate", 1))
        # Single-pass answers stream live as output; loop drafts stream as draft deltas (what
        # the user gets as the answer is known only when the critic is done).
        sink = write if runtime.mode == "single" else _draft_sink(write, 1)
        draft, spent = await writer.write(
            runtime.generate_messages(conversation), conversation, sink
        )
        iteration = Iteration(
            number=1,
            kind="generate",
            draft=draft,
            draft_usage=spent,
            seconds=time.perf_counter() - clock,
        )
        update = {"iterations": [iteration], "usage": spent, "started_at": started}
        if runtime.mode == "single":  # the edge to finalize is fixed
            return {**update, "stop_reason": StopReason.TOOL_CALLS} if draft.tool_calls else update
        stop = after_generate(draft, settings, spent, time.time() - started)
        return Command(
            update={**update, "stop_reason": stop}, goto="finalize" if stop else "critique"
        )

    async def critique(state: LoopState, config: RunnableConfig) -> Command[str]:
        assert runtime.critic is not None
        iterations = state["iterations"]
        last = iterations[-1]
        write = _live(config)
        if write is not None:
            write(StepStarted("critique", last.number))
        conversation = _conversation(state, config)
        clock = time.perf_counter()
        verdict: Verdict | str = ""
        async with _TimeBudget(runtime, state) as budget:
            request = _request(runtime, conversation, last)
            verdict = await _verdict(runtime.critic, request, settings)
        if budget.expired or isinstance(verdict, str):  # the draft stays unjudged
            return _unjudged(budget.expired, verdict, iterations)
        spent = verdict.usage or Usage()
        judged = last.model_copy(
            update={
                "verdict": verdict,
                "critique_usage": spent,
                "seconds": last.seconds + time.perf_counter() - clock,
            }
        )
        usage = state["usage"] + spent
        stop = after_critique(verdict, last.number, settings, usage, _elapsed(state))
        update = {"iterations": [*iterations[:-1], judged], "usage": usage, "stop_reason": stop}
        return Command(update=update, goto="finalize" if stop else "revise")

    async def revise(state: LoopState, config: RunnableConfig) -> Command[str]:
        iterations = state["iterations"]
        last = iterations[-1]
        write = _live(config)
        if write is not None:
            write(StepStarted("revise", last.number + 1))
        verdict = last.verdict or Verdict(passed=False)
        conversation = _conversation(state, config)
        clock = time.perf_counter()
        messages = builder.revise(
            conversation,
            answer=last.draft.output,
            feedback=verdict.feedback,
            issues=verdict.issues,
            score=verdict.score,
            # No worked example here: the model's own tagged answer now shows the format, and a
            # small model asked to revise drifts back to the example's topic.
            layout=replace(runtime.plan.layout, exemplar="off") if runtime.plan else None,
            plain=runtime.plan is None,
        )
        async with _TimeBudget(runtime, state) as budget:
            draft, spent = await writer.write(
                messages,
                conversation,
                _draft_sink(write, last.number + 1),
                overrides=settings.revise_kwargs,
            )
        if budget.expired:
            return _stop_now(StopReason.TIME_BUDGET)
        iteration = Iteration(
            number=last.number + 1,
            kind="revise",
            draft=draft,
            draft_usage=spent,
            seconds=time.perf_counter() - clock,
        )
        usage = state["usage"] + spent
        stop = after_revise(
            last.draft, draft, settings, usage, _elapsed(state), judged_by_person=runtime.human
        )
        update = {"iterations": [*iterations, iteration], "usage": usage, "stop_reason": stop}
        return Command(update=update, goto="finalize" if stop else "critique")

    # Async even though nothing is awaited: LangGraph runs sync nodes in a thread pool, a thread
    # hop that costs more than the work itself.
    async def finalize(state: LoopState, config: RunnableConfig) -> dict[str, Any]:
        default = StopReason.SINGLE_PASS if runtime.mode == "single" else StopReason.MAX_ITERATIONS
        stop_reason = state.get("stop_reason") or default
        update = await _validated(runtime, state, config)
        result = runtime.result(cast("LoopState", {**state, **update}), stop_reason)
        write = _live(config)
        if write is not None and runtime.mode == "loop" and result.output:
            write(OutputDelta(result.output))  # the loop's answer, now that it is known
        return {**update, "result": result, "output": result.output, "stop_reason": stop_reason}

    return {"generate": generate, "critique": critique, "revise": revise, "finalize": finalize}


def step_event(node: str, change: dict[str, Any]) -> StepEvent:
    """The :class:`StepEvent` for one node's update (what ``stream_mode="updates"`` yields)."""
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


def compile_runtime(
    runtime: Runtime, checkpointer: Any = None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Build and compile the graph for an already-resolved runtime."""
    nodes: dict[str, Any] = {n: traced_node(n, node) for n, node in _nodes(runtime).items()}
    graph: StateGraph[Any, Any, Any, Any] = StateGraph(
        LoopState, input_schema=LoopInput, output_schema=LoopOutput
    )
    # Nodes route themselves (Command): a separate routing function would be one more
    # LangGraph task per step.
    if runtime.mode == "single":
        graph.add_node("generate", nodes["generate"])
        graph.add_edge("generate", "finalize")
    else:
        graph.add_node("generate", nodes["generate"], destinations=("critique", "finalize"))
        graph.add_node("critique", nodes["critique"], destinations=("revise", "finalize"))
        graph.add_node("revise", nodes["revise"], destinations=("critique", "finalize"))
    graph.add_node("finalize", nodes["finalize"])
    graph.add_edge(START, "generate")
    graph.add_edge("finalize", END)
    compiled = graph.compile(checkpointer=checkpointer, name="reflectkit")
    return compiled.with_config(recursion_limit=recursion_limit(runtime.config))


def build_graph(
    config: ReflectConfig | None = None, *, checkpointer: Any = None, **settings: Any
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The compiled LangGraph graph for ``config`` (or for ``ReflectConfig(**settings)``; with
    both, ``config.with_settings(**settings)``: settings win, keyword dictionaries merge).

    Run it with ``await graph.ainvoke({"messages": [...]})``; it returns ``{"result":
    ReflectionResult, "output": str, "stop_reason": StopReason}``, so it can be a node or
    subgraph of your own graph. Its recursion limit is already set from ``max_iterations``. Its
    nodes are async, so use the async API (``ainvoke``/``astream``). Building it reads and checks
    every template, so a template error is raised here, before any model call; a run then reads
    no file on the event loop.

    Args:
        config: The settings; None: ``ReflectConfig(**settings)``.
        checkpointer: A LangGraph saver the graph is compiled with (durable runs under a
            ``thread_id``); None: none.
        **settings: :class:`~reflectkit.Reflector`'s settings, over ``config``'s.

    Raises:
        ConfigurationError: A setting is invalid; a template that is missing or does not
            render is a :class:`~reflectkit.TemplateError`.
    """
    if config is None:
        config = ReflectConfig(**settings)
    elif settings:
        config = config.with_settings(**settings)
    return compile_runtime(Runtime.create(config), checkpointer)
