"""The proxy's plain calls to an OpenAI-compatible server go through the ``openai`` SDK, not
LiteLLM (reflectkit/models/compatible.py): what reaches the server, how its failures map into
reflectkit's tree, and that other models and the reflection loop still take LiteLLM's path.

The server is tests/server/test_hostile_upstream.py's scripted one, over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from reflectkit.config import RetryPolicy
from reflectkit.errors import (
    ContextWindowError,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderServerError,
    RateLimitedError,
)
from reflectkit.models.compatible import SdkUpstream, sdk_eligible
from reflectkit.models.registry import load_litellm
from reflectkit.server.passthrough import UpstreamClient, answer_of
from tests.server.helpers import IGNORE_READONLY_WARNINGS
from tests.server.test_hostile_upstream import (
    MODEL,
    Canned,
    HostileUpstream,
    chat,
    chunks,
    completion,
    content_of,
    post,
    proxy,
    reply,
)

pytestmark = IGNORE_READONLY_WARNINGS

ONCE = RetryPolicy(max_attempts=1)
SECRET = "sk-passthrough-secret-0000"


@pytest.fixture
def upstream(hostile_server: HostileUpstream) -> HostileUpstream:
    hostile_server.script(completion("four"))
    return hostile_server


def client(upstream: HostileUpstream, **params: Any) -> UpstreamClient:
    settings = {"api_base": upstream.url, "api_key": SECRET, **params}
    return UpstreamClient(MODEL, settings, retry=ONCE, timeout=10)


def opened(upstream_client: UpstreamClient, stream: bool = False) -> Any:
    """One call's response, in a loop of its own that closes the client's connections."""

    async def call() -> Any:
        try:
            return await upstream_client.open([{"role": "user", "content": "x"}], {}, stream)
        finally:
            await upstream_client.aclose()

    return asyncio.run(call())


def sent(upstream: HostileUpstream) -> dict[str, Any]:
    """The JSON body of the last request the server got."""
    body: dict[str, Any] = json.loads(upstream.requests[-1])
    return body


class _Counter:
    """A LiteLLM callback counting the calls that went through LiteLLM."""

    def __init__(self) -> None:
        self.calls = 0

    def log_success(self, *args: Any, **kwargs: Any) -> None:
        self.calls += 1


@pytest.fixture
def litellm_calls() -> Iterator[_Counter]:
    litellm = load_litellm()
    counter = _Counter()
    from litellm.integrations.custom_logger import CustomLogger

    class Logger(CustomLogger):  # type: ignore[misc]
        async def async_log_success_event(self, *args: Any, **kwargs: Any) -> None:
            counter.log_success()

    logger = Logger()
    litellm.callbacks.append(logger)
    try:
        yield counter
    finally:
        litellm.callbacks.remove(logger)


def test_eligible_only_for_openai_models_at_an_api_base() -> None:
    assert sdk_eligible("openai/llama", {"api_base": "http://127.0.0.1:9/v1"})
    assert sdk_eligible("openai/llama", {"base_url": "http://10.0.0.2/v1"})
    assert not sdk_eligible("openai/gpt-4o-mini", {})  # OpenAI itself: LiteLLM's path
    assert not sdk_eligible("openai/llama", {"api_base": "  "})
    assert not sdk_eligible("anthropic/claude-3-5-haiku", {"api_base": "http://x/v1"})
    assert not sdk_eligible("hosted_vllm/llama", {"api_base": "http://x/v1"})


def test_the_request_the_server_gets(upstream: HostileUpstream) -> None:
    """The model's own name; LiteLLM's arguments and the key stay out of the body; an argument
    the SDK does not name travels as LiteLLM sends it, in the body."""
    upstream_client = client(upstream, top_k=5)
    params = {"temperature": 0.25, "seed": 7, "user": "u-1"}
    messages = [{"role": "user", "content": "2+2?"}]

    async def call() -> Any:
        response = await upstream_client.open(messages, params, stream=False)
        await upstream_client.aclose()
        return response

    answer = answer_of(asyncio.run(call()), False, MODEL)
    assert answer.content == "four"
    body = sent(upstream)
    assert body["model"] == "hostile"
    assert body["messages"] == messages
    assert (body["temperature"], body["seed"], body["user"], body["top_k"]) == (0.25, 7, "u-1", 5)
    leaked = {"api_base", "api_key", "max_retries", "input_cost_per_token", "timeout"}
    assert leaked.isdisjoint(body)
    assert SECRET not in upstream.requests[-1].decode()


def test_plain_calls_skip_litellm_and_reflected_ones_take_it(
    upstream: HostileUpstream, litellm_calls: _Counter
) -> None:
    app = proxy(upstream)
    for body in (chat(), chat(stream=True)):
        upstream.script(completion("four") if "stream" not in body else chunks({"content": "4"}))
        response = asyncio.run(post(app, body))
        assert response.status_code == 200, response.text
    assert litellm_calls.calls == 0
    upstream.script(completion("<output>4</output>"))
    response = asyncio.run(post(app, chat(f"reflect/{MODEL}", reflectkit={"mode": "single"})))
    assert (response.status_code, content_of(response)) == (200, "4")
    assert litellm_calls.calls == 1


def _error(status: int, message: str, code: str | None = None, **headers: str) -> Canned:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return Canned(status, json.dumps(body).encode(), dict(headers))


@pytest.mark.parametrize(
    ("answer", "kind", "retryable"),
    [
        (_error(400, "too long", "context_length_exceeded"), ContextWindowError, False),
        (
            _error(400, "This model's maximum context length is 8192 tokens"),
            ContextWindowError,
            False,
        ),
        (_error(401, f"bad key {SECRET}"), ProviderAuthError, False),
        (_error(503, "overloaded"), ProviderServerError, True),
        (Canned(200, b"<html>not json</html>"), ProviderServerError, True),
        (reply({"choices": []}), ProviderServerError, True),
    ],
    ids=["context-code", "context-message", "auth", "server", "not-json", "no-choices"],
)
def test_failures_map_into_reflectkits_tree(
    upstream: HostileUpstream, answer: Canned, kind: type[Exception], retryable: bool
) -> None:
    upstream.script(answer)
    upstream_client = client(upstream)
    with pytest.raises(kind) as caught:
        opened(upstream_client)
    assert getattr(caught.value, "retryable", None) is retryable
    assert SECRET not in str(caught.value)
    assert str(caught.value).startswith(f"{MODEL}: ")


def test_a_429_carries_its_retry_after(upstream: HostileUpstream) -> None:
    upstream.script(_error(429, "slow down", **{"Retry-After": "3"}))
    with pytest.raises(RateLimitedError) as caught:
        opened(client(upstream))
    assert caught.value.retry_after == 3.0


def test_a_retryable_failure_is_retried_through_the_sdk(upstream: HostileUpstream) -> None:
    upstream.script(_error(503, "busy"), completion("four"))
    retrying = UpstreamClient(
        MODEL,
        {"api_base": upstream.url},
        retry=RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.01),
    )
    response = opened(retrying)
    assert answer_of(response, False, MODEL).content == "four"
    assert len(upstream.requests) == 2


def test_nothing_listening_is_a_connection_error() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    gone = UpstreamClient(MODEL, {"api_base": f"http://127.0.0.1:{port}/v1"}, retry=ONCE)
    with pytest.raises(ProviderConnectionError):
        opened(gone)


def test_one_client_serves_successive_event_loops(upstream: HostileUpstream) -> None:
    """The SDK's connection pool belongs to one loop; a client used from a new loop (a second
    ``asyncio.run``, a restarted worker) opens its own instead of failing."""
    upstream_client = client(upstream)
    for _ in range(2):
        response = opened(upstream_client)
        assert answer_of(response, False, MODEL).content == "four"


def test_a_stream_read_partly_is_closed(upstream: HostileUpstream) -> None:
    upstream.script(chunks({"content": "a"}, {"content": "b"}, {"content": "c"}))
    upstream_client = client(upstream)

    async def first_chunk() -> Any:
        response = await upstream_client.open([{"role": "user", "content": "x"}], {}, True)
        pieces = upstream_client.chunks(response)
        first = await anext(pieces)
        await pieces.aclose()
        await upstream_client.aclose()
        return response, first

    response, first = asyncio.run(first_chunk())
    assert first.choices[0].delta.content == "a"
    assert response.response.is_closed


def test_sdk_upstream_strips_the_provider_prefix_only() -> None:
    sdk = SdkUpstream("openai/org/model:latest", {"api_base": "http://127.0.0.1:9/v1"})
    assert sdk.arguments({"model": "openai/org/model:latest", "max_retries": 0}) == {
        "model": "org/model:latest"
    }
