"""reflectkit.testing: the fakes users test their own code with."""

from __future__ import annotations

import pytest

import reflectkit as rk
from reflectkit.models.llm import ModelClient
from reflectkit.testing import (
    FunctionLLM,
    Reply,
    Request,
    ScriptedLLM,
    ScriptExhaustedError,
    fail,
)

ASK = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello <b>you</b>"}]


async def test_scripted_replies_come_in_order_and_requests_are_recorded() -> None:
    fake = ScriptedLLM(["one", Reply("two", completion_tokens=9)])
    fake.enqueue("three")
    client = ModelClient(fake.model, {"temperature": 0.1})
    texts = [(await client.complete(ASK)).text for _ in range(3)]
    assert texts == ["one", "two", "three"]
    assert fake.remaining == 0
    request = fake.requests[0]
    assert request.model == fake.model
    assert request.system_text == "be brief"
    assert request.last_user_text == "hello <b>you</b>"
    assert request.params["temperature"] == 0.1
    assert not request.stream


async def test_recorded_messages_are_copies() -> None:
    fake = ScriptedLLM(["ok"])
    messages = [{"role": "user", "content": "x"}]
    await ModelClient(fake.model).complete(messages)
    messages[0]["content"] = "changed"
    assert fake.requests[0].messages[0]["content"] == "x"


async def test_an_exhausted_script_fails_loudly() -> None:
    fake = ScriptedLLM(["only"])
    client = ModelClient(fake.model)
    await client.complete(ASK)
    with pytest.raises(rk.ProviderRequestError, match="no reply left for call 2"):
        await client.complete(ASK)
    assert len(fake.requests) == 2  # not retried
    with pytest.raises(ScriptExhaustedError):
        fake.answer(ASK, {}, stream=False)


async def test_function_models_may_be_async_and_see_the_request() -> None:
    async def shout(request: Request) -> str:
        return request.last_user_text.upper()

    fake = FunctionLLM(shout)
    assert (await ModelClient(fake.model).complete(ASK)).text == "HELLO <B>YOU</B>"
    with pytest.raises(TypeError, match="async fake was called synchronously"):
        fake.answer(ASK, {}, stream=False)


async def test_a_function_model_can_fail_like_a_provider() -> None:
    def overloaded(request: Request) -> str:
        raise fail(529, "overloaded")

    fake = FunctionLLM(overloaded)
    with pytest.raises(rk.ProviderServerError, match="overloaded"):
        await ModelClient(fake.model, retry=rk.RetryPolicy(max_attempts=1)).complete(ASK)


async def test_a_reply_of_the_wrong_type_is_reported() -> None:
    fake = FunctionLLM(lambda request: 42)
    with pytest.raises(TypeError, match="must be a str or Reply"):
        fake.answer(ASK, {}, stream=False)


def test_fake_construction_errors() -> None:
    with pytest.raises(rk.ConfigurationError):
        ScriptedLLM([], chunk_size=0)
    with pytest.raises(rk.ConfigurationError):
        ScriptedLLM([], name="a/b")
    with pytest.raises(rk.ConfigurationError):
        FunctionLLM("not callable")


def test_each_fake_has_its_own_model_string() -> None:
    first, second = ScriptedLLM([]), FunctionLLM(lambda r: "")
    assert first.model != second.model
    assert first.model.startswith("reflectkit-test/")
    assert ScriptedLLM([], name="named").model == "reflectkit-test/named"


def test_a_providers_call_never_awaited_leaves_no_warning() -> None:
    """LiteLLM makes a provider's coroutine in an executor thread; a call cancelled before it
    is awaited must not leave a 'coroutine was never awaited' warning (an error under pytest)."""
    import asyncio
    import gc
    import warnings

    from reflectkit.models.adapter import adapter_class
    from reflectkit.models.llm import _load
    from reflectkit.testing import BACKEND

    adapter = adapter_class(_load())("unused", BACKEND)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pending = adapter.acompletion("m", [{"role": "user", "content": "hi"}])
        assert asyncio.iscoroutine(pending)
        del pending
        gc.collect()
