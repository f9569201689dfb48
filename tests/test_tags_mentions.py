"""Tags named in prose are text; tags used as tags are structure.

The samples are written in the style of Reflection-70B's published replies (reasoning that
talks about its own tags, reflections that name ``<reflection>``) and of SmolLM2's chatty ones.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflectkit import REFLECTION_TAGS, THINK_TAGS, ParseStatus, StreamParser, parse
from reflectkit.tags import (
    LOOKAHEAD,
    OutputDelta,
    OutsideDelta,
    TagDelta,
    TagScheme,
    ThinkingDelta,
)

REFLECTION_70B_STRAWBERRY = """<thinking>
To solve this problem, I need to count the letter 'r' in "strawberry". I'll reason through it \
step by step here and then give my final answer in the <output> tags.

s-t-r-a-w-b-e-r-r-y: the r's are at positions 3, 8 and 9.

<reflection>
Let me double-check, since the <reflection> block is where I correct mistakes: s, t, r (1), a, \
w, b, e, r (2), r (3), y. The count of 3 is correct.
</reflection>

So there are 3 r's. Now I'll close the <thinking> section and answer.
</thinking>

<output>
There are 3 r's in the word "strawberry".
</output>"""

REFLECTION_70B_ECHOES_ITS_PROMPT = """<thinking>
The user wants me to reason inside <thinking> tags, correct myself inside <reflection> tags if \
needed, and give the final response inside <output> tags.

Comparing 9.11 and 9.9: the tenths digits are 1 and 9, and 1 < 9, so 9.9 is larger.
</thinking>

<output>
9.9 is larger than 9.11.
</output>"""

REFLECTION_70B_CORRECTS_ITSELF = """<thinking>
12 - 5 = 6, so the number is 6, and 6 - 3 = 3.
</thinking>

<output>3</output>

<reflection>
I made an error: 12 - 5 is 7, not 6. I should write the corrected answer in a new <output> \
block rather than leave the wrong one.
</reflection>

<output>4</output>"""

REFLECTION_70B_PLANS_ITS_TAGS = """<thinking>
First I reason, then close with </thinking>, then write <output> with only the answer.
The capital of Australia is Canberra, not Sydney, which is only the largest city.
</thinking>
<output>
Canberra
</output>"""

SMOLLM2_CHATTY = """Sure! Here's my answer in the format you asked for.

<thinking> The user asks what 2 + 2 is. I will think step by step and then put the answer in \
the <output> tag. 2 + 2 = 4. </thinking>

<output> 2 + 2 = 4 </output>

I hope this helps! Let me know if you have any other questions."""

SMOLLM2_BACKTICKS = """Use the `<thinking>` and `<output>` tags like this:
<thinking>7 - 3 = 4</thinking>
<output>4</output>"""

SMOLLM2_QUOTES_AN_EXAMPLE = """<thinking>The format is "<output>answer</output>", so I write \
the number there.</thinking>
<output>12</output>"""

SMOLLM2_INLINE = "The answer should go in the <output> block, so here it is: <output>Paris</output>"


@pytest.mark.parametrize(
    ("text", "output", "thinking", "reflections", "mentions"),
    [
        (
            REFLECTION_70B_STRAWBERRY,
            'There are 3 r\'s in the word "strawberry".',
            1,
            1,
            ["the <output> tags", "the <reflection> block", "the <thinking> section"],
        ),
        (
            REFLECTION_70B_ECHOES_ITS_PROMPT,
            "9.9 is larger than 9.11.",
            1,
            0,
            ["inside <thinking> tags", "inside <reflection> tags", "inside <output> tags"],
        ),
        (REFLECTION_70B_CORRECTS_ITSELF, "4", 1, 1, ["a new <output> block"]),
        (
            REFLECTION_70B_PLANS_ITS_TAGS,
            "Canberra",
            1,
            0,
            ["close with </thinking>,", "write <output> with"],
        ),
        (SMOLLM2_CHATTY, "2 + 2 = 4", 1, 0, ["the <output> tag."]),
        (SMOLLM2_BACKTICKS, "4", 1, 0, ["`<thinking>` and `<output>` tags"]),
        (SMOLLM2_QUOTES_AN_EXAMPLE, "12", 1, 0, ['"<output>answer</output>"']),
        (SMOLLM2_INLINE, "Paris", 0, 0, ["the <output> block"]),
    ],
)
def test_tags_named_in_real_replies_stay_text(
    text: str, output: str, thinking: int, reflections: int, mentions: list[str]
) -> None:
    parsed = parse(text)
    assert parsed.output == output
    assert parsed.status is ParseStatus.COMPLETE
    assert (len(parsed.thinking), len(parsed.reflections)) == (thinking, reflections)
    kept = " ".join([*parsed.thinking, *parsed.reflections, parsed.outside])
    for mention in mentions:
        assert mention in " ".join(kept.split())


@pytest.mark.parametrize(
    "text",
    [
        "I will put the answer in <output> tags",
        "Then close with </thinking>.",
        "Wrap it in `<output>...</output>` when done.",
        "Use <thinking>, <reflection>, and <output> tags.",
        "The <output> should be short.",
        "between <output> and </output>, nothing else",
        "I'll write the answer in <output>, after the reasoning.",
        "the <reflection> part\nand the closing </output> tag",
    ],
)
def test_a_reply_that_only_names_tags_is_untagged(text: str) -> None:
    parsed = parse(text)
    assert parsed.status is ParseStatus.UNTAGGED
    assert parsed.output == text


@pytest.mark.parametrize(
    ("text", "output"),
    [
        # At the start of a line, or followed by its content, a tag is a tag.
        ("Mentions of the <output> block aside:\n<output>4</output>", "4"),
        ("<output>Tags are labels.</output>", "Tags are labels."),
        ("<output>\ntags\n</output>", "tags"),
        ("<output> The answer is 4.</output>", "The answer is 4."),
        ("So the answer is <output>4</output>", "4"),
        ("The answer is in <output>4</output>", "4"),
        ("Here it is in the <output>\n4\n</output>", "4"),
        ("Final answer: <output>4</output>", "4"),
        ('<output>"Hello," she said.</output>', '"Hello," she said.'),
        ('<output>He said "hi"</output> and "bye"', 'He said "hi"'),
        ("<output>Use `git status`</output>", "Use `git status`"),
        ("<output>- one\n- two</output>", "- one\n- two"),
        ("<thinking>a <reflection>wait, b</reflection> c</thinking><output>3</output>", "3"),
        ("<thinking>I'll go with that</thinking>\n<output>4</output>", "4"),
        ("<output>4</output>.", "4"),
    ],
)
def test_tags_used_as_tags_still_open_and_close_blocks(text: str, output: str) -> None:
    parsed = parse(text)
    assert parsed.output == output
    assert parsed.status is ParseStatus.COMPLETE


def test_a_mention_of_think_is_text_for_reasoning_models_too() -> None:
    parsed = parse("I reason in <think> tags first.<think>2 + 2</think>4", THINK_TAGS)
    assert parsed.output == "I reason in <think> tags first.\n4"
    assert parsed.thinking == ["2 + 2"]


def test_the_stream_holds_back_only_what_can_still_make_a_mention() -> None:
    parser = StreamParser()
    assert parser.feed("<thinking>put it in the <output>") == [ThinkingDelta("put it in the")]
    # " t" may become " tags" (a mention) or " the answer" (content): held.
    assert parser.feed(" t") == []
    assert parser.feed("ags.</thinking>") == [ThinkingDelta(" <output> tags.")]
    # At the start of a line and followed by content, a tag is decided at once.
    assert parser.feed("\n<output>4") == [OutputDelta("4")]


def test_lookahead_is_bounded() -> None:
    # An opening quote before a tag makes it a mention only if the quote closes on the line
    # within LOOKAHEAD characters; the stream never holds more than that.
    long = "x" * (LOOKAHEAD + 10)
    parser = StreamParser()
    assert parser.feed('"<output>' + long) == [OutsideDelta('"'), OutputDelta(long)]
    assert parse('"<output>' + long + '"').output == long + '"'
    assert parse('"<output>' + "x" * 10 + '"').status is ParseStatus.UNTAGGED


# --- Properties: classes of mentions and uses ---------------------------------------------

_PROSE = st.text(
    alphabet=st.characters(
        categories=("L", "N", "Zs"), include_characters=".,;:!?'-", exclude_characters='<>`"'
    ),
    max_size=40,
).map(lambda s: " ".join(s.split()))
_ANSWER = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "S", "Zs"), exclude_characters="<>`\"'"),
    min_size=1,
    max_size=30,
).filter(lambda s: not s[0].isspace())  # content right after the tag, as models write it
_NAMES = st.sampled_from(["thinking", "reflection", "output"])
_TAG = st.builds(
    lambda name, closing, case: f"<{'/' if closing else ''}{case(name)}>",
    _NAMES,
    st.booleans(),
    st.sampled_from([str.lower, str.upper, str.title]),
)
_NOUN = st.sampled_from(["tag", "tags", "block", "blocks", "section", "element", "markers"])
_LEAD = st.sampled_from(["the", "in", "inside", "with", "a", "my", "into", "use", "between"])
_GOES_ON = st.sampled_from([", then", " and then", ".", " is where", " should", " when done;"])


def _noun_mention(draw: st.DrawFn) -> str:
    tags = draw(st.lists(_TAG, min_size=1, max_size=3))
    joiner = draw(st.sampled_from([" and ", ", ", " or ", "/", "...", " "]))
    return f"{joiner.join(tags)} {draw(_NOUN)}"


def _quoted_mention(draw: st.DrawFn) -> str:
    quote, close = draw(st.sampled_from([("`", "`"), ('"', '"'), ("“", "”")]))
    inner = draw(_TAG) + draw(st.sampled_from(["", "...", "answer"])) + draw(_TAG)
    return f"{quote}{inner}{close}"


def _sentence_mention(draw: st.DrawFn) -> str:
    return f"{draw(_LEAD)} {draw(_TAG)}{draw(_GOES_ON)}"


@st.composite
def _mention(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from([_noun_mention, _quoted_mention, _sentence_mention]))
    return kind(draw)


@settings(max_examples=400, deadline=None)
@given(
    before=_PROSE,
    mention=_mention(),
    after=_PROSE,
    answer=_ANSWER,
    cuts=st.lists(st.integers(0, 300), max_size=8),
)
def test_any_mention_in_the_reasoning_leaves_the_answer_alone(
    before: str, mention: str, after: str, answer: str, cuts: list[int]
) -> None:
    reasoning = f"{before} {mention} {after}".strip()
    text = f"<thinking>\n{reasoning}\n</thinking>\n<output>{answer}</output>"
    parsed = parse(text)
    assert parsed.output == answer.strip()
    assert parsed.thinking == [reasoning]
    assert parsed.status is ParseStatus.COMPLETE
    streamed = _streamed(text, cuts)
    assert streamed.result == parsed


@settings(max_examples=300, deadline=None)
@given(
    before=_PROSE,
    mention=_mention(),
    answer=_ANSWER,
    cuts=st.lists(st.integers(0, 300), max_size=8),
)
def test_a_real_output_tag_at_the_start_of_a_line_always_opens_the_block(
    before: str, mention: str, answer: str, cuts: list[int]
) -> None:
    text = f"{before} {mention}\n<output>{answer}</output>"
    parsed = parse(text)
    assert parsed.output == answer.strip()
    assert parsed.outputs == [answer.strip()]
    assert _streamed(text, cuts).result == parsed


def _streamed(text: str, cuts: list[int]) -> StreamParser:
    parser = StreamParser(REFLECTION_TAGS)
    events: list[TagDelta] = []
    start = 0
    for cut in sorted(c % (len(text) + 1) for c in cuts):
        events += parser.feed(text[start:cut])
        start = max(start, cut)
    events += parser.feed(text[start:])
    events += parser.close()
    return parser


_SCHEME_WITH_ODD_NAMES = TagScheme("reason", "check", "final")


def test_mentions_work_for_any_scheme() -> None:
    text = "<reason>I answer in the <final> block.</reason><final>42</final>"
    parsed = parse(text, _SCHEME_WITH_ODD_NAMES)
    assert (parsed.output, parsed.thinking) == ("42", ["I answer in the <final> block."])
