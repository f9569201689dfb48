"""Reflexion: whole attempts (trials) with lessons learnt in between, kept in episodic memory.

A trial is one run of the loop. When it ends without passing its critic and trials remain, the
model is shown the question, its answer and the critic's feedback, and writes a short lesson
(the ``lesson`` template); the lesson is stored, and the next trial sees it with the request.
When a trial passes, the lessons it was shown are marked as having led to a pass; only such
lessons are offered to *other* tasks later, ranked by text similarity
(:meth:`~reflectkit.stores.memory.LessonStore.relevant`). Lessons of the same task are always
offered.

A task is named by its ``task_key`` (pass one to group related runs, e.g. a HumanEval task id);
by default it is a hash of the question's text, so asking the same question again finds its
lessons. Without a configured memory, ``trials > 1`` keeps lessons in memory for the run only.

A trial whose critic failed (stop reason ``critic_error``, with ``on_critic_error="keep_best"``)
is the last: the run's answer is that trial's best-judged draft.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

from reflectkit.errors import ConfigurationError
from reflectkit.events import ReflectEvent, ResultEvent, TrialEvent
from reflectkit.messages import Conversation
from reflectkit.result import ReflectionResult, StopReason, TrialRecord
from reflectkit.runtime import Runtime
from reflectkit.stores.memory import Lesson, LessonStore, Outcome
from reflectkit.tags import ParseStatus, parse
from reflectkit.usage import Usage

__all__ = ["LESSONS_SHOWN", "Reflexion", "open_memory", "task_key_for"]

Trial = Callable[[list[str]], AsyncGenerator[ReflectEvent]]
"""One trial: a run of the loop shown the given lessons; its events end with its result."""

LESSONS_SHOWN = 3
"""How many lessons a trial is shown at most (newest of the task first, then similar tasks')."""


def task_key_for(question: str) -> str:
    """The default task key: a hash of the question, whitespace and case normalised."""
    normal = " ".join(question.split()).casefold()
    return "q:" + hashlib.sha256(normal.encode("utf-8")).hexdigest()[:16]


def open_memory(setting: Any, trials: int) -> tuple[LessonStore | None, bool]:
    """The store for a ``memory=`` setting, and whether the caller owns (must close) it."""
    if isinstance(setting, LessonStore):
        return setting, False
    if setting is True:
        return LessonStore(), True
    if isinstance(setting, (str, Path)):
        return LessonStore(setting), True
    if setting is not None and setting is not False:
        raise ConfigurationError(
            f"memory must be True, a path or a LessonStore, not {type(setting).__name__}"
        )
    if trials > 1:
        return LessonStore(":memory:"), True
    return None, False


class Reflexion:
    """Runs the trials of one question and keeps the store up to date."""

    def __init__(self, runtime: Runtime, store: LessonStore, task_key: str | None) -> None:
        self.runtime = runtime
        self.store = store
        self.task_key = task_key
        self.records: list[TrialRecord] = []
        self.spent = Usage()
        self.shown: list[Lesson] = []

    async def trials(
        self, conversation: Conversation, trial: Trial
    ) -> AsyncGenerator[ReflectEvent]:
        """Run ``trial`` (one run of the loop, given the lessons to show) until a trial passes or
        none remain: each trial's events, a :class:`TrialEvent` after each failed trial, and
        last the run's :class:`ResultEvent` (see :meth:`finish`)."""
        lessons: list[str] | None = await self.start(conversation)
        number = 0
        while lessons is not None:
            number += 1
            result: ReflectionResult | None = None
            async with aclosing(trial(lessons)) as events:
                async for event in events:
                    if isinstance(event, ResultEvent):
                        result = event.result
                    else:
                        yield event
            assert result is not None  # a trial always ends with its result
            lessons = await self.after(number, result, conversation)
            if lessons is None:
                yield ResultEvent(self.finish(result))
            else:
                yield TrialEvent(number, result, self.records[-1].lesson or "")

    async def start(self, conversation: Conversation) -> list[str]:
        """Look up the lessons for the first trial; returns their texts."""
        self.task_key = self.task_key or task_key_for(conversation.question)
        self.shown = await asyncio.to_thread(
            self.store.relevant, self.task_key, conversation.question, limit=LESSONS_SHOWN
        )
        return [lesson.text for lesson in self.shown]

    async def after(
        self, number: int, result: ReflectionResult, conversation: Conversation
    ) -> list[str] | None:
        """Record a finished trial. Returns the next trial's lessons, or None when done."""
        self.spent = self.spent + result.usage
        # A failed critic (on_critic_error="keep_best") ends the trials too: with no verdict there
        # is nothing to learn a lesson from, and the next trial's critic would likely fail again.
        last = number >= self.runtime.config.trials or result.stop_reason is StopReason.CRITIC_ERROR
        if result.passed or last:
            outcome: Outcome = "passed" if result.passed else "failed"
            for lesson in self.shown:
                if lesson.outcome != "passed":
                    await asyncio.to_thread(self.store.set_outcome, lesson.id, outcome)
            self.records.append(
                TrialRecord(
                    number=number,
                    output=result.output,
                    stop_reason=result.stop_reason,
                    passed=result.passed,
                    usage=result.usage,
                )
            )
            return None
        text, usage = await self._lesson(conversation, result)
        self.spent = self.spent + usage
        assert self.task_key is not None
        new = await asyncio.to_thread(self.store.add, self.task_key, conversation.question, text)
        self.records.append(
            TrialRecord(
                number=number,
                output=result.output,
                stop_reason=result.stop_reason,
                passed=False,
                lesson=text,
                usage=result.usage + usage,
            )
        )
        self.shown = [new, *(lesson for lesson in self.shown if lesson.id != new.id)]
        self.shown = self.shown[:LESSONS_SHOWN]
        return [lesson.text for lesson in self.shown]

    def finish(self, result: ReflectionResult) -> ReflectionResult:
        """The last trial's result, with every trial recorded and the whole run's usage."""
        return result.model_copy(
            update={
                "trials": self.records,
                "lessons": [lesson.text for lesson in self.shown],
                "usage": self.spent,
            }
        )

    async def _lesson(
        self, conversation: Conversation, result: ReflectionResult
    ) -> tuple[str, Usage]:
        final = result.iterations[result.final_iteration - 1]
        judged = [it.verdict for it in result.iterations if it.verdict is not None]
        verdict = final.verdict or (judged[-1] if judged else None)
        feedback = verdict.feedback if verdict and verdict.feedback else "It did not pass."
        messages = self.runtime.builder.lesson(conversation.question, result.output, feedback)
        completion = await self.runtime.generator.complete(messages)
        parsed = parse(completion.text, self.runtime.config.scheme)
        text = parsed.output if parsed.status is not ParseStatus.EMPTY else ""
        return (text.strip() or feedback.strip()), completion.usage
