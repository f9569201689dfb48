"""What the server tests share: an ASGI app served by a real uvicorn on 127.0.0.1 (the proxy,
or an upstream of a test's own), one raw HTTP exchange over a socket, a request in-process, and
the names every file uses.

uvicorn runs in a thread of the test process, so the fake models a test makes (which live in
this process) serve its requests.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import pytest
import uvicorn

from reflectkit.server import ServerSettings, create_app, uvicorn_options

FAKES = "reflectkit-test/*"
"""The pattern that serves every fake model (``reflectkit-test/...``)."""

HEALTH = b"GET /health HTTP/1.1\r\nHost: proxy\r\n\r\n"

# LiteLLM imports some modules on first use (a call with tools), and pydantic warns about their
# TypedDicts then; conftest ignores only the singular form of that warning.
IGNORE_READONLY_WARNINGS = pytest.mark.filterwarnings(
    "ignore:Items .* are using the `ReadOnly` qualifier:UserWarning"
)


@contextmanager
def uvicorn_serving(app: Any, *, log_level: str = "warning", **options: Any) -> Iterator[int]:
    """Serve ``app`` with uvicorn (``options`` are its own) in a thread on a free loopback port;
    the port."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets, and without it each
    # small write after the first waits up to 40 ms for the peer's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level=log_level, lifespan="off", ws="none", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def serving(settings: ServerSettings, **options: Any) -> Iterator[int]:
    """``create_app(settings)`` under uvicorn with ``reflectkit serve``'s connection limits
    (:func:`~reflectkit.server.uvicorn_options`, header deadline, connection cap, keep-alive)
    and ``options``; the port."""
    with uvicorn_serving(create_app(settings), **uvicorn_options(settings), **options) as port:
        yield port


def serving_hostile(settings: ServerSettings) -> AbstractContextManager[int]:
    """:func:`serving` for the tests that attack the connections themselves: a backlog deep
    enough for hundreds of connections at once, and uvicorn's own complaints about the bad
    requests kept out of the log."""
    return serving(settings, log_level="error", backlog=1024)


@contextmanager
def running(settings: ServerSettings) -> Iterator[str]:
    """:func:`serving`, as the server's base URL."""
    with serving(settings) as port:
        yield f"http://127.0.0.1:{port}"


def chat_body(model: str, content: str = "2+2", **fields: Any) -> dict[str, Any]:
    """A chat completions request: one user message ``content`` to ``model``, and ``fields``."""
    return {"model": model, "messages": [{"role": "user", "content": content}], **fields}


def exchange(sock: socket.socket, request: bytes, timeout: float = 10) -> bytes:
    """Send one request on ``sock`` and read one response (headers and Content-Length body)."""
    sock.settimeout(timeout)
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"the connection closed before a response: {data!r}"
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        piece = sock.recv(65536)
        assert piece, "the connection closed mid-body"
        body += piece
    return head + b"\r\n\r\n" + body


async def post_chat(
    app: Any, body: bytes | AsyncIterator[bytes], *, within: float
) -> httpx.Response:
    """POST ``body`` to ``app``'s chat completions in-process (httpx's ASGI transport); the
    whole response, within ``within`` seconds. The app's own 500s come back as responses."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            sent = client.post("/v1/chat/completions", content=body)
            return await asyncio.wait_for(sent, within)
    finally:
        # The ASGI transport runs no lifespan: its shutdown, which closes the proxy's upstream
        # connections before this loop ends, is done here.
        await app.state.proxy.aclose()
