"""Run reflectkit's async core from sync code.

The sync API (``reflect``, ``Reflector.run``, ``Reflector.stream``) submits coroutines to one
event loop on a daemon thread, shared by all sync calls. One long-lived loop means LiteLLM's
per-loop HTTP clients are reused instead of being rebuilt per call, and sync calls work even
where a loop is already running in the caller's thread (Jupyter).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["iterate_sync", "run_sync"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="reflectkit-sync-loop", daemon=True
            )
            thread.start()
            _loop = loop
        return _loop


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on the background loop and wait for its result.

    If the waiting thread is interrupted (Ctrl-C), the coroutine is cancelled, so no model
    call is left running unseen.
    """
    future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, _background_loop())
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


def iterate_sync(stream: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an async iterator from sync code; closing the iterator early closes the stream."""
    try:
        while True:
            try:
                yield run_sync(_next(stream))
            except StopAsyncIteration:
                return
    finally:
        closer = getattr(stream, "aclose", None)
        if closer is not None:
            run_sync(closer())


async def _next(stream: AsyncIterator[T]) -> T:
    return await stream.__anext__()
