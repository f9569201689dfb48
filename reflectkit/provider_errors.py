"""LiteLLM's exceptions, translated into reflectkit's error tree.

:mod:`reflectkit.llm` passes the imported ``litellm`` module in; nothing here imports LiteLLM.
LiteLLM already normalises providers' errors into OpenAI-style exception classes with a status
code; this maps those onto :mod:`reflectkit.errors`, with the ``retryable`` flag the retry layer
reads, a 429's Retry-After in seconds, and the message's secrets redacted.
"""

from __future__ import annotations

import email.utils
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
)
from reflectkit.redaction import redact

__all__ = ["map_error", "retry_after"]


def retry_after(error: BaseException) -> float | None:
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or getattr(error, "litellm_response_headers", None)
    if not headers:
        return None
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def map_error(litellm: Any, error: Exception, model: str, secrets: list[str]) -> ProviderError:
    """Translate a LiteLLM exception into reflectkit's tree."""
    status = getattr(error, "status_code", None)
    status = status if isinstance(status, int) else None
    text = redact(str(error), secrets).strip().splitlines()
    message = f"{model}: {text[0] if text else type(error).__name__}"
    kind: type[ProviderError]
    if isinstance(error, litellm.ContextWindowExceededError):
        kind = ContextWindowError
    elif isinstance(error, litellm.RateLimitError) or status == 429:
        return RateLimitedError(message, model=model, retry_after=retry_after(error))
    elif isinstance(error, litellm.Timeout) or status == 408:
        kind = ProviderTimeoutError
    elif isinstance(error, (litellm.AuthenticationError, litellm.PermissionDeniedError)):
        kind = ProviderAuthError
    elif isinstance(error, litellm.APIConnectionError):
        kind = ProviderConnectionError
    elif isinstance(error, (litellm.InternalServerError, litellm.ServiceUnavailableError)) or (
        status is not None and status >= 500
    ):
        kind = ProviderServerError
    elif status is not None and 400 <= status < 500:
        kind = ProviderRequestError
    else:
        return ProviderError(message, model=model, status_code=status, retryable=False)
    return kind(message, model=model, status_code=status)
