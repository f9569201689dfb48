"""The ASGI app: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``.

:func:`create_app` builds it from :class:`~reflectkit.server.ServerSettings`; nothing listens,
reads or calls a model until a server (uvicorn) runs it and a request comes in. A chat request
is let in by :mod:`~reflectkit.server.admission`, answered here in one piece, or streamed by
:mod:`~reflectkit.server.streaming`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from reflectkit.errors import ReflectkitError
from reflectkit.server.admission import Admission
from reflectkit.server.failures import FailureLog, as_api_error, outcome_of
from reflectkit.server.passthrough import UpstreamClient, answer_of, stream_of
from reflectkit.server.protocol import Answer, APIError, ChatRequest, completion_body
from reflectkit.server.reflection import PROGRESS, Reflectors, reflect_complete, reflect_stream
from reflectkit.server.settings import ServerSettings
from reflectkit.server.streaming import Events, stream_reply
from reflectkit.stores.jsonl import repair_surrogates

__all__ = ["create_app"]


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


class _Proxy:
    """The request handlers, and what they share: settings, admission, reflectors, upstream
    clients."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.admission = Admission(settings)
        self.reflectors = Reflectors(settings)
        self._clients: OrderedDict[str, UpstreamClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()
        key = settings.api_key
        self.secrets = [key.get_secret_value()] if key is not None else []
        self.secrets += [
            str(v) for k, v in settings.upstream_kwargs.items() if "key" in k.lower() and v
        ]

    def client(self, model: str) -> UpstreamClient:
        client = self._clients.get(model)
        if client is None:
            settings = self.settings
            client = UpstreamClient(
                model, settings.upstream_kwargs, retry=settings.retry, timeout=settings.timeout
            )
            self._clients[model] = client
            if len(self._clients) > 256:
                _, evicted = self._clients.popitem(last=False)
                closing = asyncio.get_running_loop().create_task(evicted.aclose())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        return client

    async def aclose(self) -> None:
        """Close the upstream clients' connections (those opened on the running loop)."""
        for client in list(self._clients.values()):
            await client.aclose()

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
            request, model, reflected, give_back = await self.admission.admit(http)
        except APIError as error:
            return _error_response(error)
        streaming = False
        try:
            if request.stream:
                response = await stream_reply(
                    http,
                    request,
                    self.events(request, model, reflected),
                    keepalive=self.settings.keepalive_interval,
                    api_error=self.api_error,
                    give_back=give_back,
                )
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

    async def models(self, http: Request) -> Response:
        try:
            self.admission.authorize(http)
        except APIError as error:
            return _error_response(error)
        data = [_model_entry(name) for name in self.settings.listed_models()]
        return _JSONResponse({"object": "list", "data": data})

    async def model(self, http: Request) -> Response:
        try:
            self.admission.authorize(http)
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
    ``ServerSettings()``, read from the ``REFLECTKIT_SERVER_*`` variables, else loopback and the
    default model: so ``uvicorn --factory reflectkit.server:create_app`` and each worker of
    ``reflectkit serve --workers N`` build their app from the environment. Nothing runs until
    a server does: the app serves ``POST /v1/chat/completions``, ``GET /v1/models`` (and
    ``/v1/models/{model}``) and ``GET /health``. Settings that would listen beyond loopback
    without an API key raise ConfigurationError."""
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

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await proxy.aclose()  # a server run with its lifespan closes upstream connections

    app = Starlette(
        routes=routes, exception_handlers=handlers, middleware=middleware, lifespan=lifespan
    )
    app.state.proxy = proxy
    return app
