"""A tiny OpenAI-compatible chat server that answers every request after a fixed delay.

For benchmarks/batch_throughput.py, which runs it in a separate process: the delay stands for a
model's latency, and the server's own work stays small (aiohttp, one canned reply), so what the
client measures is its own cost per call plus the delay. Replies:

* a request that asks for a review (the critique prompt mentions a "strict reviewer") gets a
  verdict that asks for a revision;
* any other request gets the same tagged draft, so a revision repeats the first answer and the
  loop stops on ``no_change``: generate → critique → revise, exactly three calls.

Run it by hand with ``python benchmarks/slow_openai_server.py --port 8765 --delay 0.05``; it
prints ``ready <port>`` on stdout once it listens, and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from aiohttp import web

DRAFT = "<thinking>6 * 7 = 42</thinking><output>42</output>"
VERDICT = json.dumps(
    {"verdict": "revise", "score": 4, "issues": [], "feedback": "Show the multiplication."}
)


def _reply_text(body: dict[str, Any]) -> str:
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str) and "strict reviewer" in content:
            return VERDICT
    return DRAFT


def make_app(delay: float) -> web.Application:
    counter = {"requests": 0}

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(delay)
        counter["requests"] += 1
        text = _reply_text(body)
        payload = {
            "id": f"chatcmpl-{counter['requests']}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "bench"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
        }
        return web.json_response(payload)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(counter)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/stats", stats)
    return app


async def serve(port: int, delay: float) -> None:
    runner = web.AppRunner(make_app(delay), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    print(f"ready {port}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds before each answer")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.delay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
