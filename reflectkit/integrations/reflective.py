"""Reflect any LangChain Runnable or LangGraph graph, agents included (``reflectkit.reflective``).

``reflective(runnable, critic=...)`` returns a Runnable that calls ``runnable``, shows its whole
run (the request, the tools it called with their arguments and results, the answer) to a critic
as a :class:`~reflectkit.trajectory.Trajectory`, and, while the critic fails the answer, calls
it again with the critique (:mod:`reflectkit.integrations.runnable_shapes` says how, by input
shape), until the critic passes or ``max_iterations`` runs were made. It returns what
``runnable`` returns, so it is a drop-in.

Unlike :class:`~reflectkit.integrations.langchain.ReflectiveChatModel`, which keeps its inner
run apart from the caller's, this one is part of the caller's run: every call of ``runnable``
gets the caller's config (callbacks, tags, metadata, ``configurable`` with its ``thread_id``),
as a child of the wrapper's own run, and a graph's checkpointer keeps the thread as usual.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableLambda,
    ensure_config,
    patch_config,
)

from reflectkit.config import OnCriticError
from reflectkit.critics.base import (
    Critic,
    CriticSetup,
    CritiqueRequest,
    TrajectoryCritic,
    ask_critic,
    check_critic,
    critic_label,
)
from reflectkit.critics.compose import AllOf, as_critic
from reflectkit.critics.llm_critic import LLMCritic
from reflectkit.errors import ConfigurationError, RunError
from reflectkit.integrations.langchain.provider import BACKEND
from reflectkit.integrations.runnable_shapes import Revise, Shape, shape_of
from reflectkit.messages import PromptBuilder
from reflectkit.prompts import Prompts
from reflectkit.redaction import one_line
from reflectkit.result import Draft, Iteration, ReflectionResult, StopReason
from reflectkit.runner import run_sync
from reflectkit.stopping import select_final
from reflectkit.tags import REFLECTION_TAGS
from reflectkit.trajectory import Trajectory
from reflectkit.usage import Usage
from reflectkit.verdict import Verdict

__all__ = ["ReflectiveRunnable", "reflective"]


def _takes_one_argument(fn: Any) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) == 1 and not any(p.kind is p.VAR_POSITIONAL for p in parameters)


def _critic(value: Any) -> Critic | None:
    """A ``critic=`` argument as a critic: a callable of one argument gets the trajectory, one of
    two ``(question, answer)``; lists are :class:`~reflectkit.AllOf`."""
    if isinstance(value, (list, tuple)):
        return AllOf(*(_critic(v) for v in value))
    if callable(value) and not isinstance(value, Critic) and _takes_one_argument(value):
        return TrajectoryCritic(value)
    return as_critic(value)


def _with_record(output: Any, result: ReflectionResult) -> Any:
    """``output`` with the run's record in its final AI message's ``response_metadata``
    (a copy: the message the runnable returned or a checkpointer keeps is not changed)."""
    record = {
        "stop_reason": result.stop_reason.value,
        "passed": result.passed,
        "iterations": len(result.iterations),
        "final_iteration": result.final_iteration,
        "critic": result.critic,
    }

    def tagged(message: AIMessage) -> AIMessage:
        metadata = {**message.response_metadata, "reflectkit": record}
        return message.model_copy(update={"response_metadata": metadata})

    if isinstance(output, AIMessage):
        return tagged(output)
    if isinstance(output, Mapping):
        messages = output.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[-1], AIMessage):
            return {**output, "messages": [*messages[:-1], tagged(messages[-1])]}
    return output


class ReflectiveRunnable(Runnable[Any, Any]):
    """A Runnable that reflects ``runnable``'s answers: made by :func:`reflective`.

    ``invoke``/``ainvoke`` return what ``runnable`` returns (the passing run's output, or the
    best-judged one); its last AI message, if it ends with one, carries the record in
    ``response_metadata["reflectkit"]``. :meth:`areflect` returns the whole
    :class:`~reflectkit.ReflectionResult` instead. ``batch``, ``stream`` and the rest are
    LangChain's defaults over ``ainvoke`` (a stream yields the final output once).
    """

    def __init__(
        self,
        runnable: Runnable[Any, Any],
        critic: Critic,
        *,
        critic_name: str,
        critic_model: str | None,
        critic_chat: BaseChatModel | None,
        max_iterations: int,
        critic_timeout: float | None,
        on_critic_error: OnCriticError,
        revise: Revise | None,
        prompts: Prompts,
        name: str | None,
    ) -> None:
        self.runnable = runnable
        self.critic = critic
        self.critic_name = critic_name
        self.critic_model = critic_model
        self.max_iterations = max_iterations
        self.critic_timeout = critic_timeout
        self.on_critic_error = on_critic_error
        self.revise = revise
        self.prompts = prompts
        self.builder = PromptBuilder(prompts, REFLECTION_TAGS)
        self.name = name or "reflective"
        # The LangChain critic model is served only while something holds it: this does.
        self._critic_chat = critic_chat
        self._judge = RunnableLambda(self._critique, name="critique")

    @property
    def InputType(self) -> Any:
        return self.runnable.InputType

    @property
    def OutputType(self) -> Any:
        return self.runnable.OutputType

    def get_input_schema(self, config: RunnableConfig | None = None) -> Any:
        return self.runnable.get_input_schema(config)

    def get_output_schema(self, config: RunnableConfig | None = None) -> Any:
        return self.runnable.get_output_schema(config)

    async def _critique(self, request: CritiqueRequest) -> Verdict | str:
        """The critic's verdict (a child run named ``critique`` in the caller's callbacks), or
        with ``on_critic_error="keep_best"`` the failure's one-line message."""
        try:
            return await ask_critic(self.critic, request, self.critic_timeout)
        except RunError as error:
            if self.on_critic_error != "keep_best":
                raise
            return one_line(error)

    async def _run(
        self,
        value: Any,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> tuple[Any, ReflectionResult]:
        if self._critic_chat is not None:
            BACKEND.register()
        shape = shape_of(value, self.runnable, config, self.revise)
        started = time.monotonic()
        iterations: list[Iteration] = []
        outputs: list[Any] = []
        stop, failure = StopReason.MAX_ITERATIONS, None
        for number in range(1, self.max_iterations + 1):
            begun = time.monotonic()
            child = patch_config(config, callbacks=run_manager.get_child())
            output = await self.runnable.ainvoke(shape.current, child, **kwargs)
            outputs.append(output)
            verdict, iteration = await self._judged(shape, output, number, child)
            iterations.append(iteration.model_copy(update={"seconds": time.monotonic() - begun}))
            if isinstance(verdict, str):
                stop, failure = StopReason.CRITIC_ERROR, verdict
                break
            if verdict.passed:
                stop = StopReason.PASSED
                break
            if number < self.max_iterations:
                critique = self._critique_turn(shape, iteration.draft.output, verdict)
                shape.next_input(output, verdict, critique)
        index, best = select_final(iterations, stop)  # the loop's own rule for what is kept
        chosen = iterations[index]
        result = ReflectionResult(
            output=chosen.draft.output,
            iterations=iterations,
            stop_reason=stop,
            usage=sum((i.usage for i in iterations), Usage()),
            model=self.runnable.get_name(),
            critic=self.critic_name,
            mode="loop",
            final_iteration=chosen.number,
            seconds=time.monotonic() - started,
            critic_error=failure,
            selection="best" if best else "last",
        )
        return _with_record(outputs[chosen.number - 1], result), result

    async def _judged(
        self, shape: Shape, output: Any, number: int, config: RunnableConfig
    ) -> tuple[Verdict | str, Iteration]:
        attempt = shape.attempt(output)
        draft = Draft(text=attempt.answer, output=attempt.answer, tool_calls=attempt.tool_calls)
        trajectory = Trajectory(
            messages=attempt.turn,
            question=shape.question,
            answer=attempt.answer,
            input=shape.current,
            output=output,
            iteration=number,
        )
        request = CritiqueRequest(
            question=shape.question,
            answer=attempt.answer,
            draft=draft,
            iteration=number,
            messages=[*attempt.context, *attempt.turn],
            prompts=self.builder,
            default_model=self.critic_model,
            trajectory=trajectory,
        )
        verdict: Verdict | str = await self._judge.ainvoke(request, config)
        iteration = Iteration(
            number=number,
            kind="generate" if number == 1 else "revise",
            draft=draft,
            verdict=verdict if isinstance(verdict, Verdict) else None,
            draft_usage=attempt.usage,
            critique_usage=(verdict.usage if isinstance(verdict, Verdict) else None) or Usage(),
        )
        return verdict, iteration

    def _critique_turn(self, shape: Shape, answer: str, verdict: Verdict) -> str:
        escape = self.builder.escape
        return self.prompts.render(
            "revise_runnable",
            question=escape(shape.question),
            answer=escape(answer),
            feedback=escape(verdict.feedback),
            issues=[escape(issue) for issue in verdict.issues],
            score=verdict.score,
            standalone=shape.kind == "text",
        )

    async def _areflect(
        self, value: Any, config: RunnableConfig | None, **kwargs: Any
    ) -> tuple[Any, ReflectionResult]:
        done: list[ReflectionResult] = []

        async def run(
            value: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
        ) -> Any:
            output, result = await self._run(value, run_manager, config, **kwargs)
            done.append(result)
            return output

        output = await self._acall_with_config(run, value, config)
        return output, done[0]

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Run, judge, revise; return the runnable's output for the answer kept."""
        output, _ = await self._areflect(input, config, **kwargs)
        return output

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Sync :meth:`ainvoke`."""
        # ensure_config here, in the caller's thread: it reads the run in progress from there.
        return run_sync(self.ainvoke(input, ensure_config(config), **kwargs))

    async def areflect(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> ReflectionResult:
        """Run like :meth:`ainvoke`, and return the whole record: each run's answer and tool
        calls (``iterations[i].draft``), the verdicts, the stop reason, the answer kept."""
        _, result = await self._areflect(input, config, **kwargs)
        return result

    def reflect(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> ReflectionResult:
        """Sync :meth:`areflect`."""
        return run_sync(self.areflect(input, ensure_config(config), **kwargs))


def _critic_model(model: Any) -> tuple[str | None, bool]:
    if model is None or isinstance(model, str):
        return model, False
    if isinstance(model, BaseChatModel):
        return BACKEND.add(model), True
    raise ConfigurationError(
        f"critic_model must be a LiteLLM model string or a LangChain chat model, "
        f"not {type(model).__name__}"
    )


def reflective(
    runnable: Runnable[Any, Any],
    *,
    critic: Any = None,
    critic_model: Any = None,
    max_iterations: int = 3,
    critic_timeout: float | None = 300.0,
    on_critic_error: OnCriticError = "raise",
    revise: Revise | None = None,
    template_dir: Any = None,
    name: str | None = None,
) -> ReflectiveRunnable:
    """Wrap any LangChain Runnable or compiled LangGraph graph so a critic judges each run whole,
    and a failed run is made again with the critique.

    The result is a ``ReflectiveRunnable``: ``invoke``/``ainvoke`` return what
    ``runnable`` returns, ``areflect`` the whole :class:`~reflectkit.ReflectionResult`.
    Everything is checked here, before any call.

    Args:
        runnable: The runnable or graph whose runs are judged.
        critic: A reflectkit critic, a function of the
            :class:`~reflectkit.trajectory.Trajectory` (one argument) or of
            ``(question, answer)`` (two), or a list of these (all must pass). None: an LLM
            critic on ``critic_model``.
        critic_model: A LiteLLM model string or a LangChain chat model: the LLM critic that
            reads the trajectory, and the model an ``LLMCritic()`` without one uses.
        max_iterations: Runs at most, the first included.
        critic_timeout: Seconds for one critique; a critic that takes longer has failed.
        on_critic_error: ``"raise"`` fails the call with a CriticError; ``"keep_best"``
            returns the best-judged run so far.
        revise: ``(input, output, verdict) -> next input``, needed only for inputs that are
            neither a str, messages, nor a dict with ``"messages"`` (those get the critique
            appended as a user turn).
        template_dir: A folder of Jinja2 templates overriding the built-in prompts.
        name: The runnable's name (default ``reflective``).

    Raises:
        ConfigurationError: No critic and no ``critic_model``, or a setting is invalid.
    """
    if not isinstance(runnable, Runnable):
        raise ConfigurationError(
            f"reflective() needs a LangChain Runnable or a compiled LangGraph graph, not "
            f"{type(runnable).__name__}; wrap a function in RunnableLambda"
        )
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int):
        raise ConfigurationError("max_iterations must be an int")
    if max_iterations < 1:
        raise ConfigurationError("max_iterations must be at least 1")
    if on_critic_error not in ("raise", "keep_best"):
        raise ConfigurationError(
            f"on_critic_error must be 'raise' or 'keep_best', not {on_critic_error!r}"
        )
    if revise is not None and not callable(revise):
        raise ConfigurationError("revise must be a function (input, output, verdict) -> input")
    model, serves_langchain = _critic_model(critic_model)
    judge = _critic(critic) if critic is not None else None
    if judge is None:
        if model is None:
            raise ConfigurationError("reflective() needs a critic: pass critic= or critic_model=")
        judge = LLMCritic(model)
    if isinstance(judge, LLMCritic) and judge.model is None and model is None:
        raise ConfigurationError("LLMCritic() has no model here: pass critic_model=")
    setup = CriticSetup(model or str(getattr(judge, "model", None) or ""))
    if setup.model:
        if serves_langchain:
            BACKEND.register()
        check_critic(judge, setup)
    prompts = Prompts(template_dir)
    prompts.check()  # every template read and checked now, none on the event loop later
    return ReflectiveRunnable(
        runnable,
        judge,
        critic_name=critic_label(judge, setup),
        critic_model=model,
        critic_chat=critic_model if serves_langchain else None,
        max_iterations=max_iterations,
        critic_timeout=critic_timeout,
        on_critic_error=on_critic_error,
        revise=revise,
        prompts=prompts,
        name=name,
    )
