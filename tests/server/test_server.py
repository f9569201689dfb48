"""The OpenAI-compatible proxy, served by a real uvicorn on 127.0.0.1 and called by real clients:
the openai SDK (sync, async, streaming), LangChain's ChatOpenAI, and raw HTTP for the refusals.

The upstream models are reflectkit's fakes, which live in this process, so uvicorn runs in a
thread of it; each test makes its own fake and asks the server for it by name.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner

import reflectkit.server.app as server_app
from reflectkit import errors
from reflectkit.cli.serve import serve
from reflectkit.config import RetryPolicy
from reflectkit.errors import ConfigurationError
from reflectkit.server import ServerSettings, create_app
from reflectkit.testing import FunctionLLM, Reply, Request, ScriptedLLM, fail
from tests.conftest import QUESTION, verdict
from tests.server.helpers import FAKES, chat_body, running
from tests.upstream import REPLY

KEY = "test-proxy-key-5b1f0c"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    settings = ServerSettings(
        api_key=KEY,
        models=(FAKES, "local/smollm2-135m"),
        max_body_bytes=64 * 1024,
        retry=RetryPolicy(max_attempts=1),
    )
    with running(settings) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as raw:
        yield raw


def _pieces(chunks: list[Any], field: str = "content") -> list[str]:
    """The non-empty ``field`` values of the chunks' deltas."""
    found = (getattr(c.choices[0].delta, field, None) for c in chunks if c.choices)
    return [piece for piece in found if piece]


def _finishes(chunks: list[Any]) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


def _single(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"reflectkit": {"mode": "single", **(extra or {})}}


def _revised_once(first: str, feedback: str, second: str) -> list[str]:
    """A loop's script: a draft, the critique that asks for a revision, the revision, a pass."""
    return [first, verdict(False, feedback), second, verdict(True)]


def _stream(client: openai.OpenAI, model: str, content: str, **create: Any) -> list[Any]:
    """The chunks of ``model``'s streamed reply to one user message."""
    messages: Any = [{"role": "user", "content": content}]
    return list(
        client.chat.completions.create(model=model, messages=messages, stream=True, **create)
    )


def test_a_single_pass_answers_without_the_tags(client: openai.OpenAI) -> None:
    fake = ScriptedLLM(["<thinking>12 - 5 = 7, 7 - 3 = 4</thinking><output>4</output>"])
    reply = client.chat.completions.create(
        model=f"reflect/{fake.model}",
        messages=[{"role": "user", "content": QUESTION}],
        extra_body=_single(),
    )
    message = reply.choices[0].message
    assert message.content == "4"
    assert reply.model == f"reflect/{fake.model}"
    assert reply.choices[0].finish_reason == "stop"
    assert getattr(message, "reasoning_content", None) is None  # not asked for
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0
    assert (reply.model_extra or {})["reflectkit"]["stop_reason"] == "single_pass"


def test_reasoning_comes_back_only_when_asked(client: openai.OpenAI) -> None:
    fake = ScriptedLLM(["<thinking>7 - 3 is 4</thinking><output>4</output>"] * 2)
    messages: Any = [{"role": "user", "content": "What is 7 - 3?"}]
    plain = client.chat.completions.create(
        model=f"reflect/{fake.model}", messages=messages, extra_body=_single()
    )
    asked = client.chat.completions.create(
        model=f"reflect/{fake.model}",
        messages=messages,
        extra_body=_single({"include_reasoning": True}),
    )
    assert "reasoning_content" not in plain.choices[0].message.model_dump()
    assert asked.choices[0].message.content == "4"
    assert getattr(asked.choices[0].message, "reasoning_content", None) == "7 - 3 is 4"


def test_the_loop_revises_until_the_critic_passes(client: openai.OpenAI) -> None:
    fake = ScriptedLLM(
        _revised_once(
            "<thinking>12 - 5 = 6</thinking><output>3</output>",
            "12 - 5 is 7, not 6.",
            "<thinking>12 - 5 = 7, 7 - 3 = 4</thinking><output>4</output>",
        )
    )
    reply = client.chat.completions.create(
        model=f"reflect/{fake.model}",
        messages=[{"role": "user", "content": QUESTION}],
        extra_body={"reflectkit": {"mode": "loop", "include_reasoning": True}},
    )
    assert reply.choices[0].message.content == "4"
    summary = (reply.model_extra or {})["reflectkit"]
    assert (summary["stop_reason"], summary["iterations"]) == ("passed", 2)
    reasoning = getattr(reply.choices[0].message, "reasoning_content", "")
    assert "Draft 1:" in reasoning
    assert "Draft 2:" in reasoning
    assert "Critique of draft 1: revise: 12 - 5 is 7, not 6." in reasoning
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == sum(
        len(" ".join(str(m["content"]) for m in r.messages).split()) for r in fake.requests
    )


def test_a_request_may_keep_the_best_draft_when_its_critic_fails(client: openai.OpenAI) -> None:
    script = ["<output>5</output>", verdict(False, "no", score=6), "<output>4</output>"]
    tuning = {"reflectkit": {"mode": "loop", "on_critic_error": "keep_best"}}
    user: Any = [{"role": "user", "content": QUESTION}]
    for stream in (False, True):
        fake = ScriptedLLM([*script, fail(400, "critic down")])
        if stream:
            chunks = _stream(client, f"reflect/{fake.model}", QUESTION, extra_body=tuning)
            content, finish = "".join(_pieces(chunks)), _finishes(chunks)[-1]
            summary = chunks[-1].model_extra["reflectkit"]
        else:
            reply = client.chat.completions.create(
                model=f"reflect/{fake.model}", messages=user, extra_body=tuning
            )
            content, finish = reply.choices[0].message.content, reply.choices[0].finish_reason
            summary = (reply.model_extra or {})["reflectkit"]
        assert (content, finish, summary["stop_reason"]) == ("5", "stop", "critic_error")
        assert "critic down" in summary["critic_error"]
    # The server's default is the library's: the same critic failure is an error.
    fake = ScriptedLLM([*script, fail(400, "critic down")])
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(
            model=f"reflect/{fake.model}", messages=user, extra_body=_single({"mode": "loop"})
        )


def test_the_servers_on_critic_error_is_the_default_of_its_requests() -> None:
    from reflectkit.server.protocol import ChatRequest, ReflectOptions
    from reflectkit.server.reflection import Reflectors

    model = ScriptedLLM([]).model
    kept = Reflectors(ServerSettings(models=(FAKES,), on_critic_error="keep_best"))
    request = ChatRequest(model=model, messages=[{"role": "user", "content": "q"}])
    assert kept.get(model, request).config.on_critic_error == "keep_best"
    chosen = request.model_copy(update={"reflectkit": ReflectOptions(on_critic_error="raise")})
    assert kept.get(model, chosen).config.on_critic_error == "raise"
    kept.close()


def test_streaming_sends_the_answer_as_it_is_written(client: openai.OpenAI) -> None:
    answer = "Twelve minus five is seven, and seven minus three is four."
    fake = ScriptedLLM([f"<thinking>7 - 3</thinking><output>{answer}</output>"], chunk_size=5)
    usage = {"include_usage": True}
    chunks = _stream(
        client, f"reflect/{fake.model}", QUESTION, stream_options=usage, extra_body=_single()
    )
    pieces = _pieces(chunks)
    assert "".join(pieces) == answer
    assert len(pieces) > 5  # incremental, not one block at the end
    assert chunks[0].choices[0].delta.role == "assistant"
    assert _finishes(chunks) == ["stop"]
    assert not chunks[-1].choices
    assert chunks[-1].usage is not None
    reply = f"<thinking>7 - 3</thinking><output>{answer}</output>"
    assert chunks[-1].usage.completion_tokens == len(reply.split())  # the fake counts words
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_without_include_usage_sends_no_usage(client: openai.OpenAI) -> None:
    fake = ScriptedLLM(["<output>4</output>"])
    chunks = _stream(client, f"reflect/{fake.model}", "2+2", extra_body=_single())
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "4"


def test_a_streamed_loop_sends_only_the_chosen_answer(client: openai.OpenAI) -> None:
    fake = ScriptedLLM(
        _revised_once("<output>3</output>", "wrong", "<output>4</output>"), chunk_size=2
    )
    loop = {"reflectkit": {"mode": "loop"}}
    chunks = _stream(client, f"reflect/{fake.model}", QUESTION, extra_body=loop)
    assert _pieces(chunks) == ["4"]
    reasoning = [getattr(c.choices[0].delta, "reasoning_content", None) for c in chunks]
    assert not any(reasoning)
    last = chunks[-1].model_extra or {}
    assert last["reflectkit"]["stop_reason"] == "passed"


def test_a_streamed_loop_shows_drafts_as_reasoning_when_asked(client: openai.OpenAI) -> None:
    fake = ScriptedLLM(
        _revised_once("<thinking>6</thinking><output>3</output>", "no", "<output>4</output>"),
        chunk_size=2,
    )
    loop = {"reflectkit": {"mode": "loop", "include_reasoning": True}}
    chunks = _stream(client, f"reflect/{fake.model}", QUESTION, extra_body=loop)
    reasoning = "".join(_pieces(chunks, "reasoning_content"))
    assert "".join(_pieces(chunks)) == "4"
    assert reasoning == (
        "Draft 1:\n6\nAnswer: 3\n\nCritique of draft 1: revise: no\n\nDraft 2:\nAnswer: 4"
        "\n\nCritique of draft 2: pass"
    )


async def test_the_async_client_streams_and_answers(base_url: str) -> None:
    fake = ScriptedLLM(["<output>4</output>", "<output>five</output>"], chunk_size=1)
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0) as sdk:
        whole = await sdk.chat.completions.create(
            model=f"reflect/{fake.model}",
            messages=[{"role": "user", "content": "2+2"}],
            extra_body=_single(),
        )
        stream = await sdk.chat.completions.create(
            model=f"reflect/{fake.model}",
            messages=[{"role": "user", "content": "2+3"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_body=_single(),
        )
        pieces = [c.choices[0].delta.content async for c in stream if c.choices]
    assert whole.choices[0].message.content == "4"
    assert [p for p in pieces if p] == list("five")


def test_many_requests_at_once_are_served(base_url: str) -> None:
    async def answer(request: Request) -> str:
        await asyncio.sleep(0.05)
        return f"<output>{request.last_user_text.split()[-1]}</output>"

    fake = FunctionLLM(answer, chunk_size=1)

    async def ask_all() -> list[str]:
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=KEY) as sdk:

            async def ask(number: int) -> str:
                stream = await sdk.chat.completions.create(
                    model=f"reflect/{fake.model}",
                    messages=[{"role": "user", "content": f"echo {number}"}],
                    stream=True,
                    extra_body=_single(),
                )
                return "".join([c.choices[0].delta.content or "" async for c in stream])

            return await asyncio.gather(*(ask(n) for n in range(30)))

    assert asyncio.run(ask_all()) == [str(n) for n in range(30)]


CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "My name is Ada."},
    {"role": "assistant", "content": "Hello Ada."},
    {"role": "user", "content": "What is my name?"},
]


def test_a_bare_model_is_passed_through_unchanged(client: openai.OpenAI) -> None:
    fake = ScriptedLLM(["Ada."])
    reply = client.chat.completions.create(
        model=fake.model, messages=CHAT, temperature=0.25, max_tokens=20, seed=7
    )
    assert reply.choices[0].message.content == "Ada."
    sent = fake.requests[0]
    assert sent.messages == CHAT
    assert (sent.params["temperature"], sent.params["max_tokens"]) == (0.25, 20)
    assert "reflectkit" not in (reply.model_extra or {})


def test_a_reflected_chat_keeps_every_turn(client: openai.OpenAI) -> None:
    fake = ScriptedLLM(["<output>Your name is Ada.</output>"])
    reply = client.chat.completions.create(
        model=f"reflect/{fake.model}", messages=CHAT, extra_body=_single()
    )
    assert reply.choices[0].message.content == "Your name is Ada."
    sent = fake.requests[0].messages
    turns = [(m["role"], m["content"]) for m in sent[1:]]
    assert turns[:3] == [(m["role"], m["content"]) for m in CHAT[:3]]
    assert turns[3][0] == "user"
    assert "What is my name?" in turns[3][1]
    assert sent[0]["role"] == "system"
    assert "<output>" in sent[0]["content"]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
TOOL_RESULT_CHAT: Any = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
]


def test_tools_reach_the_upstream_and_its_tool_calls_come_back(client: openai.OpenAI) -> None:
    fake = ScriptedLLM([Reply("", tool_calls=[CALL])])
    reply = client.chat.completions.create(
        model=fake.model,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="auto",
    )
    assert fake.requests[0].params["tools"] == [WEATHER_TOOL]
    assert fake.requests[0].params["tool_choice"] == "auto"
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    assert choice.message.tool_calls[0].model_dump() == CALL


def test_a_tool_result_turn_is_kept(client: openai.OpenAI) -> None:
    fake = ScriptedLLM(["It is sunny in Paris."])
    messages = TOOL_RESULT_CHAT
    reply = client.chat.completions.create(
        model=fake.model,
        messages=messages,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    assert reply.choices[0].message.content == "It is sunny in Paris."
    # LiteLLM drops the null content of a tool-calling turn; nothing else changes.
    assert fake.requests[0].messages == [
        {k: v for k, v in m.items() if v is not None} for m in messages
    ]


def test_streamed_tool_calls_pass_through(client: openai.OpenAI) -> None:
    fake = ScriptedLLM([Reply("", tool_calls=[CALL])])
    chunks = _stream(client, fake.model, "Weather in Paris?", tools=[WEATHER_TOOL])
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert calls
    assert calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    arguments = "".join((call.function.arguments or "") for call in calls if call.function)
    assert json.loads(arguments) == {"city": "Paris"}
    assert _finishes(chunks) == ["tool_calls"]


def test_a_reflected_request_hands_tool_calls_back(client: openai.OpenAI) -> None:
    fake = ScriptedLLM([Reply("", tool_calls=[CALL]), Reply("", tool_calls=[CALL])])
    for mode in ("single", "loop"):
        reply = client.chat.completions.create(
            model=f"reflect/{fake.model}",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            extra_body={"reflectkit": {"mode": mode}},
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None
        assert choice.message.tool_calls[0].model_dump() == CALL
        assert (reply.model_extra or {})["reflectkit"]["stop_reason"] == "tool_calls"
    assert [r.params["tools"] for r in fake.requests] == [[WEATHER_TOOL]] * 2


def test_a_reflected_stream_hands_tool_calls_back(client: openai.OpenAI) -> None:
    fake = ScriptedLLM([Reply("", tool_calls=[CALL])])
    chunks = _stream(
        client,
        f"reflect/{fake.model}",
        "Weather in Paris?",
        tools=[WEATHER_TOOL],
        extra_body=_single(),
    )
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert [call.model_dump(exclude_none=True) for call in calls] == [{"index": 0, **CALL}]
    assert _finishes(chunks) == ["tool_calls"]


def test_a_reflected_chat_keeps_tool_results(client: openai.OpenAI) -> None:
    fake = ScriptedLLM(["<output>It is sunny in Paris, 21 C.</output>"])
    messages = TOOL_RESULT_CHAT
    reply = client.chat.completions.create(
        model=f"reflect/{fake.model}",
        messages=messages,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        extra_body=_single(),
    )
    assert reply.choices[0].message.content == "It is sunny in Paris, 21 C."
    sent = fake.requests[0].messages
    assert [m["role"] for m in sent[-3:]] == ["user", "assistant", "tool"]
    assert sent[-2]["tool_calls"] == [CALL]
    assert (sent[-1]["tool_call_id"], sent[-1]["content"]) == ("call_1", "sunny, 21 C")


def test_langchain_chat_openai_invokes_and_streams(base_url: str) -> None:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI

    fake = ScriptedLLM(
        ["<output>Ada.</output>", "<output>Your name is Ada.</output>"], chunk_size=4
    )
    chat = ChatOpenAI(
        model=f"reflect/{fake.model}",
        base_url=f"{base_url}/v1",
        api_key=KEY,  # type: ignore[arg-type]
        max_retries=0,
        extra_body=_single(),
    )
    history = [
        SystemMessage("You are terse."),
        HumanMessage("My name is Ada."),
        AIMessage("Hello Ada."),
        HumanMessage("What is my name?"),
    ]
    assert chat.invoke(history).content == "Ada."
    pieces = [chunk.content for chunk in chat.stream(history)]
    assert "".join(str(p) for p in pieces) == "Your name is Ada."
    assert len([p for p in pieces if p]) > 1
    for request in fake.requests:
        roles = [m["role"] for m in request.messages]
        assert roles[-4:] == ["system", "user", "assistant", "user"]


def test_a_wrong_or_missing_key_is_refused(base_url: str) -> None:
    for headers in ({"Authorization": "Bearer wrong"}, {}, {"Authorization": f"Basic {KEY}"}):
        response = httpx.get(f"{base_url}/v1/models", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert KEY not in response.text
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0)
    with sdk, pytest.raises(openai.AuthenticationError):
        sdk.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])


def test_listening_beyond_loopback_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REFLECTKIT_SERVER_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="without an API key"):
        ServerSettings(host="0.0.0.0")
    assert ServerSettings(host="0.0.0.0", api_key="k" * 20).api_key is not None
    monkeypatch.setenv("REFLECTKIT_SERVER_API_KEY", "from-the-environment")
    settings = ServerSettings(host="::")
    assert settings.api_key is not None
    assert "from-the-environment" not in repr(settings)
    monkeypatch.delenv("REFLECTKIT_SERVER_API_KEY")
    result = CliRunner().invoke(serve, ["--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigurationError)
    assert "without an API key" in str(result.exception)


def test_the_models_list_names_what_is_served(http: httpx.Client) -> None:
    listed = http.get("/v1/models").json()
    ids = [m["id"] for m in listed["data"]]
    assert ids == ["reflect/local/smollm2-135m", "local/smollm2-135m"]  # patterns are not listed
    assert http.get("/v1/models/reflect/local/smollm2-135m").json()["id"] == ids[0]
    assert http.get("/v1/models/gpt-4o").status_code == 404


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_unknown_models_are_404(http: httpx.Client, client: openai.OpenAI) -> None:
    for model in ("gpt-4o", "reflect/gpt-4o", "reflect/", "reflectkit-tes"):
        body = chat_body(model, "hi")
        error = _error(http.post("/v1/chat/completions", json=body), 404)
        assert (error["code"], error["param"]) == ("model_not_found", "model")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="anthropic/claude", messages=[{"role": "user", "content": "hi"}]
        )


def test_malformed_bodies_are_400(http: httpx.Client) -> None:
    fake = ScriptedLLM()
    model = f"reflect/{fake.model}"
    user = [{"role": "user", "content": "hi"}]
    cases: list[tuple[Any, str | None]] = [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b"\xff\xfe", None),
        ({"messages": user}, "model"),
        ({"model": model}, "messages"),
        ({"model": model, "messages": []}, "messages"),
        ({"model": model, "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": model, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": model, "messages": ["hi"]}, "messages[0]"),
        ({"model": model, "messages": user, "frobnicate": 1}, "frobnicate"),
        ({"model": model, "messages": user, "n": 2}, "n"),
        ({"model": model, "messages": user, "stream": "yes"}, "stream"),
        ({"model": model, "messages": user, "reflectkit": {"mode": "twice"}}, "reflectkit.mode"),
        ({"model": model, "messages": user, "reflectkit": {"max_iterations": 0}}, None),
        ({"model": model, "messages": user, "reflectkit": {"max_iterations": 99}}, None),
        ({"model": model, "messages": user, "reflectkit": {"colour": "red"}}, "reflectkit.colour"),
        ({"model": model, "messages": user, "reflectkit": "loop"}, "reflectkit"),
        ({"model": fake.model, "messages": user, "reflectkit": {"mode": "loop"}}, None),
        ({"model": model, "messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
    ]
    for body, param in cases:
        if isinstance(body, bytes):
            response = http.post("/v1/chat/completions", content=body)
        else:
            response = http.post("/v1/chat/completions", json=body)
        error = _error(response, 400)
        assert error["type"] == "invalid_request_error"
        if param is not None:
            assert error["param"] == param, (body, error)
    assert fake.requests == []


def test_a_body_too_large_is_413(http: httpx.Client) -> None:
    body = {"model": "x", "messages": [{"role": "user", "content": "a" * 70_000}]}
    error = _error(http.post("/v1/chat/completions", json=body), 413)
    assert error["code"] == "request_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"model": "x", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"a" * 4096
        yield b'"}]}'

    _error(http.post("/v1/chat/completions", content=chunked()), 413)


def test_unknown_routes_and_methods_answer_in_json(http: httpx.Client) -> None:
    assert _error(http.get("/v1/nothing"), 404)["code"] == "not_found"
    assert _error(http.get("/v1/chat/completions"), 405)["code"] == "method_not_allowed"
    assert http.get("/health").json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (fail(429, "slow down", retry_after=7), 429, "upstream_rate_limited"),
        (fail(503, "overloaded"), 502, "upstream_failed"),
        (fail(401, "bad key sk-abcdefghijklmnop"), 502, "upstream_auth_failed"),
        (fail(400, "no such parameter"), 400, "upstream_rejected_request"),
    ],
)
def test_upstream_failures_map_to_gateway_errors(
    http: httpx.Client, failure: Any, status: int, code: str
) -> None:
    for model in ("reflect/{}", "{}"):
        fake = ScriptedLLM([failure])
        body = chat_body(model.format(fake.model), "hi")
        response = http.post("/v1/chat/completions", json=body)
        error = _error(response, status)
        assert error["code"] == code
        assert "sk-abcdefghijklmnop" not in response.text
        if status == 429:
            assert response.headers["retry-after"] == "7"


def test_a_stream_that_fails_before_the_first_answer_is_an_http_error(
    client: openai.OpenAI,
) -> None:
    fake = ScriptedLLM([fail(500, "down")])
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(
            model=f"reflect/{fake.model}",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_body=_single(),
        )
    assert raised.value.status_code == 502


def test_a_streamed_request_rate_limited_upstream_passes_retry_after_on(
    http: httpx.Client,
) -> None:
    fake = ScriptedLLM([fail(429, "slow down", retry_after=7)])
    body = chat_body(f"reflect/{fake.model}", "hi", stream=True, **_single())
    response = http.post("/v1/chat/completions", json=body)
    assert _error(response, 429)["code"] == "upstream_rate_limited"
    assert response.headers["retry-after"] == "7"


def test_a_stream_that_fails_midway_ends_with_an_error_event(client: openai.OpenAI) -> None:
    fake = ScriptedLLM(["<output>3</output>", fail(500, "critic down")])
    stream = client.chat.completions.create(
        model=f"reflect/{fake.model}",
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        extra_body={"reflectkit": {"mode": "loop"}},
    )
    with pytest.raises(openai.APIError, match="critic down"):
        list(stream)


def _blocking_fake() -> tuple[FunctionLLM, threading.Event, threading.Event]:
    arrived, release = threading.Event(), threading.Event()

    async def answer(request: Request) -> str:
        arrived.set()
        # The fake runs on the server's event loop, the test in its own thread: poll.
        while not release.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return "done"

    return FunctionLLM(answer), arrived, release


def _one_slot(queue_timeout: float) -> ServerSettings:
    """A server that serves one request at a time; the next waits ``queue_timeout`` s, then 429."""
    return ServerSettings(models=(FAKES,), max_concurrent_requests=1, queue_timeout=queue_timeout)


def test_requests_beyond_the_concurrency_limit_get_429() -> None:
    fake, arrived, release = _blocking_fake()
    body = chat_body(fake.model, "hi")
    with running(_one_slot(queue_timeout=0)) as url:
        first: list[httpx.Response] = []
        worker = threading.Thread(
            target=lambda: first.append(httpx.post(f"{url}/v1/chat/completions", json=body))
        )
        worker.start()
        assert arrived.wait(10)
        busy = httpx.post(f"{url}/v1/chat/completions", json=body)
        release.set()
        worker.join(10)
        after = httpx.post(f"{url}/v1/chat/completions", json=body)
    error = _error(busy, 429)
    assert error["code"] == "server_busy"
    assert busy.headers["retry-after"] == "1"
    assert first[0].status_code == 200
    assert after.status_code == 200


def test_requests_wait_in_the_queue_for_a_slot() -> None:
    fake, arrived, release = _blocking_fake()
    body = chat_body(fake.model, "hi")
    with running(_one_slot(queue_timeout=10)) as url:
        replies: list[httpx.Response] = []

        def post() -> None:
            replies.append(httpx.post(f"{url}/v1/chat/completions", json=body, timeout=20))

        workers = [threading.Thread(target=post) for _ in range(3)]
        for worker in workers:
            worker.start()
        assert arrived.wait(10)
        time.sleep(0.2)
        assert len(fake.requests) == 1  # the others wait for the slot
        release.set()
        for worker in workers:
            worker.join(20)
    assert [r.status_code for r in replies] == [200, 200, 200]


def test_a_client_that_leaves_a_stream_frees_its_slot() -> None:
    fake = ScriptedLLM(["<output>" + "word " * 400 + "</output>", "<output>4</output>"])
    fake.chunk_delay = 0.005
    settings = _one_slot(queue_timeout=5)
    body = chat_body(f"reflect/{fake.model}", "hi", stream=True, reflectkit={"mode": "single"})
    with running(settings) as url:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if "word" in line:
                    break
        again = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": False})
    assert again.status_code == 200
    assert again.json()["choices"][0]["message"]["content"] == "4"
    assert fake.streamed_chunks < 100  # the first run stopped when its client left


@pytest.mark.local
def test_the_local_model_answers_through_the_proxy(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="reflect/local/smollm2-135m",
        messages=[{"role": "user", "content": "What is 2+2?"}],
        max_tokens=32,
        extra_body=_single(),
    )
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0
    assert (reply.model_extra or {})["reflectkit"]["stop_reason"] == "single_pass"


@pytest.mark.local
def test_the_local_model_is_passed_through_whole_and_streamed(client: openai.OpenAI) -> None:
    """Pass-through on the local model: its calls skip LiteLLM; the replies are as before."""
    ask: Any = [{"role": "user", "content": "Name a colour."}]
    whole = client.chat.completions.create(
        model="local/smollm2-135m", messages=ask, max_tokens=12, temperature=0
    )
    stream = client.chat.completions.create(
        model="local/smollm2-135m", messages=ask, max_tokens=12, temperature=0, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert whole.choices[0].message.content
    assert streamed == whole.choices[0].message.content
    assert whole.usage is not None
    assert 0 < whole.usage.completion_tokens <= 12


def test_a_passed_through_reply_keeps_its_reasoning_only_when_asked(
    client: openai.OpenAI,
) -> None:
    fake = ScriptedLLM([Reply("4", reasoning="2 + 2 is 4")] * 2)
    messages: Any = [{"role": "user", "content": "2+2"}]
    plain = client.chat.completions.create(model=fake.model, messages=messages)
    asked = client.chat.completions.create(
        model=fake.model, messages=messages, extra_body={"reflectkit": {"include_reasoning": True}}
    )
    assert "reasoning_content" not in plain.choices[0].message.model_dump()
    assert getattr(asked.choices[0].message, "reasoning_content", None) == "2 + 2 is 4"


def test_reflectors_are_kept_for_reuse_and_the_oldest_dropped() -> None:
    from reflectkit.server.protocol import parse_chat_request
    from reflectkit.server.reflection import Reflectors

    fake = ScriptedLLM()
    kept = Reflectors(ServerSettings(models=(FAKES,)), size=2)

    def request(temperature: float) -> Any:
        body = chat_body("m", "hi")
        return parse_chat_request(json.dumps({**body, "temperature": temperature}).encode())

    first = kept.get(fake.model, request(0.0))
    assert kept.get(fake.model, request(0.0)) is first
    kept.get(fake.model, request(0.5))
    kept.get(fake.model, request(0.7))
    assert kept.get(fake.model, request(0.0)) is not first  # evicted, built again
    kept.close()


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (errors.ContextWindowError("too long"), 400, "context_length_exceeded"),
        (errors.ProviderTimeoutError("slow"), 504, "upstream_timeout"),
        (errors.ProviderConnectionError("refused"), 502, "upstream_unreachable"),
        (errors.CriticError("critic raised"), 502, "critic_failed"),
        (errors.UnknownModelError("nope/x"), 404, "model_not_found"),
        (errors.MissingCredentialsError("gpt-4o", ["OPENAI_API_KEY"]), 503, "upstream_unavailable"),
        (errors.ModelRequestsBlockedError("gpt-4o"), 503, "upstream_unavailable"),
        (errors.InputError("the last message must be the user's"), 400, "invalid_messages"),
        (errors.ConfigurationError("bad"), 400, "invalid_configuration"),
        (errors.ProviderError("odd"), 502, "upstream_failed"),
        (errors.RateLimitedError("slow down"), 429, "upstream_rate_limited"),
    ],
)
def test_every_reflectkit_error_has_a_status(
    error: errors.ReflectkitError, status: int, code: str
) -> None:
    from reflectkit.server.failures import as_api_error

    mapped = as_api_error(error, ["hunter2-secret"])
    assert (mapped.status, mapped.code) == (status, code)
    assert set(mapped.body()["error"]) == {"message", "type", "param", "code"}
    secret = as_api_error(errors.ProviderError("failed with hunter2-secret"), ["hunter2-secret"])
    assert "hunter2-secret" not in secret.message


def test_settings_check_what_they_are_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from reflectkit.server.settings import is_loopback

    assert [is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost")] == [
        True
    ] * 5
    assert [is_loopback(h) for h in ("0.0.0.0", "", "::", "10.0.0.1", "example.com")] == [False] * 5
    for bad in (
        {"prefix": "reflect"},
        {"api_key": "  "},
        {"upstream_kwargs": {"stream": True}},
        {"max_concurrent_requests": 0},
        {"mode": "twice"},
    ):
        with pytest.raises(ConfigurationError):
            ServerSettings(**bad)
    monkeypatch.setenv("REFLECTKIT_MODEL", "reflectkit-test/default")
    settings = ServerSettings(passthrough=False)
    assert settings.listed_models() == ["reflect/reflectkit-test/default"]
    assert settings.allows("reflectkit-test/default")
    assert not settings.allows("reflectkit-test/other")
    exposed = settings.model_copy(update={"host": "0.0.0.0"})  # skips validation
    with pytest.raises(ConfigurationError, match="without an API key"):
        create_app(exposed)


def test_without_passthrough_only_reflected_models_are_served() -> None:
    fake = ScriptedLLM(["<output>4</output>"])
    settings = ServerSettings(models=(fake.model,), passthrough=False)
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "2+2"}]}
    with running(settings) as url:
        bare = httpx.post(f"{url}/v1/chat/completions", json={**body, "model": fake.model})
        reflected = httpx.post(
            f"{url}/v1/chat/completions",
            json={**body, "model": f"reflect/{fake.model}", "reflectkit": {"mode": "single"}},
        )
        listed = httpx.get(f"{url}/v1/models").json()
    assert "only reflects" in _error(bare, 404)["message"]
    assert reflected.json()["choices"][0]["message"]["content"] == "4"
    assert [m["id"] for m in listed["data"]] == [f"reflect/{fake.model}"]


@contextmanager
def _process(command: list[str], env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``command``; yield the first line it writes on stderr (or stdout, for upstream)."""
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_for(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/health")
            return
        except httpx.ConnectError:
            assert time.monotonic() < deadline, f"{url} did not start"
            time.sleep(0.1)


def test_reflectkit_serve_proxies_a_real_openai_compatible_upstream() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    upstream_command = [sys.executable, "-m", "tests.upstream", "--port", "0", "--delay", "0"]
    with _process(upstream_command) as line:
        upstream = f"http://127.0.0.1:{line.split()[1]}"
        command = [
            *(sys.executable, "-m", "reflectkit.cli.serve", "--port", str(port)),
            *("-m", "openai/upstream", "-o", f"api_base={upstream}/v1", "-o", "api_key=none"),
            *("--log-level", "warning"),
        ]
        env = {**os.environ, "REFLECTKIT_SERVER_API_KEY": KEY}
        with _process(command, env) as banner:
            assert f"http://127.0.0.1:{port}/v1 (API key required)" in banner
            assert KEY not in banner
            url = f"http://127.0.0.1:{port}"
            _wait_for(url)
            assert httpx.get(f"{url}/health").json() == {"status": "ok"}
            with openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0) as sdk:
                listed = [m.id for m in sdk.models.list()]
                messages: Any = [{"role": "user", "content": "What is 2 + 2?"}]
                plain = sdk.chat.completions.create(model="openai/upstream", messages=messages)
                stream = sdk.chat.completions.create(
                    model="reflect/openai/upstream",
                    messages=messages,
                    stream=True,
                    extra_body=_single({"include_reasoning": True}),
                )
                chunks = list(stream)
    assert listed == ["reflect/openai/upstream", "openai/upstream"]
    # Passed through unchanged (the SDK path): the thinking block stays in the content.
    assert plain.choices[0].message.content == REPLY  # as the upstream wrote it
    assert "".join(_pieces(chunks)) == "The answer is 4."
    assert "".join(_pieces(chunks, "reasoning_content")) == "2 + 2 = 4"


def test_a_silent_stream_gets_keep_alive_comments() -> None:
    async def slow_critic(request: Request) -> str:
        if "verdict" not in request.last_user_text.lower():
            return "<output>4</output>"
        await asyncio.sleep(0.5)
        return verdict(True)

    fake = FunctionLLM(slow_critic)
    settings = ServerSettings(models=(FAKES,), keepalive_interval=0.1)
    body = chat_body(f"reflect/{fake.model}", stream=True, reflectkit={"mode": "loop"})
    with (
        running(settings) as url,
        httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as response,
    ):
        lines = [line for line in response.iter_lines() if line]
    assert ": keep-alive" in lines
    assert lines[-1] == "data: [DONE]"
    assert len(fake.requests) == 2  # the draft, then the critique that kept the stream silent


def test_importing_the_command_loads_no_server() -> None:
    code = (
        "import sys, reflectkit.server, reflectkit.cli.serve\n"
        "heavy = ('starlette', 'uvicorn', 'litellm', 'langgraph')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(heavy)}))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"


def test_a_client_that_leaves_before_its_answer_cancels_the_run() -> None:
    calls: list[float] = []

    async def slow(request: Request) -> str:
        calls.append(time.monotonic())
        await asyncio.sleep(0.3)
        if "strict reviewer" in str(request.messages):
            return verdict(False, "try again")
        return f"<output>{len(calls)}</output>"

    fake = FunctionLLM(slow)
    settings = _one_slot(queue_timeout=5)
    loop = {"mode": "loop", "max_iterations": 10}
    body = chat_body(f"reflect/{fake.model}", "hi", reflectkit=loop)
    with running(settings) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/chat/completions", json=body, timeout=0.5)
        time.sleep(1.0)
        made = len(calls)
        time.sleep(1.0)
        assert len(calls) == made  # no call after the client left
        assert made <= 4  # a 19-call loop, stopped after about 0.5 s of it
        single = {**body, "reflectkit": {"mode": "single"}}
        again = httpx.post(f"{url}/v1/chat/completions", json=single, timeout=10)
    assert again.status_code == 200  # the slot came back


def _failure_records(caplog: pytest.LogCaptureFixture, count: int) -> list[logging.LogRecord]:
    """The server's failure lines (WARNING and up), once there are ``count`` of them: a line is
    written when its request has ended, which may be just after its client saw the answer."""
    deadline = time.monotonic() + 10
    while True:
        records = [
            r
            for r in list(caplog.records)
            if r.name == "reflectkit.server.failures" and r.levelno >= logging.WARNING
        ]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.02)


PLANTED = "sk-planted0123456789abcdef"
CLIENT_TOKEN = "client-token-9f8e7d6c5b4a"


def test_every_failed_request_is_logged_once_without_secrets(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger="reflectkit.server")
    broken = f"the upstream echoed {KEY} and {PLANTED}"
    midway = ScriptedLLM(["<output>3</output>", fail(500, broken)])
    failing = ScriptedLLM([fail(500, broken), fail(500, broken)])
    slow = ScriptedLLM(["<output>" + "word " * 400 + "</output>"], chunk_size=4)
    slow.chunk_delay = 0.01
    blocked, _, release = _blocking_fake()
    settings = ServerSettings(api_key=KEY, models=(FAKES,), retry=RetryPolicy(max_attempts=1))
    auth = {"Authorization": f"Bearer {KEY}"}
    user = [{"role": "user", "content": QUESTION}]

    def reflected(fake: Any, **extra: Any) -> dict[str, Any]:
        return {"model": f"reflect/{fake.model}", "messages": user, **_single(), **extra}

    expected: list[tuple[int, str]] = []
    with running(settings) as url, httpx.Client(base_url=url, headers=auth, timeout=30) as http:

        def check(response: httpx.Response | None, status: int, line: str, level: int) -> None:
            if response is not None:
                assert response.status_code == status, response.text
            expected.append((level, line))
            records = _failure_records(caplog, len(expected))
            assert len(records) == len(expected), [r.getMessage() for r in records]
            assert records[-1].levelno == level
            assert records[-1].getMessage().startswith(line), records[-1].getMessage()

        wrong = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
        check(
            http.get("/v1/models", headers=wrong),
            401,
            "GET /v1/models 401 invalid_api_key: incorrect API key",
            logging.WARNING,
        )
        chat = "POST /v1/chat/completions"
        gone = {"model": "gpt-4o", "messages": user}
        check(
            http.post("/v1/chat/completions", json=gone),
            404,
            f"{chat} 404 model_not_found: the model 'gpt-4o'",
            logging.WARNING,
        )
        check(
            http.post("/v1/chat/completions", content=b"{"),
            400,
            f"{chat} 400 invalid_json: the request body is not valid JSON",
            logging.WARNING,
        )
        check(
            http.post("/v1/chat/completions", json=reflected(failing)),
            502,
            f"{chat} 502 upstream_failed: ",
            logging.ERROR,
        )
        check(
            http.post("/v1/chat/completions", json=reflected(failing, stream=True)),
            502,
            f"{chat} 502 upstream_failed: ",
            logging.ERROR,
        )
        loop = {**reflected(midway, stream=True), "reflectkit": {"mode": "loop"}}
        with http.stream("POST", "/v1/chat/completions", json=loop) as response:
            events = [line for line in response.iter_lines() if line]
        assert '"error"' in events[-1]
        check(
            response, 200, f"{chat} 502 upstream_failed (in the stream, after 200): ", logging.ERROR
        )
        with (
            pytest.raises(httpx.ReadTimeout),
            httpx.Client(base_url=url, headers=auth, timeout=0.5) as impatient,
        ):
            impatient.post("/v1/chat/completions", json=reflected(blocked))
        check(
            None,
            499,
            f"{chat} 499 client_closed_request: the client disconnected before its answer",
            logging.WARNING,
        )
        with http.stream("POST", "/v1/chat/completions", json=reflected(slow, stream=True)) as rs:
            next(line for line in rs.iter_lines() if "word" in line)
        check(
            None,
            499,
            f"{chat} 499 client_closed_request: the client disconnected mid-stream",
            logging.WARNING,
        )

        def bug(*args: Any) -> Any:
            raise RuntimeError(f"a bug that shows {KEY}\nand more")

        monkeypatch.setattr(server_app._Proxy, "complete", bug)
        response = http.post("/v1/chat/completions", json=reflected(failing))
        check(
            response,
            500,
            f"{chat} 500 internal_error: RuntimeError: a bug that shows [redacted]",
            logging.ERROR,
        )
        assert response.json()["error"]["message"] == "internal server error"
        monkeypatch.undo()
        assert http.get("/health").status_code == 200
        assert http.get("/v1/models").status_code == 200
    release.set()
    assert "Traceback" in caplog.text  # the unexpected one's, at DEBUG
    for secret in (KEY, PLANTED, CLIENT_TOKEN):
        assert secret not in caplog.text
    assert len(_failure_records(caplog, len(expected))) == len(expected)  # nothing else


def test_the_server_keeps_serving_after_a_model_fails(client: openai.OpenAI) -> None:
    fake = ScriptedLLM([fail(500, "overloaded"), "<output>4</output>"])
    messages: Any = [{"role": "user", "content": "2+2"}]
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(
            model=f"reflect/{fake.model}", messages=messages, extra_body=_single()
        )
    assert raised.value.status_code == 502
    reply = client.chat.completions.create(
        model=f"reflect/{fake.model}", messages=messages, extra_body=_single()
    )
    assert reply.choices[0].message.content == "4"


def test_a_crashed_local_model_worker_is_a_clean_error_and_logged(
    client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reflectkit.server")
    crashed = (
        "the local model's worker process died (killed by SIGKILL); it restarts on the next call"
    )
    calls: list[int] = []

    def worker(request: Request) -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise errors.LocalModelError(crashed)
        return "<output>4</output>"

    fake = FunctionLLM(worker)
    messages: Any = [{"role": "user", "content": "2+2"}]
    with pytest.raises(openai.APIStatusError) as whole:
        client.chat.completions.create(
            model=f"reflect/{fake.model}", messages=messages, extra_body=_single()
        )
    with pytest.raises(openai.APIStatusError) as streamed:
        client.chat.completions.create(
            model=f"reflect/{fake.model}", messages=messages, stream=True, extra_body=_single()
        )
    reply = client.chat.completions.create(
        model=f"reflect/{fake.model}", messages=messages, extra_body=_single()
    )
    assert reply.choices[0].message.content == "4"
    for raised in (whole, streamed):
        error = raised.value
        assert error.status_code == 503
        assert isinstance(error.body, dict)
        assert error.body["code"] == "upstream_unavailable"
        assert "worker process died" in error.body["message"]
    lines = [r.getMessage() for r in _failure_records(caplog, 2)]
    assert len(lines) == 2
    for line in lines:
        assert line.startswith("POST /v1/chat/completions 503 upstream_unavailable: ")
        assert "worker process died" in line


def test_reflectkit_serve_prints_failed_requests_and_says_when_a_signal_stops_it() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
        command = [
            *(sys.executable, "-m", "reflectkit", "serve", "--port", str(port)),
            *("-m", "openai/nowhere", "-o", f"api_base={nowhere}", "-o", f"api_key={PLANTED}"),
            *("--log-level", "warning"),
        ]
        env = {**os.environ, "REFLECTKIT_SERVER_API_KEY": KEY}
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_for(url)
            wrong = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
            assert httpx.get(f"{url}/v1/models", headers=wrong).status_code == 401
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
                for model, status in (("gpt-4o", 404), ("openai/nowhere", 502)):
                    body = chat_body(model, "hi")
                    response = http.post("/v1/chat/completions", json=body, timeout=60)
                    assert response.status_code == status, response.text
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    lines = err.strip().splitlines()
    chat = "POST /v1/chat/completions"
    assert lines[0].startswith("reflectkit: serving openai/nowhere"), err
    assert lines[1] == "WARNING:  GET /v1/models 401 invalid_api_key: incorrect API key"
    assert lines[2].startswith(f"WARNING:  {chat} 404 model_not_found: the model 'gpt-4o'")
    # reflectkit's other lines reach the terminal too: here the upstream call's retries.
    assert lines[3].startswith("WARNING:  retrying openai/nowhere after attempt 1 failed: ")
    assert lines[-2].startswith(f"ERROR:    {chat} 502 upstream_unreachable: openai/nowhere: ")
    # A stop asked for by SIGTERM, its requests given their grace period, is a success.
    assert lines[-1] == "reflectkit: stopped by SIGTERM"
    assert proc.returncode == 0
    for secret in (KEY, PLANTED, CLIENT_TOKEN):
        assert secret not in out + err


def _serve_until_up(preexec: Any = None) -> tuple[subprocess.Popen[str], str]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "reflectkit", "serve", "--port", str(port), "-m", "openai/x"]
    command += ["-o", "api_base=http://127.0.0.1:9/v1", "--log-level", "warning"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec
    )
    url = f"http://127.0.0.1:{port}"
    _wait_for(url)
    return proc, url


def test_a_hangup_stops_the_server_gracefully_unless_it_runs_under_nohup() -> None:
    """SIGHUP (its terminal closed) used to kill ``reflectkit serve`` on the spot, exit 129 and
    no word; it now stops it as SIGTERM does. Started the way nohup starts it (SIGHUP ignored),
    the server keeps ignoring it."""
    hung, _ = _serve_until_up()
    ignoring, url = _serve_until_up(lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    try:
        hung.send_signal(signal.SIGHUP)
        _, err = hung.communicate(timeout=30)
        ignoring.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}  # still serving
        ignoring.send_signal(signal.SIGTERM)
        _, still = ignoring.communicate(timeout=30)
    finally:
        for proc in (hung, ignoring):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert (hung.returncode, err.strip().splitlines()[-1]) == (0, "reflectkit: stopped by SIGHUP")
    assert (ignoring.returncode, still.strip().splitlines()[-1]) == (
        0,
        "reflectkit: stopped by SIGTERM",
    )


async def test_a_request_cancelled_as_the_server_stops_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from reflectkit.server.failures import FailureLog

    async def stopping(scope: Any, receive: Any, send: Any) -> None:
        raise asyncio.CancelledError

    async def nothing() -> Any:
        return {"type": "http.disconnect"}

    async def ignore(message: Any) -> None:
        pass

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    with pytest.raises(asyncio.CancelledError):
        await FailureLog(stopping)(scope, nothing, ignore)
    [record] = _failure_records(caplog, 1)
    assert record.getMessage() == (
        "POST /v1/chat/completions 503 server_stopping: the server stopped"
    )
