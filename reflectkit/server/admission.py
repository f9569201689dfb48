"""What a chat request must pass before any model is called, each refusal an OpenAI error.

In order: the API key (401), a body within the size and time limits (413, 408), a request that
parses (400, :func:`~reflectkit.server.protocol.parse_chat_request`), a model this server
serves and options it allows (404, 400), and a free slot (429 when the server is busy). A
request refused here has cost nothing upstream.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import NamedTuple

from starlette.requests import Request

from reflectkit.server.protocol import APIError, ChatRequest, parse_chat_request
from reflectkit.server.settings import ServerSettings

__all__ = ["Admission", "Admitted", "Slots"]


class Slots:
    """At most ``size`` requests run at once; others wait up to ``wait`` seconds, then 429."""

    def __init__(self, size: int, wait: float) -> None:
        self._free = asyncio.Semaphore(size)
        self.wait = wait

    async def take(self) -> Callable[[], None]:
        """Wait for a slot; returns the function that gives it back (safe to call twice)."""
        try:
            if self.wait <= 0 and self._free.locked():
                raise TimeoutError
            async with asyncio.timeout(self.wait or None):
                await self._free.acquire()
        except TimeoutError:
            raise APIError(
                429,
                "the server is busy: too many requests at once, try again shortly",
                kind="rate_limit_error",
                code="server_busy",
                headers={"Retry-After": "1"},
            ) from None
        given = False

        def give_back() -> None:
            nonlocal given
            if not given:
                given = True
                self._free.release()

        return give_back


class Admitted(NamedTuple):
    """A chat request let in: what it asks, the upstream model, whether it is reflected on,
    and the function that gives its slot back."""

    request: ChatRequest
    model: str
    reflected: bool
    give_back: Callable[[], None]


class Admission:
    """The checks, from the server's settings; :meth:`admit` runs them all on a chat request,
    :meth:`authorize` alone guards the other routes."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.slots = Slots(settings.max_concurrent_requests, settings.queue_timeout)
        key = settings.api_key
        self._key = key.get_secret_value().encode() if key is not None else None

    async def admit(self, http: Request) -> Admitted:
        """Authorize, read and parse the request, route it and take a slot for it."""
        self.authorize(http)
        request = parse_chat_request(await self.read_body(http))
        model, reflected = self.route(request)
        give_back = await self.slots.take()
        return Admitted(request, model, reflected, give_back)

    def authorize(self, request: Request) -> None:
        if self._key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise APIError(
                401,
                "missing API key: send it as 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(given.strip().encode(), self._key):
            raise APIError(
                401,
                "incorrect API key",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def read_body(self, request: Request) -> bytes:
        """The body, within the size limit (413) and the time limit (408). Both refusals leave
        the rest of the body unread, so they close the connection."""
        limit = self.settings.max_body_bytes
        close = {"Connection": "close"}
        too_large = APIError(
            413,
            f"the request body is larger than {limit} bytes",
            code="request_too_large",
            headers=close,
        )
        declared = request.headers.get("content-length")
        if declared is not None:
            if not (declared.isascii() and declared.isdigit()):
                raise APIError(400, "invalid Content-Length header", code="invalid_request")
            if len(declared) > 18 or int(declared) > limit:
                raise too_large
        body = bytearray()
        wait = self.settings.body_timeout
        try:
            async with asyncio.timeout(wait):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        raise too_large
        except TimeoutError:
            message = f"the request body did not arrive within {wait:g} s"
            raise APIError(408, message, code="request_timeout", headers=close) from None
        return bytes(body)

    def route(self, request: ChatRequest) -> tuple[str, bool]:
        """The upstream model and whether the request is reflected on; 404 if not served."""
        prefix = self.settings.prefix
        reflected = request.model.startswith(prefix)
        upstream = request.model[len(prefix) :] if reflected else request.model
        if not upstream or not self.settings.allows(upstream):
            raise APIError(
                404,
                f"the model {request.model!r} does not exist here: GET /v1/models lists "
                "what this server serves",
                param="model",
                code="model_not_found",
            )
        options = request.reflectkit
        if not reflected:
            if not self.settings.passthrough:
                raise APIError(
                    404,
                    f"this server only reflects: ask for {prefix}{upstream}",
                    param="model",
                    code="model_not_found",
                )
            tuning = {} if options is None else options.model_dump(exclude_none=True)
            tuning.pop("include_reasoning", None)
            if tuning:
                name = next(iter(tuning))
                raise APIError(
                    400,
                    f"reflectkit.{name} applies only to reflected models: ask for "
                    f"{prefix}{upstream}",
                    param=f"reflectkit.{name}",
                )
        self._check_options(request)
        return upstream, reflected

    def _check_options(self, request: ChatRequest) -> None:
        options = request.reflectkit
        if options is None:
            return
        limit = self.settings.max_iterations_limit
        if options.max_iterations is not None and options.max_iterations > limit:
            raise APIError(
                400,
                f"reflectkit.max_iterations is at most {limit} on this server",
                param="reflectkit.max_iterations",
            )
        critic = options.critic_model
        if critic is not None and not self.settings.allows(critic):
            raise APIError(
                404,
                f"the critic model {critic!r} is not served here",
                param="reflectkit.critic_model",
                code="model_not_found",
            )
