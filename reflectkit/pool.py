"""Many async jobs at a bounded concurrency, with a progress bar: the machinery that
:func:`~reflectkit.batching.abatch` and :func:`~reflectkit.data.recycle.arecycle` share.

:func:`run_bounded` awaits ``work(job)`` for every job, at most ``concurrency`` at a time. Jobs
start in the order they come and finish in any order: a caller that wants input order keys what
it keeps (a batch, by the prompt's index); one that writes as it goes writes in the order they
finish. Jobs are read as workers free up, a few ahead, so an input read lazily from a large file
is never held in memory whole. :func:`progress_bar` is the bar both show. What they write is
:class:`~reflectkit.stores.jsonl.JsonlWriter`'s: one flushed line per finished job.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable, Iterable, Sized
from typing import Any, TypeVar

__all__ = ["progress_bar", "run_bounded"]

T = TypeVar("T")


async def run_bounded(
    jobs: Iterable[T], work: Callable[[T], Awaitable[None]], concurrency: int
) -> None:
    """Await ``work(job)`` for every job of ``jobs``, at most ``concurrency`` at a time.

    One producer reads ``jobs`` into a queue of ``2 * concurrency`` and workers take from it;
    reading the jobs (a generator may do work of its own for each) happens as the queue empties.
    The first exception of a job or of the reading ends the run: the other jobs are cancelled
    and that exception is raised itself, not in an exception group. No more workers start than
    there are jobs, when ``jobs`` has a length.
    """
    workers = min(concurrency, len(jobs)) if isinstance(jobs, Sized) else concurrency
    queue: asyncio.Queue[tuple[T] | None] = asyncio.Queue(maxsize=2 * workers)

    async def produce() -> None:
        for job in jobs:
            await queue.put((job,))
        for _ in range(workers):
            await queue.put(None)

    async def worker() -> None:
        while (taken := await queue.get()) is not None:
            await work(taken[0])

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(produce())
            for _ in range(workers):
                group.create_task(worker())
    except BaseExceptionGroup as failed:
        # The TaskGroup has cancelled the other tasks; raise the error itself, not the group.
        raise failed.exceptions[0] from None


def progress_bar(
    total: int,
    *,
    enabled: bool,
    desc: str,
    unit: str,
    initial: int = 0,
    dynamic_ncols: bool = False,
) -> Any:
    """A tqdm progress bar on stderr (a widget in Jupyter), or a silent one when not
    ``enabled``; close it, or use it as a context manager."""
    tqdm = importlib.import_module("tqdm.auto").tqdm  # untyped; notebook-aware bars
    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        desc=desc,
        unit=unit,
        dynamic_ncols=dynamic_ncols,
    )
