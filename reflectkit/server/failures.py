"""reflectkit's errors as the HTTP statuses and OpenAI error objects a client gets, and the one
log line every failed request leaves.

The caller's own mistakes are 4xx. Failures on the way to the upstream model are the gateway's
statuses: 502 when the upstream failed or refused the proxy's credentials, 503 when the proxy
cannot reach a model at all, 504 when the upstream was too slow, 429 when it rate-limited. Every
message is redacted again with the proxy's own secrets.

:class:`FailureLog` wraps the app: whatever ends a request badly (an error response, an error
event in a stream that had started, a client that left, an exception nobody expected) is logged
once, on the ``reflectkit.server`` logger, as ``METHOD PATH STATUS CODE: first line of the
message``, redacted, so an operator sees every failure and no secret.
"""

from __future__ import annotations

import asyncio
import logging
import math
import traceback
from collections.abc import Iterable, Sequence
from http import HTTPStatus

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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

__all__ = ["FailureLog", "Outcome", "as_api_error", "internal_error", "outcome_of"]

logger = logging.getLogger(__name__)
"""A child of ``reflectkit.server``, the name operators configure (docs/server.md)."""

_UPSTREAM = "upstream_error"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def internal_error() -> APIError:
    """What a client is told of an exception nobody expected: nothing of its cause."""
    return APIError(500, "internal server error", kind="server_error")


def _retry_after_header(wait: float | None) -> dict[str, str]:
    """The Retry-After to pass on: whole seconds, none when the upstream gave no usable hint."""
    if wait is None or not math.isfinite(wait) or wait < 0:
        return {}
    return {"Retry-After": str(math.ceil(wait))}


def as_api_error(error: ReflectkitError, secrets: Iterable[str] = ()) -> APIError:
    """The response for a reflectkit error raised while serving a request."""
    message = redact(_first_line(error), secrets)
    if isinstance(error, RateLimitedError):
        return APIError(
            429,
            message,
            kind="rate_limit_error",
            code="upstream_rate_limited",
            headers=_retry_after_header(error.retry_after),
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


CLIENT_CLOSED = 499
"""The status logged for a client that left before its answer was complete (nginx's)."""


class Outcome:
    """How one request ended, filled in while it is served; :class:`FailureLog` logs it.

    The handlers say what the status line cannot: why an error response was sent
    (:meth:`fail`), that a response is a stream (:attr:`streaming`), and that a stream sent its
    last event (:attr:`finished`); a stream that ends neither failed nor finished lost its
    client.
    """

    def __init__(self) -> None:
        self.status: int | None = None
        """The status sent, None until the response starts."""
        self.failure: tuple[int, str, str] | None = None
        """(status, code, message) of the failure to log."""
        self.in_stream = False
        self.streaming = False
        self.finished = False
        self.client_gone = False

    def fail(self, error: APIError, in_stream: bool = False) -> None:
        """Record the error the client was sent (the first one counts)."""
        if self.failure is None:
            self.failure = (error.status, error.code or error.kind, error.message)
            self.in_stream = in_stream

    def fail_unexpected(self, error: BaseException, in_stream: bool = False) -> None:
        """Record an exception no handler expected: a 500 whose cause only the log shows."""
        if self.failure is None:
            text = str(error).strip()
            cause = (
                f"{type(error).__name__}: {_first_line(error)}" if text else type(error).__name__
            )
            self.failure = (500, "internal_error", cause)
            self.in_stream = in_stream

    def client_left(self, when: str) -> None:
        """Record a client that disconnected, ``when`` saying at which point and what that did
        (``"mid-stream; its run was cancelled"``)."""
        self.client_gone = True
        if self.failure is None:
            message = f"the client disconnected {when}"
            self.failure = (CLIENT_CLOSED, "client_closed_request", message)


_OUTCOME = "reflectkit.outcome"
_CANCELLED = "; its run was cancelled"


def outcome_of(scope: Scope) -> Outcome:
    """The request's :class:`Outcome` (a fresh one when the app runs without
    :class:`FailureLog`, so handlers need not care)."""
    outcome: Outcome = scope.setdefault(_OUTCOME, Outcome())
    return outcome


def _bearer(scope: Scope) -> list[str]:
    """The token the request sent in its Authorization header, to redact like a secret."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            token = value.decode("latin-1").partition(" ")[2].strip()
            return [token] if token else []
    return []


class FailureLog:
    """ASGI middleware: one log line for every request that failed, at WARNING (ERROR for a
    5xx or an unexpected exception), redacted with the server's secrets and the request's own
    bearer token. An exception no handler expected becomes a clean 500 here, so it reaches
    neither the client nor uvicorn's unredacted traceback; its traceback, redacted, is logged
    at DEBUG."""

    def __init__(self, app: ASGIApp, secrets: Sequence[str] = ()) -> None:
        self.app = app
        self.secrets = list(secrets)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        outcome = outcome_of(scope)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome.status = message["status"]
            try:
                await send(message)
            except OSError:  # uvicorn's ClientDisconnected: the connection is gone
                streamed = outcome.streaming
                outcome.client_left(f"mid-stream{_CANCELLED}" if streamed else "during its answer")
                raise

        secrets = self.secrets + _bearer(scope)
        try:
            await self.app(scope, receive, sending)
        except ClientDisconnect:
            outcome.client_left("while sending its request")
        except asyncio.CancelledError:
            outcome.fail(APIError(503, "the server stopped", code="server_stopping"))
            self._log(scope, outcome, secrets)
            raise
        except Exception as error:
            if not outcome.client_gone:
                await self._internal_error(scope, receive, send, outcome, error)
                logger.debug("%s", redact("".join(traceback.format_exception(error)), secrets))
        self._log(scope, outcome, secrets)

    @staticmethod
    async def _internal_error(
        scope: Scope, receive: Receive, send: Send, outcome: Outcome, error: Exception
    ) -> None:
        outcome.fail_unexpected(error, in_stream=outcome.status is not None)
        if outcome.status is None:
            # Whatever failed may have left the request half read: the client must not send its
            # next request on this connection, and the header tells it so before it tries.
            response = JSONResponse(
                internal_error().body(), status_code=500, headers={"Connection": "close"}
            )
            await response(scope, receive, send)

    @staticmethod
    def _log(scope: Scope, outcome: Outcome, secrets: Sequence[str]) -> None:
        failure = outcome.failure
        if failure is None and outcome.streaming and not outcome.finished:
            outcome.client_left(f"mid-stream{_CANCELLED}")
            failure = outcome.failure
        if failure is None and (outcome.status or 0) >= 400:
            status = outcome.status or 500
            failure = (status, "http_error", _phrase(status))
        if failure is None:
            return
        status, code, message = failure
        where = " (in the stream, after 200)" if outcome.in_stream else ""
        path = redact(str(scope.get("path", "?")), secrets)
        line = f"{scope.get('method', '?')} {path} {status} {code}{where}"
        level = logging.ERROR if status >= 500 else logging.WARNING
        # Redacted apart: "invalid_api_key: incorrect ..." would read as a key and its value.
        logger.log(level, "%s: %s", line, redact(message, secrets))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"
