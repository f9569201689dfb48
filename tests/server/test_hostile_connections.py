"""Connections that hold the proxy open: a client that connects and says nothing, sends its
headers or its body a byte at a time, or opens hundreds of connections. Each is cut off (a 408,
or a 503 past the connection cap) while good requests go on being served.

Everything runs against a real uvicorn on 127.0.0.1 with ``reflectkit serve``'s options
(:func:`reflectkit.server.uvicorn_options`), over raw sockets; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
import uvicorn
from click.testing import CliRunner

from reflectkit.cli.serve import serve
from reflectkit.server import ServerSettings, create_app, running
from reflectkit.testing import FunctionLLM
from tests.server.helpers import (
    FAKES,
    HEALTH,
    chat_body,
    exchange,
    post_chat,
    serving_hostile,
)

FAKE = FunctionLLM(lambda request: "<output>4</output>")
QUICK = ServerSettings(models=(FAKES,), header_timeout=0.5, body_timeout=0.5, idle_timeout=5)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with serving_hostile(QUICK) as number:
        yield number


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def read_until_closed(sock: socket.socket, within: float) -> bytes:
    """Everything the server sends until it closes the connection; fails after ``within`` s."""
    sock.settimeout(within)
    data = b""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not piece:
            return data
        data += piece
    raise AssertionError(f"the connection was still open after {within} s: {data!r}")


def error_code(response: bytes) -> str:
    code: str = json.loads(response.partition(b"\r\n\r\n")[2])["error"]["code"]
    return code


def good_request_works(port: int) -> None:
    body = chat_body(FAKE.model)
    response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text


# Defect: no read timeouts. A slow body or slow headers held a connection 40 s and more, and 300
# half-open connections stayed open.


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(port: int) -> None:
    start = time.monotonic()
    with connect(port) as sock:
        response = read_until_closed(sock, within=5)
    assert 0.4 < time.monotonic() - start < 4
    assert response.startswith(b"HTTP/1.1 408 ")
    assert error_code(response) == "request_timeout"


def test_headers_sent_a_byte_at_a_time_are_cut_off(port: int) -> None:
    start = time.monotonic()
    with connect(port) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n")
        sock.settimeout(0.05)
        response = b""
        while time.monotonic() - start < 5:
            try:
                sock.sendall(b"X-Slow: y\r\n"[:1])
                piece = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if not piece:
                break
            response += piece
    assert time.monotonic() - start < 4, "the trickle was never cut off"
    assert response.startswith(b"HTTP/1.1 408 ") or response == b""


def test_a_body_sent_too_slowly_is_a_408_and_the_connection_closes(port: int) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    start = time.monotonic()
    with connect(port) as sock:
        sock.sendall(head + b'{"model": ')
        response = read_until_closed(sock, within=5)
    assert time.monotonic() - start < 4
    assert response.startswith(b"HTTP/1.1 408 "), response
    assert b"\r\nconnection: close\r\n" in response.lower()
    assert error_code(response) == "request_timeout"


def test_an_idle_kept_alive_connection_stays_but_a_slow_next_request_does_not(port: int) -> None:
    with connect(port) as sock:
        assert exchange(sock, HEALTH).startswith(b"HTTP/1.1 200 ")
        time.sleep(1.0)  # idle, longer than the header timeout: idle time is keep-alive's
        assert exchange(sock, HEALTH).startswith(b"HTTP/1.1 200 ")
        start = time.monotonic()
        sock.sendall(b"GET /hea")  # the next request starts, and stalls
        response = read_until_closed(sock, within=5)
    assert time.monotonic() - start < 4
    assert response.startswith(b"HTTP/1.1 408 ")


def test_hundreds_of_half_open_connections_are_all_closed(port: int) -> None:
    with ExitStack() as stack:
        sockets = [stack.enter_context(connect(port)) for _ in range(300)]
        for index, sock in enumerate(sockets):
            if index % 2:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost:")  # half a head, or nothing
        start = time.monotonic()
        for sock in sockets:
            read_until_closed(sock, within=max(0.5, 8 - (time.monotonic() - start)))
        assert time.monotonic() - start < 8
    good_request_works(port)


def test_connections_past_the_cap_are_refused_with_a_503() -> None:
    settings = ServerSettings(models=(FAKES,), max_connections=20, header_timeout=10)
    with serving_hostile(settings) as port, ExitStack() as stack:
        held = [stack.enter_context(connect(port)) for _ in range(20)]
        assert exchange(held[0], HEALTH).startswith(b"HTTP/1.1 200 ")
        for _ in range(5):
            with connect(port) as extra:
                response = read_until_closed(extra, within=5)
            assert response.startswith(b"HTTP/1.1 503 "), response
            assert error_code(response) == "server_busy"
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 5
        while True:  # the server notices the closed connections, and takes new ones again
            with connect(port) as sock:
                if exchange(sock, HEALTH).startswith(b"HTTP/1.1 200 "):
                    break
            assert time.monotonic() < deadline, "connections were not taken again"
            time.sleep(0.1)
        good_request_works(port)


async def test_the_body_deadline_holds_in_process_too() -> None:
    async def slow() -> AsyncIterator[bytes]:
        yield b'{"model": "x", '
        await asyncio.sleep(2)
        yield b'"messages": []}'

    response = await post_chat(create_app(QUICK), slow(), within=10)
    assert response.status_code == 408
    assert response.json()["error"]["code"] == "request_timeout"


def test_serve_hands_the_limits_to_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    # uvicorn.Config applies serve's logging setup (dictConfig) to this process; the loggers it
    # touches get their handlers, level and propagation back afterwards.
    for name in ("reflectkit", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers", list(logger.handlers))
        monkeypatch.setattr(logger, "level", logger.level)
        monkeypatch.setattr(logger, "propagate", logger.propagate)
        monkeypatch.setattr(logger, "disabled", logger.disabled)
    seen: list[uvicorn.Config] = []
    monkeypatch.setattr(running._Server, "run", lambda server: seen.append(server.config))
    arguments = ["--header-timeout", "3", "--body-timeout", "7", "--max-connections", "9"]
    arguments += ["--graceful-timeout", "4"]
    result = CliRunner().invoke(serve, [*arguments, "--idle-timeout", "11", "-m", FAKES])
    assert result.exit_code == 0, result.output
    [config] = seen
    protocol: Any = config.http
    assert (protocol.header_timeout, protocol.max_connections) == (3.0, 9)
    assert config.timeout_keep_alive == 11.0
    assert config.timeout_graceful_shutdown == 4.0
    assert config.app.state.proxy.settings.body_timeout == 7.0
