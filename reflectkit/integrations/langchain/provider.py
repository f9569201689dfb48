"""A LangChain chat model as a reflectkit model: the ``langchain`` provider.

A wrapped LangChain chat model is served to LiteLLM as the ``langchain`` custom provider (the way
:mod:`reflectkit.testing` serves its fakes), so its calls take reflectkit's real loop, error
mapping and usage accounting. Its own retries stay on; reflectkit's come on top (pass
``retry=RetryPolicy(max_attempts=1)`` to keep only the model's).
:class:`~reflectkit.integrations.langchain.chat_model.ReflectiveChatModel` registers the models
it is given here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages
from langchain_core.messages.tool import ToolCall
from langchain_core.runnables import Runnable

from reflectkit.errors import ConfigurationError, ModelRequestsBlockedError
from reflectkit.models import adapter
from reflectkit.models.llm import is_loopback, register_provider
from reflectkit.models.provider import (
    ProviderChunk,
    ProviderFailure,
    ServedObjects,
    model_requests_allowed,
)

__all__ = ["BACKEND", "PROVIDER"]

PROVIDER = "langchain"
"""The LiteLLM provider name wrapped LangChain models are served under (``langchain/<name>``)."""

Message = dict[str, Any]


def _openai_call(call: ToolCall) -> dict[str, Any]:
    """A LangChain tool call in OpenAI's format (arguments as a JSON string)."""
    return {
        "id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": call["name"], "arguments": json.dumps(call.get("args") or {})},
    }


def _reply(message: BaseMessage) -> adapter.ToolCallReply:
    """A LangChain reply as the provider reply LiteLLM's adapter serves."""
    calls = tuple(_openai_call(c) for c in getattr(message, "tool_calls", None) or [])
    usage = getattr(message, "usage_metadata", None) or {}
    reasoning = message.additional_kwargs.get("reasoning_content")
    finish = message.response_metadata.get("finish_reason")
    return adapter.ToolCallReply(
        text=message.text,
        reasoning=reasoning if isinstance(reasoning, str) else None,
        prompt_tokens=usage.get("input_tokens"),
        completion_tokens=usage.get("output_tokens"),
        finish_reason="tool_calls" if calls else str(finish or "stop"),
        tool_calls=calls,
    )


def _failure(name: str, error: Exception) -> ProviderFailure:
    """A LangChain model's exception as a provider failure: its HTTP status when it has one
    (SDK errors do), else 400 for a bad call and 503 for anything that may pass on retry."""
    status = getattr(error, "status_code", None)
    if not isinstance(status, int):
        status = 400 if isinstance(error, (TypeError, ValueError, NotImplementedError)) else 503
    return ProviderFailure(status, f"LangChain model {name}: {type(error).__name__}: {error}")


def _in_process(chat: BaseChatModel) -> bool:
    """Whether calls to ``chat`` stay on this machine: LangChain's fakes, or an API on loopback."""
    if "fake" in chat._llm_type.lower():
        return True
    bases = (getattr(chat, name, None) for name in ("openai_api_base", "base_url", "api_base"))
    return any(is_loopback(base) for base in bases)


_SAMPLING = ("temperature", "max_tokens", "top_p")
"""Call-time settings forwarded to a wrapped LangChain model."""


class _LangChainBackend:
    """The ``langchain`` provider: routes each call to the chat model named in the model string.

    Models are held weakly: a wrapped model lives as long as the :class:`ReflectiveChatModel`
    (or anything else) that holds it.
    """

    local = True  # check() applies the hosted-request block itself, model by model

    def __init__(self) -> None:
        self._models: ServedObjects[BaseChatModel] = ServedObjects()

    def add(self, chat: BaseChatModel) -> str:
        """Serve ``chat`` and return its model string."""
        return f"{PROVIDER}/{self._models.add(chat, type(chat).__name__)}"

    def register(self) -> None:
        """Install the provider in LiteLLM (once; this loads LiteLLM)."""
        register_provider(PROVIDER, self)

    def _chat(self, name: str) -> BaseChatModel:
        chat = self._models.get(name)
        if chat is None:
            raise ConfigurationError(f"no LangChain model is served as {PROVIDER}/{name}")
        return chat

    def check(self, model: str) -> None:
        if not model_requests_allowed() and not _in_process(self._chat(model)):
            raise ModelRequestsBlockedError(f"{PROVIDER}/{model}")

    def _call(
        self, model: str, messages: list[Message], params: dict[str, Any]
    ) -> tuple[Runnable[Any, BaseMessage], list[BaseMessage], dict[str, Any]]:
        """The runnable to call (tools bound when offered), the messages, the call kwargs."""
        chat = self._chat(model)
        runnable: Runnable[Any, BaseMessage] = chat
        tools = params.get("tools")
        if tools:
            options = {k: params[k] for k in ("tool_choice", "parallel_tool_calls") if k in params}
            try:
                runnable = chat.bind_tools(tools, **options)
            except NotImplementedError:
                raise ProviderFailure(
                    400, f"LangChain model {model} cannot call tools (no bind_tools)"
                ) from None
        # LiteLLM drops "content" from assistant turns that only call tools; LangChain needs it.
        converted = convert_to_messages(
            [{**m, "content": m.get("content") or ""} for m in messages]
        )
        kwargs = {"stop": params["stop"]} if params.get("stop") else {}
        # Sampling settings given to reflectkit (temperature=0 ...) reach the wrapped model as
        # call-time keyword arguments, which LangChain's chat models pass to their provider.
        sampling = {k: params[k] for k in _SAMPLING if params.get(k) is not None}
        if sampling:
            runnable = runnable.bind(**sampling)
        return runnable, converted, kwargs

    def complete(
        self, model: str, messages: list[Message], params: dict[str, Any]
    ) -> adapter.ToolCallReply:
        runnable, converted, kwargs = self._call(model, messages, params)
        try:
            return _reply(runnable.invoke(converted, **kwargs))
        except ProviderFailure:
            raise
        except Exception as error:
            raise _failure(model, error) from None

    async def acomplete(
        self, model: str, messages: list[Message], params: dict[str, Any]
    ) -> adapter.ToolCallReply:
        runnable, converted, kwargs = self._call(model, messages, params)
        try:
            return _reply(await runnable.ainvoke(converted, **kwargs))
        except ProviderFailure:
            raise
        except Exception as error:
            raise _failure(model, error) from None

    def stream(
        self, model: str, messages: list[Message], params: dict[str, Any]
    ) -> Iterator[ProviderChunk]:
        runnable, converted, kwargs = self._call(model, messages, params)
        whole: Any = None
        try:
            for piece in runnable.stream(converted, **kwargs):
                whole = piece if whole is None else whole + piece
                if piece.text:
                    yield ProviderChunk(piece.text)
        except Exception as error:
            raise _failure(model, error) from None
        yield from _closing_chunks(whole)

    async def astream(
        self, model: str, messages: list[Message], params: dict[str, Any]
    ) -> AsyncIterator[ProviderChunk]:
        runnable, converted, kwargs = self._call(model, messages, params)
        whole: Any = None
        try:
            async for piece in runnable.astream(converted, **kwargs):
                whole = piece if whole is None else whole + piece
                if piece.text:
                    yield ProviderChunk(piece.text)
        except Exception as error:
            raise _failure(model, error) from None
        for chunk in _closing_chunks(whole):
            yield chunk


def _closing_chunks(whole: BaseMessage | None) -> Iterator[ProviderChunk]:
    """After a LangChain stream's text: its tool calls, one chunk each, then the finish."""
    reply = _reply(whole if whole is not None else AIMessage(""))
    for index, call in enumerate(reply.tool_calls):
        yield adapter.ToolCallChunk("", tool_call={"index": index, **call})
    yield ProviderChunk("", reply.finish_reason, reply.prompt_tokens, reply.completion_tokens)


BACKEND = _LangChainBackend()
