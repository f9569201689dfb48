"""Does outside feedback beat self-critique? Single pass vs. self-critique loop vs. verifier loop.

Seeded arithmetic word problems with known answers ("Mia has 7 shells and finds 5 more..."),
answered by one model three ways, side by side in one run, at equal ``max_iterations``:

* **single pass**: one call (with the format help the model gets by default);
* **self-critique loop**: generate → critique → revise, the critic being the same model
  (``LLMCritic``), up to ``max_iterations`` drafts;
* **verifier loop**: the same loop with a ``FunctionCritic`` that checks the number. Its feedback
  says the answer is wrong and asks for the work again; it never reveals the right number.

Both loops write revisions at ``--revise-temperature`` (0.7, seeded): at temperature 0 a small
model told "wrong, try again" mostly writes the same answer again, and the loop stops on
``no_change``. The verifier loop is also run with temperature-0 revisions, to show that.

Printed per strategy: accuracy (the last number in the answer equals the expected one), total
tokens, model calls and wall time. The verifier knows the answers: that is the point. It stands
for any outside check (tests, a calculator, a database) and shows what such feedback buys over
the model's opinion of itself.

Run from the repository root (the default model needs the ``local`` extra)::

    python benchmarks/verifier_gain.py                    # 30 problems, embedded model
    python benchmarks/verifier_gain.py --n 50 --seed 7 --max-iterations 3
    python benchmarks/verifier_gain.py --model gpt-4o-mini   # any LiteLLM model
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
from reflectkit.evaluation import ArithmeticProblem, arithmetic_problems, last_number
from reflectkit.models.local import DEFAULT_LOCAL_MODEL

Problem = ArithmeticProblem
make_problems = arithmetic_problems  # the same seeded problems as `reflectkit eval arithmetic`


def verifier(answers: dict[str, int]) -> rk.FunctionCritic:
    def check(question: str, answer: str) -> bool | str:
        got = last_number(answer)
        if got is None:
            return "Your answer has no number. Work it out step by step and give the number."
        if got == answers[question]:
            return True
        return f"Your answer {got:g} is wrong. Work it out again step by step and give the number."

    return rk.FunctionCritic(check, name="check_number")


@dataclass
class Tally:
    name: str
    correct: int = 0
    tokens: int = 0
    calls: int = 0
    seconds: float = 0.0
    passes_per_draft: list[int] | None = None


async def run(name: str, reflector: rk.Reflector, problems: Sequence[Problem]) -> Tally:
    tally = Tally(name)
    start = time.perf_counter()
    for problem in problems:
        result = await reflector.arun(problem.text)
        tally.correct += last_number(result.output) == problem.answer
        tally.tokens += result.usage.total_tokens
        tally.calls += result.usage.calls
    tally.seconds = time.perf_counter() - start
    print(f"  {name}: done in {tally.seconds:.0f} s", file=sys.stderr)
    return tally


async def amain(args: argparse.Namespace) -> list[Tally]:
    problems = make_problems(args.n, args.seed)
    answers = {p.text: p.answer for p in problems}
    common: dict[str, Any] = {"max_iterations": args.max_iterations, "temperature": 0}
    if args.max_tokens:
        common["max_tokens"] = args.max_tokens
    sampled = {"revise_kwargs": {"temperature": args.revise_temperature, "seed": args.seed}}
    strategies = [
        ("single pass", rk.Reflector(args.model, mode="single", **common)),
        ("self-critique loop", rk.Reflector(args.model, mode="loop", **common, **sampled)),
        ("verifier loop, T=0", rk.Reflector(args.model, critic=verifier(answers), **common)),
        ("verifier loop", rk.Reflector(args.model, critic=verifier(answers), **common, **sampled)),
    ]
    return [await run(name, reflector, problems) for name, reflector in strategies]


def report(tallies: list[Tally], n: int) -> None:
    header = f"{'strategy':<20} {'accuracy':>14} {'tokens':>8} {'calls':>6} {'seconds':>8}"
    print(header)
    print("-" * len(header))
    for t in tallies:
        accuracy = f"{t.correct}/{n} {100 * t.correct / n:.0f}%"
        print(f"{t.name:<20} {accuracy:>14} {t.tokens:>8} {t.calls:>6} {t.seconds:>8.1f}")
    single, self_critique, _, verified = tallies
    print()
    print(f"verifier loop vs single pass: {verified.correct - single.correct:+d} correct")
    print(f"self-critique vs single pass: {self_critique.correct - single.correct:+d} correct")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_LOCAL_MODEL)
    parser.add_argument("--n", type=int, default=30, help="number of problems")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--max-iterations", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=256, help="per call (0: model default)")
    parser.add_argument("--revise-temperature", type=float, default=0.7)
    args = parser.parse_args(argv)
    print(
        f"{args.n} problems (seed {args.seed}), {args.model}, temperature 0, "
        f"max_iterations {args.max_iterations}, loop revisions at temperature "
        f"{args.revise_temperature} where marked\n"
    )
    report(asyncio.run(amain(args)), args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
