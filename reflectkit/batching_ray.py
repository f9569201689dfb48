"""A batch's prompts run on Ray actors (``batch(..., ray=True)``), recorded by the driver.

:func:`~reflectkit.batching.abatch` keeps its driver-side code (resume, the JSONL writer, the
progress bar, ``on_item``) whichever executor runs the prompts; this module is the Ray one. Each
actor builds one :class:`~reflectkit.Reflector` from the driver's configuration and runs the
batch's prompts on it, ``concurrency`` at a time; the items come back to the driver, which writes
them as it writes its own.

Where state lives when workers span machines (docs/scale.md):

- **The run log is the driver's.** Actors run with ``run_log=False``; the driver records one
  entry per prompt from the item that comes back (finished with its result, or failed with its
  error and partial result), in its own run log, and the result carries that run's id as an
  in-process run's does. The entry has no per-step rows (the steps stayed on the actor); the
  result's iterations hold the drafts and verdicts.
- **Lesson memory must be a file every worker can reach.** ``memory=True`` (the default file
  in each machine's own user data directory) and an in-memory store would split lessons per
  actor without saying so, so they are refused; a path is accepted and opened by every actor,
  which is right for a local cluster or a shared file system and the user's promise otherwise.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from reflectkit.api import Prompt, Reflector
from reflectkit.batch_items import BatchError, BatchItem, Execute, Finish, run_item
from reflectkit.config import ReflectConfig
from reflectkit.errors import ConfigurationError, RunError
from reflectkit.messages import to_conversation
from reflectkit.models.llm import check_model
from reflectkit.ray_pool import run_on_ray
from reflectkit.stores.memory import LessonStore

__all__ = ["BatchWorkerFactory", "ray_executor"]

Job = tuple[int, Prompt]


def _shared_memory(setting: Any) -> Any:
    """The lesson memory setting the actors get: a path every worker opens, or none."""
    if setting is None or setting is False:
        return setting
    if isinstance(setting, LessonStore):
        setting = setting.path
    if isinstance(setting, (str, os.PathLike)) and str(setting) not in ("", ":memory:"):
        return str(Path(setting).expanduser().resolve())
    raise ConfigurationError(
        "lesson memory on Ray must be a file every worker can reach (memory='/shared/lessons"
        ".sqlite3'): memory=True would give each machine its own"
    )


@dataclasses.dataclass(frozen=True)
class BatchWorkerFactory:
    """What an actor builds its worker from: the driver's configuration, without a run log."""

    config: ReflectConfig

    @classmethod
    def of(cls, reflector: Reflector) -> BatchWorkerFactory:
        update = {"run_log": False, "memory": _shared_memory(reflector.config.memory)}
        return cls(reflector.config.model_copy(update=update))

    def __call__(self) -> _BatchWorker:
        reflector = Reflector(config=self.config)
        # Loads LiteLLM and checks the model now, not in the first prompt's time.
        check_model(reflector.model, reflector.config.model_kwargs)
        return _BatchWorker(reflector)


class _BatchWorker:
    """One actor's Reflector: a prompt in, its :class:`BatchItem` out (picklable: no exception
    object, only what it said)."""

    def __init__(self, reflector: Reflector) -> None:
        self.reflector = reflector

    async def __call__(self, job: Job) -> BatchItem:
        index, prompt = job
        item = await run_item(self.reflector, index, prompt)
        return dataclasses.replace(item, exception=None)

    def close(self) -> None:
        self.reflector.close()


def _recorded(reflector: Reflector, item: BatchItem) -> BatchItem:
    """``item`` recorded in the driver's run log (when it has one), its result given the run's id
    as the in-process path gives it."""
    log = reflector._run_log  # the driver's own: the actors have none
    if log is None:
        return item
    run_id = log.start(
        messages=to_conversation(item.prompt).messages,
        config=reflector._public_config,
        model=reflector.model,
        mode=reflector.mode,
        thread_id=None,
    )
    if item.result is not None:
        result = item.result.model_copy(update={"run_id": run_id})
        log.finish(run_id, result)
        return dataclasses.replace(item, result=result)
    error = item.error or BatchError("RunError", "failed")
    log.fail(run_id, _reported(error), error.partial)
    return item


def _reported(error: BatchError) -> RunError:
    """An actor's failure as the run log records it (type name and message): the exception
    itself stayed on the actor, so a stand-in of the same name carries what it said."""
    name = error.type if error.type.isidentifier() else "RunError"
    kind: type[RunError] = type(name, (RunError,), {})
    return kind(error.message)


def ray_executor(
    reflector: Reflector, prompts: list[Prompt], concurrency: int, address: str, actors: int | None
) -> Execute:
    """The batch's executor on Ray: ``execute(todo, finish)`` runs ``prompts[i]`` for each ``i``
    of ``todo`` on actors configured as ``reflector`` and awaits ``finish(item)`` for each here,
    on the driver, as it comes back."""
    factory = BatchWorkerFactory.of(reflector)

    async def execute(todo: list[int], finish: Finish) -> None:
        async def done(job: Job, item: BatchItem) -> None:
            await finish(_recorded(reflector, item))

        jobs = ((index, prompts[index]) for index in todo)
        await run_on_ray(
            jobs, factory, done, address=address, actors=actors, concurrency=concurrency
        )

    return execute
