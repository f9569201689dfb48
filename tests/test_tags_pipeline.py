"""The parser's rules as runs stream them: the answer a live consumer ends on is the run's answer
(self-corrections, untagged replies, repairs)."""

from __future__ import annotations

from typing import Any

import pytest

import reflectkit as rk
from reflectkit.display import LiveView
from reflectkit.events import ResultEvent
from reflectkit.server.protocol import Delta
from reflectkit.server.reflection import reflect_stream
from reflectkit.tags import OutputReset, parse
from reflectkit.testing import ScriptedLLM

CORRECTED = (
    "<thinking>12 - 5 = 6, and 6 - 3 = 3</thinking><output>3</output>\n"
    "<reflection>12 - 5 is 7, not 6: the number minus 3 is 4.</reflection>\n<output>4</output>"
)


def _answer(events: list[Any]) -> str:
    """The answer a consumer that takes back withdrawn text shows at the end."""
    answer = ""
    for event in events:
        if isinstance(event, OutputReset):
            answer = ""
        elif isinstance(event, rk.OutputDelta):
            answer += event.text
    return answer


async def test_a_single_pass_streams_a_self_correction_and_ends_on_the_corrected_answer() -> None:
    fake = ScriptedLLM([CORRECTED], chunk_size=4)
    events = [e async for e in rk.Reflector(fake.model, mode="single").astream("q")]
    result = events[-1].result
    assert result.output == parse(CORRECTED).output == "4"
    assert _answer(events) == "4"
    resets = [e for e in events if isinstance(e, OutputReset)]
    assert [r.withdrawn for r in resets] == ["3"]


async def test_a_live_view_shows_the_corrected_answer_alone() -> None:
    fake = ScriptedLLM([CORRECTED], chunk_size=4)
    view = LiveView()
    async for event in rk.Reflector(fake.model, mode="single").astream("q"):
        if isinstance(event, ResultEvent):
            break  # the frame before the result: what was live
        view.handle(event)
    assert view._answer == "4"


async def test_the_proxy_streams_the_correction_and_answers_whole_with_the_corrected_one() -> None:
    fake = ScriptedLLM([CORRECTED, CORRECTED], chunk_size=4)
    reflector = rk.Reflector(fake.model, mode="single", run_log=False)
    messages = [{"role": "user", "content": "q"}]
    content = "".join(
        [
            item.content
            async for item in reflect_stream(reflector, messages, include_reasoning=False)
            if isinstance(item, Delta) and item.content
        ]
    )
    # An OpenAI stream cannot take "3" back: the correction follows as a new paragraph.
    assert content == "3\n\n4"
    assert (await reflector.arun(messages)).output == "4"


@pytest.mark.parametrize("reply", ["Just 4, plainly.", "<thinking>7 - 3</thinking>It is 4."])
async def test_an_untagged_single_pass_streams_its_answer(reply: str) -> None:
    # Before, a reply without an output block streamed no answer at all: only OutsideDelta,
    # which a single pass does not pass on, so a streaming client got empty content.
    fake = ScriptedLLM([reply], chunk_size=3)
    reflector = rk.Reflector(fake.model, mode="single", format_help="off")
    events = [e async for e in reflector.astream("q")]
    assert _answer(events) == events[-1].result.output == parse(reply).output


async def test_a_long_untagged_single_pass_streams_while_it_is_written() -> None:
    reply = "Paris is the capital of France. " * 40
    fake = ScriptedLLM([reply], chunk_size=16)
    reflector = rk.Reflector(fake.model, mode="single", format_help="off")
    events = [e async for e in reflector.astream("q")]
    deltas = [e for e in events if isinstance(e, rk.OutputDelta)]
    assert len(deltas) > 10  # live, not one piece at the end
    assert all(d.provisional for d in deltas)
    assert "".join(d.text for d in deltas) == events[-1].result.output == reply.strip()


async def test_a_reply_that_gets_repaired_streams_only_the_repaired_answer() -> None:
    reply = "I think the number is seven, so the answer is four. " * 6  # long: past provisional
    fake = ScriptedLLM([reply, "<output>4</output>"], chunk_size=8)
    events = [e async for e in rk.Reflector(fake.model, mode="single").astream("q")]
    result = events[-1].result
    assert result.iterations[-1].draft.repaired
    assert [e.text for e in events if isinstance(e, rk.OutputDelta)] == ["4"]
    assert result.output == "4"


async def test_a_failed_repair_still_ends_the_stream_on_the_answer() -> None:
    fake = ScriptedLLM(["Just 4.", "still no tags"], chunk_size=3)
    events = [e async for e in rk.Reflector(fake.model, mode="single").astream("q")]
    result = events[-1].result
    assert not result.iterations[-1].draft.repaired
    assert _answer(events) == result.output == "Just 4."
