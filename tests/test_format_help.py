"""Format help for untuned models: exemplar, prefill, and the bounded repair call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import pytest

import reflectkit as rk
from reflectkit.config import FormatHelp
from reflectkit.models.capabilities import unregister_model
from reflectkit.models.local.grammar import gbnf_literal, tag_grammar
from reflectkit.testing import FunctionLLM, Request, ScriptedLLM


@pytest.fixture
def small_model() -> Iterator[str]:
    """Fakes named small-* behave like the local model: they continue prefixes and need help."""
    rk.register_model("reflectkit-test/small-*", prefill=True, needs_format_help=True)
    yield "small"
    unregister_model("reflectkit-test/small-*")


async def test_prefill_and_exemplar_for_a_model_that_needs_help(small_model: str) -> None:
    def continue_prefix(request: Request) -> str:
        assert request.messages[-1] == {"role": "assistant", "content": "<thinking>\n"}
        return "12 - 5 = 7 and 7 - 3 = 4</thinking><output>4</output>"

    fake = FunctionLLM(continue_prefix, name=f"{small_model}-1")
    result = await rk.areflect("If a number plus 5 equals 12, ...", model=fake.model, mode="single")
    assert result.output == "4"
    assert result.thinking == ["12 - 5 = 7 and 7 - 3 = 4"]
    assert result.parse_status is rk.ParseStatus.COMPLETE
    assert not result.repaired
    sent = fake.requests[0].messages
    # The worked example is a demonstration exchange right after the system prompt.
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user", "assistant"]
    assert sent[1]["content"] == "How many legs do 3 cats have?"
    assert rk.parse(sent[2]["content"]).output == "3 cats have 12 legs."
    assert result.iterations[0].draft.text.startswith("<thinking>\n12 - 5")


async def test_the_exemplar_can_sit_in_the_system_prompt(small_model: str) -> None:
    fake = ScriptedLLM(["4</thinking><output>4</output>"], name=f"{small_model}-5")
    help_ = FormatHelp(exemplar_in="system")
    await rk.areflect("2+2", model=fake.model, mode="single", format_help=help_)
    sent = fake.requests[0].messages
    assert [m["role"] for m in sent] == ["system", "user", "assistant"]
    assert "Question: How many legs do 3 cats have?" in sent[0]["content"]
    assert "<output>\n3 cats have 12 legs.\n</output>" in sent[0]["content"]


async def test_a_reply_without_an_answer_block_is_continued_into_one(small_model: str) -> None:
    fake = ScriptedLLM(
        ["Five and seven make twelve, so 7 - 3 leaves 4.", "4"], name=f"{small_model}-2"
    )
    result = await rk.areflect("q", model=fake.model, mode="single")
    assert result.output == "4"
    assert result.repaired
    assert result.parse_status is rk.ParseStatus.MISSING_OUTPUT
    assert result.usage.calls == 2
    first, repair = fake.requests
    # The same request, with the model's own reasoning closed and the answer block opened.
    assert repair.messages[:-1] == first.messages[:-1]
    assert repair.messages[-1] == {
        "role": "assistant",
        "content": "<thinking>\nFive and seven make twelve, so 7 - 3 leaves 4.\n</thinking>\n"
        "<output>\n",
    }
    assert repair.params["max_tokens"] == 256
    assert repair.params["stop"] == ["</output>"]
    draft = result.iterations[0].draft
    assert draft.repair_text == "4"
    assert "Five and seven" in draft.text


async def test_without_prefill_the_repair_is_a_short_request(small_model: str) -> None:
    fake = ScriptedLLM(["It is 4, I think.", "<output>4</output>"])
    result = await rk.areflect("q", model=fake.model, mode="single")
    assert (result.output, result.repaired) == ("4", True)
    repair = fake.requests[1]
    assert repair.messages[-2] == {"role": "assistant", "content": "It is 4, I think."}
    assert "did not give a final answer" in repair.last_user_text
    assert "stop" not in repair.params


async def test_a_failed_repair_keeps_the_original_answer() -> None:
    fake = ScriptedLLM(["The answer is 4.", "Sorry, I cannot."])
    result = await rk.areflect("q", model=fake.model, mode="single")
    assert result.output == "The answer is 4."
    assert not result.repaired
    assert result.parse_status is rk.ParseStatus.UNTAGGED
    assert result.iterations[0].draft.repair_text == "Sorry, I cannot."
    # Without the prefill capability there is no prefix and no stop sequence.
    assert fake.requests[1].messages[-1]["role"] == "user"
    assert "stop" not in fake.requests[1].params


async def test_repair_runs_for_revisions_too_and_counts_its_usage() -> None:
    fake = ScriptedLLM(
        [
            "<output>5</output>",
            '{"verdict": "revise", "feedback": "wrong"}',
            "hmm, it is 4",
            "<output>4</output>",
            '{"verdict": "pass"}',
        ]
    )
    result = await rk.areflect("q", model=fake.model)
    assert result.output == "4"
    assert result.repaired
    assert result.iterations[1].draft_usage.calls == 2
    assert result.usage.calls == 5


async def test_format_help_can_be_switched_off(small_model: str) -> None:
    fake = FunctionLLM(lambda r: "plain 4", name=f"{small_model}-3")
    result = await rk.areflect("q", model=fake.model, mode="single", format_help="off")
    assert result.output == "plain 4"
    assert len(fake.requests) == 1
    assert fake.requests[0].messages[-1]["role"] == "user"
    assert "Japan" not in str(fake.requests[0].messages)


async def test_format_help_parts_can_be_chosen(small_model: str) -> None:
    fake = ScriptedLLM(["<output>4</output>"], name=f"{small_model}-4")
    help_ = FormatHelp(exemplar=False, prefill=False, repair=True, repair_max_tokens=16)
    result = await rk.areflect("q", model=fake.model, mode="single", format_help=help_)
    assert result.output == "4"
    assert "Japan" not in str(fake.requests[0].messages)
    assert fake.requests[0].messages[-1]["role"] == "user"


async def test_tuned_and_reasoning_models_get_no_exemplar() -> None:
    tuned = ScriptedLLM(["<output>4</output>"], name="reflection-70b-help")
    await rk.areflect("q", model=tuned.model, format_help=FormatHelp(exemplar=None))
    assert "Japan" not in str(tuned.requests[0].messages)
    rk.register_model("reflectkit-test/r1-*", reasoning=True, prefill=True)
    try:
        reasoner = ScriptedLLM(["<think>hm</think>4"], name="r1-help")
        result = await rk.areflect("q", model=reasoner.model)
    finally:
        unregister_model("reflectkit-test/r1-*")
    assert result.output == "4"
    assert reasoner.requests[0].messages == [{"role": "user", "content": "q"}]


def test_bad_format_help_settings_are_configuration_errors() -> None:
    with pytest.raises(rk.ConfigurationError, match="repair_max_tokens"):
        FormatHelp(repair_max_tokens=0)
    with pytest.raises(rk.ConfigurationError, match="format_help"):
        rk.ReflectConfig(format_help="sometimes")


async def test_a_streamed_repair_streams_its_answer(small_model: str) -> None:
    fake = ScriptedLLM(["7 - 3 leaves 4.", "The answer is 4."], name=f"{small_model}-6")
    events = [e async for e in rk.Reflector(fake.model, mode="single").astream("q")]
    answer = "".join(e.text for e in events if isinstance(e, rk.OutputDelta))
    assert answer == "The answer is 4."
    assert events[-1].result.repaired
    assert all(request.stream for request in fake.requests)


def test_the_tag_grammar_is_built_from_the_scheme() -> None:
    scheme = rk.TagScheme("reason", "check", "final")
    grammar = tag_grammar(scheme, max_thinking_chars=200)
    lines = grammar.splitlines()
    # After the prefill ("<reason>\n"): reasoning, an optional check, the answer, nothing after.
    assert lines[0] == 'root ::= think "</reason>" sep reflect? "<final>" answer "</final>"'
    assert "think ::= text{0,200}" in lines
    assert 'reflect ::= "<check>" text{0,100} "</check>" sep' in lines
    assert not any(name in grammar for name in ("thinking", "reflection", "output"))
    # Free text may hold a "<" only where it cannot start one of the scheme's tags.
    assert 'lt ::= "<" " "{0,3} [^\\x20\\x2F\\x3CCFRcfr]' in lines

    opened = tag_grammar(scheme, prefilled=False, max_thinking_chars=None, reflection=False)
    assert opened.startswith('root ::= sep "<reason>" think "</reason>" sep "<final>" answer')
    assert "think ::= text*" in opened
    assert "reflect" not in opened

    no_output = tag_grammar(rk.TagScheme("think", None, None))
    assert no_output.splitlines()[0] == 'root ::= think "</think>" sep answer'
    assert gbnf_literal('say "hi"\\\n') == '"say \\"hi\\"\\\\\\n"'
    with pytest.raises(ValueError, match="max_thinking_chars"):
        tag_grammar(scheme, max_thinking_chars=0)


@pytest.fixture
def grammar_model() -> Iterator[str]:
    """Fakes named gram-* take a grammar, continue prefixes and need help, like the local model."""
    rk.register_model("reflectkit-test/gram-*", prefill=True, needs_format_help=True, grammar=True)
    yield "gram"
    unregister_model("reflectkit-test/gram-*")


async def test_the_grammar_rides_on_the_generator_calls_not_on_the_repair(
    grammar_model: str,
) -> None:
    fake = ScriptedLLM(["I think it is 4", "4"], name=f"{grammar_model}-1")
    result = await rk.areflect("q", model=fake.model, mode="single")
    assert (result.output, result.repaired) == ("4", True)
    first, repair = fake.requests
    assert first.params["grammar"] == tag_grammar(rk.REFLECTION_TAGS, max_thinking_chars=300)
    assert "grammar" not in repair.params  # it continues another prefix, closed by a stop string

    scheme = rk.TagScheme("reason", "check", "final")
    fake = ScriptedLLM(["4</reason><final>4</final>"], name=f"{grammar_model}-2")
    help_ = FormatHelp(max_thinking_chars=None)
    await rk.areflect("q", model=fake.model, mode="single", scheme=scheme, format_help=help_)
    assert fake.requests[0].params["grammar"] == tag_grammar(scheme, max_thinking_chars=None)


async def test_the_grammar_goes_only_where_it_is_asked_for(
    grammar_model: str, small_model: str
) -> None:
    reply = "4</thinking><output>4</output>"
    # Hosted providers and fakes have no grammar capability: nothing is sent.
    for fake in (ScriptedLLM([reply]), ScriptedLLM([reply], name=f"{small_model}-7")):
        await rk.areflect("q", model=fake.model, mode="single")
        assert "grammar" not in fake.requests[0].params
    # Switched off, with tools, or with the caller's own grammar: not ours either.
    fake = ScriptedLLM([reply, "<output>4</output>"], name=f"{grammar_model}-3")
    await rk.areflect("q", model=fake.model, mode="single", format_help=FormatHelp(grammar=False))
    await rk.areflect("q", model=fake.model, mode="single", format_help="off")
    assert all("grammar" not in r.params for r in fake.requests)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    fake = ScriptedLLM(["<output>4</output>"], name=f"{grammar_model}-4")
    await rk.areflect("q", model=fake.model, mode="single", tools=tools)
    assert "grammar" not in fake.requests[0].params
    fake = ScriptedLLM([reply], name=f"{grammar_model}-5")
    await rk.areflect("q", model=fake.model, mode="single", grammar='root ::= "yes"')
    assert fake.requests[0].params["grammar"] == 'root ::= "yes"'
    # Asked for by name, it goes to any provider, opening the thinking tag itself without prefill.
    fake = ScriptedLLM(["<thinking>4</thinking><output>4</output>"])
    help_ = FormatHelp(grammar=True)
    await rk.areflect("q", model=fake.model, mode="single", format_help=help_)
    assert fake.requests[0].params["grammar"].startswith('root ::= sep "<thinking>" think')


@pytest.mark.parametrize("exemplar_in", ["turns", "system"])
async def test_the_generator_preamble_is_how_every_generator_call_starts(
    small_model: str, exemplar_in: Literal["turns", "system"]
) -> None:
    """The CLI has the local model read this preamble ahead of the run: it must be exactly the
    messages the generator's calls begin with, whatever the question."""
    from reflectkit.config import ReflectConfig
    from reflectkit.drafting import generator_preamble

    fake = ScriptedLLM(
        ["4</thinking><output>4</output>", "Paris</thinking><output>Paris</output>"],
        name=f"{small_model}-preamble-{exemplar_in}",
    )
    help_ = FormatHelp(exemplar_in=exemplar_in)
    config = ReflectConfig(model=fake.model, mode="single", format_help=help_)
    preamble = generator_preamble(config)

    for question in ("What is 2+2?", "What is the capital of France?"):
        await rk.areflect(question, model=fake.model, mode="single", format_help=help_)
    assert len(preamble) == (3 if exemplar_in == "turns" else 1)
    for request in fake.requests:
        assert request.messages[: len(preamble)] == preamble
        assert request.messages[len(preamble)]["role"] == "user"


def test_a_reasoning_model_asked_plainly_has_no_preamble() -> None:
    from reflectkit.config import ReflectConfig
    from reflectkit.drafting import generator_preamble

    rk.register_model("reflectkit-test/thinker-*", reasoning=True)
    try:
        assert generator_preamble(ReflectConfig(model="reflectkit-test/thinker-1")) == []
    finally:
        unregister_model("reflectkit-test/thinker-*")
