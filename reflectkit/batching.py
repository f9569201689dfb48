"""Run one reflection loop over many prompts: bounded concurrency, results in input order,
per-item errors, an incremental JSONL file and resume.

:func:`abatch` is the one implementation; :func:`batch` is its sync wrapper. One
:class:`~reflectkit.Reflector` serves every item, so the graph is compiled once and LiteLLM's
HTTP clients are shared. See docs/batch.md for the JSONL format and the resume rules.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reflectkit.api import Prompt, Reflector
from reflectkit.batch_items import (
    MESSAGE_CHARS,
    BatchError,
    BatchItem,
    Execute,
    Finish,
    prompt_hash,
    run_item,
)
from reflectkit.errors import ConfigurationError
from reflectkit.pool import progress_bar, run_bounded
from reflectkit.ray_pool import check_ray
from reflectkit.result import ReflectionResult
from reflectkit.runner import run_sync
from reflectkit.stores.jsonl import JsonlWriter, cut_partial_line, dumps_line

__all__ = ["BatchError", "BatchItem", "abatch", "batch", "prompt_hash", "read_batch_file"]

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8


def read_batch_file(path: str | os.PathLike[str]) -> dict[int, dict[str, Any]]:
    """The records of a batch's JSONL file by index; a later line for an index replaces an
    earlier one. A line cut short by a crash (the last one) is skipped."""
    records: dict[int, dict[str, Any]] = {}
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            if not raw.strip():
                continue
            try:  # a line of bytes that are not UTF-8 is not a record; the others still are
                record = json.loads(raw.decode("utf-8"))
                index = int(record["index"])
            except (ValueError, KeyError, TypeError, IndexError, OverflowError, RecursionError):
                logger.warning("%s:%d is not a batch record; skipped", path, number)
                continue
            records[index] = record
    return records


def _resumed_items(prompts: Sequence[Prompt], path: Path) -> dict[int, BatchItem]:
    """Items finished in an earlier run with a result, for the same prompt at the same index."""
    done: dict[int, BatchItem] = {}
    changed = 0
    for index, record in read_batch_file(path).items():
        if not 0 <= index < len(prompts):
            logger.warning(
                "%s holds index %d, beyond the %d prompts; ignored", path, index, len(prompts)
            )
            continue
        if record.get("prompt_sha256") != prompt_hash(prompts[index]):
            changed += 1
            continue
        if not record.get("ok") or not record.get("result"):
            continue  # failed before: run again
        try:
            result = ReflectionResult.model_validate(record["result"])
        except ValidationError:
            logger.warning(
                "%s: the result of item %d cannot be read; running it again", path, index
            )
            continue
        seconds = record.get("seconds")
        seconds = float(seconds) if isinstance(seconds, (int, float)) else 0.0
        done[index] = BatchItem(index, prompts[index], result, None, seconds, resumed=True)
    if changed:
        logger.warning(
            "%d record(s) in %s are for prompts that have changed since; running them again",
            changed,
            path,
        )
    return done


def _open_output(
    prompts: Sequence[Prompt], output: str | os.PathLike[str] | None, resume: bool
) -> tuple[dict[int, BatchItem], JsonlWriter | None]:
    """The items to take from an earlier run, and the JSONL file open for appending (or new).

    Reading and writing the file block briefly; one line per finished item is far below what
    would stall the event loop."""
    if output is None:
        return {}, None
    path = Path(output)
    done: dict[int, BatchItem] = {}
    if resume and path.exists():
        cut_partial_line(path)
        done = _resumed_items(prompts, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return done, JsonlWriter(path, "a" if resume else "w")


class _Writer:
    """Appends one flushed JSON line per finished item.

    Any text goes: a lone surrogate (half an emoji) in a prompt or a reply is written escaped
    and reads back the same (:func:`~reflectkit.stores.jsonl.dumps_line`). An item that cannot be
    written at all (a prompt holding a circular structure) is written as a failure naming why,
    so it runs again on resume; the batch goes on either way."""

    def __init__(self, file: JsonlWriter | None) -> None:
        self.file = file

    def write(self, item: BatchItem) -> None:
        if self.file is None:
            return
        try:
            line = dumps_line(item.to_dict())
        except Exception as error:  # one item's data must not stop the batch
            logger.warning("batch item %d could not be written: %s", item.index, error)
            line = dumps_line(_unwritable(item, error))
        self.file.write_line(line)


def _unwritable(item: BatchItem, error: Exception) -> dict[str, Any]:
    """The record of an item whose own record could not be made: a failure, so resume runs it
    again, with what can still be said of it."""
    try:
        digest: str | None = prompt_hash(item.prompt)
    except Exception:
        digest = None
    reason = BatchError.from_exception(error)
    message = f"the item could not be written to the output file: {reason.type}: {reason.message}"
    return {
        "index": item.index,
        "prompt_sha256": digest,
        "ok": False,
        "seconds": round(item.seconds, 6),
        "prompt": repr(item.prompt)[:MESSAGE_CHARS],
        "result": None,
        "error": BatchError("OutputError", message[:MESSAGE_CHARS]).to_dict(),
    }


def _check_arguments(prompts: Any, concurrency: int, output: Any, resume: bool) -> list[Prompt]:
    if isinstance(prompts, str):
        raise ConfigurationError("prompts must be a list of prompts, not one string")
    try:
        items = list(prompts)
    except TypeError:
        raise ConfigurationError(
            f"prompts must be an iterable of prompts, not {type(prompts).__name__}"
        ) from None
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be an integer >= 1, not {concurrency!r}")
    if resume and output is None:
        raise ConfigurationError("resume=True needs output=PATH: the file to resume from")
    return items


async def abatch(
    prompts: Sequence[Prompt],
    model: str | None = None,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    output: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool | str = True,
    reflector: Reflector | None = None,
    on_item: Callable[[BatchItem], Awaitable[None] | None] | None = None,
    ray: bool | str | None = None,
    ray_actors: int | None = None,
    **settings: Any,
) -> list[BatchItem]:
    """Run the loop on every prompt, at most ``concurrency`` at a time; one :class:`BatchItem`
    per prompt, in input order.

    A prompt whose run fails is recorded (:class:`BatchError`: type, one-line message, partial
    result) and the others go on; only configuration errors that would fail every item (unknown
    model, missing key) and cancellation stop the batch. ``output`` is a JSONL file that gets one
    flushed line per item as it finishes (it is overwritten unless ``resume``); with
    ``resume=True`` items already in it with a result, for the same index and the same prompt,
    are not run again, while failed and changed ones are. ``progress`` shows a tqdm bar (a
    widget in Jupyter; a string labels it). ``settings`` are :class:`~reflectkit.Reflector`'s,
    or pass a ready ``reflector=``. ``on_item`` is called (and awaited, if async) with each
    item as it finishes.

    ``ray=True`` runs the prompts on a Ray cluster (a local one started if this process is not
    connected yet), ``ray="auto"`` or ``"ray://host:10001"`` on that cluster: ``ray_actors``
    actors (default: the cluster's CPUs), each with a Reflector configured as this one, each
    running ``concurrency`` prompts at a time. The file, resume, ordering and progress are the
    same; the run log is this process's (docs/scale.md). Needs ``pip install 'reflectkit[ray]'``.
    """
    items = _check_arguments(prompts, concurrency, output, resume)
    address = check_ray(ray, ray_actors)
    if reflector is not None and (model is not None or settings):
        raise ConfigurationError("pass either reflector=... or model and settings, not both")
    own = reflector is None
    active = reflector if reflector is not None else Reflector(model, **settings)
    try:
        execute = _in_process(active, items, concurrency)
        if address is not None:
            from reflectkit.batching_ray import ray_executor

            execute = ray_executor(active, items, concurrency, address, ray_actors)
        return await _batch(execute, items, output, resume, progress, on_item)
    finally:
        if own:
            active.close()


def _in_process(reflector: Reflector, items: list[Prompt], concurrency: int) -> Execute:
    async def execute(todo: list[int], finish: Finish) -> None:
        async def run(index: int) -> None:
            await finish(await run_item(reflector, index, items[index]))

        await run_bounded(todo, run, concurrency)

    return execute


async def _batch(
    execute: Execute,
    items: list[Prompt],
    output: str | os.PathLike[str] | None,
    resume: bool,
    progress: bool | str,
    on_item: Callable[[BatchItem], Awaitable[None] | None] | None,
) -> list[BatchItem]:
    results, file = _open_output(items, output, resume)
    todo = [i for i in range(len(items)) if i not in results]
    writer = _Writer(file)
    bar = progress_bar(
        len(items),
        initial=len(results),
        enabled=bool(progress),
        desc=progress if isinstance(progress, str) else "reflectkit",
        unit="item",
        dynamic_ncols=True,
    )
    failures = 0

    async def finish(item: BatchItem) -> None:
        nonlocal failures
        index = item.index
        results[index] = item
        writer.write(item)
        failures += item.error is not None
        if failures:
            bar.set_postfix(failed=failures, refresh=False)
        bar.update(1)
        if on_item is not None:
            outcome = on_item(item)
            if inspect.isawaitable(outcome):
                await outcome

    try:
        # A configuration error in one item (or an on_item that raised) ends the batch.
        await execute(todo, finish)
    finally:
        bar.close()
        if file is not None:
            file.close()
    return [results[i] for i in range(len(items))]


def batch(
    prompts: Sequence[Prompt],
    model: str | None = None,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    output: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool | str = True,
    reflector: Reflector | None = None,
    on_item: Callable[[BatchItem], Awaitable[None] | None] | None = None,
    ray: bool | str | None = None,
    ray_actors: int | None = None,
    **settings: Any,
) -> list[BatchItem]:
    """Sync :func:`abatch`; safe where an event loop is already running (Jupyter)."""
    return run_sync(
        abatch(
            prompts,
            model,
            concurrency=concurrency,
            output=output,
            resume=resume,
            progress=progress,
            reflector=reflector,
            on_item=on_item,
            ray=ray,
            ray_actors=ray_actors,
            **settings,
        )
    )
