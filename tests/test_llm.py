"""The model layer: LiteLLM's real code path, retries, error mapping, usage, secrets."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import pytest

import reflectkit as rk
from reflectkit.models.llm import Completion, ModelClient, StreamDelta, check_model
from reflectkit.models.provider import ProviderFailure
from reflectkit.models.provider_errors import failure_error
from reflectkit.testing import FunctionLLM, Reply, Request, ScriptedLLM, block_model_requests, fail

NO_WAIT = rk.RetryPolicy(initial_wait=0, max_wait=0, max_attempts=4)
ASK = [{"role": "user", "content": "two words"}]


async def test_a_call_returns_text_usage_and_counts_one_call() -> None:
    fake = ScriptedLLM([Reply("hello there world", reasoning="thinking it over")])
    completion = await ModelClient(fake.model).complete(ASK)
    assert completion.text == "hello there world"
    assert completion.reasoning == "thinking it over"
    assert completion.usage.prompt_tokens == 2
    assert completion.usage.completion_tokens == 3
    assert completion.usage.calls == 1
    assert completion.usage.unpriced_calls == 1
    assert completion.finish_reason == "stop"


async def test_cost_is_added_when_litellm_knows_the_price() -> None:
    from reflectkit.models.llm import _load

    fake = ScriptedLLM(["one two", "three four five"], name="priced-model")
    _load().register_model(
        {
            fake.model: {
                "input_cost_per_token": 1e-6,
                "output_cost_per_token": 2e-6,
                "litellm_provider": "reflectkit-test",
                "mode": "chat",
            }
        }
    )
    client = ModelClient(fake.model)
    done = await client.complete(ASK)
    assert done.usage.cost_usd == pytest.approx(2 * 1e-6 + 2 * 2e-6)
    assert done.usage.unpriced_calls == 0
    pieces = [p async for p in client.stream(ASK)]
    final = pieces[-1]
    assert isinstance(final, Completion)
    assert final.usage.cost_usd == pytest.approx(2 * 1e-6 + 3 * 2e-6)


async def test_streaming_yields_deltas_then_the_completion() -> None:
    fake = ScriptedLLM([Reply("<output>forty-two</output>", prompt_tokens=7, completion_tokens=3)])
    fake.chunk_size = 5
    pieces = [p async for p in ModelClient(fake.model).stream(ASK)]
    deltas = [p for p in pieces if isinstance(p, StreamDelta)]
    assert len(deltas) >= 5
    assert "".join(d.text for d in deltas) == "<output>forty-two</output>"
    final = pieces[-1]
    assert isinstance(final, Completion)
    assert final.text == "<output>forty-two</output>"
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (7, 3)
    assert fake.requests[0].stream


def test_the_fakes_serve_litellms_sync_and_streaming_api() -> None:
    from reflectkit.models.llm import _load

    litellm = _load()
    fake = ScriptedLLM(["sync reply", "streamed reply here"], chunk_size=4)
    response = litellm.completion(model=fake.model, messages=ASK, temperature=0.5)
    assert response.choices[0].message.content == "sync reply"
    assert fake.requests[0].params["temperature"] == 0.5
    chunks = litellm.completion(model=fake.model, messages=ASK, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed reply here"


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [
        (429, rk.RateLimitedError, True),
        (500, rk.ProviderServerError, True),
        (503, rk.ProviderServerError, True),
        (408, rk.ProviderTimeoutError, True),
        (400, rk.ProviderRequestError, False),
        (401, rk.ProviderAuthError, False),
        (404, rk.ProviderRequestError, False),
    ],
)
async def test_provider_failures_map_into_the_error_tree(
    status: int, error: type[rk.ProviderError], retryable: bool
) -> None:
    fake = ScriptedLLM([fail(status, "it broke")] * 4)
    with pytest.raises(error) as caught:
        await ModelClient(fake.model, retry=NO_WAIT).complete(ASK)
    assert caught.value.retryable is retryable
    assert caught.value.model == fake.model
    assert isinstance(caught.value, rk.RunError)
    assert len(fake.requests) == (4 if retryable else 1)


@pytest.mark.parametrize(
    "failure",
    [
        ProviderFailure(status, "it broke")
        for status in (400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503, 504)
    ]
    + [
        ProviderFailure(429, "slow down", retry_after=7.0),
        ProviderFailure(400, "too long", context_window=True),
    ],
    ids=lambda f: f"{f.status_code}{'-window' if f.context_window else ''}{f.retry_after or ''}",
)
async def test_the_direct_path_maps_failures_as_litellm_would(failure: ProviderFailure) -> None:
    """The local model's calls skip LiteLLM: its failures must land in the same classes, with
    the same retry flag and Retry-After, as a fake's that go through LiteLLM."""
    fake = ScriptedLLM([failure])
    with pytest.raises(rk.ProviderError) as through_litellm:
        await ModelClient(fake.model, retry=rk.RetryPolicy(max_attempts=1)).complete(ASK)
    direct = failure_error(failure, fake.model, [])
    assert type(direct) is type(through_litellm.value)
    assert direct.status_code == failure.status_code  # LiteLLM turns some (409) into 400
    assert direct.retryable is through_litellm.value.retryable
    waits = [getattr(e, "retry_after", None) for e in (direct, through_litellm.value)]
    assert waits[0] == waits[1]
    assert str(direct).startswith(f"{fake.model}: ")
    assert failure.message in str(direct)


def test_the_direct_path_redacts_secrets_from_failures() -> None:
    failure = ProviderFailure(401, "bad key sk-live-1234567890abcdef given")
    error = failure_error(failure, "local/x", ["sk-live-1234567890abcdef"])
    assert "sk-live-1234567890abcdef" not in str(error)
    assert isinstance(error, rk.ProviderAuthError)


async def test_retries_stop_at_the_cap() -> None:
    fake = ScriptedLLM([fail(503)] * 10)
    policy = rk.RetryPolicy(max_attempts=3, initial_wait=0, max_wait=0)
    with pytest.raises(rk.ProviderServerError):
        await ModelClient(fake.model, retry=policy).complete(ASK)
    assert len(fake.requests) == 3


async def test_context_window_errors_are_not_retried() -> None:
    from reflectkit.models.llm import _load

    litellm = _load()

    def too_long(request: Request) -> str:
        raise litellm.ContextWindowExceededError(
            message="prompt too long", model=request.model, llm_provider="reflectkit-test"
        )

    fake = FunctionLLM(too_long)
    with pytest.raises(rk.ContextWindowError) as caught:
        await ModelClient(fake.model, retry=NO_WAIT).complete(ASK)
    assert not caught.value.retryable
    assert len(fake.requests) == 1


async def test_a_429_retry_after_is_honoured() -> None:
    fake = ScriptedLLM([fail(429, retry_after=0.3), "ok"])
    policy = rk.RetryPolicy(initial_wait=5, max_wait=5)  # backoff alone would wait 5 s
    loop = asyncio.get_running_loop()
    start = loop.time()
    completion = await ModelClient(fake.model, retry=policy).complete(ASK)
    waited = loop.time() - start
    assert completion.text == "ok"
    assert 0.3 <= waited < 2


async def test_a_retry_after_beyond_the_limit_fails_at_once() -> None:
    fake = ScriptedLLM([fail(429, retry_after=3600), "ok"])
    policy = rk.RetryPolicy(max_retry_after=10)
    with pytest.raises(rk.RateLimitedError) as caught:
        await ModelClient(fake.model, retry=policy).complete(ASK)
    assert caught.value.retry_after == 3600
    assert len(fake.requests) == 1


async def test_a_call_that_hangs_times_out_and_is_retried() -> None:
    calls = 0

    async def slow_then_fast(request: Request) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(30)
        return "fast"

    fake = FunctionLLM(slow_then_fast)
    client = ModelClient(fake.model, retry=NO_WAIT, timeout=0.2)
    assert (await client.complete(ASK)).text == "fast"
    assert calls == 2
    hanging = FunctionLLM(lambda r: asyncio.sleep(30, result="never"))
    with pytest.raises(rk.ProviderTimeoutError):
        await ModelClient(
            hanging.model, retry=rk.RetryPolicy(max_attempts=1), timeout=0.1
        ).complete(ASK)


async def test_retries_are_logged_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-test-1234567890abcdef"
    fake = ScriptedLLM([fail(503, f"upstream said: bad key {secret}"), "ok"])
    with caplog.at_level(logging.WARNING, logger="reflectkit.models.llm"):
        await ModelClient(fake.model, {"api_key": secret}, retry=NO_WAIT).complete(ASK)
    assert "retrying" in caplog.text
    assert secret not in caplog.text


async def test_error_messages_never_carry_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    planted = "planted-secret-value-42"
    monkeypatch.setenv("SOME_SERVICE_TOKEN", planted)
    fake = ScriptedLLM(
        [fail(400, f"echoing {planted} and api_key=abcdefgh123 and sk-abcdefghijkl")]
    )
    with pytest.raises(rk.ProviderRequestError) as caught:
        await ModelClient(fake.model).complete(ASK)
    message = str(caught.value)
    assert planted not in message
    assert "abcdefgh123" not in message
    assert "sk-abcdefghijkl" not in message
    assert "[redacted]" in message


def test_hosted_models_are_blocked_in_tests_but_fakes_and_loopback_are_not() -> None:
    with pytest.raises(rk.ModelRequestsBlockedError, match="gpt-4o-mini"):
        check_model("gpt-4o-mini", {"api_key": "x"})
    check_model(ScriptedLLM([]).model, {})
    check_model("openai/local-model", {"api_base": "http://127.0.0.1:8000/v1"})
    with block_model_requests(False):
        check_model("gpt-4o-mini", {"api_key": "x"})


def test_a_missing_api_key_names_the_model_and_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with block_model_requests(False):
        with pytest.raises(rk.MissingCredentialsError) as caught:
            check_model("gpt-4o-mini", {})
        assert caught.value.env_vars == ["OPENAI_API_KEY"]
        assert "gpt-4o-mini" in str(caught.value)
        with pytest.raises(rk.MissingCredentialsError, match="ANTHROPIC_API_KEY"):
            check_model("anthropic/claude-3-5-haiku-latest", {})


def test_an_unknown_model_is_a_configuration_error() -> None:
    with pytest.raises(rk.UnknownModelError, match="no-such-provider-model"):
        check_model("no-such-provider-model", {})
    with pytest.raises(rk.ConfigurationError, match="no fake model named"):
        check_model("reflectkit-test/never-created", {})


async def test_the_run_fails_before_any_call_when_the_critic_model_is_unusable() -> None:
    fake = ScriptedLLM(["<output>4</output>"])
    with pytest.raises(rk.ModelRequestsBlockedError, match="gpt-4o-mini"):
        await rk.areflect("q", model=fake.model, critic_model="gpt-4o-mini")
    assert fake.requests == []


def test_importing_reflectkit_loads_neither_litellm_nor_langgraph() -> None:
    code = (
        "import sys, reflectkit as rk\n"
        "rk.parse('<output>4</output>')\n"
        "heavy = [m for m in ('litellm', 'langgraph', 'langchain_core', 'pydantic') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_litellm_loads_offline_with_its_local_price_map() -> None:
    code = (
        "import os\n"
        "os.environ.pop('LITELLM_LOCAL_MODEL_COST_MAP', None)\n"
        "from reflectkit.models.llm import _load\n"
        "litellm = _load()\n"
        "print(os.environ['LITELLM_LOCAL_MODEL_COST_MAP'], 'gpt-4o-mini' in litellm.model_cost)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["True", "True"]
    assert "fetch" not in out.stderr.lower()


async def test_a_streamed_429_keeps_its_retry_after() -> None:
    # LiteLLM wraps a failure to open a stream in a MidStreamFallbackError whose response has
    # lost the headers; the Retry-After is found on the error it wraps.
    fake = ScriptedLLM([fail(429, "slow down", retry_after=7)])
    client = ModelClient(fake.model, {}, retry=rk.RetryPolicy(max_attempts=1), timeout=10)
    with pytest.raises(rk.RateLimitedError) as raised:
        async for _ in client.stream([{"role": "user", "content": "hi"}]):
            pass
    assert raised.value.retry_after == 7.0
