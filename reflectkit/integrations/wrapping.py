"""Wrap a chatbot function so that it reflects before it answers (``reflectkit.wrap``).

``wrap(fn)`` takes a function ``fn(messages) -> str`` (OpenAI-format message dicts in, the reply
out; sync or async) and returns one with the same call shape that runs the reflection loop around
it: ``fn`` writes the drafts and revisions and, unless another critic is given, critiques them.

``fn`` is served to LiteLLM as the ``wrapped`` custom provider (the way :mod:`reflectkit.testing`
serves its fakes), so its calls take reflectkit's real loop, error handling and usage accounting.
It sees the messages reflectkit builds: the protocol's system prompt, the conversation, the
request. Extra arguments given to the wrapper reach ``fn`` on each of its calls.
Token counts are estimated (four characters a token), since a plain function reports none.

(The module is not named ``wrap``: importing a submodule sets the package attribute of its
name, which would then hide the ``reflectkit.wrap`` function.)
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Literal, ParamSpec, overload

from reflectkit.api import Prompt, Reflector
from reflectkit.errors import ConfigurationError
from reflectkit.models.llm import register_provider
from reflectkit.models.provider import ProviderChunk, ProviderFailure, ProviderReply, ServedObjects
from reflectkit.result import ReflectionResult
from reflectkit.runner import run_sync

__all__ = ["PROVIDER", "wrap"]

PROVIDER = "wrapped"
"""The LiteLLM provider name wrapped functions are served under (``wrapped/<name>``)."""

P = ParamSpec("P")
Message = dict[str, Any]

# The extra arguments of the call in progress, for the function's calls within that run.
_extra: contextvars.ContextVar[tuple[tuple[Any, ...], dict[str, Any]]] = contextvars.ContextVar(
    "reflectkit_wrap_extra", default=((), {})
)


def _failure(name: str, error: Exception) -> ProviderFailure:
    """The function's exception as a provider failure: its HTTP status when it carries one (SDK
    errors do, and are retried as the status says), else 400: not retried."""
    status = getattr(error, "status_code", None)
    return ProviderFailure(
        status if isinstance(status, int) else 400, f"{name} raised {type(error).__name__}: {error}"
    )


class _FunctionBackend:
    """The ``wrapped`` provider: routes each call to the function named in the model string.

    Functions are held as :class:`~reflectkit.models.provider.ServedObjects` hold them: weakly where
    Python allows (one lives as long as its wrapper).
    """

    local = True  # the function runs here; what it calls is its own business

    def __init__(self) -> None:
        self._functions: ServedObjects[Callable[..., Any]] = ServedObjects()

    def add(self, fn: Callable[..., Any]) -> str:
        """Serve ``fn`` and return its model string."""
        return f"{PROVIDER}/{self._functions.add(fn, getattr(fn, '__name__', '') or 'function')}"

    def register(self) -> None:
        """Install the provider in LiteLLM (once; this loads LiteLLM)."""
        register_provider(PROVIDER, self)

    def _function(self, model: str) -> Callable[..., Any]:
        fn = self._functions.get(model)
        if fn is None:
            raise ConfigurationError(f"no wrapped function is served as {PROVIDER}/{model}")
        return fn

    def check(self, model: str) -> None:
        self._function(model)

    @staticmethod
    def _reply(model: str, value: Any) -> ProviderReply:
        if not isinstance(value, str):
            raise ProviderFailure(
                400, f"{model} returned {type(value).__name__}: a wrapped function returns a str"
            )
        return ProviderReply(value)

    def complete(
        self, model: str, messages: list[Message], params: dict[str, Any]
    ) -> ProviderReply:
        fn = self._function(model)
        args, kwargs = _extra.get()
        try:
            value = fn(copy.deepcopy(messages), *args, **kwargs)
        except Exception as error:
            raise _failure(model, error) from None
        if inspect.isawaitable(value):
            raise ProviderFailure(400, f"{model} is async: call its wrapper with await")
        return self._reply(model, value)

    async def acomplete(
        self, model: str, messages: list[Message], params: dict[str, Any]
    ) -> ProviderReply:
        fn = self._function(model)
        args, kwargs = _extra.get()
        try:
            if inspect.iscoroutinefunction(fn):
                value = await fn(copy.deepcopy(messages), *args, **kwargs)
            else:  # a sync function (blocking I/O, most likely) must not stall the event loop
                value = await asyncio.to_thread(fn, copy.deepcopy(messages), *args, **kwargs)
        except Exception as error:
            raise _failure(model, error) from None
        return self._reply(model, value)

    def stream(
        self, model: str, messages: list[Message], params: dict[str, Any]
    ) -> Iterator[ProviderChunk]:
        reply = self.complete(model, messages, params)
        yield ProviderChunk(reply.text)
        yield ProviderChunk("", "stop")

    async def astream(
        self, model: str, messages: list[Message], params: dict[str, Any]
    ) -> AsyncIterator[ProviderChunk]:
        reply = await self.acomplete(model, messages, params)
        yield ProviderChunk(reply.text)
        yield ProviderChunk("", "stop")


BACKEND = _FunctionBackend()


@overload
def wrap(
    fn: Callable[P, Awaitable[str]],
    *,
    critic: Any = None,
    max_iterations: int = 3,
    return_result: Literal[False] = False,
    **settings: Any,
) -> Callable[P, Awaitable[str]]: ...


@overload
def wrap(
    fn: Callable[P, Awaitable[str]],
    *,
    critic: Any = None,
    max_iterations: int = 3,
    return_result: Literal[True],
    **settings: Any,
) -> Callable[P, Awaitable[ReflectionResult]]: ...


@overload
def wrap(
    fn: Callable[P, str],
    *,
    critic: Any = None,
    max_iterations: int = 3,
    return_result: Literal[False] = False,
    **settings: Any,
) -> Callable[P, str]: ...


@overload
def wrap(
    fn: Callable[P, str],
    *,
    critic: Any = None,
    max_iterations: int = 3,
    return_result: Literal[True],
    **settings: Any,
) -> Callable[P, ReflectionResult]: ...


def wrap(
    fn: Callable[..., Any],
    *,
    critic: Any = None,
    max_iterations: int = 3,
    return_result: bool = False,
    **settings: Any,
) -> Callable[..., Any]:
    """Make ``fn(messages, ...) -> str`` reflect before it answers; same call shape back.

    A sync ``fn`` gives a sync function, an async one an async function. The wrapper takes what
    ``fn`` takes (the messages, as OpenAI-format dicts or a plain string, then any extra
    arguments, which reach ``fn`` on each of its calls) and returns the reflected answer as a
    ``str``, or with ``return_result=True`` the whole :class:`~reflectkit.ReflectionResult`.

    Calls may run concurrently, from threads or tasks: each has its own run.

    Args:
        fn: The chatbot: ``fn(messages, ...) -> str``, sync or async; it writes the drafts.
        critic: Any reflectkit critic; None: ``fn`` itself judges its drafts, as an LLM critic
            (``critic_model=`` names a model to critique with instead).
        max_iterations: Drafts at most, the first included.
        return_result: Return the whole result instead of the answer.
        **settings: :class:`~reflectkit.Reflector`'s (``critic_model``, ``mode``,
            ``token_budget`` ...), checked here, before any call.

    Raises:
        ConfigurationError: ``fn`` is not callable, or a setting is invalid.
    """
    if not callable(fn):
        raise ConfigurationError(f"wrap() needs a function, not {type(fn).__name__}")
    model = BACKEND.add(fn)
    reflector = Reflector(model, critic=critic, max_iterations=max_iterations, **settings)

    async def run(messages: Prompt, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        BACKEND.register()
        _extra.set((args, kwargs))  # this task's context only: concurrent calls keep their own
        result = await reflector.arun(messages)
        return result if return_result else result.output

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def reflected_async(messages: Prompt, *args: Any, **kwargs: Any) -> Any:
            # A task of its own, so the extra arguments set for this call stay in this call.
            return await asyncio.create_task(run(messages, args, kwargs))

        return reflected_async

    @functools.wraps(fn)
    def reflected(messages: Prompt, *args: Any, **kwargs: Any) -> Any:
        return run_sync(run(messages, args, kwargs))

    return reflected
