"""Fuzzing the proxy: a few thousand malformed or hostile requests, and not one 5xx or hang.

Hypothesis makes the requests: JSON values of any shape, valid requests with a field changed
to anything, bodies nested thousands deep, bytes that are not UTF-8, lone surrogates, giant
strings within the size limit, wrong content types and odd headers. They go in-process through
httpx's ASGI transport (fast), each with its own deadline; a smaller sample of raw HTTP, framing
and all, goes to a real uvicorn on 127.0.0.1. A refused request is a 4xx with OpenAI's error
object, an accepted one a 200 from the fake model; after the storm, a good request still works.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reflectkit.config import RetryPolicy
from reflectkit.models.llm import check_model
from reflectkit.server import ServerSettings, create_app
from reflectkit.testing import FunctionLLM, Request
from tests.conftest import verdict
from tests.server.helpers import FAKES, IGNORE_READONLY_WARNINGS, chat_body, serving_hostile

pytestmark = IGNORE_READONLY_WARNINGS

KEY = "fuzz-proxy-key-0d9a3c"
BODY_LIMIT = 256 * 1024
PER_REQUEST = 20.0  # seconds: a request that takes longer is a hang
T = TypeVar("T")


def _answer(request: Request) -> str:
    if "verdict" in request.last_user_text.lower():  # the loop's critique
        return verdict(True)
    return "<thinking>fine</thinking><output>ok</output>"


FAKE = FunctionLLM(_answer)
SETTINGS = ServerSettings(
    api_key=KEY,
    models=(FAKES,),
    max_body_bytes=BODY_LIMIT,
    retry=RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.01),
    queue_timeout=PER_REQUEST,
    body_timeout=5,
)
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


class _Loop:
    """One event loop in a thread for every in-process request: the app's semaphores and
    LiteLLM's clients belong to the loop that first used them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, work: Coroutine[Any, Any, T], timeout: float = PER_REQUEST) -> T:
        future = asyncio.run_coroutine_threadsafe(work, self.loop)
        return future.result(timeout)  # TimeoutError: the request hung

    def close(self) -> None:
        """Cancel what still runs on the loop (LiteLLM's logging worker), then stop it."""

        async def cancel_the_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        self.run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class _Proxy:
    def __init__(self, loop: _Loop) -> None:
        self.loop = loop
        app = create_app(SETTINGS)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://proxy")
        self.statuses: dict[int, int] = {}

    def post(self, body: bytes, headers: dict[str, Any] | None = None) -> httpx.Response:
        sent = self.client.post(
            "/v1/chat/completions", content=body, headers=AUTH if headers is None else headers
        )
        response = self.loop.run(asyncio.wait_for(sent, PER_REQUEST))
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        return response


@pytest.fixture(scope="module")
def proxy() -> Iterator[_Proxy]:
    check_model(FAKE.model, {})  # loads LiteLLM once, before any deadline runs
    loop = _Loop()
    served = _Proxy(loop)
    try:
        yield served
    finally:
        loop.run(served.client.aclose())
        loop.close()


def _check(response: httpx.Response, refused: bool = False) -> None:
    """No 5xx; a refusal is a 4xx with OpenAI's error object; with ``refused``, no 200."""
    status = response.status_code
    assert status < 500, response.text
    if status >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str)
    elif refused:
        raise AssertionError(f"accepted: {response.text[:300]}")


# Strategies

TEXT = st.text(st.characters(exclude_categories=()), max_size=30)  # lone surrogates included
NUMBERS = (
    st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, -1, 1, 2**31, 2**63, 10**30, 1e308, -0.0])
)
SCALARS = st.none() | st.booleans() | NUMBERS | TEXT
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=25,
)
MODELS = (
    st.sampled_from(
        [FAKE.model, f"reflect/{FAKE.model}", "reflect/", "gpt-4o", "reflectkit-test/none", ""]
    )
    | TEXT
)
ROLES = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"]) | TEXT
PARTS = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "input_audio", "file", "refusal"]) | TEXT},
    optional={"text": JSON, "image_url": JSON, "input_audio": JSON, "file": JSON},
)
CALLS = st.fixed_dictionaries(
    {"id": TEXT | JSON, "type": st.just("function") | JSON},
    optional={"function": st.fixed_dictionaries({}, optional={"name": JSON, "arguments": JSON})},
)
MESSAGES = st.fixed_dictionaries(
    {"role": ROLES},
    optional={
        "content": TEXT | st.lists(PARTS | JSON, max_size=3) | JSON,
        "tool_calls": st.lists(CALLS | JSON, max_size=2) | JSON,
        "tool_call_id": TEXT | JSON,
        "name": TEXT | JSON,
    },
)
FIELDS = st.sampled_from(
    [
        "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed",
        "presence_penalty", "frequency_penalty", "logit_bias", "tools", "tool_choice",
        "parallel_tool_calls", "response_format", "user", "reasoning_effort", "n", "stream",
        "stream_options", "reflectkit", "store", "metadata", "service_tier", "logprobs",
        "top_logprobs", "params", "messages", "model",
    ]
) | TEXT  # fmt: skip
OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "mode": st.sampled_from(["auto", "loop", "single"]) | JSON,
        "max_iterations": st.integers(-2, 12) | JSON,
        "critic_model": st.sampled_from([FAKE.model, "gpt-4o"]) | JSON,
        "on_critic_error": st.sampled_from(["raise", "keep_best"]) | JSON,
        "include_reasoning": st.booleans() | JSON,
    },
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A request that is valid, or nearly: random messages, fields set to anything."""
    body: dict[str, Any] = {
        "model": draw(MODELS),
        "messages": draw(st.lists(MESSAGES, min_size=0, max_size=4))
        or [{"role": "user", "content": "2+2"}],
    }
    if draw(st.booleans()):
        body["messages"].append({"role": "user", "content": draw(TEXT) or "2+2"})
    for _ in range(draw(st.integers(0, 3))):
        body[draw(FIELDS)] = draw(JSON)
    if draw(st.booleans()):
        body["reflectkit"] = draw(OPTIONS)
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    return body


def _dumps(value: Any) -> bytes:
    """JSON as a careless client writes it: NaN and Infinity as Python spells them, lone
    surrogates as escapes (json.dumps's ASCII output)."""
    return json.dumps(value).encode()


SETTINGS_FUZZ = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS_FUZZ
@given(JSON)
def test_json_of_any_shape_is_refused(proxy: _Proxy, value: Any) -> None:
    _check(proxy.post(_dumps(value)), refused=True)


@SETTINGS_FUZZ
@given(requests())
def test_requests_with_anything_in_any_field_are_answered_or_refused(
    proxy: _Proxy, body: dict[str, Any]
) -> None:
    _check(proxy.post(_dumps(body)))


@st.composite
def deep_bodies(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(40, 20_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"b":', "}]")]))
    nested = opener * depth + draw(st.sampled_from(["1", '"x"', "null", "[]"])) + closer * depth
    where = draw(st.sampled_from(["content", "tools", "metadata", "root", "messages"]))
    if where == "root":
        return nested.encode()
    model = f'{{"model": "{FAKE.model}", '
    if where == "content":
        return f'{model}"messages": [{{"role": "user", "content": {nested}}}]}}'.encode()
    if where == "messages":
        return f'{model}"messages": {nested}}}'.encode()
    user = '[{"role": "user", "content": "hi"}]'
    return f'{model}"messages": {user}, "{where}": {nested}}}'.encode()


@SETTINGS_FUZZ
@given(deep_bodies())
def test_deep_nesting_is_refused(proxy: _Proxy, body: bytes) -> None:
    response = proxy.post(body)
    _check(response)
    if b"[" * 70 in body or b'{"a":' * 70 in body:
        assert response.status_code in (400, 413), response.text


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """Bytes that are not a JSON request: random, cut short, not UTF-8, other encodings."""
    good = _dumps({"model": FAKE.model, "messages": [{"role": "user", "content": "hé 😀"}]})
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return good[: draw(st.integers(0, len(good) - 1))]
    if kind == 2:  # a byte that is not UTF-8 inside a string
        at = good.index(b"2+2") if b"2+2" in good else good.index(b"h")
        return (
            good[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\xbd", b"\x80"]))
            + good[at:]
        )
    if kind == 3:
        text = good.decode()
        return text.encode(
            draw(st.sampled_from(["utf-16", "utf-32", "utf-16-be", "utf-32-le"])), "replace"
        )
    return draw(
        st.sampled_from([b"", b"null", b"\xef\xbb\xbf", b"{}", b"[]", b'""', b"NaN", b"1e999"])
    )


@SETTINGS_FUZZ
@given(raw_bodies())
def test_bytes_that_are_not_a_json_request_are_refused(proxy: _Proxy, body: bytes) -> None:
    _check(proxy.post(body), refused=True)


@st.composite
def giant_strings(draw: st.DrawFn) -> tuple[bytes, bool]:
    """Strings near the size limit, in the content, a field, a key or a tool; over it a bit."""
    size = draw(st.integers(BODY_LIMIT // 2, BODY_LIMIT + 2048))
    char = draw(st.sampled_from(["a", "é", "😀", "\\ud83d", "\\u0000", "\\\\", '\\"', "<"]))
    giant = char * (size // len(char.encode()))
    where = draw(st.sampled_from(["content", "model", "stop", "user", "key", "tool"]))
    user = '{"role": "user", "content": "hi"}'
    head = f'{{"model": "{FAKE.model}", "messages": [{user}]'
    body = {
        "content": f'{{"model": "{FAKE.model}", "messages": [{{"role": "user", "content": '
        f'"{giant}"}}]}}',
        "model": f'{{"model": "{giant}", "messages": [{user}]}}',
        "stop": f'{head}, "stop": "{giant}"}}',
        "user": f'{head}, "user": "{giant}"}}',
        "key": f'{head}, "{giant}": 1}}',
        "tool": f'{head}, "tools": [{{"type": "function", "function": {{"name": "{giant}"}}}}]}}',
    }[where].encode()
    return body, len(body) > BODY_LIMIT


@SETTINGS_FUZZ
@given(giant_strings())
def test_giant_strings_are_answered_refused_or_too_large(
    proxy: _Proxy, case: tuple[bytes, bool]
) -> None:
    body, too_large = case
    response = proxy.post(body)
    _check(response)
    if too_large:
        assert response.status_code == 413, response.text


HEADER_VALUES = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40).map(
    lambda text: text.encode("latin-1")
)  # header values are bytes: any of them


@st.composite
def header_sets(draw: st.DrawFn) -> dict[str, str | bytes]:
    headers: dict[str, str | bytes] = {
        "Authorization": draw(
            st.sampled_from([f"Bearer {KEY}", f"bearer {KEY}", "Bearer", "Basic x", ""])
            | HEADER_VALUES.map(lambda value: b"Bearer " + value)
        ),
        "Content-Type": draw(
            st.sampled_from(
                ["application/json", "text/plain", "multipart/form-data; boundary=x", "", "*/*"]
            )
            | HEADER_VALUES
        ),
    }
    for _ in range(draw(st.integers(0, 3))):
        name = draw(
            st.sampled_from(
                [
                    "Accept",
                    "Accept-Encoding",
                    "Content-Encoding",
                    "X-Odd",
                    "Expect",
                    "Transfer-Encoding",
                ]
            )
        )
        headers[name] = draw(HEADER_VALUES)
    return headers


@SETTINGS_FUZZ
@given(header_sets(), st.booleans())
def test_odd_headers_are_answered_or_refused(
    proxy: _Proxy, headers: dict[str, str | bytes], stream: bool
) -> None:
    body = chat_body(FAKE.model, stream=stream)
    _check(proxy.post(_dumps(body), headers))


def test_the_proxy_still_serves_after_the_storm(proxy: _Proxy) -> None:
    good = chat_body(FAKE.model)
    for stream in (False, True):
        response = proxy.post(json.dumps({**good, "stream": stream}).encode())
        assert response.status_code == 200, response.text
    assert not any(status >= 500 for status in proxy.statuses), proxy.statuses


# The same over a real uvicorn: raw HTTP, framing included.


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    quick = SETTINGS.model_copy(update={"header_timeout": 1.0, "body_timeout": 1.0})
    with serving_hostile(quick) as number:
        yield number


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    body = draw(
        st.one_of(
            requests().map(_dumps),
            JSON.map(_dumps),
            raw_bodies(),
            deep_bodies(),
        )
    )
    length = draw(
        st.sampled_from([str(len(body)), str(len(body))])
        | st.sampled_from(["", "-1", "abc", "1e3", "99999999999999999999", str(len(body) + 5), "0"])
    )
    lines = [
        draw(
            st.sampled_from(
                [
                    "POST /v1/chat/completions HTTP/1.1",
                    "POST /v1/chat/completions HTTP/1.0",
                    "GET /v1/chat/completions HTTP/1.1",
                    "POST /v1/chat/completions?x=%ff HTTP/1.1",
                    "POST /v1/%00 HTTP/1.1",
                ]
            )
        ),
        "Host: proxy",
        f"Authorization: Bearer {KEY}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        "Connection: close",
    ]
    if draw(st.booleans()):
        lines.append(
            draw(
                st.sampled_from(
                    [
                        "Transfer-Encoding: chunked",
                        "X-Odd: \x01",
                        "Bad Header: x",
                        ": empty",
                        "X-Long: " + "a" * 20_000,
                    ]
                )
            )
        )
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _send_raw(port: int, request: bytes) -> bytes:
    """The server's whole answer to ``request`` (it must close the connection, or answer
    within the deadline)."""
    with socket.create_connection(("127.0.0.1", port), timeout=PER_REQUEST) as sock:
        # The server may refuse and close before it has read everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        data = b""
        while True:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            data += piece
        return data


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(raw_requests())
def test_raw_http_to_a_real_server_never_gets_a_5xx(port: int, request: bytes) -> None:
    answer = _send_raw(port, request)
    if not answer:
        return  # closed without a word (uvicorn does, for some framing errors)
    status_line = answer.split(b"\r\n", 1)[0]
    status = int(status_line.split(b" ")[1])
    assert status < 500, answer[:500]


def test_a_real_server_still_serves_after_the_raw_storm(port: int) -> None:
    good = chat_body(FAKE.model)
    headers = {"Authorization": f"Bearer {KEY}"}
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions", json=good, headers=headers, timeout=30
    )
    assert response.status_code == 200, response.text
