"""The parser's rules as runs stream them: the answer a live consumer ends on is the run's answer
(self-corrections, untagged replies, repairs), and long replies are parsed off the event loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import reflectkit as rk
from reflectkit.events import ResultEvent
from reflectkit.integrations.display import LiveView
from reflectkit.server.protocol import Delta
from reflectkit.server.reflection import reflect_stream
from reflectkit.tags import PARSE_IN_THREAD_CHARS, OutputReset, parse
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


# --- Long replies are parsed off the event loop --------------------------------------------


def _long_reply() -> str:
    row = '<tr><td class="n">{n}</td><td><a href="/item/{n}">item {n} &lt; next</a></td></tr>\n'
    rows = "".join(row.format(n=n) for n in range(70_000))  # about 5 MB of HTML, "<" everywhere
    return f"Here is the table.\n<output>\n<table>\n{rows}</table>\n</output>"


async def _max_gap_while(work: Any) -> float:
    """The longest the event loop went without running a 1 ms ticker while ``work`` ran."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    try:
        await work
    finally:
        done.set()
        await ticker
    return max(gaps)


async def test_a_5_mb_reply_does_not_block_the_event_loop() -> None:
    reply = _long_reply()
    assert len(reply) > 4_500_000
    start = time.perf_counter()
    parse(reply)
    parse_seconds = time.perf_counter() - start  # what a parse on the loop would block it for
    fake = ScriptedLLM(["<output>warm</output>", reply])
    reflector = rk.Reflector(fake.model, mode="single", format_help="off", run_log=False)
    await reflector.arun("Warm up")  # LiteLLM's first call sets itself up on the loop
    gap = await _max_gap_while(reflector.arun("Make a table"))
    # The parse runs in a worker thread: the loop keeps ticking (the GIL switches every 5 ms).
    # What is left is LiteLLM's and the fake's own handling of a 5 MB reply, far below a parse.
    assert gap < parse_seconds / 3, (gap, parse_seconds)


async def test_short_replies_are_parsed_inline() -> None:
    calls: list[str] = []
    original = asyncio.to_thread

    async def spy(function: Any, /, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(function, "__name__", repr(function)))
        return await original(function, *args, **kwargs)

    long = "<output>" + "x" * PARSE_IN_THREAD_CHARS + "</output>"
    fake = ScriptedLLM(["<output>4</output>", long])
    reflector = rk.Reflector(fake.model, mode="single", format_help="off", run_log=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(asyncio, "to_thread", spy)
        await reflector.arun("q")
        assert "parse" not in calls
        await reflector.arun("q")
        assert "parse" in calls
