"""A tiny OpenAI-compatible server that answers after a fixed delay: the upstream of the proxy's
load benchmark (benchmarks/proxy_load.py), run as a process of its own.

``POST /v1/chat/completions`` waits ``--delay`` seconds, then answers with a fixed tagged reply,
whole or (``stream: true``) in ``--chunks`` SSE chunks ``--chunk-delay`` seconds apart, with a
usage chunk when ``stream_options.include_usage`` asks for one. ``GET /health`` answers at once.
It prints ``PORT <n>`` on stdout once it listens (``--port 0`` picks a free port)::

    python -m tests.upstream --port 0 --delay 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

REPLY = "<thinking>2 + 2 = 4</thinking><output>The answer is 4.</output>"


def _pieces(text: str, count: int) -> list[str]:
    size = max(1, -(-len(text) // count))
    return [text[i : i + size] for i in range(0, len(text), size)]


def create_app(delay: float, chunks: int, chunk_delay: float) -> Starlette:
    usage = {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32}

    async def complete(request: Request) -> Response:
        body: dict[str, Any] = json.loads(await request.body())
        await asyncio.sleep(delay)
        head = {"id": "chatcmpl-upstream", "created": int(time.time()), "model": body["model"]}
        if not body.get("stream"):
            message = {"role": "assistant", "content": REPLY}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return JSONResponse(
                {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
            )
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events() -> AsyncIterator[bytes]:
            def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
                chunk = {**head, "object": "chat.completion.chunk", "choices": choices, **extra}
                return f"data: {json.dumps(chunk)}\n\n".encode()

            first = {"role": "assistant", "content": ""}
            yield event([{"index": 0, "delta": first, "finish_reason": None}])
            for piece in _pieces(REPLY, chunks):
                await asyncio.sleep(chunk_delay)
                yield event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
            yield event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
            if with_usage:
                yield event([], usage=usage)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", complete, methods=["POST"]),
            Route("/health", health),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds before answering")
    parser.add_argument("--chunks", type=int, default=5, help="content chunks per stream")
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets, and without it each
    # small write after the first waits up to 40 ms for the peer's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    app = create_app(args.delay, args.chunks, args.chunk_delay)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=75
    )
    uvicorn.Server(config).run(sockets=[sock])
    sys.exit(0)


if __name__ == "__main__":
    main()
