"""Serve a :class:`~reflectkit.models.provider.ProviderBackend` as a LiteLLM custom provider.

:mod:`reflectkit.models.registry` hands this module the imported ``litellm`` module; nothing here
imports LiteLLM itself, so it still loads only on the first model call. The adapter translates in
both directions: LiteLLM's call arguments to the backend's, the backend's replies and chunks to
LiteLLM's response objects, and :class:`~reflectkit.models.provider.ProviderFailure` to the
LiteLLM exception a real provider's HTTP status would have produced.

A backend that answers with tool calls returns a :class:`ToolCallReply` (or streams
:class:`ToolCallChunk` pieces): LiteLLM's custom-provider interface carries them both ways, whole
on the reply's message and one call-piece per streamed chunk (its ``tool_use`` field), so tool
calls from in-process backends take LiteLLM's real path too, streaming included.

The embedded local model skips LiteLLM (importing it costs seconds, and that path needs nothing
from it): :func:`direct_reply` and :func:`direct_chunk` dress a backend's replies in the same
OpenAI shape LiteLLM's objects have (``choices[0].message``, ``.delta``, ``usage``), with token
counts estimated the same way, so :mod:`reflectkit.models.llm` reads both paths with one code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import httpx

from reflectkit.models.provider import (
    Message,
    ProviderBackend,
    ProviderChunk,
    ProviderFailure,
    ProviderReply,
)

__all__ = ["ToolCallChunk", "ToolCallReply", "adapter_class", "direct_chunk", "direct_reply"]


@dataclass(frozen=True)
class ToolCallReply(ProviderReply):
    """A whole reply that may call tools.

    ``tool_calls`` are in OpenAI's format: ``{"id", "type": "function", "function": {"name",
    "arguments"}}`` with the arguments as a JSON string. Set ``finish_reason="tool_calls"`` when
    there are any, as providers do.
    """

    tool_calls: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class ToolCallChunk(ProviderChunk):
    """A streamed piece that carries a piece of one tool call, in OpenAI's delta format:
    ``{"index", "id", "type", "function": {"name", "arguments"}}``. The first piece of a call
    has its id and name; later pieces (same ``index``) carry more of its arguments."""

    tool_call: dict[str, Any] | None = None


def _estimate_tokens(messages: list[Message]) -> int:
    return sum(len(str(m.get("content", ""))) // 4 + 1 for m in messages)


def _token_counts(messages: list[Message], reply: ProviderReply) -> tuple[int, int]:
    """The reply's token counts, estimated from the text where the backend gave none."""
    prompt = _estimate_tokens(messages) if reply.prompt_tokens is None else reply.prompt_tokens
    completion = reply.completion_tokens
    return prompt, len(reply.text) // 4 + 1 if completion is None else completion


def direct_reply(reply: ProviderReply, messages: list[Message]) -> Any:
    """A backend's whole reply in the shape of an OpenAI chat completion (read by attribute)."""
    prompt, completion = _token_counts(messages, reply)
    calls = [dict(c) for c in getattr(reply, "tool_calls", ())] or None
    message = SimpleNamespace(
        content=reply.text, reasoning_content=reply.reasoning, tool_calls=calls
    )
    return SimpleNamespace(
        choices=[SimpleNamespace(message=message, finish_reason=reply.finish_reason)],
        usage=SimpleNamespace(prompt_tokens=prompt, completion_tokens=completion),
    )


def direct_chunk(piece: ProviderChunk) -> Any:
    """A backend's streamed piece in the shape of an OpenAI stream chunk; the usage rides on the
    piece that carries it (the last), as with ``stream_options={"include_usage": True}``."""
    usage = None
    if piece.prompt_tokens is not None or piece.completion_tokens is not None:
        usage = SimpleNamespace(
            prompt_tokens=piece.prompt_tokens or 0, completion_tokens=piece.completion_tokens or 0
        )
    call = getattr(piece, "tool_call", None)
    delta = SimpleNamespace(
        content=piece.text, reasoning_content=None, tool_calls=[call] if call else None
    )
    choice = SimpleNamespace(delta=delta, finish_reason=piece.finish_reason)
    return SimpleNamespace(choices=[choice], usage=usage)


def _as_litellm_error(litellm: Any, name: str, model: str, failure: ProviderFailure) -> Exception:
    if failure.context_window:
        overflow: Exception = litellm.ContextWindowExceededError(
            message=failure.message, model=model, llm_provider=name
        )
        return overflow
    if failure.status_code == 429:
        headers = {} if failure.retry_after is None else {"retry-after": str(failure.retry_after)}
        response = httpx.Response(
            429, headers=headers, request=httpx.Request("POST", f"http://{name}.invalid")
        )
        error: Exception = litellm.RateLimitError(
            message=failure.message, llm_provider=name, model=model, response=response
        )
        return error
    custom_error: type[Exception] = litellm.llms.custom_llm.CustomLLMError
    return custom_error(failure.status_code, failure.message)


def _fill(
    litellm: Any, response: Any, model: str, messages: list[Message], reply: ProviderReply
) -> Any:
    choice = response.choices[0]
    tool_calls = getattr(reply, "tool_calls", ())
    if tool_calls:
        choice.message = litellm.Message(
            content=reply.text or None, role="assistant", tool_calls=[dict(c) for c in tool_calls]
        )
    else:
        choice.message.content = reply.text
    if reply.reasoning is not None:
        choice.message.reasoning_content = reply.reasoning
    choice.finish_reason = reply.finish_reason
    prompt, completion = _token_counts(messages, reply)
    response.usage = litellm.Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )
    response.model = model
    return response


def _chunk(piece: ProviderChunk) -> dict[str, Any]:
    usage = None
    if piece.prompt_tokens is not None or piece.completion_tokens is not None:
        prompt, completion = piece.prompt_tokens or 0, piece.completion_tokens or 0
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    return {
        "text": piece.text,
        "is_finished": piece.finish_reason is not None,
        "finish_reason": piece.finish_reason,
        "usage": usage,
        "index": 0,
        "tool_use": getattr(piece, "tool_call", None),
    }


class _Serving:
    """The methods of the adapter; mixed into a subclass of LiteLLM's ``CustomLLM``."""

    litellm: Any

    def __init__(self, name: str, backend: ProviderBackend) -> None:
        super().__init__()
        self.name = name
        self.backend = backend

    def _error(self, model: str, failure: ProviderFailure) -> Exception:
        return _as_litellm_error(self.litellm, self.name, model, failure)

    def completion(self, model: str, messages: list[Message], *args: Any, **kw: Any) -> Any:
        try:
            reply = self.backend.complete(model, messages, kw.get("optional_params") or {})
        except ProviderFailure as failure:
            raise self._error(model, failure) from None
        return _fill(self.litellm, kw["model_response"], model, messages, reply)

    def acompletion(self, model: str, messages: list[Message], *args: Any, **kw: Any) -> Any:
        return _Deferred(lambda: self._acompletion(model, messages, kw))

    async def _acompletion(self, model: str, messages: list[Message], kw: dict[str, Any]) -> Any:
        params = kw.get("optional_params") or {}
        try:
            reply = await self.backend.acomplete(model, messages, params)
        except ProviderFailure as failure:
            raise self._error(model, failure) from None
        return _fill(self.litellm, kw["model_response"], model, messages, reply)

    def streaming(
        self, model: str, messages: list[Message], *args: Any, **kw: Any
    ) -> Iterator[dict[str, Any]]:
        try:
            for piece in self.backend.stream(model, messages, kw.get("optional_params") or {}):
                yield _chunk(piece)
        except ProviderFailure as failure:
            raise self._error(model, failure) from None

    async def astreaming(
        self, model: str, messages: list[Message], *args: Any, **kw: Any
    ) -> AsyncIterator[dict[str, Any]]:
        params = kw.get("optional_params") or {}
        try:
            async for piece in self.backend.astream(model, messages, params):
                yield _chunk(piece)
        except ProviderFailure as failure:
            raise self._error(model, failure) from None


class _Deferred(Coroutine[Any, Any, Any]):
    """A coroutine made only when awaited.

    LiteLLM calls a custom provider's ``acompletion`` in an executor thread and awaits what it
    returns afterwards; a call cancelled in between (a client that leaves, a timeout) would leave
    a real coroutine that is never awaited, and Python warns about it. This one has nothing to
    warn about until it runs. It is a ``Coroutine``, so LiteLLM's ``iscoroutine`` check holds.
    """

    def __init__(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self._make = make
        self._coroutine: Coroutine[Any, Any, Any] | None = None

    def _started(self) -> Coroutine[Any, Any, Any]:
        if self._coroutine is None:
            self._coroutine = self._make()
        return self._coroutine

    def send(self, value: Any) -> Any:
        return self._started().send(value)

    def throw(self, *args: Any) -> Any:
        return self._started().throw(*args)

    def close(self) -> None:
        if self._coroutine is not None:
            self._coroutine.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._started().__await__()


def adapter_class(litellm: Any) -> type:
    """A subclass of LiteLLM's ``CustomLLM`` whose instances serve one backend each."""
    return type("BackendAdapter", (_Serving, litellm.CustomLLM), {"litellm": litellm})
