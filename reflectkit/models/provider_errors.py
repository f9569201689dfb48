"""LiteLLM's exceptions, translated into reflectkit's error tree.

:mod:`reflectkit.models.llm` passes the imported ``litellm`` module in; nothing here imports
LiteLLM. LiteLLM already normalises providers' errors into OpenAI-style exception classes with a
status code; this maps those onto :mod:`reflectkit.errors`, with the ``retryable`` flag the retry
layer reads, a 429's Retry-After in seconds, and the message's secrets redacted.
"""

from __future__ import annotations

import email.utils
import math
import time
from typing import Any

from reflectkit.errors import (
    ContextWindowError,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderRequestError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitedError,
    ReflectkitError,
)
from reflectkit.models.provider import ProviderFailure
from reflectkit.redaction import redact

__all__ = [
    "failure_error",
    "map_error",
    "map_sdk_error",
    "own_error",
    "parse_retry_after",
    "retry_after",
]


def _related(error: BaseException) -> list[BaseException]:
    """``error`` and the errors it wraps: LiteLLM wraps a failure to open a stream in a
    ``MidStreamFallbackError`` whose response lacks the original's headers, keeping the original
    as ``original_exception`` and in the cause/context chain."""
    found: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending and len(found) < 8:
        current = pending.pop(0)
        if current is None or any(current is seen for seen in found):
            continue
        found.append(current)
        original = getattr(current, "original_exception", None)
        pending += [original if isinstance(original, BaseException) else None]
        pending += [current.__cause__, current.__context__]
    return found


def _header(error: BaseException) -> str | None:
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or getattr(error, "litellm_response_headers", None)
    if not headers:
        return None
    value = headers.get("retry-after") or headers.get("Retry-After")
    return None if value is None else str(value)


def retry_after(error: BaseException) -> float | None:
    """The seconds a 429 asks to wait (its Retry-After, as a number or an HTTP date), looked for
    on the error and on the errors it wraps; None when none says, or says nothing usable.

    Whatever an upstream sends, this never raises: a value that is neither a finite number nor
    an HTTP date (``soon``, ``NaN``, ``1e999``, a date in year 99999) is no hint at all."""
    value = next((v for e in _related(error) if (v := _header(e)) is not None), None)
    return None if value is None else parse_retry_after(value)


def parse_retry_after(value: str) -> float | None:
    """A Retry-After header's seconds, at least 0; None when it is neither a finite number of
    seconds nor an HTTP date."""
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
            seconds = moment.timestamp() - time.time()
        except (ValueError, TypeError, OverflowError, IndexError, OSError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def own_error(error: BaseException) -> ReflectkitError | None:
    """A reflectkit error that an in-process provider raised and LiteLLM wrapped on its way out
    (the local model's :class:`~reflectkit.errors.LocalModelCrashError`): it is raised as it is,
    not mapped by status."""
    return next((e for e in _related(error) if isinstance(e, ReflectkitError)), None)


def map_error(litellm: Any, error: Exception, model: str, secrets: list[str]) -> ProviderError:
    """Translate a LiteLLM exception into reflectkit's tree."""
    status = getattr(error, "status_code", None)
    status = status if isinstance(status, int) else None
    text = redact(str(error), secrets).strip().splitlines()
    message = f"{model}: {text[0] if text else type(error).__name__}"
    kind: type[ProviderError] | None
    if isinstance(error, litellm.ContextWindowExceededError):
        kind = ContextWindowError
    elif isinstance(error, litellm.RateLimitError) or status == 429:
        return RateLimitedError(message, model=model, retry_after=retry_after(error))
    elif isinstance(error, litellm.Timeout):
        kind = ProviderTimeoutError
    elif isinstance(error, (litellm.AuthenticationError, litellm.PermissionDeniedError)):
        kind = ProviderAuthError
    elif isinstance(error, litellm.APIConnectionError):
        kind = ProviderConnectionError
    elif isinstance(error, (litellm.InternalServerError, litellm.ServiceUnavailableError)):
        kind = ProviderServerError
    else:
        kind = _kind_of_status(status)
    if kind is None:
        return ProviderError(message, model=model, status_code=status, retryable=False)
    return kind(message, model=model, status_code=status)


_CONTEXT_SIGNS = ("context_length_exceeded", "context length", "context window", "too many tokens")
"""What an OpenAI-compatible server says in a 400 for a prompt longer than the model takes."""


def map_sdk_error(openai: Any, error: Exception, model: str, secrets: list[str]) -> ProviderError:
    """Translate an exception of the ``openai`` SDK (the proxy's calls to OpenAI-compatible
    servers, :mod:`reflectkit.models.compatible`) into reflectkit's tree, as :func:`map_error`
    does LiteLLM's, which are modelled on them. ``openai`` is the imported SDK module.

    Anything else the SDK lets through (a 200 whose body is not JSON) is the server's fault: a
    retryable :class:`ProviderServerError`, as a malformed reply is."""
    text = redact(str(error), secrets).strip().splitlines()
    message = f"{model}: {text[0] if text else type(error).__name__}"
    if isinstance(error, openai.APITimeoutError):
        return ProviderTimeoutError(message, model=model)
    if isinstance(error, openai.APIConnectionError):
        return ProviderConnectionError(message, model=model)
    if not isinstance(error, openai.APIStatusError):
        return ProviderServerError(message, model=model)
    status = error.status_code if isinstance(error.status_code, int) else None
    said = f"{getattr(error, 'code', '') or ''} {error}".lower()
    if status == 400 and any(sign in said for sign in _CONTEXT_SIGNS):
        return ContextWindowError(message, model=model, status_code=status)
    if status == 429:
        return RateLimitedError(message, model=model, retry_after=retry_after(error))
    kind = _kind_of_status(status)
    if kind is None:
        return ProviderError(message, model=model, status_code=status, retryable=False)
    return kind(message, model=model, status_code=status)


def _kind_of_status(status: int | None) -> type[ProviderError] | None:
    """The error class an HTTP status alone says, once the richer signals are checked (LiteLLM's
    exception classes, a context-window or 429 failure); shared by both translations."""
    if status is None:
        return None
    if status in (408, 504):  # a gateway timeout is a timeout, as LiteLLM has it
        return ProviderTimeoutError
    if status in (401, 403):
        return ProviderAuthError
    if status >= 500:
        return ProviderServerError
    if 400 <= status < 500:
        return ProviderRequestError
    return None


def failure_error(failure: ProviderFailure, model: str, secrets: list[str]) -> ProviderError:
    """Translate an in-process backend's :class:`~reflectkit.models.provider.ProviderFailure`
    straight into reflectkit's tree, for calls that do not go through LiteLLM (the embedded model):
    the same classes :func:`map_error` gives the LiteLLM exception the adapter would have raised."""
    status = failure.status_code
    detail = redact(failure.message, secrets).strip().splitlines()
    message = f"{model}: {detail[0] if detail else f'provider failure {status}'}"
    if failure.context_window:
        return ContextWindowError(message, model=model, status_code=status)
    if status == 429:
        return RateLimitedError(message, model=model, retry_after=failure.retry_after)
    kind = _kind_of_status(status)
    if kind is None:
        return ProviderError(message, model=model, status_code=status, retryable=False)
    return kind(message, model=model, status_code=status)
