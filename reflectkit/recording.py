"""Recording a run: its entry in the run log and its trace span, around the run's events.

A run is started in the run log (:mod:`reflectkit.stores.runlog`) and opened as one
``reflectkit.run`` span (:mod:`reflectkit.tracing`) before its first step; each
:class:`~reflectkit.events.StepEvent` is logged as it passes; the result closes both, with the
run's and thread's ids set on it. A run that fails, or that the caller stops, is recorded as
failed (stopping as a cancellation) with the partial result a :class:`~reflectkit.RunError`
carries, and the error itself gets the ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from reflectkit import tracing
from reflectkit.errors import RunError
from reflectkit.events import ReflectEvent, ResultEvent, StepEvent
from reflectkit.messages import Message
from reflectkit.result import partial_result
from reflectkit.stores.runlog import RunLog

__all__ = ["Recording"]


class Recording:
    """One run's record in the run log (when there is one) and its span (when tracing)."""

    def __init__(
        self,
        log: RunLog | None,
        *,
        messages: tuple[Message, ...],
        config: dict[str, Any],
        model: str,
        mode: str,
        thread_id: str | None,
    ) -> None:
        self.log = log
        self.thread_id = thread_id
        self.run_id: str | None = None
        if log is not None:
            # Recording only queues the write for the run log's writer thread: neither the
            # disk nor another process holding the file's lock ever stalls the event loop.
            self.run_id = log.start(
                messages=messages, config=config, model=model, mode=mode, thread_id=thread_id
            )
        attributes: dict[str, str | int] = {"model": model, "mode": mode}
        attributes.update({"run_id": self.run_id} if self.run_id else {})
        attributes.update({"thread_id": thread_id} if thread_id else {})
        self.span: Any = tracing.start_run(attributes)
        """The run's span, the parent of the step spans (None without tracing)."""

    async def around(self, events: AsyncGenerator[ReflectEvent]) -> AsyncGenerator[ReflectEvent]:
        """``events``, recorded as they pass; the result gets the run's and thread's ids."""
        log, run_id = self.log, self.run_id
        done = False  # the result was handed over: closing the stream after it is no failure
        try:
            async with aclosing(events) as stream:
                async for event in stream:
                    if isinstance(event, StepEvent) and log is not None and run_id is not None:
                        log.step_event(run_id, event)
                    elif isinstance(event, ResultEvent):
                        ids = {"run_id": run_id, "thread_id": self.thread_id}
                        result = event.result.model_copy(update=ids)
                        event = ResultEvent(result)
                        if log is not None and run_id is not None:
                            log.finish(run_id, result)
                        stop = result.stop_reason.value
                        tracing.end_run(self.span, stop_reason=stop, usage=result.usage)
                        self.span, done = None, True
                    yield event
        except BaseException as error:
            if done:
                raise
            stopped = isinstance(error, (GeneratorExit, asyncio.CancelledError))
            recorded = asyncio.CancelledError("the caller stopped the run") if stopped else error
            partial = partial_result(error)
            if isinstance(error, RunError):
                error.run_id, error.thread_id = run_id, self.thread_id
            if log is not None and run_id is not None:
                log.fail(run_id, recorded, partial)
            tracing.end_run(self.span, error=recorded)
            raise
