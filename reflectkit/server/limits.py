"""Connection limits for uvicorn, which has no read timeouts of its own.

uvicorn closes an idle keep-alive connection, but a connection that never sends a request, or
sends its headers a byte at a time, stays open for as long as the client likes, and any number
of them may be open at once. :func:`uvicorn_options` gives uvicorn an HTTP protocol (its own
h11 protocol, subclassed) that

* closes a connection whose request head is not complete ``header_timeout`` seconds after the
  connection opened, or after the first byte of a later request on it, with a ``408``;
* refuses connections beyond ``max_connections`` with a ``503`` and closes them;

and keeps idle connections ``idle_timeout`` seconds (uvicorn's default, 5 s, is httpx's too: a
client may send on a connection at the moment the server closes it). The request body's own
deadline, ``body_timeout``, is the app's (a ``408`` too): it is where the body is read.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from reflectkit.server.protocol import error_body

if TYPE_CHECKING:
    from reflectkit.server.settings import ServerSettings

__all__ = ["EnvironmentGuardedH11", "guarded_protocol", "uvicorn_options"]

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
"""The largest request head (uvicorn answers a bigger one with a 400 and closes)."""


def _raw_response(status: int, reason: str, message: str, code: str, extra: str = "") -> bytes:
    """A whole HTTP/1.1 error response that closes the connection, written before (or instead
    of) any request the connection could have made."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = json.dumps(error_body(message, kind, None, code)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head and a connection cap."""

    header_timeout: float = 10.0
    max_connections: int = 512

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True
        self._cycle_seen: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvicorn types it as asyncio.Transport, narrower than the protocol method it overrides
        super().connection_made(transport)  # type: ignore[arg-type]
        if len(self.connections) > self.max_connections:
            message = "the server has too many open connections: try again shortly"
            raw = _raw_response(
                503, "Service Unavailable", message, "server_busy", "retry-after: 1\r\n"
            )
            self.transport.write(raw)
            self.transport.close()
            logger.warning("connection refused: %d are open already", self.max_connections)
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head and self._head_timer is None:
            self._arm()  # the first byte of a request on a kept-alive connection
        super().data_received(data)
        self._check_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._awaiting_head = True  # until the next request's head; idle time is keep-alive's
        self._check_head()

    def _check_head(self) -> None:
        if self.cycle is not None and self.cycle is not self._cycle_seen:
            self._cycle_seen = self.cycle  # a request head arrived: the app has it now
            self._awaiting_head = False
            self._disarm()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._awaiting_head or self.transport.is_closing():
            return
        message = f"the request head did not arrive within {self.header_timeout:g} s"
        self.transport.write(_raw_response(408, "Request Timeout", message, "request_timeout"))
        self.transport.close()
        logger.info("connection closed: %s", message)


def guarded_protocol(header_timeout: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with these limits (a class, as uvicorn's ``http=`` takes)."""
    limits = {"header_timeout": header_timeout, "max_connections": max_connections}
    return type("GuardedH11Protocol", (_GuardedH11,), limits)


@functools.cache
def _limits_from_environment() -> tuple[float, int]:
    from reflectkit.server.settings import ServerSettings

    settings = ServerSettings()
    return settings.header_timeout, settings.max_connections


class EnvironmentGuardedH11(_GuardedH11):
    """The guarded protocol with the limits of ``ServerSettings()``, read from the environment
    once per process: what ``reflectkit serve --workers N`` names for its workers, which get
    their settings through the environment (a class made by :func:`guarded_protocol` at run
    time cannot be sent to another process)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout, self.max_connections = _limits_from_environment()


def uvicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` or ``uvicorn.Config`` that apply the settings'
    connection limits (``reflectkit serve`` uses them): a deadline for request heads, a cap on
    open connections, the keep-alive of idle ones, and the largest request head."""
    return {
        "http": guarded_protocol(settings.header_timeout, settings.max_connections),
        "timeout_keep_alive": settings.idle_timeout,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
    }
