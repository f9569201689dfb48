"""reflectkit's errors as the HTTP statuses and OpenAI error objects a client gets.

The caller's own mistakes are 4xx. Failures on the way to the upstream model are the gateway's
statuses: 502 when the upstream failed or refused the proxy's credentials, 503 when the proxy
cannot reach a model at all, 504 when the upstream was too slow, 429 when it rate-limited. Every
message is redacted again with the proxy's own secrets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from reflectkit.errors import (
    ConfigurationError,
    ContextWindowError,
    CriticError,
    InputError,
    LocalModelError,
    MissingCredentialsError,
    ModelRequestsBlockedError,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderRequestError,
    ProviderTimeoutError,
    RateLimitedError,
    ReflectkitError,
    TemplateError,
    UnknownModelError,
)
from reflectkit.redaction import redact
from reflectkit.server.protocol import APIError

__all__ = ["as_api_error"]

_UPSTREAM = "upstream_error"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def as_api_error(error: ReflectkitError, secrets: Iterable[str] = ()) -> APIError:
    """The response for a reflectkit error raised while serving a request."""
    message = redact(_first_line(error), secrets)
    if isinstance(error, RateLimitedError):
        wait = error.retry_after
        headers = {"Retry-After": str(math.ceil(wait))} if wait is not None else {}
        return APIError(
            429, message, kind="rate_limit_error", code="upstream_rate_limited", headers=headers
        )
    if isinstance(error, ContextWindowError):
        return APIError(400, message, param="messages", code="context_length_exceeded")
    if isinstance(error, ProviderRequestError):
        return APIError(400, message, code="upstream_rejected_request")
    if isinstance(error, ProviderTimeoutError):
        return APIError(504, message, kind=_UPSTREAM, code="upstream_timeout")
    if isinstance(error, ProviderConnectionError):
        return APIError(502, message, kind=_UPSTREAM, code="upstream_unreachable")
    if isinstance(error, ProviderAuthError):
        # The proxy's credentials for the upstream, not the client's: never a 401 to the client.
        return APIError(502, message, kind=_UPSTREAM, code="upstream_auth_failed")
    if isinstance(error, CriticError):
        return APIError(502, message, kind=_UPSTREAM, code="critic_failed")
    if isinstance(error, UnknownModelError):
        return APIError(404, message, param="model", code="model_not_found")
    unavailable = (MissingCredentialsError, ModelRequestsBlockedError, LocalModelError)
    if isinstance(error, (*unavailable, TemplateError)):
        return APIError(503, message, kind=_UPSTREAM, code="upstream_unavailable")
    if isinstance(error, InputError):
        return APIError(400, message, param="messages", code="invalid_messages")
    if isinstance(error, ConfigurationError):
        return APIError(400, message, code="invalid_configuration")
    return APIError(502, message, kind=_UPSTREAM, code="upstream_failed")
