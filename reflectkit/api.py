"""The public entry points: reflect, areflect and Reflector."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, aclosing
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, cast

from langchain_core.callbacks import Callbacks
from langgraph.types import StreamMode

from reflectkit.config import (
    FormatHelp,
    Mode,
    OnCriticError,
    ReflectConfig,
    RetryPolicy,
    StructuredOutput,
    config_from_arguments,
)
from reflectkit.errors import ConfigurationError, RunError
from reflectkit.events import (
    ReflectEvent,
    ResultEvent,
)
from reflectkit.graph import compile_runtime, step_event
from reflectkit.messages import Conversation, to_conversation
from reflectkit.pauses import (
    PAUSED,
    check_human_settings,
    new_thread_id,
    resume_input,
    waiting_messages,
)
from reflectkit.prompts import Prompts
from reflectkit.recording import Recording
from reflectkit.reflexion import Reflexion, open_memory
from reflectkit.result import ReflectionResult, StopReason
from reflectkit.run_setup import (
    FINISHED,
    RunOptions,
    graph_config,
    starting_point,
    thread_of,
    wanted,
)
from reflectkit.runner import iterate_sync, run_sync
from reflectkit.runtime import LoopState, Runtime
from reflectkit.stores.durability import open_checkpointer
from reflectkit.stores.runlog import RunLog, open_run_log
from reflectkit.tags import (
    REFLECTION_TAGS,
    OutputDelta,
    OutsideDelta,
    ReflectionDelta,
    TagDelta,
    TagScheme,
    ThinkingDelta,
)

__all__ = ["Prompt", "Reflector", "areflect", "reflect"]

logger = logging.getLogger(__name__)

Prompt = str | Sequence[Any]
"""A question, or a conversation: OpenAI-style message dicts or LangChain messages."""


def _noting_given_settings(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap ``Reflector.__init__`` so it knows which settings the caller actually passed (a
    default cannot tell ``max_iterations=3`` from no ``max_iterations``): with ``config=``, only
    those override the config's. The signature stays the documented one."""

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        self._given_settings = frozenset(kwargs) | ({"model"} if args else frozenset())
        init(self, *args, **kwargs)

    return wrapper


class Reflector:
    """A configured reflection loop, built once and run many times.

    Templates are checked and the graph compiled here, so configuration errors surface before
    any model is paid for. A keyword that is a near-miss of a setting (``max_iteration=``) raises
    :class:`~reflectkit.ConfigurationError` instead of going to LiteLLM. Run it with
    :meth:`run`/:meth:`arun` or stream it with :meth:`stream`/:meth:`astream`; close it with
    :meth:`close` or ``with Reflector(...) as r:`` (``async with`` and :meth:`aclose` in async
    code), which closes the lesson store and run log it opened (ones passed in stay open).

    Args:
        model: The generator, a LiteLLM model string (``"gpt-4o-mini"``,
            ``"ollama/llama3"``). None: ``$REFLECTKIT_MODEL``, else the embedded
            ``local/smollm2-135m``.
        critic: Who judges each draft: an LLM critic by default; a function
            ``fn(question, answer) -> bool | str | Verdict | dict``, any
            :class:`~reflectkit.Critic`, or a list of them (all must pass, see
            :class:`~reflectkit.AllOf`).
        critic_model: The default LLM critic's model; None: the generator's.
        max_iterations: Drafts at most (1 to 100), the first included.
        mode: ``"loop"`` (generate, critique, revise), ``"single"`` (one call) or ``"auto"``:
            single-pass for models that gain nothing from a loop without a critic (tuned on the
            tags, native reasoning), the loop otherwise.
        scheme: The tag names (:data:`~reflectkit.REFLECTION_TAGS`,
            :data:`~reflectkit.THINK_TAGS` or your own :class:`~reflectkit.TagScheme`).
        template_dir: A folder of Jinja2 templates overriding the built-in prompts (rendered
            sandboxed).
        retry: How failed model calls are retried; None: the default
            :class:`~reflectkit.RetryPolicy`.
        timeout: Seconds for one model call; None: no limit.
        critic_kwargs: LiteLLM keywords for the default LLM critic's calls (over the
            generator's when it uses the generator's model).
        revise_kwargs: LiteLLM keywords for revision calls only, over the generator's (a
            temperature above 0 keeps a revision from copying its draft).
        format_help: Help for models that ignore the tag format: ``"auto"`` (per model),
            ``"off"``, or a :class:`~reflectkit.FormatHelp`.
        token_budget: Stop once the run has used this many tokens.
        cost_budget: Stop once the run has spent this many USD.
        time_budget: Stop once the run has taken this many seconds.
        min_score: Stop once a verdict scores at least this (0 to 10).
        critic_timeout: Seconds for one critique; a critic that takes longer has failed.
        on_critic_error: What a failed critic does: ``"raise"`` fails the run with
            :class:`~reflectkit.CriticError` (its ``partial`` keeps the work);
            ``"keep_best"`` ends it with the best-judged draft, stop reason ``critic_error``.
        output_type: A typed answer: a pydantic model, any type pydantic validates, or a JSON
            Schema dict. The answer is validated before any critic, revised on the validation
            errors (verbatim), and ``result.parsed`` is the validated object
            (docs/typed-output.md).
        structured_output: How a typed answer is written: JSON inside the output tag
            (``"tags"``), the provider's own structured output (``"native"``, which drops
            the tags), or ``"auto"`` (native only for reasoning models whose provider LiteLLM
            says supports a JSON Schema).
        trials: Whole Reflexion attempts (1 to 20); each failed one is followed by a lesson
            the next one reads.
        memory: Lessons kept across runs: True for the default SQLite file, a path, or a
            :class:`~reflectkit.LessonStore`.
        run_log: Where runs are recorded: None for ``$REFLECTKIT_RUN_LOG`` or the default
            file, False for nowhere, a path, or a
            :class:`~reflectkit.stores.runlog.RunLog`.
        checkpointer: Where runs given a ``thread_id`` save their state after every step:
            None for ``$REFLECTKIT_CHECKPOINTS`` or the default SQLite file, a path, a
            ``postgresql://`` URL, a LangGraph saver, or False for no durable runs.
        config: A :class:`~reflectkit.ReflectConfig` to start from: the settings you also
            pass win over its own, and LiteLLM keywords merge into its ``model_kwargs``
            (``ReflectConfig.with_settings``).
        **model_kwargs: Passed to LiteLLM on every generator call (``temperature=0``,
            ``api_base=...``).

    Raises:
        ConfigurationError: A setting is invalid, a template does not render, or a store
            cannot be opened.
    """

    @_noting_given_settings
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
        on_critic_error: OnCriticError = "raise",
        output_type: Any = None,
        structured_output: StructuredOutput = "auto",
        trials: int = 1,
        memory: Any = None,
        run_log: Any = None,
        checkpointer: Any = None,
        config: ReflectConfig | None = None,
        **model_kwargs: Any,
    ) -> None:
        given: frozenset[str] = getattr(self, "_given_settings", frozenset())
        config = config_from_arguments(locals(), given, config)
        self.config = config
        """The settings this reflector runs with, every default filled in."""
        prompts = Prompts(config.template_dir)
        prompts.check()
        self._runtime = Runtime.create(config, prompts)
        if config.trials > 1 and self._runtime.mode == "single":
            raise ConfigurationError(
                "trials > 1 needs a critic to fail a trial: pass critic=... or mode='loop'"
            )
        check_human_settings(self._runtime, config)
        self._graph = compile_runtime(self._runtime)
        # Each store checks its own setting here, before any model is paid for (the config is
        # plain data); nothing touches the disk until first use.
        saves = config.checkpointer is not None and config.checkpointer is not False
        checkpoints = open_checkpointer(config.checkpointer) if saves else None
        self._memory, self._owns_memory = open_memory(config.memory, config.trials)
        self._run_log = open_run_log(config.run_log)
        self._public_config = config.public_dict()  # recorded with every run; computed once
        if checkpoints is not None:
            self._public_config["checkpointer"] = checkpoints.location  # resolved, no password
        self._owns_run_log = not isinstance(config.run_log, RunLog)

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
        self,
        prompt: Prompt,
        *,
        include_thinking: bool = False,
        task_key: str | None = None,
        thread_id: str | None = None,
        callbacks: Callbacks = None,
    ) -> AsyncIterator[ReflectEvent]:
        """Run and yield events as they happen (see docs/streaming.md for exactly when):
        :class:`StepStarted` and :class:`StepEvent` around each step; a single-pass run's answer
        as :class:`OutputDelta` while the model writes it; a loop's drafts as
        :class:`DraftDelta` while they are written and its answer as one :class:`OutputDelta`
        once the critic is done; a :class:`TrialEvent` after each failed Reflexion trial; last a
        :class:`ResultEvent`.

        ``include_thinking`` adds the thinking and reflection deltas, and text outside the tags.
        ``task_key`` names the task in the lesson memory (default: a hash of the question).
        ``thread_id`` makes the run durable: its state is saved after every step, and a later
        call with the same ``thread_id`` continues where it stopped (see docs/durability.md).
        ``callbacks`` are LangChain callback handlers, passed to the graph (LangSmith tracing
        works through them). If the run fails, the error raised is a
        :class:`~reflectkit.RunError` whose ``partial`` holds the drafts and usage so far.
        Stopping early (``break``, cancelling the task) stops the run and its model calls.
        A run that a :class:`~reflectkit.HumanCritic` paused ends with a :class:`ResultEvent`
        whose result's stop reason is ``awaiting_human`` (see :meth:`aresume`).
        """
        wanted: tuple[type[TagDelta], ...] = (OutputDelta,)
        if include_thinking:
            wanted += (ThinkingDelta, ReflectionDelta, OutsideDelta)
        run = RunOptions(True, wanted, task_key, thread_of(thread_id), callbacks)
        # aclosing: a consumer that stops early closes the run now, not when it is collected.
        async with aclosing(self._recorded(prompt, run)) as events:
            async for event in events:
                yield event

    async def _recorded(self, prompt: Prompt, run: RunOptions) -> AsyncGenerator[ReflectEvent]:
        """:meth:`_run` with the run recorded in the run log and traced as one span."""
        conversation = to_conversation(prompt)
        await self._runtime.acheck()
        if run.thread_id is None and self._runtime.human:
            run = replace(run, thread_id=new_thread_id())  # a pause must say what to resume
        self._check_thread(run.thread_id)
        recording = Recording(
            self._run_log,
            messages=conversation.messages,
            config=self._public_config,
            model=self.model,
            mode=self.mode,
            thread_id=run.thread_id,
        )
        events = recording.around(self._run(conversation, run, recording.span))
        async with aclosing(events) as recorded:
            async for event in recorded:
                yield event

    def _check_thread(self, thread_id: str | None) -> None:
        if thread_id is None:
            return
        if self.config.checkpointer is False:
            raise ConfigurationError("thread_id needs a checkpointer, and checkpointer=False")
        if self.config.trials > 1:
            raise ConfigurationError(
                "thread_id cannot resume Reflexion trials (trials > 1) yet: use one or the other"
            )

    async def _run(
        self, conversation: Conversation, run: RunOptions, span: Any
    ) -> AsyncGenerator[ReflectEvent]:
        async with AsyncExitStack() as stack:
            graph = self._graph
            if run.thread_id is not None:
                # Opening checks the file (a few stats and reads): off the event loop.
                setting = self.config.checkpointer
                checkpointer = await asyncio.to_thread(open_checkpointer, setting)
                saver = await stack.enter_async_context(checkpointer)
                graph = compile_runtime(self._runtime, saver)
            trial = functools.partial(self._trial, graph, conversation, run=run, span=span)
            events: AsyncGenerator[ReflectEvent]
            if self._memory is None:
                events = trial([])
            else:
                reflexion = Reflexion(self._runtime, self._memory, run.task_key)
                events = reflexion.trials(conversation, trial)
            async with aclosing(events) as stream:
                async for event in stream:
                    yield event

    async def _trial(
        self,
        graph: Any,
        conversation: Conversation,
        lessons: list[str],
        *,
        run: RunOptions,
        span: Any,
    ) -> AsyncGenerator[ReflectEvent]:
        """One run of the graph: its events, then its result. A durable run whose thread has a
        checkpoint continues from it (or, when it finished, gives its result again)."""
        config = graph_config(run, span, conversation)
        state: LoopState = {"messages": list(conversation.messages)}
        if lessons:
            state["lessons"] = lessons
        state, inputs = await starting_point(graph, config, run, conversation, state)
        if inputs is FINISHED:
            yield ResultEvent(state["result"])
            return
        modes: list[StreamMode] = ["updates", "custom"] if run.live else ["updates"]
        paused = False
        try:
            # "sync": each step's checkpoint is written before the next step starts, so a crash
            # (even one that stops the event loop) never loses a completed step.
            durable: dict[str, Any] = {"durability": "sync"} if run.thread_id else {}
            stream = graph.astream(inputs, config, stream_mode=modes, **durable)
            async with aclosing(stream) as chunks:
                async for mode, chunk in chunks:
                    if mode == "custom":
                        if wanted(chunk, run.wanted):
                            yield cast("ReflectEvent", chunk)
                        continue
                    for node, change in cast("dict[str, Any]", chunk).items():
                        if node == PAUSED:
                            paused = True
                        elif change:
                            state.update(change)
                            yield step_event(node, change)
        except RunError as error:
            if state.get("iterations"):
                error.partial = self._runtime.result(state, StopReason.ERROR)
            raise
        if paused and "result" not in state:
            state["result"] = self._runtime.result(state, StopReason.AWAITING_HUMAN)
        yield ResultEvent(state["result"])

    async def arun(
        self,
        prompt: Prompt,
        *,
        task_key: str | None = None,
        thread_id: str | None = None,
        callbacks: Callbacks = None,
    ) -> ReflectionResult:
        """Run the loop on ``prompt`` and return the result (arguments as in :meth:`astream`)."""
        return await self._result(
            prompt, RunOptions(False, (), task_key, thread_of(thread_id), callbacks)
        )

    async def _result(self, prompt: Prompt, run: RunOptions) -> ReflectionResult:
        async with aclosing(self._recorded(prompt, run)) as events:
            async for event in events:
                if isinstance(event, ResultEvent):
                    return event.result
        raise AssertionError("the run ended without a result")  # a run always ends with one

    async def aresume(
        self, thread: str | ReflectionResult, verdict: Any, *, callbacks: Callbacks = None
    ) -> ReflectionResult:
        """Resume a run paused for a person (stop reason ``awaiting_human``) with their verdict.

        ``thread`` is the paused run's ``thread_id``, or its result. ``verdict`` is ``True`` or
        ``"pass"`` to accept the draft, feedback text (sent to the revise step verbatim),
        ``False``, or a :class:`~reflectkit.Verdict`. The run goes on from the pause, in this
        process or any other: this reflector must have the settings the run was started with
        (its model, critic, budgets) and reach the same checkpointer. It returns the next
        result: passed, another pause for the next draft, or any other stop.

        Args:
            thread: The paused run's ``thread_id``, or its result.
            verdict: The person's verdict (see above).
            callbacks: LangChain callback handlers, as in :meth:`astream`.

        Raises:
            ConfigurationError: The thread does not wait for a person, this reflector has no
                HumanCritic, or the verdict is unusable; raised before anything runs.
        """
        thread_id = thread_of(thread.thread_id if isinstance(thread, ReflectionResult) else thread)
        if thread_id is None:
            raise ConfigurationError("resume needs the thread_id of a run awaiting a person")
        if not self._runtime.human:
            raise ConfigurationError(
                "this Reflector has no HumanCritic: resume with one made with the settings the "
                "run was started with (critic=rk.HumanCritic(), ...)"
            )
        command = resume_input(verdict)
        self._check_thread(thread_id)
        setting = self.config.checkpointer
        async with await asyncio.to_thread(open_checkpointer, setting) as saver:
            messages = await waiting_messages(compile_runtime(self._runtime, saver), thread_id)
        run = RunOptions(False, (), None, thread_id, callbacks, resume=command)
        return await self._result(messages, run)

    def resume(
        self, thread: str | ReflectionResult, verdict: Any, *, callbacks: Callbacks = None
    ) -> ReflectionResult:
        """Sync :meth:`aresume`."""
        return run_sync(self.aresume(thread, verdict, callbacks=callbacks))

    def run(
        self,
        prompt: Prompt,
        *,
        task_key: str | None = None,
        thread_id: str | None = None,
        callbacks: Callbacks = None,
    ) -> ReflectionResult:
        """Sync :meth:`arun`."""
        return run_sync(
            self.arun(prompt, task_key=task_key, thread_id=thread_id, callbacks=callbacks)
        )

    def stream(
        self,
        prompt: Prompt,
        *,
        include_thinking: bool = False,
        task_key: str | None = None,
        thread_id: str | None = None,
        callbacks: Callbacks = None,
    ) -> Iterator[ReflectEvent]:
        """Sync :meth:`astream`; breaking out of the loop stops the run."""
        return iterate_sync(
            self.astream(
                prompt,
                include_thinking=include_thinking,
                task_key=task_key,
                thread_id=thread_id,
                callbacks=callbacks,
            )
        )

    def close(self) -> None:
        """Close the lesson store and run log this reflector opened (ones passed in are the
        caller's)."""
        if self._memory is not None and self._owns_memory:
            self._memory.close()
        if self._run_log is not None and self._owns_run_log:
            self._run_log.close()

    async def aclose(self) -> None:
        """:meth:`close` in a worker thread (it waits for the run log's writes), so the event
        loop is never held up."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Reflector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Reflector:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def areflect(
    prompt: Prompt,
    model: str | None = None,
    *,
    task_key: str | None = None,
    thread_id: str | None = None,
    callbacks: Callbacks = None,
    **settings: Any,
) -> ReflectionResult:
    """Make ``model`` reason, check itself and correct itself on ``prompt``; return the result.

    Builds a :class:`Reflector` for this one call and closes it afterwards; build one yourself
    to run many prompts on the same settings.

    Args:
        prompt: A question, or a conversation: OpenAI-style message dicts (``content`` a
            string or a list of parts) or LangChain messages, the last one the user's. The
            caller's list is never modified.
        model: The generator's LiteLLM model string; None: ``$REFLECTKIT_MODEL``, else the
            embedded local model.
        task_key: Names the task in the lesson memory (default: a hash of the question).
        thread_id: Makes the run durable: its state is saved after every step, and a call
            with the same ``thread_id`` continues a run that failed or was killed.
        callbacks: LangChain callback handlers (LangSmith tracing works through them).
        **settings: :class:`Reflector`'s settings (``critic``, ``max_iterations``,
            ``output_type`` for a typed answer in ``result.parsed``, budgets ...); anything
            else passes through to LiteLLM.

    Raises:
        ConfigurationError: A setting is invalid.
        InputError: The prompt is not a question or a conversation ending with a user turn.
        RunError: The run failed; its ``partial`` holds the drafts and usage so far.
    """
    # Building a Reflector reads templates and may load LiteLLM and open stores: off the loop.
    reflector = await asyncio.to_thread(functools.partial(Reflector, model, **settings))
    async with reflector:
        return await reflector.arun(
            prompt, task_key=task_key, thread_id=thread_id, callbacks=callbacks
        )


def reflect(
    prompt: Prompt,
    model: str | None = None,
    *,
    task_key: str | None = None,
    thread_id: str | None = None,
    callbacks: Callbacks = None,
    **settings: Any,
) -> ReflectionResult:
    """:func:`areflect`, from sync code: the arguments and the result are the same.

    Safe where an event loop is already running (Jupyter): the run is submitted to
    reflectkit's one background event loop.
    """
    return run_sync(
        areflect(
            prompt, model, task_key=task_key, thread_id=thread_id, callbacks=callbacks, **settings
        )
    )
