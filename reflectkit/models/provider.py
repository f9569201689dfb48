"""The contract between reflectkit's model layer and the in-process providers beneath it.

A provider backend (the fakes in :mod:`reflectkit.testing`, the embedded local model) implements
:class:`ProviderBackend` without knowing about LiteLLM; :mod:`reflectkit.models.registry` adapts
each one into a LiteLLM custom provider, so every call, fake or real, takes LiteLLM's own code path.

This module also holds the switch that blocks hosted-model requests (tests turn it on), because
the providers and the model layer both need to read it and it must sit below both.
"""

from __future__ import annotations

import itertools
import re
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

__all__ = [
    "Message",
    "ProviderBackend",
    "ProviderChunk",
    "ProviderFailure",
    "ProviderReply",
    "ServedObjects",
    "model_requests_allowed",
    "set_model_requests_allowed",
]

Message = dict[str, Any]
"""A chat message in OpenAI's format; the model layer's modules all take this one."""


T = TypeVar("T")


@dataclass(frozen=True)
class ProviderReply:
    """A whole reply from a backend. Token counts of ``None`` are estimated by LiteLLM."""

    text: str
    reasoning: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"


@dataclass(frozen=True)
class ProviderChunk:
    """One piece of a streamed reply; the last one carries ``finish_reason`` and usage."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ProviderFailure(Exception):
    """Raised by a backend to fail a call the way a provider would, with an HTTP status.

    The model layer turns it into LiteLLM's matching exception (429 with its Retry-After, 5xx,
    400, ...), which reflectkit then maps into its own error tree like any provider's.
    ``context_window=True`` marks a prompt too long for the model (LiteLLM's
    ContextWindowExceededError, never retried).
    """

    def __init__(
        self,
        status_code: int,
        message: str = "",
        retry_after: float | None = None,
        *,
        context_window: bool = False,
    ) -> None:
        super().__init__(message or f"provider failure {status_code}")
        self.status_code = status_code
        self.message = message or f"provider failure {status_code}"
        self.retry_after = retry_after
        self.context_window = context_window


@runtime_checkable
class ProviderBackend(Protocol):
    """An in-process model. ``model`` is the part of the model string after the provider name."""

    local: bool
    """True when calls never leave the process (allowed even while hosted requests are blocked)."""

    def check(self, model: str) -> None:
        """Raise a ConfigurationError if ``model`` cannot run here (missing extra, bad path)."""

    def complete(
        self, model: str, messages: list[Message], params: dict[str, Any]
    ) -> ProviderReply:
        """Answer synchronously."""
        ...

    async def acomplete(
        self, model: str, messages: list[Message], params: dict[str, Any]
    ) -> ProviderReply:
        """Answer without blocking the event loop."""
        ...

    def stream(
        self, model: str, messages: list[Message], params: dict[str, Any]
    ) -> Iterator[ProviderChunk]:
        """Stream the answer synchronously."""
        ...

    def astream(
        self, model: str, messages: list[Message], params: dict[str, Any]
    ) -> AsyncIterator[ProviderChunk]:
        """Stream the answer without blocking the event loop."""
        ...


_requests_allowed = True


def model_requests_allowed() -> bool:
    """Whether calls to hosted (non-local) models may be made."""
    return _requests_allowed


def set_model_requests_allowed(allowed: bool) -> bool:
    """Switch hosted-model requests on or off; returns the previous setting."""
    global _requests_allowed
    previous = _requests_allowed
    _requests_allowed = allowed
    return previous


class ServedObjects(Generic[T]):
    """Objects a backend serves under generated names (``<label>-<n>``), for backends that
    route each call to one of them (wrapped functions, LangChain chat models).

    Each is held weakly where Python allows, so it lives as long as whatever the user holds
    (builtins and some extension objects cannot be weakly referenced: those are kept for good).
    """

    def __init__(self) -> None:
        self._weak: weakref.WeakValueDictionary[str, T] = weakref.WeakValueDictionary()
        self._kept: dict[str, T] = {}
        self._numbers = itertools.count(1)

    def add(self, item: T, label: str) -> str:
        """Serve ``item``; returns its new name."""
        name = f"{re.sub(r'[^A-Za-z0-9_.-]+', '', label) or 'item'}-{next(self._numbers)}"
        try:
            self._weak[name] = item
        except TypeError:
            self._kept[name] = item
        return name

    def get(self, name: str) -> T | None:
        """The item served as ``name``, or None (never served, or collected since)."""
        return self._weak.get(name) or self._kept.get(name)
