"""Format help for untuned models: exemplar, prefill, and the bounded repair call."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import reflectkit as rk
from reflectkit.capabilities import unregister_model
from reflectkit.config import FormatHelp
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
    assert "For example" in fake.requests[0].system_text
    assert result.iterations[0].draft.text.startswith("<thinking>\n12 - 5")


async def test_a_reply_without_an_answer_block_is_repaired_once(small_model: str) -> None:
    fake = ScriptedLLM(
        ["Let me think. Five and seven make twelve, so 7 - 3 leaves 4.", "4"],
        name=f"{small_model}-2",
    )
    result = await rk.areflect("q", model=fake.model, mode="single")
    assert result.output == "4"
    assert result.repaired
    assert result.parse_status is rk.ParseStatus.MISSING_OUTPUT
    assert result.usage.calls == 2
    repair = fake.requests[1]
    assert repair.messages[-1] == {"role": "assistant", "content": "<output>"}
    assert "did not give a final answer" in repair.last_user_text
    assert repair.params["max_tokens"] == 256
    assert repair.params["stop"] == ["</output>"]
    draft = result.iterations[0].draft
    assert draft.repair_text == "4"
    assert "Five and seven" in draft.text


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


async def test_repair_without_prefill_reads_a_tagged_answer() -> None:
    fake = ScriptedLLM(["The answer is 4.", "<output>4</output>"])
    result = await rk.areflect("q", model=fake.model, mode="single")
    assert (result.output, result.repaired) == ("4", True)


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
    assert "For example" not in fake.requests[0].system_text


async def test_format_help_parts_can_be_chosen(small_model: str) -> None:
    fake = ScriptedLLM(["<output>4</output>"], name=f"{small_model}-4")
    help_ = FormatHelp(exemplar=False, prefill=False, repair=True, repair_max_tokens=16)
    result = await rk.areflect("q", model=fake.model, mode="single", format_help=help_)
    assert result.output == "4"
    assert "For example" not in fake.requests[0].system_text
    assert fake.requests[0].messages[-1]["role"] == "user"


async def test_tuned_and_reasoning_models_get_no_exemplar() -> None:
    tuned = ScriptedLLM(["<output>4</output>"], name="reflection-70b-help")
    await rk.areflect("q", model=tuned.model, format_help=FormatHelp(exemplar=None))
    assert "For example" not in tuned.requests[0].system_text
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
