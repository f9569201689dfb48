"""Streamed replies: a chat completion sent as server-sent events while it is being made.

The reply's event source (a LangGraph run, an upstream stream) runs in a task of its own
(:class:`Pump`). :func:`stream_reply` waits for its first items, so a failure before the
upstream first answered is still a plain HTTP error; after that the status line is gone, and
the stream's body turns items into OpenAI chunks, long silences into keep-alive comments and a
failure into an error event. :class:`EventStream` stops the source and gives the request's slot
back however the stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from reflectkit.errors import ReflectkitError
from reflectkit.server.failures import Outcome, internal_error, outcome_of
from reflectkit.server.protocol import Answer, APIError, ChatRequest, ChunkWriter, Delta
from reflectkit.server.reflection import PROGRESS

__all__ = ["EventStream", "Events", "Pump", "stream_reply"]

Events = AsyncGenerator[Delta | Answer | object]
"""A reply's items: its deltas, its end (an :class:`Answer`), and markers such as ``PROGRESS``."""


class Pump:
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


class EventStream(StreamingResponse):
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


async def stream_reply(
    http: Request,
    request: ChatRequest,
    events: Events,
    *,
    keepalive: float,
    api_error: Callable[[ReflectkitError], APIError],
    give_back: Callable[[], None],
) -> Response:
    """Start the reply; failures before the upstream first answered are plain HTTP errors,
    later ones an error event in the stream (the status line is gone by then). ``keepalive``
    is the longest silence, in seconds, before a keep-alive comment; ``api_error`` words a
    failure for the client; ``give_back`` frees the request's slot when the stream ends."""
    pump = Pump(events)
    head: list[Delta | Answer | object] = []
    try:
        while not head or not (head[-1] is PROGRESS or isinstance(head[-1], (Delta, Answer))):
            item = await pump.next()
            if item is Pump.END:
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
    return EventStream(_sse(request, head, pump, outcome, keepalive, api_error), close)


async def _sse(
    request: ChatRequest,
    head: list[Delta | Answer | object],
    pump: Pump,
    outcome: Outcome,
    keepalive: float,
    api_error: Callable[[ReflectkitError], APIError],
) -> AsyncIterator[bytes]:
    writer = ChunkWriter(request.model)
    yield writer.delta({"role": "assistant", "content": ""})
    end = Answer(content=None)
    try:
        item = head.pop(0) if head else await pump.next(keepalive)
        while item is not Pump.END:
            if isinstance(item, Delta):
                yield writer.delta(item.body())
            elif isinstance(item, Answer):
                end = item
            elif item is Pump.IDLE:
                # An SSE comment: clients ignore it, but proxies and load balancers in between
                # see traffic and keep a loop's long silent critique from timing out.
                yield b": keep-alive\n\n"
            item = head.pop(0) if head else await pump.next(keepalive)
    except ReflectkitError as error:
        failure = api_error(error)
        outcome.fail(failure, in_stream=True)
        yield writer.error(failure)
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
