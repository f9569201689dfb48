"""The ASGI app: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``.

:func:`create_app` builds it from :class:`~reflectkit.server.ServerSettings`; nothing listens,
reads or calls a model until a server (uvicorn) runs it and a request comes in.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from reflectkit.errors import ReflectkitError
from reflectkit.server.failures import (
    FailureLog,
    Outcome,
    as_api_error,
    internal_error,
    outcome_of,
)
from reflectkit.server.passthrough import UpstreamClient, answer_of, stream_of
from reflectkit.server.protocol import (
    Answer,
    APIError,
    ChatRequest,
    ChunkWriter,
    Delta,
    completion_body,
    parse_chat_request,
)
from reflectkit.server.reflection import PROGRESS, Reflectors, reflect_complete, reflect_stream
from reflectkit.server.settings import ServerSettings
from reflectkit.stores.jsonl import repair_surrogates

__all__ = ["create_app"]

Events = AsyncGenerator[Delta | Answer | object]


class _JSONResponse(JSONResponse):
    """A JSON response whatever text it holds: a lone surrogate (half an emoji) that reached it
    is sent as U+FFFD instead of failing to encode (a 500)."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return super().render(repair_surrogates(content))


class _ErrorResponse(_JSONResponse):
    """An OpenAI error response that tells the request's :class:`Outcome` why it was sent, for
    the failure's log line."""

    def __init__(self, error: APIError) -> None:
        super().__init__(error.body(), status_code=error.status, headers=error.headers)
        self.error = error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome_of(scope).fail(self.error)
        await super().__call__(scope, receive, send)


def _error_response(error: APIError) -> JSONResponse:
    return _ErrorResponse(error)


class _Slots:
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


class _Pump:
    """Runs a reply's event source in a task of its own and hands its items over a queue.

    The source (a LangGraph run, an upstream stream) starts in the request handler, which waits
    for its first items, and goes on in the response's task: a generator whose context managers
    (timeouts, tracing contexts) belong to one task must not move between tasks, so it stays in
    this one. The queue is bounded: a slow client slows the source down.
    """

    END = object()
    IDLE = object()

    def __init__(self, events: Events) -> None:
        self._queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue(maxsize=64)
        self._task = asyncio.create_task(self._run(events))

    async def _run(self, events: Events) -> None:
        try:
            async with aclosing(events) as items:
                async for item in items:
                    await self._queue.put((True, item))
        except Exception as error:
            await self._queue.put((False, error))
            return
        await self._queue.put((True, self.END))

    async def next(self, wait: float | None = None) -> Any:
        """The next item, :attr:`END` after the last, or :attr:`IDLE` when none came within
        ``wait`` seconds; the source's failure is raised here."""
        try:
            async with asyncio.timeout(wait):
                ok, value = await self._queue.get()
        except TimeoutError:
            return self.IDLE
        if not ok:
            raise value
        return value

    async def close(self) -> None:
        """Stop the source (cancelling its model calls) if it is still running."""
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class _EventStream(StreamingResponse):
    """An SSE response that runs ``on_close`` however it ends: finished, failed, or the
    client gone before the first byte (when the body's generator never even starts)."""

    def __init__(self, body: AsyncIterator[bytes], on_close: Callable[[], Awaitable[None]]):
        super().__init__(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()


class _Proxy:
    """The request handlers, and what they share: settings, reflectors, upstream clients."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.reflectors = Reflectors(settings)
        self.slots = _Slots(settings.max_concurrent_requests, settings.queue_timeout)
        self._clients: OrderedDict[str, UpstreamClient] = OrderedDict()
        key = settings.api_key
        self._key = key.get_secret_value().encode() if key is not None else None
        self.secrets = [key.get_secret_value()] if key is not None else []
        self.secrets += [
            str(v) for k, v in settings.upstream_kwargs.items() if "key" in k.lower() and v
        ]

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

    def client(self, model: str) -> UpstreamClient:
        client = self._clients.get(model)
        if client is None:
            settings = self.settings
            client = UpstreamClient(
                model, settings.upstream_kwargs, retry=settings.retry, timeout=settings.timeout
            )
            self._clients[model] = client
            if len(self._clients) > 256:
                self._clients.popitem(last=False)
        return client

    async def events(self, request: ChatRequest, model: str, reflected: bool) -> Events:
        """The reply's deltas and its end, however it is made."""
        messages = request.messages
        if reflected:
            reflector = self.reflectors.get(model, request)
            run = reflect_stream(reflector, messages, request.include_reasoning)
            async with aclosing(run) as items:
                async for item in items:
                    yield item
            return
        client = self.client(model)
        response = await client.open(messages, request.params, stream=True)
        yield PROGRESS  # the upstream accepted the call: errors from now on are in-stream
        async for item in stream_of(client, response, request.include_reasoning):
            yield item

    async def complete(self, request: ChatRequest, model: str, reflected: bool) -> Answer:
        if reflected:
            reflector = self.reflectors.get(model, request)
            return await reflect_complete(reflector, request.messages, request.include_reasoning)
        client = self.client(model)
        response = await client.open(request.messages, request.params, stream=False)
        return answer_of(response, request.include_reasoning, model)

    def api_error(self, error: ReflectkitError) -> APIError:
        return as_api_error(error, self.secrets)

    async def chat(self, http: Request) -> Response:
        try:
            self.authorize(http)
            request = parse_chat_request(await self.read_body(http))
            model, reflected = self.route(request)
            give_back = await self.slots.take()
        except APIError as error:
            return _error_response(error)
        streaming = False
        try:
            if request.stream:
                response = await self._stream(http, request, model, reflected, give_back)
                streaming = True
                return response
            answer = await _unless_client_leaves(http, self.complete(request, model, reflected))
            if answer is None:
                outcome_of(http.scope).client_left("before its answer; its run was cancelled")
                return Response(status_code=499)  # nobody reads it: the connection is gone
            return _JSONResponse(completion_body(request.model, answer))
        except APIError as error:
            return _error_response(error)
        except ReflectkitError as error:
            return _error_response(self.api_error(error))
        finally:
            if not streaming:
                give_back()

    async def _stream(
        self,
        http: Request,
        request: ChatRequest,
        model: str,
        reflected: bool,
        give_back: Callable[[], None],
    ) -> Response:
        """Start the reply; failures before the upstream first answered are plain HTTP errors,
        later ones an error event in the stream (the status line is gone by then)."""
        pump = _Pump(self.events(request, model, reflected))
        head: list[Delta | Answer | object] = []
        try:
            while not head or not (head[-1] is PROGRESS or isinstance(head[-1], (Delta, Answer))):
                item = await pump.next()
                if item is _Pump.END:
                    break
                head.append(item)
        except BaseException:
            await pump.close()
            raise

        async def close() -> None:
            await pump.close()
            give_back()

        outcome = outcome_of(http.scope)
        outcome.streaming = True
        return _EventStream(self._sse(request, head, pump, outcome), close)

    async def _sse(
        self,
        request: ChatRequest,
        head: list[Delta | Answer | object],
        pump: _Pump,
        outcome: Outcome,
    ) -> AsyncIterator[bytes]:
        writer = ChunkWriter(request.model)
        yield writer.delta({"role": "assistant", "content": ""})
        end = Answer(content=None)
        wait = self.settings.keepalive_interval
        try:
            item = head.pop(0) if head else await pump.next(wait)
            while item is not _Pump.END:
                if isinstance(item, Delta):
                    yield writer.delta(item.body())
                elif isinstance(item, Answer):
                    end = item
                elif item is _Pump.IDLE:
                    # An SSE comment: clients ignore it, but proxies and load balancers in between
                    # see traffic and keep a loop's long silent critique from timing out.
                    yield b": keep-alive\n\n"
                item = head.pop(0) if head else await pump.next(wait)
        except ReflectkitError as error:
            api_error = self.api_error(error)
            outcome.fail(api_error, in_stream=True)
            yield writer.error(api_error)
            return
        except Exception as error:
            outcome.fail_unexpected(error, in_stream=True)
            yield writer.error(internal_error())
            return
        yield writer.finish(end)
        if request.include_usage:
            yield writer.usage(end.usage)
        yield writer.DONE
        outcome.finished = True  # resumed after the last event was sent

    async def models(self, http: Request) -> Response:
        try:
            self.authorize(http)
        except APIError as error:
            return _error_response(error)
        data = [_model_entry(name) for name in self.settings.listed_models()]
        return _JSONResponse({"object": "list", "data": data})

    async def model(self, http: Request) -> Response:
        try:
            self.authorize(http)
        except APIError as error:
            return _error_response(error)
        name = http.path_params["model"]
        if name not in self.settings.listed_models():
            message = f"the model {name!r} does not exist here"
            return _error_response(APIError(404, message, param="model", code="model_not_found"))
        return _JSONResponse(_model_entry(name))


async def _client_left(http: Request) -> None:
    """Return when the client closes its connection (the body has been read already, so the
    next ASGI message is the disconnect)."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


async def _unless_client_leaves(http: Request, work: Awaitable[Answer]) -> Answer | None:
    """``work``'s answer, or None when the client disconnects first: then the run is cancelled,
    so a client that gives up stops the model calls it would have paid for."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_left(http))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request was cancelled itself (the server is stopping)
        task.cancel()
        watcher.cancel()
        raise
    watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


def _model_entry(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "reflectkit"}


async def _health(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _http_error(_: Request, error: Exception) -> Response:
    """Starlette's own refusals (unknown route, wrong method) as OpenAI errors; any other
    exception is :class:`FailureLog`'s to turn into a 500."""
    if not isinstance(error, HTTPException):
        raise error
    status = error.status_code
    kind = "invalid_request_error" if status < 500 else "server_error"
    code = {404: "not_found", 405: "method_not_allowed"}.get(status)
    return _error_response(
        APIError(status, str(error.detail), kind=kind, code=code, headers=dict(error.headers or {}))
    )


def create_app(settings: ServerSettings | None = None) -> Starlette:
    """The proxy as an ASGI app (see docs/server.md). ``settings`` default to
    ``ServerSettings()``: loopback, the default model, the API key from the environment."""
    settings = settings or ServerSettings()
    settings.check()
    proxy = _Proxy(settings)
    routes = [
        Route("/v1/chat/completions", proxy.chat, methods=["POST"]),
        Route("/v1/models", proxy.models, methods=["GET"]),
        Route("/v1/models/{model:path}", proxy.model, methods=["GET"]),
        Route("/health", _health, methods=["GET"]),
    ]
    handlers: dict[Any, Any] = {HTTPException: _http_error}
    # Inside Starlette's last-resort handler, outside its HTTPException handling: every
    # response, and every exception a handler did not expect, passes through the failure log.
    middleware = [Middleware(FailureLog, secrets=proxy.secrets)]
    app = Starlette(routes=routes, exception_handlers=handlers, middleware=middleware)
    app.state.proxy = proxy
    return app
