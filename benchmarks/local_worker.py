"""What the embedded model's process boundary costs: in-process llama.cpp vs the worker process.

reflectkit runs llama.cpp in a worker process so that a native crash never takes the caller
down (``reflectkit.models.local.supervisor``). Each sampled piece then crosses a pipe as a JSON
line. This measures, rounds interleaved in one run, the same greedy generation of SmolLM2-135M
(same prompt, same threads, same token count) two ways:

* **in-process**: ``reflectkit.models.local.engine.generate`` called directly, as before the worker;
* **worker**: the ``local`` provider's stream, through the worker process.

It prints the median decode tokens/s and first-token latency of each, and the ratios.

    python benchmarks/local_worker.py              # 7 rounds of 128 tokens, ~1 minute
    python benchmarks/local_worker.py --rounds 15 --tokens 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Iterator

from reflectkit.models.local import BACKEND, model_path
from reflectkit.models.local import engine as local_engine
from reflectkit.models.provider import ProviderChunk

# The worker waits passively (reflectkit.models.local.supervisor); the in-process side must too, or
# this would measure OpenMP's wait policy rather than the process boundary. Read by OpenMP when
# llama.cpp first loads, so it is set before anything imports it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MESSAGES = [
    {"role": "user", "content": "Write a very long story about a dragon who learns to read."}
]


def timed(chunks: Iterator[ProviderChunk]) -> tuple[float, float]:
    """(seconds to the first piece, decode tokens/s after it)."""
    start = time.perf_counter()
    first = last = None
    tokens = 0
    for chunk in chunks:
        now = time.perf_counter()
        if first is None and chunk.text:
            first = now
        last = now
        if chunk.finish_reason is not None:
            tokens = chunk.completion_tokens or 0
    if first is None or last is None or tokens < 2:
        raise SystemExit("the model wrote fewer than two tokens: nothing to time")
    return first - start, (tokens - 1) / (last - first)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    params = {"temperature": 0, "max_tokens": args.tokens, "stop": ["<|im_end|>"]}
    path = model_path("smollm2-135m")

    def in_process() -> Iterator[ProviderChunk]:
        return local_engine.generate(path, MESSAGES, params, threading.Event())

    def worker() -> Iterator[ProviderChunk]:
        return BACKEND.stream("smollm2-135m", MESSAGES, params)

    ways = {"in-process": in_process, "worker": worker}
    for way in ways.values():  # load the model on both sides first
        timed(way())
    firsts: dict[str, list[float]] = {name: [] for name in ways}
    rates: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, way in ways.items():
            first, rate = timed(way())
            firsts[name].append(first)
            rates[name].append(rate)
    print(f"SmolLM2-135M, {args.tokens} tokens, median of {args.rounds} interleaved rounds\n")
    print("| | decode tokens/s | first token (ms) |")
    print("|---|---|---|")
    for name in ways:
        rate, first = statistics.median(rates[name]), statistics.median(firsts[name])
        print(f"| {name} | {rate:.1f} | {first * 1000:.1f} |")
    rate_ratio = statistics.median(rates["worker"]) / statistics.median(rates["in-process"])
    first_extra = statistics.median(firsts["worker"]) - statistics.median(firsts["in-process"])
    print(f"\nworker / in-process tokens/s: {rate_ratio:.3f}")
    print(f"worker first-token latency added: {first_extra * 1000:+.1f} ms")


if __name__ == "__main__":
    main()
