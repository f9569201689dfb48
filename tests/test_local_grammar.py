"""Grammar-constrained decoding on the embedded local model, for real (llama.cpp, SmolLM2).

Every call is short: small ``max_tokens`` and short questions.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("llama_cpp")

import reflectkit as rk
import reflectkit.models.local as local
from reflectkit.errors import LocalModelCrashError, ProviderRequestError
from reflectkit.models.llm import ModelClient, StreamDelta

pytestmark = pytest.mark.local

MODEL = local.DEFAULT_LOCAL_MODEL
SUN = [{"role": "user", "content": "Is the sun a star? Answer in one word."}]
YES_NO = 'root ::= "yes" | "no"'


def client(**params: Any) -> ModelClient:
    return ModelClient(MODEL, {"temperature": 0, "max_tokens": 16, **params})


async def test_a_grammar_constrains_what_the_model_writes() -> None:
    free = await client().complete(SUN)
    assert free.text.strip().lower() not in {"yes", "no"}  # unconstrained, it chats

    constrained = await client(grammar=YES_NO).complete(SUN)
    assert constrained.text in {"yes", "no"}
    assert constrained.finish_reason == "stop"  # the grammar ended: only end-of-text was left
    assert constrained.usage.completion_tokens == 1

    pieces = [p async for p in client(grammar=YES_NO).stream(SUN)]
    assert "".join(p.text for p in pieces if isinstance(p, StreamDelta)) == constrained.text


async def test_a_grammar_that_does_not_parse_is_a_bad_request_and_the_next_call_works() -> None:
    for _ in range(2):  # the second time the verdict comes from the worker's cache
        with pytest.raises(ProviderRequestError, match="invalid grammar: Undefined rule") as bad:
            await client(grammar="root ::= answer").complete(SUN)
        assert not bad.value.retryable
    with pytest.raises(ProviderRequestError, match="invalid grammar: unexpected end of input"):
        await client(grammar='root ::= "yes').complete(SUN)
    with pytest.raises(ProviderRequestError, match="no rule named root"):
        await client(grammar='answer ::= "yes"').complete(SUN)
    with pytest.raises(ProviderRequestError, match="grammar must be a string"):
        await client(grammar=42).complete(SUN)

    assert (await client(grammar=YES_NO).complete(SUN)).text in {"yes", "no"}
    assert (await client(max_tokens=4).complete(SUN)).text


UNSATISFIABLE = r"root ::= [^\x00-\U0010FFFF]"


async def test_a_grammar_no_token_can_satisfy_fails_the_greedy_call_cleanly() -> None:
    # It parses, but no token fits: greedy decoding checks before llama.cpp would abort.
    with pytest.raises(ProviderRequestError, match="the grammar allows no token after ''"):
        await client(grammar=UNSATISFIABLE).complete(SUN)
    with pytest.raises(ProviderRequestError, match=r"allows no token after 'y'"):
        await client(grammar=r'root ::= "y" [^\x00-\U0010ffff]').complete(SUN)
    assert (await client(grammar=YES_NO).complete(SUN)).text in {"yes", "no"}


async def test_a_grammar_no_token_can_satisfy_crashes_only_the_worker_when_sampling() -> None:
    # Sampling applies the grammar in llama.cpp's chain, which aborts: the worker dies, not the
    # caller, and the next call answers.
    with pytest.raises(LocalModelCrashError, match="SIGABRT"):
        await client(grammar=UNSATISFIABLE, temperature=0.7, seed=1).complete(SUN)
    assert (await client(grammar=YES_NO).complete(SUN)).text in {"yes", "no"}


async def test_with_grammar_format_help_the_reply_as_written_is_complete() -> None:
    result = await rk.areflect(
        "What is 2 + 2?", model=MODEL, mode="single", max_tokens=96, run_log=False
    )
    draft = result.iterations[0].draft
    assert result.parse_status is rk.ParseStatus.COMPLETE
    assert not result.repaired
    assert result.usage.calls == 1
    assert draft.text.startswith("<thinking>\n")
    assert draft.text.rstrip().endswith("</output>")
    assert result.output.strip()


async def test_a_custom_scheme_is_written_in_its_own_tags() -> None:
    scheme = rk.TagScheme("reason", "check", "final")
    result = await rk.areflect(
        "What is the capital of Italy?",
        model=MODEL,
        mode="single",
        scheme=scheme,
        max_tokens=96,
        run_log=False,
    )
    text = result.iterations[0].draft.text
    assert result.parse_status is rk.ParseStatus.COMPLETE
    assert not result.repaired
    assert text.startswith("<reason>\n")
    assert "</reason>" in text
    assert text.rstrip().endswith("</final>")
    assert "<thinking>" not in text
