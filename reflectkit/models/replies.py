"""Reading a model's reply: what a call gives back, and the checks that a reply can be read.

Replies come from LiteLLM or from the direct path in the same OpenAI shape (objects or dicts).
This module turns them into reflectkit's :class:`Completion` and :class:`StreamDelta`, with
the tool calls a model answers with in OpenAI's plain-dict format (streamed pieces are put back
together), and refuses what cannot be read (no choices, content that is not text) as the
upstream's fault, a retryable :class:`~reflectkit.errors.ProviderServerError`.
:mod:`reflectkit.models.llm` re-exports the public names; the proxy reads upstream replies with
the same checks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reflectkit.errors import ProviderServerError
from reflectkit.usage import Usage

__all__ = [
    "Completion",
    "StreamDelta",
    "ToolCallAssembly",
    "delta_text",
    "first_choice",
    "malformed",
    "token_count",
    "tool_call",
]


@dataclass(frozen=True)
class Completion:
    """One finished model call."""

    text: str
    reasoning: str | None
    usage: Usage
    model: str
    finish_reason: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    """The tools the model called, in OpenAI's format (``id``, ``type``, ``function`` with
    ``name`` and JSON ``arguments``); empty for a plain answer."""


@dataclass(frozen=True)
class StreamDelta:
    """A piece of a streamed reply: answer text and/or provider-side reasoning text."""

    text: str = ""
    reasoning: str = ""


def tool_call(raw: Any) -> dict[str, Any]:
    """One tool call from LiteLLM's response object (or a dict) in OpenAI's plain-dict format."""
    function = _field(raw, "function")
    arguments = _field(function, "arguments")
    return {
        "id": _field(raw, "id"),
        "type": _field(raw, "type") or "function",
        "function": {
            "name": _field(function, "name"),
            "arguments": arguments if isinstance(arguments, str) else "{}",
        },
    }


def _field(raw: Any, name: str) -> Any:
    return raw.get(name) if isinstance(raw, Mapping) else getattr(raw, name, None)


class ToolCallAssembly:
    """Puts streamed tool-call pieces back together: pieces of one call share an ``index``; the
    first has the id and name, the rest carry more of the JSON arguments."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def add(self, pieces: Any) -> None:
        """Take a streamed delta's ``tool_calls`` (None or empty: nothing)."""
        for position, piece in enumerate(pieces or ()):
            index = _field(piece, "index")
            call = self._calls.setdefault(
                position if index is None else int(index),
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            call["id"] = _field(piece, "id") or call["id"]
            call["type"] = _field(piece, "type") or call["type"]
            function = _field(piece, "function")
            if function is not None:
                name = _field(function, "name")
                if name and name != call["function"]["name"]:
                    call["function"]["name"] += name
                call["function"]["arguments"] += _field(function, "arguments") or ""

    def calls(self) -> tuple[dict[str, Any], ...]:
        """The calls put together so far, in the order of their index."""
        return tuple(self._calls[index] for index in sorted(self._calls))


def malformed(model: str, what: str) -> ProviderServerError:
    """A reply reflectkit cannot read: the upstream's fault, like a 5xx, so retried (a gateway's
    hiccup may pass; a reply that is always broken costs at most the retry policy's attempts)."""
    return ProviderServerError(f"{model}: the model's reply is malformed: {what}", model=model)


def first_choice(response: Any, model: str) -> tuple[Any, Any]:
    """The first choice of a whole reply and its message; raises :class:`ProviderServerError`
    for a reply without choices (``[]``, ``null``), without a message, or whose content is not
    text or whose tool calls are not a list."""
    choices = getattr(response, "choices", None)
    if not isinstance(choices, (list, tuple)) or not choices:
        raise malformed(model, "it has no choices")
    choice = choices[0]
    message = getattr(choice, "message", None)
    if message is None:
        raise malformed(model, "its choice has no message")
    content = getattr(message, "content", None)
    if content is not None and not isinstance(content, str):
        raise malformed(model, f"its content is {type(content).__name__}, not text")
    calls = getattr(message, "tool_calls", None)
    if calls is not None and not isinstance(calls, (list, tuple)):
        raise malformed(model, f"its tool_calls are {type(calls).__name__}, not a list")
    return choice, message


def delta_text(delta: Any, model: str) -> str:
    """A streamed delta's text ("" for none); :class:`ProviderServerError` when it is not text."""
    content = getattr(delta, "content", None)
    if content is not None and not isinstance(content, str):
        raise malformed(model, f"a streamed piece's content is {type(content).__name__}")
    return content or ""


def token_count(usage: Any, name: str) -> int:
    """A token count of a reply's usage (``prompt_tokens``...); 0 when the usage or the count is
    missing, or is not a finite number at least 0."""
    value = getattr(usage, name, None)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return int(value) if math.isfinite(value) and value > 0 else 0
