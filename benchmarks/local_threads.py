"""Decode threads for the embedded model on a small machine: idle, and beside a busy neighbour.

llama.cpp's threads wait for each other at every step; when a thread has no core (another
process is busy), the others spin or sleep until it runs again. This measures decode tokens/s of
SmolLM2-135M for each thread count and OpenMP wait policy, on an idle machine and beside one
CPU-bound neighbour process (``while True: pass``), rounds interleaved so load drifts hit every
setting alike. The settings ``reflectkit.models.local.engine`` uses were chosen from this table.

    python benchmarks/local_threads.py              # 3 rounds, about 2 minutes on 2 cores
    python benchmarks/local_threads.py --rounds 5 --tokens 96
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).with_name("decode_probe.py")
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def settings() -> list[tuple[str, int, dict[str, str]]]:
    found = []
    for threads in sorted({1, max(1, CPUS - 1), CPUS}):
        for policy in ("active", "passive"):
            env = {"OMP_WAIT_POLICY": policy.upper()}
            found.append((f"{threads} thread{'s' * (threads > 1)}, OMP {policy}", threads, env))
    return found


def probe(threads: int, env: dict[str, str], tokens: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, str(PROBE), "--threads", str(threads), "--batch-threads", str(CPUS),
         "--tokens", str(tokens), "--reps", "2"],
        capture_output=True, text=True, env={**os.environ, **env}, check=True, timeout=600,
    )  # fmt: skip
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=96)
    args = parser.parse_args()
    rows = settings()
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for load in ("idle", "busy neighbour"):
            neighbour = None
            if load != "idle":
                neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                for label, threads, env in rows:
                    rate = probe(threads, env, args.tokens)["tokens_per_s"]
                    rates.setdefault((label, load), []).append(rate)
            finally:
                if neighbour is not None:
                    neighbour.kill()
                    neighbour.wait()
    print(f"decode tokens/s, median of {args.rounds} rounds ({CPUS} usable cores)\n")
    print("| setting | idle | busy neighbour | busy / idle |")
    print("|---|---|---|---|")
    for label, _threads, _env in rows:
        idle = statistics.median(rates[(label, "idle")])
        busy = statistics.median(rates[(label, "busy neighbour")])
        print(f"| {label} | {idle:.1f} | {busy:.1f} | {busy / idle:.2f} |")


if __name__ == "__main__":
    main()
