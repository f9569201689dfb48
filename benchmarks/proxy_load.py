"""What the proxy (``reflectkit serve``) adds under load: errors, throughput, latency.

Processes: an OpenAI-compatible upstream (tests/upstream.py) that answers each request after
a fixed delay (50 ms) and streams it in a few chunks; the proxy, started with
``python -m reflectkit.cli.serve --workers N`` in front of it, once per worker count asked for
(1 and 2 by default, each on its own port, all running at once); and this one, the load
generator. At 1, 20 and 200 concurrent streaming clients (each sending requests back to back)
it sends the same requests these ways, side by side:

* ``direct``: straight to the upstream (the baseline);
* ``pass``: through the proxy with the bare model name (passed through, one plain call);
* ``single``: through the proxy as ``reflect/<model>`` with ``reflectkit.mode = "single"``
  (reflectkit's single pass: protocol prompt, tag parsing, the answer streamed live).

``pass`` and ``single`` run once per worker count (the ``workers`` column).

Each request is timed from sending it to ``data: [DONE]``. Reported per level and way: errors,
requests per second, p50 and p99 latency, and the latency the proxy adds (its p50/p99 minus the
direct p50/p99). Last, the throughput of bare LiteLLM (``litellm.acompletion``, streaming, from
this process) against the same upstream at the heaviest load, for scale. Targets: no errors at
200 clients; a single-pass request gains at most 10 ms at p50 with one client.

Run from the repository root (about two minutes)::

    python benchmarks/proxy_load.py                  # --check exits 1 if a target is missed
    python benchmarks/proxy_load.py --ways pass --compare /tmp/old-checkout

``--compare`` also runs the proxy of another checkout of reflectkit (one worker, labelled with
the directory's name) side by side, to compare versions in one run; ``--ways`` picks ways.

Nothing leaves the machine: every server listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
MODEL = "openai/upstream-fake"
KEY = "benchmark-proxy-key-0000"
LEVELS = ((1, 60), (20, 10), (200, 3))  # (concurrent clients, requests per client)


@contextmanager
def process(
    args: list[str], ready: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> Iterator[tuple[str, Path]]:
    """Start a process, its output going to a log file, and wait for the line of it that starts
    with ``ready``. (A pipe nobody reads would fill up and stall the process.)"""
    log = Path(tempfile.mkstemp(prefix="proxy-load-", suffix=".log")[1])
    with log.open("w") as sink:
        proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True
        )
    deadline = time.monotonic() + 60
    try:
        while True:
            found = [x for x in log.read_text().splitlines() if x.startswith(ready)]
            if found:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"{args[2]} exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args[2]} did not start")
            time.sleep(0.05)
        yield found[0], log
    finally:
        proc.terminate()
        proc.wait(10)
        log.unlink()


def wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} is not answering")


@dataclass
class Way:
    name: str
    url: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Figures:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


async def one_request(client: httpx.AsyncClient, way: Way, figures: Figures) -> None:
    started = time.perf_counter()
    try:
        request = client.stream("POST", way.url, json=way.body, headers=way.headers)
        async with request as response:
            if response.status_code != 200:
                await response.aread()
                figures.errors.append(f"{response.status_code}: {response.text[:120]}")
                return
            done = False
            async for line in response.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith('data: {"error"'):
                    figures.errors.append(line[:120])
            if not done:
                figures.errors.append("stream ended without [DONE]")
                return
    except httpx.HTTPError as error:
        figures.errors.append(f"{type(error).__name__}: {error}")
        return
    figures.latencies.append(time.perf_counter() - started)


async def load(way: Way, clients: int, each: int) -> Figures:
    figures = Figures()
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        for _ in range(3):  # warm the connections and the proxy's caches, in every worker
            await asyncio.gather(*(one_request(client, way, Figures()) for _ in range(8)))

        async def user() -> None:
            for _ in range(each):
                await one_request(client, way, figures)

        started = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(clients)))
        figures.seconds = time.perf_counter() - started
    return figures


async def bare_litellm(upstream: str, clients: int, each: int) -> Figures:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    figures = Figures()
    messages = [{"role": "user", "content": "What is 2 + 2?"}]

    async def call() -> None:
        started = time.perf_counter()
        try:
            stream = await litellm.acompletion(
                model=MODEL,
                messages=messages,
                api_base=f"{upstream}/v1",
                api_key="none",
                stream=True,
                max_retries=0,
            )
            async for _ in stream:
                pass
        except Exception as error:
            figures.errors.append(f"{type(error).__name__}: {error}"[:120])
            return
        figures.latencies.append(time.perf_counter() - started)

    for _ in range(3):
        await call()
    figures.latencies.clear()

    async def user() -> None:
        for _ in range(each):
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(clients)))
    figures.seconds = time.perf_counter() - started
    return figures


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.05, help="upstream delay, seconds")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts")
    parser.add_argument("--ways", default="pass,single", help="proxied ways: pass,single")
    parser.add_argument(
        "--compare", type=Path, help="also run this checkout's proxy (1 worker) side by side"
    )
    args = parser.parse_args()
    upstream_cmd = [sys.executable, "-m", "tests.upstream", "--delay", str(args.delay)]
    with process(upstream_cmd, "PORT") as (line, _), ExitStack() as proxies:
        upstream = f"http://127.0.0.1:{line.split()[1]}"
        wait_healthy(upstream)
        runs: list[tuple[str, int, Path]] = [(str(n), n, ROOT) for n in args.workers]
        if args.compare is not None:
            runs.append((f"{args.compare.name}:1", 1, args.compare))
        urls: dict[str, tuple[str, Path]] = {}
        for label, count, source in runs:
            port = 18000 + (os.getpid() + 7 * len(urls)) % 1000
            proxy_cmd = [
                *(sys.executable, "-m", "reflectkit.cli.serve", "--port", str(port)),
                *("--model", MODEL, "--api-key", KEY, "--log-level", "warning"),
                *("-o", f"api_base={upstream}/v1", "-o", "api_key=none"),
                *("--max-concurrent-requests", "256"),
                *(("--workers", str(count)) if count > 1 else ()),
            ]
            env = dict(os.environ)
            # Another checkout runs from its directory (python -m puts it first on sys.path).
            env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
            started = process(proxy_cmd, "reflectkit: serving", env, source)
            _, log = proxies.enter_context(started)
            urls[label] = (f"http://127.0.0.1:{port}", log)
        for url, _ in urls.values():
            wait_healthy(url)
        ways = [w.strip() for w in args.ways.split(",") if w.strip()]
        proxied = {label: url for label, (url, _) in urls.items()}
        status = asyncio.run(run(upstream, proxied, ways, args.check))
        for label, (_, log) in urls.items():
            problems = [x for x in log.read_text().splitlines() if "reflectkit: serving" not in x]
            problems = [x for x in problems if "stopped by SIG" not in x]
            if problems:
                print(f"\nthe proxy {label} logged {len(problems)} lines, the last:")
                print("\n".join(problems[-10:]))
        return status


def proxy_ways(proxy: str, names: list[str]) -> list[Way]:
    """The proxied ways asked for, against one proxy."""
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    auth = {"Authorization": f"Bearer {KEY}"}
    url = f"{proxy}/v1/chat/completions"
    bodies: dict[str, dict[str, Any]] = {
        "pass": {"model": MODEL, "messages": messages},
        "single": {
            "model": f"reflect/{MODEL}",
            "messages": messages,
            "reflectkit": {"mode": "single"},
        },
    }
    return [Way(name, url, dict(bodies[name]), auth) for name in names]


async def run(upstream: str, proxies: dict[str, str], names: list[str], check: bool) -> int:
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    stream = {"stream": True, "stream_options": {"include_usage": True}}
    direct = Way(
        "direct", f"{upstream}/v1/chat/completions", {"model": MODEL, "messages": messages}
    )
    ways: list[tuple[str, Way]] = [("", direct)]
    for label, proxy in proxies.items():
        ways += [(label, way) for way in proxy_ways(proxy, names)]
    for _, way in ways:
        way.body.update(stream)
    print(f"upstream answers after its delay; {len(ways)} ways; latency in ms\n")
    print("clients  way     workers requests errors   req/s     p50     p99  +p50 vs direct  +p99")
    missed: list[str] = []
    for clients, each in LEVELS:
        results = [(label, way.name, await load(way, clients, each)) for label, way in ways]
        base = results[0][2]
        for label, name, figures in results:
            added = ""
            if name != "direct":
                p50 = figures.quantile(0.5) - base.quantile(0.5)
                p99 = figures.quantile(0.99) - base.quantile(0.99)
                added = f"{ms(p50)}        {ms(p99)}"
                if clients == 1 and p50 > 0.010:
                    missed.append(f"{name} ({label}) adds {p50 * 1000:.1f} ms at p50")
            print(
                f"{clients:7d}  {name:7s} {label:>7} {len(figures.latencies):8d} "
                f"{len(figures.errors):6d} {figures.throughput:7.1f} "
                f"{ms(figures.quantile(0.5))} {ms(figures.quantile(0.99))}  {added}"
            )
            for error in figures.errors[:3]:
                print(f"         error: {error}")
            if clients == LEVELS[-1][0] and figures.errors:
                missed.append(f"{name}: {len(figures.errors)} errors at {clients} clients")
        print()
    clients, each = LEVELS[-1]
    bare = await bare_litellm(upstream, clients, each)
    print(
        f"bare litellm.acompletion, {clients} concurrent streams from one process: "
        f"{bare.throughput:.1f} req/s, p50 {ms(bare.quantile(0.5)).strip()} ms, "
        f"{len(bare.errors)} errors"
    )
    for line in missed:
        print(f"MISSED: {line}")
    return 1 if check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
