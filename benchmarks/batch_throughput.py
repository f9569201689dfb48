"""Batch throughput: reflectkit's batch() against bare LiteLLM, on a server that answers in 50 ms.

``--prompts`` prompts (1000) run through a 3-call loop each — generate, an LLM critique that asks
for a revision, a revision that repeats the answer, so the run stops on ``no_change`` — with
``batch(..., concurrency=100)`` against an OpenAI-compatible server on 127.0.0.1 in a separate
process (benchmarks/slow_openai_server.py) that answers every request after ``--latency``
seconds. Every item is checked to have made exactly 3 calls.

The same 3000 calls (the same three message lists per prompt, recorded from reflectkit) are then
made with bare ``litellm.acompletion``: 1000 chains of three calls one after the other, 100
chains at a time, with the call arguments reflectkit passes. Both sides go through LiteLLM's
OpenAI client to the same server, so the difference is reflectkit's own cost per item: LangGraph,
prompts, parsing, verdicts, result objects, the batch machinery, and the run log when it is on.

Printed, in one run: wall time of each side against the ideal (calls × latency ÷ concurrency),
the ratio reflectkit ÷ bare LiteLLM (target ≤ 1.15), and reflectkit with the run log off
(``run_log=False``) and on (the default; here a throw-away file). ``--profile`` adds a cProfile
of the reflectkit side.

Run from the repository root (a few minutes at most; ``--prompts 200`` for a quick look)::

    python benchmarks/batch_throughput.py
    python benchmarks/batch_throughput.py --prompts 200 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import reflectkit as rk
from reflectkit.batching import abatch
from reflectkit.models.llm import _load
from reflectkit.testing import FunctionLLM

HERE = Path(__file__).resolve().parent
MODEL = "openai/bench-model"
CALLS_PER_ITEM = 3
TIMEOUT = 120.0  # reflectkit's default per-call timeout, passed to the baseline too
TARGET_RATIO = 1.15

Message = dict[str, Any]


def question(i: int) -> str:
    return f"Question {i}: what is 6 times 7?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HERE / "slow_openai_server.py"), "--port", str(port),
         "--delay", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("ready"):
        process.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return process, f"http://127.0.0.1:{port}/v1"


def settings(api_base: str) -> dict[str, Any]:
    return {"mode": "loop", "max_iterations": 3, "api_base": api_base, "api_key": "sk-bench"}


async def recorded_chain() -> list[list[Message]]:
    """The three message lists reflectkit sends for question 0, recorded on an in-process fake
    that answers like the server does."""
    sys.path.insert(0, str(HERE))
    from slow_openai_server import _reply_text

    fake = FunctionLLM(lambda request: _reply_text({"messages": request.messages}))
    result = await rk.areflect(
        question(0), fake.model, mode="loop", max_iterations=3, run_log=False
    )
    if result.usage.calls != CALLS_PER_ITEM:
        raise RuntimeError(f"the loop made {result.usage.calls} calls, not {CALLS_PER_ITEM}")
    return [request.messages for request in fake.requests]


def chains_for(template: list[list[Message]], n: int) -> list[list[list[Message]]]:
    text = json.dumps(template)
    original = json.dumps(question(0))[1:-1]
    return [json.loads(text.replace(original, json.dumps(question(i))[1:-1])) for i in range(n)]


async def run_bare(chains: Sequence[list[list[Message]]], concurrency: int, api_base: str) -> float:
    litellm = _load()
    queue = iter(chains)
    calls = 0

    async def worker() -> None:
        nonlocal calls
        for chain in queue:
            for messages in chain:
                response = await litellm.acompletion(
                    model=MODEL,
                    messages=messages,
                    api_base=api_base,
                    api_key="sk-bench",
                    max_retries=0,
                    timeout=TIMEOUT,
                )
                if not response.choices[0].message.content:
                    raise RuntimeError("empty reply")
                calls += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    if calls != CALLS_PER_ITEM * len(chains):
        raise RuntimeError(f"bare LiteLLM made {calls} calls")
    return elapsed


async def run_reflectkit(
    n: int, concurrency: int, api_base: str, run_log: Any, progress: bool
) -> float:
    prompts = [question(i) for i in range(n)]
    start = time.perf_counter()
    with rk.Reflector(MODEL, run_log=run_log, **settings(api_base)) as reflector:
        items = await abatch(
            prompts, reflector=reflector, concurrency=concurrency, progress=progress
        )
    elapsed = time.perf_counter() - start  # closing flushes the run log: counted
    bad = [
        item
        for item in items
        if item.result is None
        or item.result.usage.calls != CALLS_PER_ITEM
        or item.result.stop_reason is not rk.StopReason.NO_CHANGE
    ]
    if bad:
        first = bad[0]
        detail = first.error or (
            first.result and (first.result.usage.calls, first.result.stop_reason)
        )
        raise RuntimeError(f"{len(bad)} items did not make exactly 3 calls; first: {detail}")
    return elapsed


PACKAGES = ("reflectkit", "langgraph", "langchain_core", "litellm", "openai", "httpx",
            "httpcore", "pydantic", "asyncio", "uuid_utils", "tqdm", "sqlite3", "json")  # fmt: skip


def _package(filename: str) -> str:
    for name in PACKAGES:
        if f"/{name}/" in filename or f"{name}." in filename.rsplit("/", 1)[-1]:
            return name
    return "other" if filename.startswith(("/", "<frozen")) else "builtins"


def by_package(profiler: cProfile.Profile) -> dict[str, float]:
    """Own (not cumulative) CPU seconds per package."""
    totals: dict[str, float] = {}
    raw: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    for (filename, _, _), (_, _, tottime, _, _) in raw.items():
        package = _package(filename)
        totals[package] = totals.get(package, 0.0) + tottime
    return totals


async def profile_sides(
    chains: list[list[list[Message]]], args: argparse.Namespace, api_base: str
) -> str:
    """CPU seconds per package, bare LiteLLM and reflectkit side by side, and reflectkit's
    and LangGraph's costliest functions."""
    bare, ours = cProfile.Profile(), cProfile.Profile()
    bare.enable()
    await run_bare(chains, args.concurrency, api_base)
    bare.disable()
    ours.enable()
    await run_reflectkit(args.prompts, args.concurrency, api_base, False, False)
    ours.disable()
    left, right = by_package(bare), by_package(ours)
    lines = [f"{'package':<16} {'bare s':>8} {'reflectkit s':>13} {'extra µs/call':>14}"]
    calls = CALLS_PER_ITEM * args.prompts
    for name in sorted(set(left) | set(right), key=lambda n: left.get(n, 0) - right.get(n, 0)):
        a, b = left.get(name, 0.0), right.get(name, 0.0)
        lines.append(f"{name:<16} {a:>8.2f} {b:>13.2f} {(b - a) / calls * 1e6:>14.0f}")
    a, b = sum(left.values()), sum(right.values())
    lines.append(f"{'total':<16} {a:>8.2f} {b:>13.2f} {(b - a) / calls * 1e6:>14.0f}")
    out = io.StringIO()
    stats = pstats.Stats(ours, stream=out)
    stats.sort_stats("tottime").print_stats(r"reflectkit|langgraph|langchain_core", 30)
    return "\n".join(lines) + "\n" + out.getvalue()


async def measure(
    args: argparse.Namespace, api_base: str, log_path: str
) -> tuple[dict[str, float], dict[str, float], str]:
    chains = chains_for(await recorded_chain(), args.prompts)
    warm = min(100, args.prompts)
    await run_bare(chains[:warm], args.concurrency, api_base)
    await run_reflectkit(warm, args.concurrency, api_base, False, False)
    await run_reflectkit(warm, args.concurrency, api_base, log_path, False)
    times: dict[str, list[tuple[float, float]]] = {"bare": [], "off": [], "on": []}
    sides = {
        "bare": lambda: run_bare(chains, args.concurrency, api_base),
        "off": lambda: run_reflectkit(
            args.prompts, args.concurrency, api_base, False, args.progress
        ),
        "on": lambda: run_reflectkit(
            args.prompts, args.concurrency, api_base, log_path, args.progress
        ),
    }
    for round_number in range(args.rounds):
        order = list(sides) if round_number % 2 == 0 else list(reversed(sides))
        for key in order:
            cpu = time.process_time()
            wall = await sides[key]()
            times[key].append((wall, time.process_time() - cpu))
    profile = await profile_sides(chains, args, api_base) if args.profile else ""
    best_wall = {key: min(w for w, _ in values) for key, values in times.items()}
    best_cpu = {key: min(c for _, c in values) for key, values in times.items()}
    return best_wall, best_cpu, profile


def report(args: argparse.Namespace, best: dict[str, float], cpu: dict[str, float]) -> bool:
    calls = CALLS_PER_ITEM * args.prompts
    ideal = calls * args.latency / args.concurrency
    print(
        f"{args.prompts} prompts × {CALLS_PER_ITEM} calls = {calls} calls, server latency "
        f"{args.latency * 1000:.0f} ms, concurrency {args.concurrency}; best of {args.rounds}"
    )
    print(f"ideal (calls × latency ÷ concurrency): {ideal:.2f} s\n")
    header = (
        f"{'side':<34} {'wall s':>7} {'× ideal':>8} {'× bare':>7} {'calls/s':>8} "
        f"{'CPU s':>6} {'CPU × bare':>10}"
    )
    print(header)
    print("-" * len(header))
    rows = [
        ("bare litellm.acompletion", "bare"),
        ("reflectkit batch, run_log=False", "off"),
        ("reflectkit batch, run log on", "on"),
    ]
    for name, key in rows:
        seconds = best[key]
        print(
            f"{name:<34} {seconds:>7.2f} {seconds / ideal:>8.2f} "
            f"{seconds / best['bare']:>7.2f} {calls / seconds:>8.0f} "
            f"{cpu[key]:>6.2f} {cpu[key] / cpu['bare']:>10.2f}"
        )
    # Far above the ideal, the client is CPU-bound: extra wall time is extra CPU per call.
    for key, label in (("off", "run log off"), ("on", "run log on")):
        extra = (best[key] - best["bare"]) / calls * 1e6
        extra_cpu = (cpu[key] - cpu["bare"]) / calls * 1e6
        print(
            f"reflectkit over bare LiteLLM, {label}: {extra:,.0f} µs wall, "
            f"{extra_cpu:,.0f} µs CPU per call"
        )
    ok = best["off"] / best["bare"] <= TARGET_RATIO
    verdict = "met" if ok else "NOT met"
    print(f"target reflectkit ≤ {TARGET_RATIO} × bare LiteLLM (run log off): {verdict}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.05, help="server delay, seconds")
    parser.add_argument("--rounds", type=int, default=2, help="best of N rounds")
    parser.add_argument("--progress", action="store_true", help="show batch's progress bar")
    parser.add_argument("--profile", action="store_true", help="cProfile the reflectkit side")
    parser.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    args = parser.parse_args(argv)
    server, api_base = start_server(args.latency)
    log_dir = tempfile.mkdtemp(prefix="reflectkit-bench-")
    try:
        log_path = os.path.join(log_dir, "runs.sqlite3")
        best, cpu, profile = asyncio.run(measure(args, api_base, log_path))
        ok = report(args, best, cpu)
        if profile:
            print("\nCPU profile (cProfile, own time), one more run of each side:\n" + profile)
    finally:
        server.kill()
        server.wait()
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
