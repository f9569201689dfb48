"""Fake models for tests: yours and reflectkit's own.

:class:`ScriptedLLM` answers from a queue of replies; :class:`FunctionLLM` answers with a
function of the request. Both are served through LiteLLM as the ``reflectkit-test`` custom
provider, so code under test takes LiteLLM's real path (sync, async and streaming), and both
record every request they get:

    from reflectkit.testing import ScriptedLLM
    import reflectkit as rk

    fake = ScriptedLLM(["<output>4</output>"])
    result = rk.reflect("2+2", model=fake.model, mode="single")
    assert result.output == "4"
    assert fake.requests[0].last_user_text == "2+2"

:func:`block_model_requests` makes any call to a hosted model fail, so a test suite cannot spend
money or leak data by accident; reflectkit's own suite switches it on for every test.

A reply can call tools: ``Reply(tool_calls=[tool_call("get_weather", {"city": "Paris"})])``.
Tool calls go through LiteLLM like a provider's (on the message, or streamed in pieces).

Token counts are whitespace-separated words (prompt: all message texts; completion: the reply),
which keeps them deterministic and proportional to the text. Streams send ``chunk_size``
characters at a time, ``chunk_delay`` seconds apart; ``streamed_chunks`` counts what was sent.
"""

from __future__ import annotations

import abc
import asyncio
import copy
import inspect
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from reflectkit.errors import ConfigurationError
from reflectkit.models.adapter import ToolCallChunk, ToolCallReply
from reflectkit.models.provider import (
    ProviderChunk,
    ProviderFailure,
    ProviderReply,
    set_model_requests_allowed,
)

__all__ = [
    "PROVIDER",
    "FunctionLLM",
    "Reply",
    "Request",
    "ScriptExhaustedError",
    "ScriptedLLM",
    "block_model_requests",
    "fail",
    "tool_call",
]

PROVIDER = "reflectkit-test"
"""The LiteLLM provider name of the fakes: their model strings start with ``reflectkit-test/``."""

Message = dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """A scripted reply with optional reasoning, tool calls and token counts (else counted as
    words). ``tool_calls`` are OpenAI-format dicts, e.g. made with :func:`tool_call`."""

    text: str = ""
    """The reply's text."""
    reasoning: str | None = None
    """Provider-side reasoning, as a reasoning model's provider returns it apart from the text."""
    prompt_tokens: int | None = None
    """The prompt's token count to report; None: the words of every message."""
    completion_tokens: int | None = None
    """The reply's token count to report; None: the words of the text and the tool calls."""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """Tools the reply calls (its finish reason is then ``tool_calls``)."""

    def __post_init__(self) -> None:
        for call in self.tool_calls:
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise ConfigurationError(
                    f"a tool call must be an OpenAI-format dict (see tool_call()), not {call!r}"
                )


_call_ids = itertools.count(1)


def tool_call(
    name: str, arguments: dict[str, Any] | str | None = None, *, id: str | None = None
) -> dict[str, Any]:
    """A tool call in OpenAI's format, for :class:`Reply`: ``arguments`` as a dict (sent as
    JSON) or a JSON string; ``id`` made up (``call_1``, ``call_2`` ...) when not given."""
    if not name:
        raise ConfigurationError("a tool call needs the tool's name")
    text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return {
        "id": id or f"call_{next(_call_ids)}",
        "type": "function",
        "function": {"name": name, "arguments": text},
    }


@dataclass(frozen=True)
class Request:
    """What a fake model was sent."""

    model: str
    """The fake's model string."""
    messages: list[Message]
    """The messages, OpenAI format (a copy)."""
    params: dict[str, Any] = field(default_factory=dict)
    """The other call parameters LiteLLM passed on (``temperature``, ``tools`` ...)."""
    stream: bool = False
    """Whether the call was streamed."""

    @property
    def system_text(self) -> str:
        """The system messages' text."""
        return "\n".join(_text(m) for m in self.messages if m.get("role") == "system")

    @property
    def last_user_text(self) -> str:
        """The text of the last user message."""
        users = [m for m in self.messages if m.get("role") == "user"]
        return _text(users[-1]) if users else ""


class ScriptExhaustedError(ProviderFailure, AssertionError):
    """A :class:`ScriptedLLM` was called more often than it had replies.

    It fails the call like a provider's 400 would, so it is not retried and surfaces at once
    (as a ProviderRequestError through the model layer).
    """

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


def fail(
    status_code: int, message: str = "", *, retry_after: float | None = None
) -> ProviderFailure:
    """A scripted failure: put it in a script to make that call fail with an HTTP status.

    It fails as the provider's error would through LiteLLM: 429 as a
    :class:`~reflectkit.RateLimitedError` (``retry_after`` its Retry-After, in seconds), 5xx
    as a :class:`~reflectkit.ProviderServerError`, and so on; retryable ones are retried.
    """
    return ProviderFailure(status_code, message, retry_after)


def _text(message: Message) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _words(text: str) -> int:
    return len(text.split())


_counter = itertools.count(1)
_fakes: dict[str, _Fake] = {}
_fakes_lock = threading.Lock()


class _Fake(abc.ABC):
    """Shared machinery: a unique model string, request recording, replies, streaming."""

    chunk_size: int

    def __init__(self, name: str | None, chunk_size: int, chunk_delay: float = 0.0) -> None:
        if chunk_size < 1:
            raise ConfigurationError("chunk_size must be at least 1")
        if chunk_delay < 0:
            raise ConfigurationError("chunk_delay cannot be negative")
        self.chunk_delay = chunk_delay
        self.streamed_chunks = 0
        """How many stream chunks were handed out: shows whether a consumer stopped early."""
        self.name = name or f"{type(self).__name__.lower()}-{next(_counter)}"
        if "/" in self.name:
            raise ConfigurationError(f"a fake model name cannot contain '/': {self.name!r}")
        self.chunk_size = chunk_size
        self.requests: list[Request] = []
        """Every request the fake got, in order."""
        self._lock = threading.Lock()
        with _fakes_lock:
            _fakes[self.name] = self

    @property
    def model(self) -> str:
        """The model string to pass as ``model=``."""
        return f"{PROVIDER}/{self.name}"

    def _record(self, messages: list[Message], params: dict[str, Any], stream: bool) -> Request:
        request = Request(self.model, copy.deepcopy(messages), dict(params), stream)
        with self._lock:
            self.requests.append(request)
        return request

    @abc.abstractmethod
    def _next(self, request: Request) -> Reply | Awaitable[Reply | str] | str:
        """The reply to ``request`` (or an awaitable of it)."""

    @staticmethod
    def _as_reply(value: object) -> Reply:
        if isinstance(value, Reply):
            return value
        if isinstance(value, str):
            return Reply(value)
        if isinstance(value, ProviderFailure):
            raise value
        raise TypeError(f"a fake model's reply must be a str or Reply, not {type(value).__name__}")

    def _provider_reply(self, request: Request, reply: Reply) -> ProviderReply:
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = sum(_words(_text(m)) for m in request.messages)
        calls = tuple(copy.deepcopy(reply.tool_calls))
        completion = reply.completion_tokens
        if completion is None:
            called = " ".join(
                f"{c['function']['name']} {c['function']['arguments']}" for c in calls
            )
            completion = _words(reply.text) + _words(called)
        finish = "tool_calls" if calls else "stop"
        return ToolCallReply(reply.text, reply.reasoning, prompt, completion, finish, calls)

    def _split(self, text: str) -> list[str]:
        return [text[i : i + self.chunk_size] for i in range(0, len(text), self.chunk_size)]

    def _chunks(self, reply: ProviderReply) -> Iterator[ProviderChunk]:
        for piece in self._split(reply.text):
            yield ProviderChunk(piece)
        # Each tool call as a provider streams it: id and name first, then the arguments in
        # chunk_size pieces, so consumers must put them back together.
        for index, call in enumerate(getattr(reply, "tool_calls", ())):
            function = call["function"]
            head = {"index": index, "id": call["id"], "type": "function"}
            yield ToolCallChunk(
                "", tool_call={**head, "function": {"name": function["name"], "arguments": ""}}
            )
            for piece in self._split(function["arguments"]):
                part = {"index": index, "id": None, "type": "function"}
                yield ToolCallChunk(
                    "", tool_call={**part, "function": {"name": None, "arguments": piece}}
                )
        finish = reply.finish_reason
        yield ProviderChunk("", finish, reply.prompt_tokens, reply.completion_tokens)

    def answer(
        self, messages: list[Message], params: dict[str, Any], stream: bool
    ) -> ProviderReply:
        request = self._record(messages, params, stream)
        value = self._next(request)
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()  # never awaited: close it so Python does not warn
            raise TypeError("an async fake was called synchronously; use the async API")
        return self._provider_reply(request, self._as_reply(value))

    async def aanswer(
        self, messages: list[Message], params: dict[str, Any], stream: bool
    ) -> ProviderReply:
        request = self._record(messages, params, stream)
        value = self._next(request)
        if inspect.isawaitable(value):
            value = await value
        return self._provider_reply(request, self._as_reply(value))


class ScriptedLLM(_Fake):
    """A fake model that answers each call with the next item of its script.

    Items are reply strings, :class:`Reply` objects, or failures made with :func:`fail`
    (which make that call fail like a provider would). Calling it once more than it has
    replies raises :class:`ScriptExhaustedError`. Pass its ``model`` as ``model=``; its
    ``requests`` lists every :class:`Request` it got, in order.

    Args:
        replies: The script, in the order the calls get them.
        name: The model name after ``reflectkit-test/``; None: a unique one.
        chunk_size: Characters per streamed chunk.
        chunk_delay: Seconds between streamed chunks.
    """

    def __init__(
        self,
        replies: Iterable[str | Reply | ProviderFailure] = (),
        *,
        name: str | None = None,
        chunk_size: int = 8,
        chunk_delay: float = 0.0,
    ) -> None:
        super().__init__(name, chunk_size, chunk_delay)
        self._script: deque[str | Reply | ProviderFailure] = deque(replies)

    def enqueue(self, *replies: str | Reply | ProviderFailure) -> None:
        """Add replies to the end of the script."""
        with self._lock:
            self._script.extend(replies)

    @property
    def remaining(self) -> int:
        """How many scripted replies are left."""
        return len(self._script)

    def _next(self, request: Request) -> Reply | str:
        with self._lock:
            if not self._script:
                raise ScriptExhaustedError(
                    f"{self.model} has no reply left for call {len(self.requests)}"
                )
            item = self._script.popleft()
        if isinstance(item, ProviderFailure):
            raise item
        return item


ReplyFunction = Callable[[Request], "str | Reply | Awaitable[str | Reply]"]


class FunctionLLM(_Fake):
    """A fake model whose reply is ``fn(request)``; ``fn`` may be sync or async.

    ``fn`` gets a :class:`Request` (messages, params) and returns a string or a :class:`Reply`;
    it may raise a failure made with :func:`fail`. Pass its ``model`` as ``model=``; its
    ``requests`` lists every :class:`Request` it got, in order.

    Args:
        fn: The reply function.
        name: The model name after ``reflectkit-test/``; None: a unique one.
        chunk_size: Characters per streamed chunk.
        chunk_delay: Seconds between streamed chunks.
    """

    def __init__(
        self,
        fn: ReplyFunction,
        *,
        name: str | None = None,
        chunk_size: int = 8,
        chunk_delay: float = 0.0,
    ) -> None:
        if not callable(fn):
            raise ConfigurationError("FunctionLLM needs a callable")
        super().__init__(name, chunk_size, chunk_delay)
        self.fn = fn

    def _next(self, request: Request) -> Reply | str | Awaitable[Reply | str]:
        return self.fn(request)


class _Backend:
    """The ``reflectkit-test`` provider: routes each call to the fake named in the model string."""

    local = True

    def _fake(self, model: str) -> _Fake:
        fake = _fakes.get(model)
        if fake is None:
            raise ConfigurationError(
                f"no fake model named {model!r}: create a ScriptedLLM or FunctionLLM and pass "
                "its .model (in this process: see docs/testing.md for fakes on Ray)"
            )
        return fake

    def check(self, model: str) -> None:
        self._fake(model)

    def complete(
        self, model: str, messages: list[Message], params: dict[str, Any]
    ) -> ProviderReply:
        return self._fake(model).answer(messages, params, stream=False)

    async def acomplete(
        self, model: str, messages: list[Message], params: dict[str, Any]
    ) -> ProviderReply:
        return await self._fake(model).aanswer(messages, params, stream=False)

    def stream(
        self, model: str, messages: list[Message], params: dict[str, Any]
    ) -> Iterator[ProviderChunk]:
        fake = self._fake(model)
        for piece in fake._chunks(fake.answer(messages, params, stream=True)):
            time.sleep(fake.chunk_delay)
            fake.streamed_chunks += 1
            yield piece

    async def astream(
        self, model: str, messages: list[Message], params: dict[str, Any]
    ) -> AsyncIterator[ProviderChunk]:
        fake = self._fake(model)
        reply = await fake.aanswer(messages, params, stream=True)
        for piece in fake._chunks(reply):
            # Let the consumer run between chunks, like a network stream.
            await asyncio.sleep(fake.chunk_delay)
            fake.streamed_chunks += 1
            yield piece


BACKEND = _Backend()


@contextmanager
def block_model_requests(blocked: bool = True) -> Iterator[None]:
    """Within the block, calling a hosted model raises ModelRequestsBlockedError.

    Fakes, the local model and OpenAI-compatible servers on loopback stay allowed. Use
    ``block_model_requests(False)`` to allow requests again inside a blocked region.
    """
    previous = set_model_requests_allowed(not blocked)
    try:
        yield
    finally:
        set_model_requests_allowed(previous)
