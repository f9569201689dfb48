"""Jupyter display: a result as escaped HTML, and the live view of a streaming run."""

from __future__ import annotations

import html
import sys
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import reflectkit as rk
from reflectkit.events import ReflectEvent
from reflectkit.integrations.display import LiveView, live, result_html
from reflectkit.testing import ScriptedLLM, fail
from tests.conftest import QUESTION, verdict

SCRIPT = "<script>alert('pwned')</script>"


def _slipping(**stream: Any) -> ScriptedLLM:
    return ScriptedLLM(
        [
            f"<thinking>x = 7, 7 - 3 = 5 {SCRIPT}</thinking><output>5 <b>bold</b></output>",
            verdict(False, f"7 - 3 is 4 {SCRIPT}", score=3),
            "<thinking>7 - 3 = 4</thinking><reflection>I subtracted wrongly.</reflection>"
            "<output>4</output>",
            verdict(True, score=10),
        ],
        **stream,
    )


class Frames:
    """A publish function that keeps every frame."""

    def __init__(self) -> None:
        self.frames: list[tuple[dict[str, str], bool]] = []

    def __call__(self, bundle: dict[str, str], first: bool) -> None:
        self.frames.append((bundle, first))

    @property
    def html(self) -> list[str]:
        return [bundle["text/html"] for bundle, _ in self.frames]


def test_result_html_puts_the_answer_first_and_folds_the_rest() -> None:
    result = rk.reflect(QUESTION, model=_slipping().model)
    page = result._repr_html_()
    assert page == result_html(result)
    answer = page.index('class="reflectkit-answer"')
    assert page[answer:].split(">", 1)[1].startswith("4</div>")
    assert answer < page.index("<details")
    assert "stop: passed" in page
    assert "2 drafts" in page
    assert "4 calls" in page
    assert f"{result.usage.total_tokens} tokens" in page
    assert page.count("<details") == page.count("</details>") >= 3
    for folded in ("Thinking (1)", "Reflections (1)", "Drafts and critiques (2)"):
        assert f"<summary>{folded}</summary>" in page
    assert "critique: <b>revise</b>, score 3" in page
    assert "critique: <b>pass</b>, score 10" in page
    assert "Revision 2</b> (the answer)" in page


def test_model_text_is_escaped_not_run() -> None:
    result = rk.reflect(QUESTION, model=_slipping().model, max_iterations=1)
    page = result_html(result)
    assert "<script" not in page
    assert "<b>bold</b>" not in page
    escaped = "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;"
    # Shown as text: in the answer's thinking, in draft 1's thinking and in the feedback.
    assert page.count(escaped) == 3
    assert html.unescape(page).count(SCRIPT) == 3
    assert "5 &lt;b&gt;bold&lt;/b&gt;" in page


def test_the_accent_says_whether_the_critic_passed() -> None:
    passed = rk.reflect(QUESTION, model=_slipping().model)
    unpassed = rk.reflect(QUESTION, model=_slipping().model, max_iterations=1)
    assert "#2e7d32" in result_html(passed)
    assert "#2e7d32" not in result_html(unpassed)
    assert "stop: max_iterations" in result_html(unpassed)


async def test_live_view_follows_a_run_and_ends_with_the_result() -> None:
    frames = Frames()
    view = LiveView(frames, interval=0)
    reflector = rk.Reflector(_slipping(chunk_size=3).model)
    result = await view.aconsume(reflector.astream(QUESTION, include_thinking=True))
    assert result.output == "4"
    assert [first for _, first in frames.frames][:2] == [True, False]
    assert sum(first for _, first in frames.frames) == 1
    assert frames.html[-1] == result_html(result)
    assert frames.frames[-1][0]["text/plain"].startswith("4\n[stop: passed")
    during = frames.html[:-1]
    assert any("generate: writing draft 1" in page for page in during)
    assert any("critique: judging draft 1" in page for page in during)
    assert any("Revision 2" in page for page in during)
    assert any("critique: <b>revise</b>, score 3" in page for page in during)
    assert all("<script" not in page for page in frames.html)
    # Streaming text shows up before its step is done.
    assert any("Draft 1</b> …" in page for page in during)


async def test_live_view_throttles_streamed_text_but_not_steps() -> None:
    eager, lazy = Frames(), Frames()
    await LiveView(eager, interval=0).aconsume(
        rk.Reflector(_slipping(chunk_size=1).model).astream(QUESTION)
    )
    await LiveView(lazy, interval=3600).aconsume(
        rk.Reflector(_slipping(chunk_size=1).model).astream(QUESTION)
    )
    assert len(lazy.frames) < len(eager.frames)
    steps = [p for p in lazy.html if "critique: judging" in p]
    assert steps  # step changes are always shown
    assert lazy.html[-1].startswith('<div class="reflectkit-result"')


def test_live_view_of_a_single_pass_run_shows_the_answer_as_it_streams() -> None:
    frames = Frames()
    fake = ScriptedLLM(["<thinking>2+2</thinking><output>four <i>4</i></output>"], chunk_size=2)
    reflector = rk.Reflector(fake.model, mode="single")
    result = LiveView(frames, interval=0).consume(reflector.stream("2+2"))
    assert result.output == "four <i>4</i>"
    assert any("four &lt;i" in page for page in frames.html[:-1])


def test_live_view_shows_a_failure_and_raises_it() -> None:
    frames = Frames()
    fake = ScriptedLLM(["<output>5</output>", fail(400, "bad request")])
    reflector = rk.Reflector(fake.model)
    with pytest.raises(rk.ProviderRequestError):
        LiveView(frames, interval=0).consume(reflector.stream(QUESTION))
    assert "ProviderRequestError" in frames.html[-1]
    assert "failed" in frames.frames[-1][0]["text/plain"]


def test_live_view_shows_reflexion_lessons() -> None:
    first = rk.reflect(QUESTION, model=_slipping().model, max_iterations=1)
    view = LiveView(interval=0)
    view.handle(rk.StepStarted("generate", 1))
    view.handle(rk.TrialEvent(1, first, "Check <subtractions>."))
    view.handle(rk.StepStarted("generate", 1))
    page = view.html()
    assert "lesson 1: <span" in page
    assert "Check &lt;subtractions&gt;." in page
    assert "lesson 1: Check <subtractions>." in view.text()


def test_a_stream_without_a_result_is_an_error() -> None:
    events: list[ReflectEvent] = [rk.StepStarted("generate", 1)]
    with pytest.raises(rk.InputError, match="without a ResultEvent"):
        LiveView().consume(events)


def _no_ipython(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "IPython", None)
    monkeypatch.setitem(sys.modules, "IPython.display", None)


def test_live_without_ipython_says_what_to_install_before_reading_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_ipython(monkeypatch)
    read: list[int] = []

    def events() -> Iterator[ReflectEvent]:
        read.append(1)
        yield rk.StepStarted("generate", 1)

    with pytest.raises(rk.ConfigurationError, match="needs IPython: pip install ipykernel"):
        live(events())
    assert read == []


class FakeIPython:
    """Stands in for IPython.display: records display and update_display calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, dict[str, str], str]] = []
        module = types.ModuleType("IPython.display")
        module.display = self.display  # type: ignore[attr-defined]
        module.update_display = self.update_display  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "IPython.display", module)

    def display(self, bundle: dict[str, str], *, raw: bool, display_id: str) -> None:
        assert raw
        self.calls.append(("display", bundle, display_id))

    def update_display(self, bundle: dict[str, str], *, raw: bool, display_id: str) -> None:
        assert raw
        self.calls.append(("update", bundle, display_id))


def test_live_displays_once_then_updates_the_same_output(monkeypatch: pytest.MonkeyPatch) -> None:
    ipython = FakeIPython(monkeypatch)
    result = live(rk.Reflector(_slipping().model).stream(QUESTION), interval=0)
    assert result.output == "4"
    kinds = [kind for kind, _, _ in ipython.calls]
    assert kinds[0] == "display"
    assert set(kinds[1:]) == {"update"}
    assert len({display_id for _, _, display_id in ipython.calls}) == 1
    assert ipython.calls[-1][1]["text/html"] == result_html(result)


async def test_live_awaits_an_async_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    ipython = FakeIPython(monkeypatch)
    stream: AsyncIterator[ReflectEvent] = rk.Reflector(_slipping().model).astream(QUESTION)
    result = await live(stream)
    assert result.stop_reason == "passed"
    assert ipython.calls[-1][1]["text/html"] == result_html(result)
