"""One prompt's outcome in a batch, and running one prompt: what the in-process path
(:mod:`reflectkit.batching`) and the Ray path (:mod:`reflectkit.batching_ray`) share.

A :class:`BatchItem` holds a result or a :class:`BatchError`; its ``to_dict()`` is one line of
the JSONL output (docs/batch.md). :func:`run_item` runs one prompt on a :class:`Reflector`
wherever it runs: in this process or on a Ray actor.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from reflectkit.api import Prompt, Reflector
from reflectkit.errors import ConfigurationError, InputError, RunError
from reflectkit.messages import to_conversation
from reflectkit.result import ReflectionResult, partial_result
from reflectkit.stores.jsonl import canonical_sha256

__all__ = [
    "MESSAGE_CHARS",
    "BatchError",
    "BatchItem",
    "Execute",
    "Finish",
    "prompt_hash",
    "run_item",
]

MESSAGE_CHARS = 500
"""The longest error message an item keeps (its first line, cut)."""


@dataclass(frozen=True)
class BatchError:
    """Why one item failed: the exception's type name, its first line, and what the run had
    done before it failed (``RunError.partial``), if anything."""

    type: str
    """The exception's class name, e.g. ``RateLimitedError``."""
    message: str
    """The error, one line, secrets redacted."""
    partial: ReflectionResult | None = None
    """The work done before the failure, when the run got that far."""
    retryable: bool = False
    """The provider said trying again may help (rate limit, timeout, 5xx)."""

    def to_dict(self) -> dict[str, Any]:
        """The error as the ``error`` of a JSONL line (``partial`` as a result dict)."""
        return {
            "type": self.type,
            "message": self.message,
            "retryable": self.retryable,
            "partial": _result_dict(self.partial) if self.partial is not None else None,
        }

    @classmethod
    def from_exception(cls, error: BaseException) -> BatchError:
        """The record of ``error``: its first line (cut at 500 characters), its ``partial``
        result and whether it is ``retryable``, when it has them."""
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        if len(first) > MESSAGE_CHARS:
            first = first[: MESSAGE_CHARS - 3] + "..."
        partial = partial_result(error)
        retryable = bool(getattr(error, "retryable", False))
        return cls(type(error).__name__, first, partial, retryable)


@dataclass(frozen=True)
class BatchItem:
    """The outcome of one prompt: exactly one of ``result`` and ``error`` is set."""

    index: int
    """The prompt's position in the input."""
    prompt: Prompt
    """The prompt as given: a string or a conversation."""
    result: ReflectionResult | None = None
    """The run's result; None when the prompt failed."""
    error: BatchError | None = None
    """Why the prompt failed; None when it ran."""
    seconds: float = 0.0
    """Wall time of this item's run (as recorded, for an item taken from the file)."""
    resumed: bool = False
    """The result was read from the output file instead of being run again."""
    exception: BaseException | None = field(default=None, compare=False, repr=False)
    """The exception itself, for an item that failed in this process (not after a resume)."""

    @property
    def ok(self) -> bool:
        """Whether the item has a result."""
        return self.result is not None

    @property
    def output(self) -> str | None:
        """The answer, or None for a failed item."""
        return self.result.output if self.result is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The item as one line of the JSONL output (see docs/batch.md)."""
        return {
            "index": self.index,
            "prompt_sha256": prompt_hash(self.prompt),
            "ok": self.ok,
            "seconds": round(self.seconds, 6),
            "prompt": _jsonable_prompt(self.prompt),
            "result": _result_dict(self.result) if self.result is not None else None,
            "error": self.error.to_dict() if self.error is not None else None,
        }


def _result_dict(result: ReflectionResult) -> dict[str, Any]:
    """The result as JSON data; what a critic parsed that JSON cannot hold becomes its repr."""
    try:
        return result.to_dict()
    except (TypeError, ValueError):
        return result.model_dump(mode="json", fallback=repr)


def _jsonable_prompt(prompt: Prompt) -> Any:
    if isinstance(prompt, str):
        return prompt
    try:
        return list(to_conversation(prompt).messages)
    except InputError:
        return repr(prompt)


def prompt_hash(prompt: Prompt) -> str:
    """A SHA-256 of the prompt, as resume compares it: a string's text, or a conversation's
    messages as canonical JSON (LangChain messages converted to OpenAI dicts first)."""
    return canonical_sha256(prompt if isinstance(prompt, str) else _jsonable_prompt(prompt))


async def run_item(reflector: Reflector, index: int, prompt: Prompt) -> BatchItem:
    """One prompt's run as a :class:`BatchItem`; only a configuration error that would fail
    every item is raised (wherever the prompt runs: here, or on a Ray actor)."""
    start = time.perf_counter()
    failure: Exception
    try:
        result = await reflector.arun(prompt)
    except RunError as error:  # first: a crashed local model is both kinds; the item fails
        failure = error
    except ConfigurationError as error:
        if not isinstance(error, InputError):
            raise  # the model or the settings are wrong: every item would fail the same way
        failure = error
    except Exception as error:
        failure = error
    else:
        return BatchItem(index, prompt, result=result, seconds=time.perf_counter() - start)
    return BatchItem(
        index,
        prompt,
        error=BatchError.from_exception(failure),
        exception=failure,
        seconds=time.perf_counter() - start,
    )


Finish = Callable[[BatchItem], Awaitable[None]]
Execute = Callable[[list[int], Finish], Awaitable[None]]
"""How a batch's prompts are run: ``execute(todo, finish)`` runs the prompts at the indexes
``todo`` and awaits ``finish(item)`` for each in this process, as it finishes."""
