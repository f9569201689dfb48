"""How much reflectkit's loop costs on top of the model calls it makes, and how prompts grow.

Two measurements, both on a :class:`~reflectkit.testing.FunctionLLM` that answers instantly, so
what is timed is reflectkit and LiteLLM, never a model:

1. **Loop overhead.** One :class:`~reflectkit.Reflector` (compiled once, no checkpointer) runs
   a 3-iteration loop: generate, 3 critiques, 2 revisions = 6 model calls, the critic always
   asking for a revision and every draft different, so the run ends on ``max_iterations``. The
   baseline sends the *same six message lists* (recorded from a warm-up reflectkit run) through
   bare ``litellm.acompletion`` in a plain ``for`` loop, with the same call arguments reflectkit
   passes (``max_retries=0``, ``timeout``). Both go through LiteLLM's real code path into the same
   fake, so their difference is reflectkit's own cost: LangGraph, prompt building, parsing,
   retries, usage accounting, result objects. The two are interleaved round by round (the order
   alternating each round) in one process, so drift in CPU speed or caches hits both alike.
   Reported: median and mean seconds per run, the ratio reflectkit / baseline, and the overhead
   per model call in µs, ``(reflectkit - baseline) / 6``. Targets: ratio ≤ 1.25 and
   ≤ 1000 µs per call.

2. **Prompt growth.** For ``max_iterations`` k = 1..5, the prompt tokens reflectkit sends
   (generator calls and all calls) next to a naive *full-history* loop that keeps one growing
   conversation: every draft (assistant turn) and every critique, as a revision request (user
   turn), is appended, and the generator is sent the whole conversation each time. The critic
   gets the same standalone prompt in both loops, so only the history differs. Both use
   reflectkit's own templates and the same fake, whose token count is the number of
   whitespace-separated words. reflectkit carries only the latest draft and its critique, so
   its per-call prompt stays flat and its total grows linearly in k (second differences 0); the
   full-history loop's total grows quadratically.

Run from the repository root::

    python benchmarks/overhead.py              # 200 interleaved rounds, ~10-20 s
    python benchmarks/overhead.py --check      # exit 1 if a target is missed

It always exits 0 unless ``--check`` is given. Nothing leaves the machine: the fake is an
in-process LiteLLM provider and LiteLLM's price map is read from the package.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import reflectkit as rk
from reflectkit.messages import PromptBuilder, to_conversation
from reflectkit.models.llm import _load
from reflectkit.prompts import Prompts
from reflectkit.testing import FunctionLLM, Request, block_model_requests

Message = dict[str, Any]

ITERATIONS = 3
CALLS = 2 * ITERATIONS  # generate, 3 critiques, 2 revisions
TIMEOUT = 120.0  # reflectkit's default per-call timeout, passed to the baseline as well
TARGET_RATIO = 1.25
TARGET_US_PER_CALL = 1000.0

QUESTION = (
    "A train leaves at 09:40 and arrives at 13:15. It stops twice for 7 minutes each. "
    "How long was it moving?"
)
# Fixed word counts, so every draft and every verdict has the same token count.
REASONING = " ".join(f"step{i}" for i in range(40))
FEEDBACK = " ".join(f"point{i}" for i in range(25))
_OUTPUT = re.compile(r"<output>(.*?)</output>", re.DOTALL)


def instant_model() -> FunctionLLM:
    """A fake that always asks for a revision and never writes the same draft twice."""
    counter = itertools.count(1)
    verdict = json.dumps({"verdict": "revise", "score": 4, "issues": [], "feedback": FEEDBACK})

    def answer(request: Request) -> str:
        if "strict reviewer" in request.last_user_text:
            return verdict
        n = next(counter)
        return f"<thinking>{REASONING}</thinking><output>{n} hours and 21 minutes</output>"

    return FunctionLLM(answer)


# --------------------------------------------------------------------------------------------
# 1. Loop overhead
# --------------------------------------------------------------------------------------------


async def run_reflectkit(reflector: rk.Reflector) -> None:
    result = await reflector.arun(QUESTION)
    if result.usage.calls != CALLS or result.stop_reason is not rk.StopReason.MAX_ITERATIONS:
        raise RuntimeError(f"unexpected run: {result.usage.calls} calls, {result.stop_reason}")


async def run_baseline(litellm: Any, model: str, calls: Sequence[list[Message]]) -> None:
    """The same six calls, one after the other, with nothing around them."""
    for messages in calls:
        response = await litellm.acompletion(
            model=model, messages=messages, max_retries=0, timeout=TIMEOUT
        )
        if not response.choices[0].message.content:
            raise RuntimeError("empty reply")


@dataclass(frozen=True)
class Timing:
    reflectkit: list[float]
    baseline: list[float]
    logged: list[float]


async def measure_overhead(rounds: int, warmup: int) -> Timing:
    litellm = _load()
    fake = instant_model()
    reflector = rk.Reflector(fake.model, max_iterations=ITERATIONS, run_log=False)
    log_dir = tempfile.mkdtemp(prefix="reflectkit-bench-")
    logged = rk.Reflector(
        fake.model, max_iterations=ITERATIONS, run_log=os.path.join(log_dir, "runs.sqlite3")
    )

    # Warm-up, and record exactly what reflectkit sends so the baseline sends the same.
    for _ in range(max(1, warmup)):
        fake.requests.clear()
        await run_reflectkit(reflector)
    calls = [request.messages for request in fake.requests]
    if len(calls) != CALLS:
        raise RuntimeError(f"expected {CALLS} calls per run, saw {len(calls)}")
    for _ in range(max(1, warmup)):
        await run_baseline(litellm, fake.model, calls)
        await run_reflectkit(logged)

    async def timed(step: Callable[[], Any]) -> float:
        fake.requests.clear()  # keep the fake's request log from growing during the run
        start = time.perf_counter()
        await step()
        return time.perf_counter() - start

    timing = Timing([], [], [])
    sides = [
        (timing.reflectkit, lambda: run_reflectkit(reflector)),
        (timing.baseline, lambda: run_baseline(litellm, fake.model, calls)),
        (timing.logged, lambda: run_reflectkit(logged)),
    ]
    for i in range(rounds):
        for offset in range(3):  # rotate the order so no side always runs first
            samples, step = sides[(i + offset) % 3]
            samples.append(await timed(step))
    logged.close()
    shutil.rmtree(log_dir, ignore_errors=True)
    return timing


def report_overhead(timing: Timing) -> bool:
    kit_median = statistics.median(timing.reflectkit)
    base_median = statistics.median(timing.baseline)
    kit_mean = statistics.fmean(timing.reflectkit)
    base_mean = statistics.fmean(timing.baseline)
    ratio = kit_median / base_median
    per_call_us = (kit_median - base_median) / CALLS * 1e6
    paired = statistics.median(
        k / b for k, b in zip(timing.reflectkit, timing.baseline, strict=True)
    )

    print(
        f"Loop overhead: {ITERATIONS} iterations = {CALLS} model calls per run, "
        f"{len(timing.reflectkit)} interleaved rounds, no checkpointer"
    )
    print("(the loop's rows: run log off; the last row: the default run log on, to a temp file)")
    print()
    print(f"{'':<26}{'median ms/run':>14}{'mean ms/run':>14}{'ms/call':>10}")
    logged_median = statistics.median(timing.logged)
    for name, median, mean in (
        ("reflectkit Reflector.arun", kit_median, kit_mean),
        ("plain litellm.acompletion", base_median, base_mean),
        ("  ... with the run log", logged_median, statistics.fmean(timing.logged)),
    ):
        print(f"{name:<26}{median * 1e3:>14.3f}{mean * 1e3:>14.3f}{median / CALLS * 1e3:>10.3f}")
    print()
    ratio_ok = ratio <= TARGET_RATIO
    call_ok = per_call_us <= TARGET_US_PER_CALL
    print(
        f"ratio (median/median)      {ratio:8.3f}   target <= {TARGET_RATIO:.2f}   "
        f"{'PASS' if ratio_ok else 'FAIL'}"
    )
    print(f"ratio (median of pairs)    {paired:8.3f}")
    print(
        f"overhead per model call    {per_call_us:8.1f} µs   target <= "
        f"{TARGET_US_PER_CALL:.0f} µs   {'PASS' if call_ok else 'FAIL'}"
    )
    mean_us = (kit_mean - base_mean) / CALLS * 1e6
    print(f"  (from means: {mean_us:.1f} µs/call)")
    log_us = (logged_median - kit_median) / CALLS * 1e6
    print(
        f"with the run log: ratio {logged_median / base_median:.3f}, "
        f"+{log_us:.1f} µs per model call for recording (1 start, 7 steps, 1 finish per run)"
    )
    return ratio_ok and call_ok


# --------------------------------------------------------------------------------------------
# 2. Prompt growth
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tokens:
    generator: int
    total: int


async def reflectkit_tokens(fake: FunctionLLM, k: int) -> Tokens:
    result = await rk.Reflector(fake.model, max_iterations=k, run_log=False).arun(QUESTION)
    if len(result.iterations) != k:
        raise RuntimeError(f"max_iterations={k} ran {len(result.iterations)} iterations")
    generator = sum(i.draft_usage.prompt_tokens for i in result.iterations)
    return Tokens(generator, result.usage.prompt_tokens)


async def full_history_tokens(litellm: Any, fake: FunctionLLM, k: int) -> Tokens:
    """A naive loop that never forgets: the generator is sent one ever-growing conversation."""
    builder = PromptBuilder(Prompts(), rk.REFLECTION_TAGS)
    conversation = to_conversation(QUESTION)
    history = builder.generate(conversation)  # system prompt + the request
    generator = total = 0

    async def call(messages: list[Message]) -> str:
        nonlocal total
        response = await litellm.acompletion(model=fake.model, messages=messages, max_retries=0)
        total += int(response.usage.prompt_tokens)
        return str(response.choices[0].message.content)

    for iteration in range(1, k + 1):
        before = total
        draft = await call(history)
        generator += total - before
        history.append({"role": "assistant", "content": draft})
        match = _OUTPUT.search(draft)
        answer = match.group(1) if match else draft
        # The critic gets the same standalone prompt as reflectkit's: only the generator's
        # conversation differs between the two loops.
        verdict = json.loads(await call(builder.critique(conversation.question, answer)))
        if iteration < k:  # the critique goes into the conversation as the next user turn
            revise = builder.revise(
                conversation,
                answer=answer,
                feedback=verdict["feedback"],
                issues=verdict.get("issues", []),
                score=verdict.get("score"),
            )
            history.append(revise[-1])
    return Tokens(generator, total)


def differences(values: Sequence[int]) -> list[int]:
    return [b - a for a, b in itertools.pairwise(values)]


async def measure_growth(max_k: int) -> tuple[list[Tokens], list[Tokens]]:
    litellm = _load()
    fake = instant_model()
    kit = [await reflectkit_tokens(fake, k) for k in range(1, max_k + 1)]
    full = [await full_history_tokens(litellm, fake, k) for k in range(1, max_k + 1)]
    return kit, full


def report_growth(kit: list[Tokens], full: list[Tokens]) -> bool:
    print("Prompt tokens by iterations (fake tokens = words; generator calls / all calls)")
    print()
    header = (
        f"{'k':>2} | {'reflectkit gen':>14} {'total':>7} {'Δ':>6} | "
        f"{'full-history gen':>16} {'total':>7} {'Δ':>6} | {'full/rk':>7}"
    )
    print(header)
    print("-" * len(header))
    kit_delta = [0, *differences([t.total for t in kit])]
    full_delta = [0, *differences([t.total for t in full])]
    for k, (a, b, da, db) in enumerate(zip(kit, full, kit_delta, full_delta, strict=True), 1):
        print(
            f"{k:>2} | {a.generator:>14} {a.total:>7} {'' if k == 1 else da:>6} | "
            f"{b.generator:>16} {b.total:>7} {'' if k == 1 else db:>6} | {b.total / a.total:>7.2f}"
        )
    print()
    if len(kit) < 3:
        print("growth: need at least 3 points for second differences")
        return True
    kit_d = differences([t.total for t in kit])
    full_d = differences([t.total for t in full])
    kit_d2 = differences(kit_d)
    full_d2 = differences(full_d)
    kit_worst = max(abs(d) for d in kit_d2) / statistics.fmean(kit_d)
    linear = kit_worst <= 0.02
    superlinear = all(d > 0 for d in full_d2)
    print(
        f"reflectkit:   Δ = {kit_d}, Δ² = {kit_d2}, max |Δ²|/mean Δ = {kit_worst:.3f}"
        f"  -> {'linear' if linear else 'NOT linear'}  {'PASS' if linear else 'FAIL'}"
    )
    print(
        f"full-history: Δ = {full_d}, Δ² = {full_d2}"
        f"  -> {'super-linear' if superlinear else 'not super-linear'}"
    )
    return linear


# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure reflectkit's loop overhead against plain litellm.acompletion calls "
        "on an instant fake model, and prompt-token growth against a full-history loop.",
    )
    parser.add_argument(
        "--rounds", type=int, default=200, help="interleaved timing rounds (default: 200)"
    )
    parser.add_argument(
        "--warmup", type=int, default=20, help="untimed runs of each side first (default: 20)"
    )
    parser.add_argument(
        "--max-iterations",
        type=int,
        default=5,
        help="largest k of the prompt-growth table (default: 5)",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a target is missed (default: always 0)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.max_iterations < 1:
        parser.error("--rounds and --max-iterations must be at least 1")
    return args


async def amain(args: argparse.Namespace) -> bool:
    timing = await measure_overhead(args.rounds, args.warmup)
    overhead_ok = report_overhead(timing)
    print()
    kit, full = await measure_growth(args.max_iterations)
    growth_ok = report_growth(kit, full)
    return overhead_ok and growth_ok


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with block_model_requests():  # a hosted model can never be called from here
        ok = asyncio.run(amain(args))
    print()
    print("all targets met" if ok else "target missed")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
