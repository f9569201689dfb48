"""What a broken or hostile upstream sends, through the real HTTP path (LiteLLM's OpenAI client
talking to a server on 127.0.0.1): an unparseable Retry-After, replies without choices or with
content that is not text, lone surrogates. The library raises reflectkit's own errors (a
batch item fails alone, marked retryable or not), and the proxy answers with a gateway status,
never a 500.

:class:`HostileUpstream` is an OpenAI-compatible server whose every answer a test scripts:
status, headers and the raw body bytes, or SSE events.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

import reflectkit as rk
from reflectkit.batching import batch
from reflectkit.config import RetryPolicy
from reflectkit.errors import ProviderError, RateLimitedError
from reflectkit.models.provider_errors import parse_retry_after, retry_after
from reflectkit.server import ServerSettings, create_app
from tests.server.helpers import (
    IGNORE_READONLY_WARNINGS,
    chat_body,
    post_chat,
    uvicorn_serving,
)

pytestmark = IGNORE_READONLY_WARNINGS

MODEL = "openai/hostile"
ONCE = RetryPolicy(max_attempts=1)
TWICE = RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.01)


@dataclass
class Canned:
    """One scripted answer: a status, headers and a raw body, or SSE ``events`` (each sent as
    ``data: <event>``)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    events: list[bytes] | None = None


def completion(content: Any = "<output>4</output>", **message: Any) -> Canned:
    """A chat completion whose message has ``content`` (any JSON value) and ``message``."""
    choice = {"index": 0, "message": {"role": "assistant", "content": content, **message}}
    return reply({"choices": [{**choice, "finish_reason": "stop"}]})


def completion_fields(
    content: Any = "<output>4</output>", finish_reason: Any = "stop", **message: Any
) -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", "content": content, **message}}
    return {"choices": [{**choice, "finish_reason": finish_reason}]}


def reply(fields: dict[str, Any], status: int = 200, **headers: str) -> Canned:
    """A JSON reply: OpenAI's envelope (id, object, created, model, usage) and ``fields``."""
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    head = {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "hostile"}
    body = json.dumps({**head, "usage": usage, **fields}).encode()
    return Canned(status, body, dict(headers))


def chunks(*deltas: Any) -> Canned:
    """A stream: one chunk per delta (a dict, or a whole chunk's ``choices`` value when it is a
    list or None), then a finish chunk and ``[DONE]``."""
    head = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "h"}
    events = []
    for delta in deltas:
        choices = delta if not isinstance(delta, dict) else [{"index": 0, "delta": delta}]
        events.append(json.dumps({**head, "choices": choices}).encode())
    finish = [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    events += [json.dumps({**head, "choices": finish}).encode(), b"[DONE]"]
    return Canned(events=events)


class HostileUpstream:
    """An OpenAI-compatible server on 127.0.0.1 answering from a script; the last scripted
    answer repeats. ``requests`` holds the raw bodies it was sent."""

    def __init__(self) -> None:
        self.answers: list[Canned] = []
        self.requests: list[bytes] = []
        self.url = ""

    def script(self, *answers: Canned) -> None:
        self.answers = list(answers)
        self.requests.clear()

    async def complete(self, request: Request) -> Response:
        self.requests.append(await request.body())
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer.events is None:
            return Response(
                answer.body, answer.status, answer.headers, media_type="application/json"
            )
        events = answer.events

        async def sse() -> AsyncIterator[bytes]:
            for event in events:
                yield b"data: " + event + b"\n\n"

        return StreamingResponse(sse(), answer.status, answer.headers, "text/event-stream")


@contextmanager
def serving(upstream: HostileUpstream) -> Iterator[HostileUpstream]:
    """Run ``upstream`` with uvicorn in a thread on a free loopback port."""
    app = Starlette(routes=[Route("/v1/chat/completions", upstream.complete, methods=["POST"])])
    with uvicorn_serving(app) as port:
        upstream.url = f"http://127.0.0.1:{port}/v1"
        yield upstream


@pytest.fixture
def upstream(hostile_server: HostileUpstream) -> HostileUpstream:
    hostile_server.script(completion())
    return hostile_server


def kwargs(upstream: HostileUpstream, retry: RetryPolicy = ONCE) -> dict[str, Any]:
    """reflect()'s arguments for the hostile upstream."""
    return {
        "model": MODEL,
        "api_base": upstream.url,
        "api_key": "none",
        "retry": retry,
        "run_log": False,
        "mode": "single",
    }


def proxy(upstream: HostileUpstream) -> Starlette:
    """The proxy's app, serving the hostile upstream (over real HTTP) bare and reflected."""
    settings = ServerSettings(
        models=(MODEL,),
        upstream_kwargs={"api_base": upstream.url, "api_key": "none"},
        retry=ONCE,
    )
    return create_app(settings)


async def post(app: Starlette, body: dict[str, Any]) -> httpx.Response:
    """POST a chat request to ``app`` in-process; the whole response, within 30 s."""
    # json.dumps escapes what is not ASCII, so a lone surrogate goes as JSON spells it.
    return await post_chat(app, json.dumps(body).encode(), within=30)


def content_of(response: httpx.Response) -> str:
    """The answer's text in a proxy's response, whole or streamed."""
    response.content.decode("utf-8")  # valid UTF-8, whatever the upstream sent
    if not response.headers["content-type"].startswith("text/event-stream"):
        return str(response.json()["choices"][0]["message"]["content"])
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: {")]
    chunks = [json.loads(event) for event in events]
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


def chat(model: str = MODEL, **extra: Any) -> dict[str, Any]:
    return chat_body(model, **extra)


REQUESTS = [
    pytest.param(chat(), id="passed-through"),
    pytest.param(chat(stream=True), id="passed-through-stream"),
    pytest.param(chat(f"reflect/{MODEL}", reflectkit={"mode": "single"}), id="reflected"),
    pytest.param(
        chat(f"reflect/{MODEL}", stream=True, reflectkit={"mode": "single"}),
        id="reflected-stream",
    ),
]


# Defect: an unparseable Retry-After ("soon") raised ValueError out of reflect(), marked batch
# items non-retryable and gave the proxy a 500. It is no hint at all.

BAD_RETRY_AFTER = ["soon", "NaN", "inf", "-inf", "1e999", "Mon, 01 Jan 99999 00:00:00 GMT", "?"]


def rate_limited(value: str) -> Canned:
    return reply(
        {"error": {"message": "slow down", "type": "rate_limit"}}, 429, **{"Retry-After": value}
    )


@pytest.mark.parametrize("value", BAD_RETRY_AFTER)
def test_an_unparseable_retry_after_is_no_hint(upstream: HostileUpstream, value: str) -> None:
    upstream.script(rate_limited(value))
    with pytest.raises(RateLimitedError) as raised:
        rk.reflect("2+2", **kwargs(upstream))
    assert raised.value.retry_after is None
    assert raised.value.retryable
    upstream.script(rate_limited(value), completion())
    result = rk.reflect("2+2", **kwargs(upstream, TWICE))  # retried after the usual backoff
    assert result.output == "4"
    assert len(upstream.requests) == 2


def test_a_batch_item_rate_limited_with_a_bad_retry_after_fails_alone_and_retryable(
    upstream: HostileUpstream,
) -> None:
    upstream.script(completion(), rate_limited("soon"), completion())
    settings = kwargs(upstream)
    model = settings.pop("model")
    items = batch(["a", "b", "c"], model, concurrency=1, progress=False, **settings)
    assert [item.ok for item in items] == [True, False, True]
    error = items[1].error
    assert error is not None
    assert (error.type, error.retryable) == ("RateLimitedError", True)


@pytest.mark.parametrize("body", REQUESTS)
async def test_the_proxy_answers_a_bad_retry_after_with_a_429_and_no_hint(
    upstream: HostileUpstream, body: dict[str, Any]
) -> None:
    upstream.script(rate_limited("soon"))
    response = await post(proxy(upstream), body)
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "upstream_rate_limited"
    assert "retry-after" not in response.headers


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(), st.from_regex(r"\A[-+ ]?[0-9.eE+-]{0,12}\Z"), st.sampled_from(BAD_RETRY_AFTER)
    )
)
def test_parsing_any_retry_after_gives_finite_seconds_or_nothing(value: str) -> None:
    seconds = parse_retry_after(value)
    assert seconds is None or (seconds >= 0 and seconds < float("inf"))


def test_retry_after_reads_the_header_of_a_wrapped_error() -> None:
    litellm = pytest.importorskip("litellm")
    for value, expected in (("soon", None), ("7", 7.0), ("NaN", None), ("1e999", None)):
        response = httpx.Response(429, headers={"retry-after": value}, request=REQUEST)
        error = litellm.RateLimitError(
            message="slow", llm_provider="openai", model="m", response=response
        )
        assert retry_after(error) == expected
        outer = ProviderError("wrapped")
        outer.__cause__ = error
        assert retry_after(outer) == expected


REQUEST = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")


def test_a_rate_limit_without_a_usable_wait_passes_no_retry_after_on() -> None:
    from reflectkit.server.failures import as_api_error

    for wait in (float("inf"), float("nan"), -1.0, None):
        error = as_api_error(RateLimitedError("slow down", retry_after=wait))
        assert (error.status, error.headers) == (429, {})
    assert as_api_error(RateLimitedError("slow", retry_after=6.2)).headers == {"Retry-After": "7"}


# Defect: a reply with `choices: []` raised IndexError out of reflect() and gave the proxy a 500.
# Every reply reflectkit cannot read is a ProviderError, retried like a 5xx (decision: a broken
# reply is the upstream's fault, and a gateway's hiccup may pass), and a 502 from the proxy.

ENVELOPE = {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "hostile"}
MALFORMED = [
    pytest.param(reply({"choices": []}), id="no-choices"),
    pytest.param(reply({"choices": None}), id="null-choices"),
    pytest.param(reply({"choices": [{"index": 0, "finish_reason": "stop"}]}), id="no-message"),
    pytest.param(reply({"choices": [None]}), id="null-choice"),
    pytest.param(reply({"choices": "4"}), id="string-choices"),
    pytest.param(completion(5), id="int-content"),
    pytest.param(completion({"text": "4"}), id="object-content"),
    pytest.param(completion([{"type": "text", "text": "4"}]), id="array-content"),
    pytest.param(completion(None, tool_calls="abc"), id="string-tool-calls"),
    pytest.param(Canned(body=b"{not json"), id="not-json"),
    pytest.param(Canned(body=b"[1, 2]"), id="json-array"),
    pytest.param(Canned(body=b""), id="empty-body"),
    pytest.param(Canned(body=json.dumps(ENVELOPE).encode()), id="no-choices-key"),
]
ODD_REPLIES = [  # readable, with something odd beside the answer
    pytest.param(
        reply({**completion_fields(), "usage": {"prompt_tokens": "many"}}), id="text-usage"
    ),
    pytest.param(
        reply({**completion_fields(), "usage": {"prompt_tokens": -5}}), id="negative-usage"
    ),
    pytest.param(
        reply({**completion_fields(), "usage": {"prompt_tokens": 1e300}}), id="huge-usage"
    ),
    pytest.param(reply({**completion_fields(), "usage": "none"}), id="string-usage"),
    pytest.param(reply(completion_fields(finish_reason=7)), id="int-finish-reason"),
    pytest.param(reply(completion_fields(reasoning_content=5)), id="int-reasoning"),
    pytest.param(completion(None, tool_calls=[{"id": 1, "function": "f"}]), id="odd-tool-call"),
]
# LiteLLM warns (pydantic) on some of these shapes before it fails them; filterwarnings=error
# would turn its warning into a different exception than users get.
IGNORE_LITELLM_WARNINGS = pytest.mark.filterwarnings("ignore::UserWarning")


@IGNORE_LITELLM_WARNINGS
@pytest.mark.parametrize("answer", MALFORMED)
def test_a_malformed_reply_is_a_retryable_provider_error(
    upstream: HostileUpstream, answer: Canned
) -> None:
    upstream.script(answer)
    with pytest.raises(ProviderError) as raised:
        rk.reflect("2+2", **kwargs(upstream))
    assert raised.value.retryable, raised.value
    upstream.script(answer, completion())
    assert rk.reflect("2+2", **kwargs(upstream, TWICE)).output == "4"


@IGNORE_LITELLM_WARNINGS
def test_a_batch_item_with_a_malformed_reply_fails_alone(upstream: HostileUpstream) -> None:
    upstream.script(completion(), reply({"choices": []}), completion())
    settings = kwargs(upstream)
    model = settings.pop("model")
    items = batch(["a", "b", "c"], model, concurrency=1, progress=False, **settings)
    assert [item.ok for item in items] == [True, False, True]
    assert items[1].error is not None
    assert items[1].error.retryable
    assert "no choices" in items[1].error.message


WHOLE_REQUESTS = REQUESTS[0::2]


@IGNORE_LITELLM_WARNINGS
@pytest.mark.parametrize("body", WHOLE_REQUESTS)
@pytest.mark.parametrize("answer", MALFORMED)
async def test_the_proxy_answers_a_malformed_reply_with_a_502(
    upstream: HostileUpstream, answer: Canned, body: dict[str, Any]
) -> None:
    upstream.script(answer)
    response = await post(proxy(upstream), body)
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_failed"


MALFORMED_STREAMS = [
    pytest.param(chunks({"content": 5}), id="int-content"),
    pytest.param(chunks({"content": {"a": 1}}), id="object-content"),
    pytest.param(chunks({"content": ["4"]}), id="array-content"),
    pytest.param(chunks({"role": "assistant", "content": "<output>4"}, 7), id="int-chunk"),
    pytest.param(chunks("choices"), id="string-choices"),
    pytest.param(chunks(None, [], {"content": "<output>4</output>"}), id="null-and-no-choices"),
    pytest.param(chunks([{"index": 0}], {"content": "<output>4</output>"}), id="no-delta"),
    pytest.param(chunks([{"index": 0, "delta": None}]), id="null-delta"),
    pytest.param(Canned(events=[b"{not json", b"[DONE]"]), id="not-json"),
    pytest.param(Canned(events=[b'"just a string"', b"[DONE]"]), id="string-chunk"),
    pytest.param(Canned(events=[]), id="no-events"),
]


@IGNORE_LITELLM_WARNINGS
@pytest.mark.parametrize("answer", MALFORMED_STREAMS)
def test_a_malformed_stream_is_a_provider_error_or_an_answer(
    upstream: HostileUpstream, answer: Canned
) -> None:
    upstream.script(answer)
    with rk.Reflector(**kwargs(upstream)) as reflector:
        try:
            events = list(reflector.stream("2+2"))
        except ProviderError:
            return
    assert isinstance(events[-1].result.output, str)


@IGNORE_LITELLM_WARNINGS
@pytest.mark.parametrize("body", REQUESTS)
@pytest.mark.parametrize("answer", MALFORMED + MALFORMED_STREAMS + ODD_REPLIES)
async def test_the_proxy_answers_anything_an_upstream_sends_with_200_or_502(
    upstream: HostileUpstream, answer: Canned, body: dict[str, Any]
) -> None:
    upstream.script(answer)
    response = await post(proxy(upstream), body)
    assert response.status_code in (200, 502), response.text
    if response.status_code == 502:
        assert response.json()["error"]["code"] == "upstream_failed"
    elif not body.get("stream"):
        assert isinstance(response.json()["choices"][0]["message"]["content"], (str, type(None)))
    else:  # the stream had started: it ends with [DONE], or with an error event
        last = [line for line in response.text.splitlines() if line][-1]
        if last != "data: [DONE]":
            assert json.loads(last.removeprefix("data: "))["error"]["code"] == "upstream_failed"


# Defect: a lone surrogate (half an emoji) in a prompt failed every call to an HTTP model (it
# cannot be encoded: retried 4 times, then a 502 from the proxy), and one in a reply reached
# files and response bodies, which failed to encode it (a 500 from the proxy). The model layer
# sends and hands back valid Unicode: a lone surrogate is U+FFFD, a split pair its character.

HALF = "\ud83d"


def test_a_prompt_with_a_lone_surrogate_reaches_an_http_model(upstream: HostileUpstream) -> None:
    result = rk.reflect(f"2+2 {HALF}", **kwargs(upstream))
    assert result.output == "4"
    (sent,) = upstream.requests
    assert "2+2 \ufffd" in json.dumps(json.loads(sent.decode("utf-8")), ensure_ascii=False)


def test_a_reply_with_a_lone_surrogate_comes_back_repaired(upstream: HostileUpstream) -> None:
    upstream.script(completion(f"<thinking>{HALF}</thinking><output>4 {HALF}</output>"))
    result = rk.reflect("2+2", **kwargs(upstream))
    assert result.output == "4 \ufffd"
    assert result.thinking == ["\ufffd"]


def test_a_surrogate_pair_split_between_stream_chunks_is_joined(
    upstream: HostileUpstream,
) -> None:
    upstream.script(
        chunks({"content": "<output>4 \ud83d"}, {"content": "\ude00 "}, {"content": HALF})
    )
    with rk.Reflector(**kwargs(upstream)) as reflector:
        events = list(reflector.stream("2+2"))
    assert events[-1].result.output == "4 \U0001f600 \ufffd"


@pytest.mark.parametrize("body", REQUESTS)
async def test_the_proxy_passes_a_lone_surrogate_on_as_u_fffd(
    upstream: HostileUpstream, body: dict[str, Any]
) -> None:
    answer = "<output>4 \ud83d\ude00 " + HALF + "</output>"
    upstream.script(chunks({"content": answer}) if body.get("stream") else completion(answer))
    asked = {**body, "messages": [{"role": "user", "content": f"2+2 {HALF}"}]}
    response = await post(proxy(upstream), asked)
    assert response.status_code == 200, response.text
    assert content_of(response).removeprefix("<output>").removesuffix("</output>") == (
        "4 \U0001f600 \ufffd"
    )
    (sent,) = upstream.requests
    assert "2+2 \ufffd" in json.dumps(json.loads(sent.decode("utf-8")), ensure_ascii=False)


@IGNORE_LITELLM_WARNINGS
@pytest.mark.parametrize("answer", ODD_REPLIES)
def test_an_odd_but_readable_reply_is_an_answer_or_a_provider_error(
    upstream: HostileUpstream, answer: Canned
) -> None:
    upstream.script(answer)
    try:
        result = rk.reflect("2+2", **kwargs(upstream))
    except ProviderError:
        return
    assert isinstance(result.output, str)
    assert result.usage.prompt_tokens >= 0
