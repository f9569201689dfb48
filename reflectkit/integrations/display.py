"""Results and runs in Jupyter: a result as HTML, and a live view of a run as it streams.

:func:`result_html` is what ``ReflectionResult._repr_html_`` shows: the answer first, then the
stop reason and usage, with the thinking, reflections, drafts and critiques folded in
``<details>``. :func:`live` consumes the events of :meth:`~reflectkit.Reflector.astream` (or the
sync ``stream``) and keeps one notebook output up to date (IPython's ``update_display``): step
progress and the drafts as they are written, then the result's HTML. :class:`LiveView` is the
same machinery without IPython, for other front ends.

The HTML comes from ``reflectkit/templates/result.html.j2`` and ``live.html.j2``, rendered with
autoescaping on: model text is shown as text, never run as markup or script. IPython is needed
only by :func:`live`, and imported only there.
"""

from __future__ import annotations

import importlib
import time
import uuid
from collections.abc import AsyncIterable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

from reflectkit.errors import ConfigurationError, InputError
from reflectkit.events import DraftDelta, ResultEvent, StepEvent, StepStarted, TrialEvent
from reflectkit.resources import render_html
from reflectkit.result import result_facts, result_html
from reflectkit.tags import OutputDelta, OutputReset, ReflectionDelta, TagDelta, ThinkingDelta

if TYPE_CHECKING:
    from reflectkit.events import ReflectEvent
    from reflectkit.result import ReflectionResult

__all__ = ["LiveView", "Publish", "live", "result_html"]

Publish = Callable[[dict[str, str], bool], None]
"""Where a :class:`LiveView` sends each frame: a MIME bundle (``text/html`` and
``text/plain``) and whether it is the first frame (display it) or a later one (replace it)."""


@dataclass
class _Draft:
    number: int
    kind: str
    answer: str = ""
    thinking: str = ""
    verdict: dict[str, Any] | None = None
    done: bool = False


class LiveView:
    """What a person watching a run wants to see, kept up to date from its events.

    Feed it every event with :meth:`handle` (or let :meth:`consume` / :meth:`aconsume` read a
    whole stream); it sends a frame to ``publish`` when something visible changed: at once for
    steps and the result, at most every ``interval`` seconds for text as it streams. The last
    frame is the result's HTML (:func:`result_html`), or the view with the error when the stream
    raised. ``publish=None`` keeps the frames to yourself: call :meth:`html`.
    """

    def __init__(self, publish: Publish | None = None, *, interval: float = 0.2) -> None:
        self.publish = publish
        self.interval = interval
        self.result: ReflectionResult | None = None
        self.status = "starting"
        self.error: str | None = None
        self._drafts: dict[int, _Draft] = {}
        self._answer = ""
        self._lessons: list[str] = []
        self._shown = False
        self._last = 0.0

    def handle(self, event: ReflectEvent) -> None:
        """Take in one event and publish a frame if it is time to."""
        streamed = isinstance(event, (DraftDelta, TagDelta))
        if isinstance(event, ResultEvent):
            self.result = event.result
            self.status = f"finished: {event.result.stop_reason.value}"
        elif isinstance(event, StepStarted):
            self._started(event)
        elif isinstance(event, DraftDelta):
            self._draft_text(self._draft(event.iteration), event.delta)
        elif isinstance(event, OutputReset):
            self._answer = ""  # the model replaced its answer: show the new one alone
        elif isinstance(event, OutputDelta):
            self._answer += event.text
        elif isinstance(event, StepEvent):
            self._finished(event)
        elif isinstance(event, TrialEvent):
            self._lessons.append(event.lesson)
            self._drafts, self._answer = {}, ""
            self.status = f"trial {event.number} failed; trying again"
        self._publish(force=not streamed)

    def fail(self, error: BaseException) -> None:
        """Show that the run failed with ``error``."""
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        self.error = f"{type(error).__name__}: {first}".rstrip(": ")
        self.status = "failed"
        self._publish(force=True)

    def _draft(self, number: int, kind: str | None = None) -> _Draft:
        draft = self._drafts.get(number)
        if draft is None:
            draft = self._drafts[number] = _Draft(number, kind or _kind(number))
        return draft

    def _started(self, event: StepStarted) -> None:
        if event.node in ("generate", "revise"):
            self._draft(event.iteration, event.node)
            what = "draft" if event.node == "generate" else "revision"
            self.status = f"{event.node}: writing {what} {event.iteration}"
        elif event.node == "critique":
            self.status = f"critique: judging draft {event.iteration}"
        else:
            self.status = f"{event.node} {event.iteration}"

    @staticmethod
    def _draft_text(draft: _Draft, delta: TagDelta) -> None:
        if isinstance(delta, OutputReset):
            draft.answer = ""
        elif isinstance(delta, OutputDelta):
            draft.answer += delta.text
        elif isinstance(delta, (ThinkingDelta, ReflectionDelta)):
            draft.thinking += delta.text

    def _finished(self, event: StepEvent) -> None:
        if event.draft is not None:
            draft = self._draft(event.iteration, event.node)
            draft.answer, draft.done = event.draft.output, True
        if event.verdict is not None:
            verdict = event.verdict
            self._draft(event.iteration).verdict = {
                "decision": "pass" if verdict.passed else "revise",
                "score": verdict.score,
                "feedback": verdict.feedback,
            }
        if event.stop_reason is not None:
            self.status = f"stopping: {event.stop_reason.value}"

    def html(self) -> str:
        """The current frame as HTML."""
        if self.result is not None:
            return result_html(self.result)
        return render_html(
            "live.html.j2",
            status=self.status,
            drafts=[vars(d) for d in sorted(self._drafts.values(), key=lambda d: d.number)],
            answer=self._answer,
            lessons=self._lessons,
            error=self.error,
        )

    def text(self) -> str:
        """The current frame as plain text (for terminals and logs)."""
        if self.result is not None:
            return f"{self.result.output}\n[{' · '.join(result_facts(self.result))}]"
        lines = [f"reflectkit · {self.status}"]
        for draft in sorted(self._drafts.values(), key=lambda d: d.number):
            lines.append(f"  {draft.kind} {draft.number}: {' '.join(draft.answer.split())}")
            if draft.verdict is not None:
                lines.append(f"    critique: {draft.verdict['decision']}")
        lines += [f"  lesson {n}: {lesson}" for n, lesson in enumerate(self._lessons, start=1)]
        if self.error:
            lines.append(self.error)
        return "\n".join(lines)

    def _publish(self, *, force: bool) -> None:
        if self.publish is None:
            return
        now = time.monotonic()
        if not force and self._shown and now - self._last < self.interval:
            return
        self.publish({"text/html": self.html(), "text/plain": self.text()}, not self._shown)
        self._shown, self._last = True, now

    def _outcome(self) -> ReflectionResult:
        if self.result is None:
            raise InputError("the events ended without a ResultEvent: pass a whole run's stream")
        return self.result

    def consume(self, events: Iterable[ReflectEvent]) -> ReflectionResult:
        """Handle every event of a sync stream (``Reflector.stream``) and return the result.
        If the stream raises, the view shows the error and the error propagates."""
        try:
            for event in events:
                self.handle(event)
        except BaseException as error:
            self.fail(error)
            raise
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
        return self._outcome()

    async def aconsume(self, events: AsyncIterable[ReflectEvent]) -> ReflectionResult:
        """:meth:`consume` for an async stream (``Reflector.astream``)."""
        try:
            async for event in events:
                self.handle(event)
        except BaseException as error:
            self.fail(error)
            raise
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()
        return self._outcome()


def _kind(number: int) -> str:
    return "generate" if number == 1 else "revise"


def _notebook_publisher() -> Publish:
    """A publisher that shows the first frame as a notebook output and replaces it after."""
    try:
        ipython_display = importlib.import_module("IPython.display")
    except ImportError:
        raise ConfigurationError(
            "reflectkit.integrations.display.live shows runs in Jupyter and needs IPython: "
            "pip install ipykernel (or use LiveView with your own publish function)"
        ) from None
    display_id = uuid.uuid4().hex

    def publish(bundle: dict[str, str], first: bool) -> None:
        if first:
            ipython_display.display(bundle, raw=True, display_id=display_id)
        else:
            ipython_display.update_display(bundle, raw=True, display_id=display_id)

    return publish


@overload
def live(
    events: AsyncIterable[ReflectEvent], *, interval: float = 0.2
) -> Coroutine[Any, Any, ReflectionResult]: ...
@overload
def live(events: Iterable[ReflectEvent], *, interval: float = 0.2) -> ReflectionResult: ...
def live(
    events: AsyncIterable[ReflectEvent] | Iterable[ReflectEvent], *, interval: float = 0.2
) -> ReflectionResult | Coroutine[Any, Any, ReflectionResult]:
    """Show a run live in a notebook and return its result.

    ``events`` is a run's stream: ``await live(reflector.astream(question))`` (an async stream
    gives a coroutine to await; notebooks allow top-level ``await``), or
    ``live(reflector.stream(question))``. One output cell shows the steps and drafts as they are
    written, at most every ``interval`` seconds, and ends as the result's HTML. Raises
    :class:`~reflectkit.ConfigurationError` at once, before reading any event, when IPython is
    not installed.
    """
    view = LiveView(_notebook_publisher(), interval=interval)
    if isinstance(events, AsyncIterable):
        return view.aconsume(events)
    return view.consume(events)
