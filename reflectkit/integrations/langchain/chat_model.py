"""reflectkit as a LangChain chat model: swap one object and a chatbot reflects before it answers.

:class:`ReflectiveChatModel` is a LangChain ``BaseChatModel`` whose every reply is the answer of a
reflectkit run: the generator drafts, a critic judges, the generator revises. The generator is a
LiteLLM model string or any LangChain chat model; so is the optional critic model, and any
reflectkit critic (a function, a ``SchemaCritic`` ...) works too. A LangChain chat model given
as a model is served through :mod:`reflectkit.integrations.langchain.provider` (the other
direction).

The inner run is kept out of the caller's LangChain run: it does not see the caller's callbacks
or LangGraph config, so a reflection inside a LangGraph node never writes its drafts into the
graph's ``"messages"`` stream, nor its state into the graph's checkpointer. What the caller sees is
the final answer (streamed as it becomes known), its tool calls, and the usage of the whole run.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing, suppress
from typing import Any, Literal, TypeVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import ToolCall, ToolCallChunk, tool_call_chunk
from langchain_core.output_parsers.openai_tools import make_invalid_tool_call, parse_tool_call
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field, PrivateAttr, model_validator

from reflectkit.api import Reflector
from reflectkit.errors import ConfigurationError
from reflectkit.events import ReflectEvent, ResultEvent
from reflectkit.integrations.langchain.provider import BACKEND, PROVIDER
from reflectkit.result import ReflectionResult
from reflectkit.runner import iterate_sync, run_sync
from reflectkit.tags import OutputDelta

__all__ = ["PROVIDER", "ReflectiveChatModel"]

T = TypeVar("T")


async def _isolated(stream: AsyncIterator[T]) -> AsyncGenerator[T]:
    """Iterate ``stream`` in a task that cannot see the caller's LangChain run config.

    LangChain and LangGraph hand a run's config (callbacks, the graph's stream handlers and
    checkpointer) to everything called inside it through a context variable; the reflection
    run must not inherit it, or an outer graph would stream its drafts and checkpoint its steps.
    """
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=1)

    async def pump() -> None:
        try:
            try:
                async for item in stream:
                    await queue.put(("item", item))
            finally:
                closer = getattr(stream, "aclose", None)
                if closer is not None:
                    await closer()  # stop the run's model calls now, not when collected
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # handed to the consumer, which raises it
            await queue.put(("error", error))
            return
        await queue.put(("end", None))

    context = contextvars.copy_context()
    context.run(var_child_runnable_config.set, None)
    task = asyncio.get_running_loop().create_task(pump(), context=context)
    try:
        while True:
            kind, value = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        if not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


def _lc_tool_calls(calls: list[dict[str, Any]]) -> tuple[list[ToolCall], list[Any]]:
    """OpenAI-format calls as LangChain's tool calls, and the ones whose arguments are not JSON."""
    valid: list[ToolCall] = []
    invalid: list[Any] = []
    for call in calls:
        try:
            parsed = parse_tool_call(call, return_id=True)
        except Exception as error:  # LangChain's OutputParserException: arguments not JSON
            invalid.append(make_invalid_tool_call(call, str(error)))
            continue
        if parsed is not None:
            valid.append(ToolCall(name=parsed["name"], args=parsed["args"], id=parsed["id"]))
    return valid, invalid


def _tool_call_chunks(calls: list[dict[str, Any]]) -> list[ToolCallChunk]:
    return [
        tool_call_chunk(
            name=c["function"]["name"], args=c["function"]["arguments"], id=c.get("id"), index=i
        )
        for i, c in enumerate(calls)
    ]


def _usage(result: ReflectionResult) -> UsageMetadata:
    """The whole run's tokens (every draft and critique), as LangChain's usage metadata."""
    usage = result.usage
    return UsageMetadata(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
    )


def _metadata(result: ReflectionResult) -> dict[str, Any]:
    """What the reply's ``response_metadata`` says about the run (JSON-ready, kept small, since
    the message is kept in chat histories and checkpoints)."""
    return {
        "model_name": result.model,
        "finish_reason": "tool_calls" if result.tool_calls else "stop",
        "reflectkit": {
            "stop_reason": result.stop_reason.value,
            "passed": result.passed,
            "iterations": len(result.iterations),
            "calls": result.usage.calls,
            "cost_usd": result.usage.cost_usd,
            "run_id": result.run_id,
        },
    }


def _parsed(result: ReflectionResult) -> dict[str, Any]:
    """The typed answer (``output_type``), where LangChain's chat models put a parsed structured
    output: ``additional_kwargs["parsed"]``; nothing when the answer is untyped or invalid."""
    return {"parsed": result.parsed} if result.parsed is not None else {}


def _structured(include_raw: bool) -> Callable[[AIMessage], Any]:
    """What :meth:`ReflectiveChatModel.with_structured_output` makes of a reply."""

    def parse(message: AIMessage) -> Any:
        parsed = message.additional_kwargs.get("parsed")
        error = None
        if parsed is None:
            stop = message.response_metadata.get("reflectkit", {}).get("stop_reason")
            error = OutputParserException(
                f"the answer did not validate against the output type (stop reason {stop})",
                llm_output=str(message.content),
            )
        if include_raw:
            return {"raw": message, "parsed": parsed, "parsing_error": error}
        if error is not None:
            raise error
        return parsed

    return parse


def _tool_choice(choice: Any) -> Any:
    """LangChain's ways to name a tool choice, in OpenAI's format."""
    if choice is True or choice == "any":
        return "required"
    if choice is False:
        return "none"
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        return {"type": "function", "function": {"name": choice}}
    return choice


class ReflectiveChatModel(BaseChatModel):
    """A LangChain chat model that reasons, critiques and revises before it answers.

    ``model`` is the generator: a LiteLLM model string (``"gpt-4o-mini"``) or any LangChain chat
    model. ``critic`` is any reflectkit critic, or a chat model / model string to critique with
    (same as ``critic_model``). Every other keyword is a :class:`~reflectkit.Reflector` setting
    (``mode``, ``token_budget``, ``format_help`` ...) or passes through to LiteLLM on the
    generator's calls, as with :func:`reflectkit.reflect`.

    The reply is the run's answer; the whole conversation is the context, and the last user
    turn (or the tool results after it) is what gets answered. A reply that calls tools is
    passed through unjudged, so :meth:`bind_tools` makes it usable as an agent's model.
    ``usage_metadata`` counts every call of the run; ``response_metadata["reflectkit"]`` has
    its stop reason. :meth:`areflect` gives the whole :class:`~reflectkit.ReflectionResult`.

    With ``output_type=`` (or :meth:`with_structured_output`) the answer is typed: the reply's
    content is its JSON and ``additional_kwargs["parsed"]`` the validated object, as LangChain's
    own chat models give a structured output (docs/typed-output.md).

    Args:
        model: The generator; None: ``$REFLECTKIT_MODEL``, else the embedded local model.
        **kwargs: ``critic``, ``critic_model``, ``max_iterations``, ``mode`` (the fields
            below), and any other :class:`~reflectkit.Reflector` setting or LiteLLM keyword
            (kept in ``settings``).

    Raises:
        ConfigurationError: A setting is invalid (checked here, not at the first call).
    """

    model: Any = None
    """The generator: a LiteLLM model string or a LangChain chat model."""
    critic: Any = None
    """Who judges each draft: any reflectkit critic (as ``Reflector``'s ``critic=``), or a
    LangChain chat model, which is taken as ``critic_model``; None: an LLM critic."""
    critic_model: Any = None
    """The default LLM critic's model: a LiteLLM model string or a LangChain chat model; None:
    the generator."""
    max_iterations: int = 3
    """Drafts at most, the first included."""
    mode: Literal["auto", "loop", "single"] = "auto"
    """``"loop"``, ``"single"`` or ``"auto"``, as ``Reflector``'s ``mode``."""
    settings: dict[str, Any] = Field(default_factory=dict)
    """Other Reflector settings and LiteLLM keyword arguments."""

    _generator: str | None = PrivateAttr(default=None)
    _critic: Any = PrivateAttr(default=None)
    _critic_model: str | None = PrivateAttr(default=None)
    _serves_langchain: bool = PrivateAttr(default=False)

    def __init__(self, model: Any = None, **kwargs: Any) -> None:
        super().__init__(**{"model": model, **kwargs})
        # Here, not in a validator: pydantic would wrap a ConfigurationError in its own error.
        self._resolve_models()

    @model_validator(mode="before")
    @classmethod
    def _collect_settings(cls, data: Any) -> Any:
        """Keywords that are not fields of the model are reflectkit settings."""
        if not isinstance(data, dict):
            return data
        extra = {k: v for k, v in data.items() if k not in cls.model_fields}
        if not extra:
            return data
        kept = {k: v for k, v in data.items() if k in cls.model_fields}
        return {**kept, "settings": {**kept.get("settings", {}), **extra}}

    def _resolve_models(self) -> None:
        """Serve wrapped LangChain models, and check the settings now, not at the first call."""
        self._generator = self._model_string(self.model, "model")
        critic, critic_model = self.critic, self.critic_model
        if isinstance(critic, BaseChatModel):
            if critic_model is not None:
                raise ConfigurationError("pass a critic chat model as critic= or critic_model=")
            critic, critic_model = None, critic
        self._critic = critic
        self._critic_model = self._model_string(critic_model, "critic_model")
        self._reflector({}).close()

    def _model_string(self, model: Any, what: str) -> str | None:
        if model is None or isinstance(model, str):
            return model
        if isinstance(model, BaseChatModel):
            self._serves_langchain = True
            return BACKEND.add(model)
        raise ConfigurationError(
            f"{what} must be a LiteLLM model string or a LangChain chat model, "
            f"not {type(model).__name__}"
        )

    @property
    def _llm_type(self) -> str:
        return "reflectkit"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self._generator,
            "critic": self._critic_model or getattr(self._critic, "name", self._critic),
            "max_iterations": self.max_iterations,
            "mode": self.mode,
        }

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` to the generator (any form LangChain converts to OpenAI's). A reply
        that calls them comes back as an ``AIMessage`` with ``tool_calls``, unjudged."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = _tool_choice(tool_choice)
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self, schema: Any, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        """This model with a typed answer: ``schema`` (a pydantic model, any type pydantic
        validates, or a JSON Schema dict) becomes the run's ``output_type``, so every draft is
        validated and revised on its errors, and the runnable returns the validated object
        (``include_raw``: ``{"raw", "parsed", "parsing_error"}``). An answer that never
        validated raises OutputParserException. ``kwargs`` (LangChain's ``method``, ``strict``)
        are not needed: reflectkit decides how the schema is sent (docs/typed-output.md)."""
        unknown = set(kwargs) - {"method", "strict"}
        if unknown:
            raise ConfigurationError(
                f"unknown with_structured_output argument(s): {sorted(unknown)}"
            )
        parse = RunnableLambda(_structured(include_raw))
        return self.bind(output_type=schema) | parse

    def _reflector(self, call_kwargs: dict[str, Any]) -> Reflector:
        return Reflector(
            self._generator,
            critic=self._critic,
            critic_model=self._critic_model,
            max_iterations=self.max_iterations,
            mode=self.mode,
            **{**self.settings, **call_kwargs},
        )

    async def _events(
        self, messages: Sequence[BaseMessage], call_kwargs: dict[str, Any]
    ) -> AsyncGenerator[ReflectEvent]:
        if self._serves_langchain:
            BACKEND.register()
        with self._reflector(call_kwargs) as reflector:
            async with aclosing(_isolated(reflector.astream(list(messages)))) as events:
                async for event in events:
                    yield event

    async def areflect(
        self, messages: LanguageModelInput, stop: list[str] | None = None, **kwargs: Any
    ) -> ReflectionResult:
        """Run on ``messages`` (anything ``invoke`` takes) and return the whole result: every
        draft, verdict and usage. ``kwargs`` are call-time LiteLLM keyword arguments."""
        converted = self._convert_input(messages).to_messages()
        call_kwargs = {**kwargs, **({"stop": stop} if stop else {})}
        async with aclosing(self._events(converted, call_kwargs)) as events:
            async for event in events:
                if isinstance(event, ResultEvent):
                    return event.result
        raise AssertionError("the run ended without a result")  # a run always ends with one

    def reflect(
        self, messages: LanguageModelInput, stop: list[str] | None = None, **kwargs: Any
    ) -> ReflectionResult:
        """Sync :meth:`areflect`."""
        return run_sync(self.areflect(messages, stop, **kwargs))

    async def _achunks(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> AsyncGenerator[ChatGenerationChunk]:
        """The answer's chunks as the run makes them known, then one closing chunk with the
        rest of the answer (when it was decided only at the end), tool calls and usage."""
        streamed = ""
        call_kwargs = {**kwargs, **({"stop": stop} if stop else {})}
        async with aclosing(self._events(messages, call_kwargs)) as events:
            async for event in events:
                if isinstance(event, OutputDelta) and event.text:
                    streamed += event.text
                    yield ChatGenerationChunk(message=AIMessageChunk(content=event.text))
                elif isinstance(event, ResultEvent):
                    result = event.result
                    rest = result.output[len(streamed) :]
                    if not result.output.startswith(streamed):
                        rest = ""  # already streamed text cannot be taken back
                    last = AIMessageChunk(
                        content=rest,
                        additional_kwargs=_parsed(result),
                        tool_call_chunks=_tool_call_chunks(result.tool_calls),
                        usage_metadata=_usage(result),
                        response_metadata=_metadata(result),
                        chunk_position="last",
                    )
                    yield ChatGenerationChunk(message=last)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async with aclosing(self._achunks(messages, stop, kwargs)) as chunks:
            async for chunk in chunks:
                if run_manager is not None:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in iterate_sync(self._achunks(messages, stop, kwargs)):
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = await self.areflect(messages, stop, **kwargs)
        valid, invalid = _lc_tool_calls(result.tool_calls)
        message = AIMessage(
            content=result.output,
            additional_kwargs=_parsed(result),
            tool_calls=valid,
            invalid_tool_calls=invalid,
            usage_metadata=_usage(result),
            response_metadata=_metadata(result),
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return run_sync(self._agenerate(messages, stop, **kwargs))
