"""The tag protocol: parsing whole replies, streaming them, and escaping user text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflectkit import (
    REFLECTION_TAGS,
    THINK_TAGS,
    ConfigurationError,
    Parsed,
    ParseStatus,
    StreamParser,
    TagScheme,
    parse,
)
from reflectkit.tags import (
    PROVISIONAL_AFTER,
    OutputDelta,
    OutputReset,
    OutsideDelta,
    ReflectionDelta,
    TagDelta,
    ThinkingDelta,
    escape_tags,
)

CHINESE = TagScheme(thinking="推理", reflection="反思", output="输出")


@pytest.mark.parametrize(
    ("text", "output", "thinking", "reflections", "status"),
    [
        (
            "<thinking>5 + x = 12 so x = 7</thinking><output>4</output>",
            "4",
            ["5 + x = 12 so x = 7"],
            [],
            ParseStatus.COMPLETE,
        ),
        (
            "<thinking>a <reflection>wait, b</reflection> c</thinking>\n<output>\n 3 \n</output>",
            "3",
            ["a  c"],
            ["wait, b"],
            ParseStatus.COMPLETE,
        ),
        (
            "<reflection>standalone</reflection><output>x</output>",
            "x",
            [],
            ["standalone"],
            "complete",
        ),
        (
            "<thinking>one</thinking><thinking>two</thinking><output>y</output>",
            "y",
            ["one", "two"],
            [],
            "complete",
        ),
        ("Sure! <thinking>t</thinking> <output>ans</output> Bye.", "ans", ["t"], [], "complete"),
        ("<THINKING >t</ Thinking><  OUTPUT>ans</output >", "ans", ["t"], [], "complete"),
        ("<thinking>t</thinking><output>cut off", "cut off", ["t"], [], ParseStatus.UNCLOSED),
        (
            "<thinking>reasoning, then the answer is 4",
            "",
            ["reasoning, then the answer is 4"],
            [],
            "missing_output",
        ),
        ("<thinking>t</thinking>The answer is 4.", "The answer is 4.", ["t"], [], "missing_output"),
        ("<thinking>never closed <output>4</output>", "4", ["never closed"], [], "complete"),
        ("Just 4.", "Just 4.", [], [], ParseStatus.UNTAGGED),
        ("   \n", "", [], [], ParseStatus.EMPTY),
        ("<output>A</output> and <output>B</output>", "A\n\nB", [], [], "complete"),
        ("a < b and c > d, x <out y", "a < b and c > d, x <out y", [], [], "untagged"),
        ("</output>stray close<output>4</output>", "4", [], [], "complete"),
        ("<output>see <b>bold</b></output>", "see <b>bold</b>", [], [], "complete"),
    ],
)
def test_parse_copes_with_what_models_write(
    text: str, output: str, thinking: list[str], reflections: list[str], status: str
) -> None:
    parsed = parse(text)
    assert parsed.output == output
    assert parsed.thinking == thinking
    assert parsed.reflections == reflections
    assert parsed.status == status


def test_text_outside_tags_is_kept_but_is_not_the_answer() -> None:
    parsed = parse("Sure! <thinking>t</thinking> <output>ans</output> Bye.")
    assert parsed.outside == "Sure!\nBye."
    assert parsed.followed_format


def test_think_tags_take_the_rest_of_the_text_as_the_answer() -> None:
    parsed = parse(
        "<think>\nlet me count: s-t-r-a-w-b-e-r-r-y\n</think>\n\nThere are 3.", THINK_TAGS
    )
    assert parsed.output == "There are 3."
    assert parsed.thinking == ["let me count: s-t-r-a-w-b-e-r-r-y"]
    assert parsed.status is ParseStatus.COMPLETE
    unclosed = parse("<think>still thinking", THINK_TAGS)
    assert unclosed.status is ParseStatus.UNCLOSED
    assert unclosed.output == ""


def test_tags_in_any_script() -> None:
    parsed = parse("<推理>12 - 5 = 7</推理><反思>对</反思><输出>4</输出>", CHINESE)
    assert (parsed.output, parsed.thinking, parsed.reflections) == ("4", ["12 - 5 = 7"], ["对"])
    # The other scheme's tags are plain text in this one.
    assert parse("<output>4</output>", CHINESE).status is ParseStatus.UNTAGGED


@pytest.mark.parametrize(
    "kwargs",
    [
        {"thinking": ""},
        {"thinking": "has space"},
        {"output": "a<b"},
        {"reflection": "x/y"},
        {"thinking": "Same", "output": "same"},
        {"thinking": "x" * 33},
    ],
)
def test_bad_tag_names_are_a_configuration_error(kwargs: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        TagScheme(**kwargs)


def test_tag_split_across_chunks_is_held_back_then_recognised() -> None:
    parser = StreamParser()
    assert parser.feed("<thinking>ab") == [ThinkingDelta("ab", 0)]
    assert parser.feed("c</thin") == [ThinkingDelta("c", 0)]
    assert parser.feed("king><out") == []
    assert parser.feed("put>4") == [OutputDelta("4")]
    assert parser.feed("2  ") == [OutputDelta("2")]  # trailing whitespace waits
    assert parser.feed(" and more</output>") == [OutputDelta("   and more")]
    assert parser.close() == []
    assert parser.result.output == "42   and more"


def test_a_lone_angle_bracket_is_released_when_it_cannot_be_a_tag() -> None:
    parser = StreamParser()
    parser.feed("<output>a <")
    assert parser.feed("= b") == [OutputDelta(" <= b")]


def test_held_back_prefix_is_flushed_as_text_on_close() -> None:
    parser = StreamParser()
    assert parser.feed("<output>x <outp") == [OutputDelta("x")]
    assert parser.close() == [OutputDelta(" <outp")]
    assert parser.result.status is ParseStatus.UNCLOSED


def test_feed_after_close_is_a_programming_error() -> None:
    parser = StreamParser()
    parser.close()
    with pytest.raises(RuntimeError):
        parser.feed("x")
    assert parser.close() == []


# Fragments that make tag-like text likely, plus arbitrary text.
_FRAGMENTS = st.sampled_from(
    [
        "<thinking>",
        "</thinking>",
        "<reflection>",
        "</reflection>",
        "<output>",
        "</output>",
        "<think>",
        "</think>",
        "< Output >",
        "</ THINKING>",
        "<OUTPUT>",
        "<推理>",
        "</推理>",
        "<输出>",
        "<",
        ">",
        "/",
        "<out",
        "put>",
        "</",
        " ",
        "  ",
        "\n",
        "a",
        "42",
        "x y",
        "<b>",
        "&lt;",
        "<   output>",
        "<    output>",
        # What makes a tag a mention (or keeps the stream guessing).
        " tags",
        " tag.",
        " block",
        "the ",
        " in ",
        "with ",
        "`",
        '"',
        "\u201c",
        "\u201d",
        "...",
        " and ",
        ", ",
        ".",
        " then",
        " an",
    ]
)
_TEXT = st.lists(st.one_of(_FRAGMENTS, st.text(max_size=8)), max_size=30).map("".join)


def _stream(text: str, cuts: list[int], scheme: TagScheme) -> tuple[StreamParser, list[TagDelta]]:
    parser = StreamParser(scheme)
    events: list[TagDelta] = []
    start = 0
    for cut in sorted(c % (len(text) + 1) for c in cuts):
        events += parser.feed(text[start:cut])
        start = max(start, cut)
    events += parser.feed(text[start:])
    events += parser.close()
    return parser, events


def _joined(events: list[TagDelta], kind: type[TagDelta], index: int | None = None) -> str:
    return "".join(
        e.text for e in events if type(e) is kind and (index is None or e.index == index)
    )


def _answer(events: list[TagDelta]) -> str:
    """The answer a consumer that takes back withdrawn text shows at the end."""
    answer = ""
    for event in events:
        if isinstance(event, OutputReset):
            assert event.withdrawn == answer  # it withdraws exactly what was shown
            answer = ""
        elif isinstance(event, OutputDelta):
            answer += event.text
    return answer


@settings(max_examples=600, deadline=None)
@given(
    text=_TEXT,
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    scheme=st.sampled_from([REFLECTION_TAGS, THINK_TAGS, CHINESE]),
)
def test_stream_equals_parse_for_any_text_and_any_chunking(
    text: str, cuts: list[int], scheme: TagScheme
) -> None:
    parser, events = _stream(text, cuts, scheme)
    whole = parse(text, scheme)
    assert parser.result == whole
    for i, block in enumerate(whole.thinking):
        assert _joined(events, ThinkingDelta, i) == block
    for i, block in enumerate(whole.reflections):
        assert _joined(events, ReflectionDelta, i) == block
    # The answer as streamed, with withdrawn text taken back, is the answer parsed whole.
    assert _answer(events) == whole.output
    assert _joined(events, OutsideDelta) == whole.outside
    if scheme.output is None:
        assert not any(isinstance(e, OutsideDelta) for e in events)
    # Every output block is kept; the answer is the blocks not superseded.
    if whole.status in (ParseStatus.COMPLETE, ParseStatus.UNCLOSED) and scheme.output:
        assert whole.output == "\n\n".join(o for o in whole.outputs[whole.superseded :] if o)
    # Provisional text is outside text standing in for a missing output block, nothing else.
    provisional = "".join(e.text for e in events if isinstance(e, OutputDelta) and e.provisional)
    if not whole.outputs:
        assert provisional == (whole.outside if scheme.output else "")


@settings(max_examples=300, deadline=None)
@given(text=_TEXT)
def test_escaped_text_never_contains_a_tag(text: str) -> None:
    escaped = escape_tags(text, REFLECTION_TAGS)
    parsed = parse(escaped)
    assert parsed.status in (ParseStatus.UNTAGGED, ParseStatus.EMPTY)
    assert parsed.output == escaped.strip()


def test_escape_leaves_other_angle_brackets_alone() -> None:
    assert escape_tags("a < b <b>x</b> <output>", REFLECTION_TAGS) == "a < b <b>x</b> &lt;output>"
    assert escape_tags("no tags", ()) == "no tags"
    assert escape_tags("<draft>", ("draft",)) == "&lt;draft>"


# --- Several output blocks: a reconsidered answer replaces the earlier one ------------------


@pytest.mark.parametrize(
    ("text", "output", "outputs", "superseded"),
    [
        # The audit's case: an answer, a reflection that corrects it, the corrected answer.
        (
            "<output>3</output>\n<reflection>12 - 5 is 7, not 6: the answer is 4.</reflection>\n"
            "<output>4</output>",
            "4",
            ["3", "4"],
            1,
        ),
        ("<output>3</output><thinking>recount</thinking><output>4</output>", "4", ["3", "4"], 1),
        # A reflection opened inside an open output block closes it and corrects it too.
        ("<output>3 <reflection>no</reflection><output>4</output>", "4", ["3", "4"], 1),
        ("<output>3</output><reflection>no</reflection><output>4", "4", ["3", "4"], 1),
        # No reasoning between: parts of one answer.
        ("<output>A</output>\n<output>B</output>", "A\n\nB", ["A", "B"], 0),
        # An empty new block replaces nothing.
        ("<output>3</output><reflection>hm</reflection><output> </output>", "3", ["3", ""], 0),
        # A correction without a new answer leaves the answer as it was.
        ("<output>3</output><reflection>is that right? yes</reflection>", "3", ["3"], 0),
        (
            "<output>A</output><output>B</output><reflection>r</reflection>"
            "<output>C</output>x<output>D</output><thinking>t</thinking><output></output>",
            "C\n\nD",
            ["A", "B", "C", "D", ""],
            2,
        ),
    ],
)
def test_an_output_after_reconsidering_replaces_the_earlier_answer(
    text: str, output: str, outputs: list[str], superseded: int
) -> None:
    parsed = parse(text)
    assert (parsed.output, parsed.outputs, parsed.superseded) == (output, outputs, superseded)
    assert parsed.output == "\n\n".join(o for o in parsed.outputs[parsed.superseded :] if o)


def test_a_stream_withdraws_a_replaced_answer_with_a_reset() -> None:
    text = "<output>3</output><reflection>no: 4</reflection><output>4</output>"
    parser, events = _stream(text, list(range(0, len(text), 5)), REFLECTION_TAGS)
    answer = [e for e in events if isinstance(e, OutputDelta)]
    assert answer == [OutputDelta("3"), OutputReset(withdrawn="3"), OutputDelta("4")]
    assert _answer(events) == parser.result.output == "4"
    # A consumer that cannot take text back (a chat client) shows the correction as a new
    # paragraph: the reset's text is a blank line.
    assert "".join(e.text for e in answer) == "3\n\n4"


def test_parsed_stays_backwards_compatible() -> None:
    parsed = Parsed("4", ["t"], [], "", ParseStatus.COMPLETE)
    assert (parsed.outputs, parsed.superseded) == ([], 0)
    assert OutputDelta("4") == OutputDelta("4", 0, provisional=False)


# --- Untagged replies, streamed: outside text is the provisional answer ----------------------


def test_a_short_untagged_reply_is_the_answer_when_the_stream_ends() -> None:
    parser = StreamParser()
    assert parser.feed("Just ") == [OutsideDelta("Just")]
    assert parser.feed("4.") == [OutsideDelta(" 4.")]
    # Short outside text may still be a preamble ("Sure! <thinking>..."): it becomes the answer
    # once nothing else can, at the end.
    assert parser.close() == [OutputDelta("Just 4.", provisional=True)]
    assert parser.result.output == "Just 4."


def test_a_long_untagged_reply_streams_as_the_answer_while_it_is_written() -> None:
    sentence = "Paris is the capital of France, and it has been for a very long time. "
    parser = StreamParser()
    answer = ""
    written = 0
    for _ in range(6):
        for event in parser.feed(sentence):
            if isinstance(event, OutputDelta):
                assert event.provisional
                answer += event.text
        written += len(sentence)
        if written >= PROVISIONAL_AFTER + len(sentence):
            assert answer  # live, before the end
    parser.close()
    assert answer == parser.result.output == (sentence * 6).strip()


def test_an_output_block_after_streamed_outside_text_resets_the_answer() -> None:
    preamble = "Sure! " + "I will think about this carefully before answering. " * 5
    parser, events = _stream(preamble + "<output>4</output>", [64, 128, 200, 260], REFLECTION_TAGS)
    answer = [e for e in events if isinstance(e, OutputDelta)]
    assert isinstance(answer[-2], OutputReset)
    assert answer[-2].withdrawn == preamble.strip()
    assert answer[-1] == OutputDelta("4")
    assert parser.result.output == "4"


def test_a_short_preamble_never_shows_as_the_answer() -> None:
    text = "Sure! Let me think.\n<thinking>2 + 2</thinking>\n<output>4</output>\nHope it helps!"
    parser, events = _stream(text, list(range(0, len(text), 3)), REFLECTION_TAGS)
    assert [e for e in events if isinstance(e, OutputDelta)] == [OutputDelta("4")]
    assert parser.result.outside == "Sure! Let me think.\nHope it helps!"


def test_text_after_the_thinking_with_no_output_block_is_the_answer_at_the_end() -> None:
    parser, events = _stream("<thinking>t</thinking>The answer is 4.", [5, 20], REFLECTION_TAGS)
    assert events[-1] == OutputDelta("The answer is 4.", provisional=True)
    assert parser.result.status is ParseStatus.MISSING_OUTPUT


def test_a_parse_status_is_checkpointed_under_its_public_module_path() -> None:
    """A draft's status goes into a run's checkpoints with its class's module path, and the
    checkpoint serializer rebuilds only the classes it allows by that path: the path stays
    ``reflectkit.tags`` (as checkpoints written before the parser's modules were split say)."""
    from reflectkit.stores.durability import serializer

    kind, data = serializer().dumps_typed(ParseStatus.UNCLOSED)
    assert ParseStatus.__module__ == "reflectkit.tags"
    assert b"reflectkit.tags" in data
    assert serializer().loads_typed((kind, data)) is ParseStatus.UNCLOSED
