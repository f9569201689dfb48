"""What a careless or hostile client sends the proxy: bodies nested 1,000 deep, numbers that are
not numbers, fields of the wrong shape, lone surrogates. Each is a 400 before any upstream call
(nothing is paid for, nothing retried), the connection stays usable, and a 500, should a bug
ever cause one, tells the client to drop the connection.

HTTP behaviour runs on a real uvicorn on 127.0.0.1 (raw sockets where the connection itself is
the point); the rest in-process through httpx's ASGI transport.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reflectkit.server.app as server_app
from reflectkit.config import RetryPolicy
from reflectkit.models.llm import check_model
from reflectkit.server import ServerSettings, create_app
from reflectkit.server.checks import check_params
from reflectkit.server.protocol import MAX_JSON_DEPTH, _deeper_than, _repair_escapes
from reflectkit.testing import FunctionLLM, Request
from tests.server.helpers import (
    FAKES,
    HEALTH,
    IGNORE_READONLY_WARNINGS,
    chat_body,
    exchange,
    post_chat,
    running,
)

pytestmark = IGNORE_READONLY_WARNINGS


def _answer(request: Request) -> str:
    return "<output>4</output>"


FAKE = FunctionLLM(_answer)
SETTINGS = ServerSettings(models=(FAKES,), retry=RetryPolicy(max_attempts=4, initial_wait=0.5))


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    check_model(FAKE.model, {})  # loads LiteLLM (seconds), so no request here waits for it
    with running(SETTINGS) as url:
        yield url


def chat(model: str | None = None, **fields: Any) -> dict[str, Any]:
    return chat_body(model or FAKE.model, **fields)


def nested(depth: int) -> str:
    """A JSON value ``depth`` arrays deep."""
    return "[" * depth + "]" * depth


def post_bytes(body: bytes, path: str = "/v1/chat/completions") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# Defect: 1,000-deep nested JSON in a 2 KB body raised RecursionError: a 500.


def test_a_deeply_nested_body_is_a_400_and_the_connection_goes_on(base_url: str) -> None:
    port = int(base_url.rsplit(":", 1)[1])
    deep = json.dumps(chat()).encode()[:-1] + b', "metadata": ' + nested(1000).encode() + b"}"
    assert len(deep) < 2200
    with socket.create_connection(("127.0.0.1", port)) as sock:
        reply = exchange(sock, post_bytes(deep))
        assert reply.startswith(b"HTTP/1.1 400 "), reply
        error = json.loads(reply.partition(b"\r\n\r\n")[2])["error"]
        assert error["code"] == "invalid_json"
        assert f"deeper than {MAX_JSON_DEPTH} levels" in error["message"]
        assert exchange(sock, HEALTH).startswith(b"HTTP/1.1 200 ")  # same connection


@pytest.mark.parametrize("where", ["messages", "content", "tools", "metadata", "reflectkit"])
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 500, 990, 5000, 100_000])
async def test_nesting_past_the_limit_anywhere_is_a_400(where: str, depth: int) -> None:
    inner = nested(depth - 3)  # the body object and the messages array and its object
    text = json.dumps(chat())
    if where == "messages":
        body = text.replace('"messages": [', f'"messages": [{nested(depth - 1)}, ', 1)
    elif where == "content":
        body = text.replace('"content": "2+2"', f'"content": {inner}', 1)
    else:
        body = text[:-1] + f', "{where}": {nested(depth - 1)}}}'
    response = await post_in_process(body.encode())
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_json"


async def test_nesting_up_to_the_limit_is_served() -> None:
    schema: dict[str, Any] = {"type": "string"}
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    while (short := MAX_JSON_DEPTH - depth_of(chat(tools=[tool]))) > 0:  # nested to the limit
        schema = {"type": "object", "properties": {"x": schema}} if short > 1 else {"x": schema}
        tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    body = json.dumps(chat(tools=[tool]))
    assert depth_of(json.loads(body)) == MAX_JSON_DEPTH
    response = await post_in_process(body.encode())
    assert response.status_code == 200, response.text


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=40,
)


@settings(max_examples=500, deadline=None)
@given(JSON_VALUES, st.integers(0, 12), st.booleans())
def test_the_depth_check_agrees_with_the_parsed_value(value: Any, limit: int, ascii: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii)
    assert _deeper_than(text, limit) == (depth_of(value) > limit)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=()), max_size=30))
def test_lone_surrogate_escapes_read_as_u_fffd(text: str) -> None:
    from reflectkit.stores.jsonl import repair_text

    decoded = json.loads(_repair_escapes(json.dumps(text)))
    assert decoded == repair_text(text)
    decoded.encode("utf-8")


# Defect: a 500 closed the keep-alive connection without saying so (`Connection: close`), so
# the client's next pooled request failed. A 500 now carries the header.


def test_a_500_tells_the_client_to_close_the_connection(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(server_app._Proxy, "complete", bug)
    port = int(base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        reply = exchange(sock, post_bytes(json.dumps(chat()).encode()))
        assert reply.startswith(b"HTTP/1.1 500 "), reply
        assert b"\r\nconnection: close\r\n" in reply.lower()
        sock.settimeout(5)
        assert sock.recv(1) == b""  # and the server closed it
    with httpx.Client(base_url=base_url, timeout=10) as client:  # a pooled client carries on
        assert client.post("/v1/chat/completions", json=chat()).status_code == 500
        monkeypatch.undo()
        assert client.post("/v1/chat/completions", json=chat()).status_code == 200


async def post_in_process(body: bytes) -> httpx.Response:
    return await post_chat(create_app(SETTINGS), body, within=20)


# Defect: client mistakes became upstream failures. `temperature: NaN`, `max_tokens: Infinity`
# and `response_format: "json"` were sent on, retried 4 times (~9 s) and answered with a 502;
# malformed tool calls in the history were paid for, then failed in the critic. Each is a 400
# naming the field, with no upstream call.

CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def history(*turns: dict[str, Any]) -> list[dict[str, Any]]:
    """A user turn, then ``turns``, then a user turn."""
    return [{"role": "user", "content": "hi"}, *turns, {"role": "user", "content": "and?"}]


def with_call(call: Any, result: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    turns = [{"role": "assistant", "content": None, "tool_calls": [call]}]
    return history(*turns, result or {"role": "tool", "tool_call_id": "call_1", "content": "r"})


BAD_FIELDS: list[Any] = [
    ("temperature", float("nan"), None),
    ("temperature", float("inf"), None),
    ("temperature", 3, "temperature"),
    ("temperature", -0.1, "temperature"),
    ("temperature", "hot", "temperature"),
    ("temperature", True, "temperature"),
    ("top_p", 1.5, "top_p"),
    ("max_tokens", float("inf"), None),
    ("max_tokens", 0, "max_tokens"),
    ("max_tokens", 1.5, "max_tokens"),
    ("max_tokens", "10", "max_tokens"),
    ("max_tokens", 2**40, "max_tokens"),
    ("max_completion_tokens", -1, "max_completion_tokens"),
    ("presence_penalty", 5, "presence_penalty"),
    ("frequency_penalty", -2.5, "frequency_penalty"),
    ("seed", 2**70, "seed"),
    ("seed", 0.5, "seed"),
    ("stop", 5, "stop"),
    ("stop", [], "stop"),
    ("stop", ["a", 1], "stop[1]"),
    ("logit_bias", "x", "logit_bias"),
    ("logit_bias", {"abc": 1}, "logit_bias"),
    ("logit_bias", {"50256": 1000}, "logit_bias.50256"),
    ("response_format", "json", "response_format"),
    ("response_format", {"type": "json"}, "response_format.type"),
    ("response_format", {"type": "json_schema"}, "response_format.json_schema"),
    ("response_format", {"type": "json_schema", "json_schema": {"schema": {}}}, None),
    ("tools", "x", "tools"),
    ("tools", [{"type": "function"}], "tools[0].function"),
    ("tools", [{"type": "function", "function": {"name": ""}}], "tools[0].function.name"),
    ("tools", [{"type": "retrieval"}], "tools[0].type"),
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": "x"}}], None),
    ("tool_choice", "sometimes", "tool_choice"),
    ("tool_choice", "auto", "tool_choice"),  # no tools to choose from
    ("parallel_tool_calls", "yes", "parallel_tool_calls"),
    ("user", 5, "user"),
    ("reasoning_effort", "maximum", "reasoning_effort"),
    ("model", "x" * 300, "model"),
]
BAD_MESSAGES: list[Any] = [
    (with_call({**CALL, "function": "abc"}), "messages[1].tool_calls[0].function"),
    (with_call({"id": "call_1", "type": "function"}), "messages[1].tool_calls[0].function"),
    (with_call({**CALL, "function": {"name": "f", "arguments": {"a": 1}}}), None),
    (with_call({**CALL, "function": {"arguments": "{}"}}), None),
    (with_call("abc"), "messages[1].tool_calls[0]"),
    (with_call({**CALL, "id": None}), "messages[1].tool_calls[0].id"),
    (with_call({**CALL, "type": "code"}), "messages[1].tool_calls[0].type"),
    (history({"role": "assistant", "content": None, "tool_calls": []}), None),
    (history({"role": "assistant", "content": None, "tool_calls": "x"}), None),
    (with_call(CALL, {"role": "tool", "content": "r"}), "messages[2].tool_call_id"),
    (with_call(CALL, {"role": "tool", "tool_call_id": "call_2", "content": "r"}), None),
    (history({"role": "tool", "tool_call_id": "call_1", "content": "r"}), None),
    (with_call(CALL, {"role": "tool", "tool_call_id": "call_1", "content": 5}), None),
    (history({"role": "user", "content": "x", "tool_calls": [CALL]}), "messages[1]"),
    ([{"role": "user", "content": "x", "name": 5}], "messages[0].name"),
    ([{"role": "user", "content": [{"type": "video"}]}], "messages[0].content[0]"),
    ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text"),
    ([{"role": "user", "content": [{"type": "text", "text": 5}]}], None),
    ([{"role": "user", "content": [5]}], "messages[0].content[0]"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": 5}]}], None),
    ([{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}], None),
    ([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], None),
    ([{"role": "function", "content": "x"}], "messages[0].name"),
    ([{"role": "user"}], "messages[0].content"),
]
MODELS = [FAKE.model, f"reflect/{FAKE.model}"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("field", "value", "param"), BAD_FIELDS)
async def test_a_bad_field_is_a_400_without_an_upstream_call(
    model: str, field: str, value: Any, param: str | None
) -> None:
    calls = len(FAKE.requests)
    body = {**chat(model), field: value}
    if field == "model":
        body["model"] = value
    response = await post_in_process(json.dumps(body).encode())  # NaN as Python spells it
    error = refused(response)
    if param is not None:
        assert error["param"] == param, error
    assert len(FAKE.requests) == calls


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("messages", "param"), BAD_MESSAGES)
async def test_a_malformed_conversation_is_a_400_without_an_upstream_call(
    model: str, messages: list[dict[str, Any]], param: str | None
) -> None:
    calls = len(FAKE.requests)
    response = await post_in_process(json.dumps({**chat(model), "messages": messages}).encode())
    error = refused(response)
    if param is not None:
        assert error["param"] == param, error
    assert len(FAKE.requests) == calls


def refused(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error


GOOD_FIELDS: list[Any] = [
    ("temperature", 0),
    ("temperature", 2.0),
    ("top_p", 1),
    ("max_tokens", 1),
    ("max_completion_tokens", 4096),
    ("presence_penalty", -2),
    ("seed", -(2**63)),
    ("stop", "\n\n"),
    ("stop", ["END", "STOP"]),
    ("logit_bias", {"50256": -100, "7": 2.5}),
    ("response_format", {"type": "json_object"}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "a", "strict": True}}),
    ("tools", [TOOL]),
    ("parallel_tool_calls", False),
    ("user", "u-1"),
    ("reasoning_effort", "low"),
]


# LiteLLM refuses these for the fake provider (UnsupportedParamsError, a 400): checked alone.
NOT_FOR_THE_FAKE = {"max_completion_tokens", "user", "reasoning_effort"}


@pytest.mark.parametrize(("field", "value"), GOOD_FIELDS)
async def test_a_good_field_reaches_the_upstream(field: str, value: Any) -> None:
    check_params({field: value, **({"tools": [TOOL]} if field == "tool_choice" else {})})
    if field in NOT_FOR_THE_FAKE:
        return
    response = await post_in_process(json.dumps({**chat(), field: value}).encode())
    assert response.status_code == 200, response.text
    assert FAKE.requests[-1].params[field] == value


async def test_a_good_tool_exchange_and_content_parts_reach_the_upstream() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "r"}]},
    ]
    body = {**chat(), "messages": messages, "tools": [TOOL], "tool_choice": "auto"}
    response = await post_in_process(json.dumps(body).encode())
    assert response.status_code == 200, response.text
    assert FAKE.requests[-1].messages[1]["content"][1] == image
