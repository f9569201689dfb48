"""Does a small untuned model keep to the tag protocol, and does format help cost correctness?

Runs the embedded SmolLM2-135M-Instruct (``local/smollm2-135m``, greedy, temperature 0) over the
short questions with known answers in ``benchmarks/data/adherence.jsonl``, with five strategies
side by side in one run, all through reflectkit's LiteLLM path and with the same token budget:

* **plain**: the question alone, no system prompt, no tags; the whole reply is the answer.
* **Reflection-70B prompt**: Reflection-70B's system prompt, word for word, then the parser.
* **reflectkit, no help**: ``mode="single"``, ``format_help="off"``: the protocol's prompt only.
* **reflectkit, example in system**: format help with the worked example inside the system prompt.
* **reflectkit, format help**: the default for this model: the example as a demonstration
  exchange, the opening tag prefilled, and the repair call when a reply has no answer block.

Columns: *tags before repair*: replies whose answer came from a real output block as written;
*after repair*: the same after reflectkit's repair call; *accuracy*: answers that contain an
expected answer as a whole word, case-insensitively (the "loosely right" reading a person
would apply to a chatty small model); *completion tokens* and *calls* summed over the set;
*seconds* of wall time.

Run from the repository root (needs the ``local`` extra)::

    python benchmarks/adherence.py                 # all questions, ~4 minutes on 2 cores
    python benchmarks/adherence.py --limit 10      # a quick look
    python benchmarks/adherence.py --loop          # also the full loop (LLM critic = the model)

Targets: >= 90% tags with format help, and accuracy not below plain.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import reflectkit as rk
from reflectkit.config import FormatHelp
from reflectkit.format_help import usable
from reflectkit.llm import ModelClient
from reflectkit.local import DEFAULT_LOCAL_MODEL

DATA = Path(__file__).parent / "data" / "adherence.jsonl"
REFLECTION_70B = (
    "You are a world-class AI system, capable of complex reasoning and reflection. Reason "
    "through the query inside <thinking> tags, and then provide your final response inside "
    "<output> tags. If you detect that you made a mistake in your reasoning at any point, "
    "correct yourself inside <reflection> tags."
)
PARAMS: dict[str, Any] = {"temperature": 0, "max_tokens": 256}


@dataclass(frozen=True)
class Question:
    text: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    """One strategy's answer to one question."""

    answer: str
    tagged: bool | None  # None: the strategy asks for no tags
    repaired: bool
    completion_tokens: int
    calls: int


@dataclass
class Tally:
    name: str
    outcomes: list[tuple[Question, Outcome]] = field(default_factory=list)
    seconds: float = 0.0


def load(limit: int | None) -> list[Question]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    questions = [Question(r["question"], tuple(a.lower() for a in r["answers"])) for r in rows]
    return questions[:limit] if limit else questions


def correct(answer: str, question: Question) -> bool:
    text = answer.lower()
    return any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", text) for a in question.answers)


Strategy = Callable[[Question], Awaitable[Outcome]]


def plain(client: ModelClient) -> Strategy:
    async def run(question: Question) -> Outcome:
        done = await client.complete([{"role": "user", "content": question.text}])
        return Outcome(done.text.strip(), None, False, done.usage.completion_tokens, 1)

    return run


def reflection_70b(client: ModelClient) -> Strategy:
    async def run(question: Question) -> Outcome:
        messages = [
            {"role": "system", "content": REFLECTION_70B},
            {"role": "user", "content": question.text},
        ]
        done = await client.complete(messages)
        parsed = rk.parse(done.text)
        tagged = parsed.status in (rk.ParseStatus.COMPLETE, rk.ParseStatus.UNCLOSED) and bool(
            parsed.output.strip()
        )
        return Outcome(parsed.output, tagged, False, done.usage.completion_tokens, 1)

    return run


def reflectkit(**settings: Any) -> Strategy:
    reflector = rk.Reflector(DEFAULT_LOCAL_MODEL, **PARAMS, **settings)

    async def run(question: Question) -> Outcome:
        result = await reflector.arun(question.text)
        final = result.iterations[result.final_iteration - 1].draft
        tagged = usable(final) and not final.repaired
        return Outcome(
            result.output,
            tagged,
            final.repaired,
            result.usage.completion_tokens,
            result.usage.calls,
        )

    return run


async def measure(name: str, strategy: Strategy, questions: Sequence[Question]) -> Tally:
    tally = Tally(name)
    start = time.perf_counter()
    for question in questions:
        tally.outcomes.append((question, await strategy(question)))
    tally.seconds = time.perf_counter() - start
    print(f"  {name}: done in {tally.seconds:.0f} s", file=sys.stderr)
    return tally


def percent(count: int, total: int) -> str:
    return f"{count:>3}/{total} {100 * count / total:>4.0f}%"


def report(tallies: list[Tally]) -> dict[str, bool]:
    total = len(tallies[0].outcomes)
    header = (
        f"{'strategy':<32} {'tags before repair':>18} {'after repair':>15} {'accuracy':>15} "
        f"{'compl. tokens':>13} {'calls':>6} {'seconds':>8}"
    )
    print(header)
    print("-" * len(header))
    accuracy: dict[str, int] = {}
    tags_after: dict[str, int] = {}
    for tally in tallies:
        outcomes = [o for _, o in tally.outcomes]
        right = sum(correct(o.answer, q) for q, o in tally.outcomes)
        accuracy[tally.name] = right
        if outcomes[0].tagged is None:
            before = after = "-"
        else:
            tagged = sum(bool(o.tagged) for o in outcomes)
            fixed = sum(bool(o.tagged) or o.repaired for o in outcomes)
            tags_after[tally.name] = fixed
            before, after = percent(tagged, total), percent(fixed, total)
        tokens = sum(o.completion_tokens for o in outcomes)
        calls = sum(o.calls for o in outcomes)
        print(
            f"{tally.name:<32} {before:>18} {after:>15} {percent(right, total):>15} "
            f"{tokens:>13} {calls:>6} {tally.seconds:>8.1f}"
        )
    helped = "reflectkit, format help"
    checks = {
        "tags >= 90% with format help": tags_after[helped] >= 0.9 * total,
        "accuracy with format help >= plain": accuracy[helped] >= accuracy["plain"],
    }
    print()
    for name, ok in checks.items():
        print(f"{name:<40} {'PASS' if ok else 'FAIL'}")
    return checks


async def amain(args: argparse.Namespace) -> tuple[bool, list[Tally]]:
    questions = load(args.limit)
    client = ModelClient(DEFAULT_LOCAL_MODEL, PARAMS)
    await client.complete([{"role": "user", "content": "Hi"}])  # load the model once, untimed
    strategies: list[tuple[str, Strategy]] = [
        ("plain", plain(client)),
        ("Reflection-70B prompt", reflection_70b(client)),
        ("reflectkit, no help", reflectkit(mode="single", format_help="off")),
        (
            "reflectkit, example in system",
            reflectkit(mode="single", format_help=FormatHelp(exemplar_in="system")),
        ),
        ("reflectkit, format help", reflectkit(mode="single")),
    ]
    if args.loop:
        strategies.append(("reflectkit loop, format help", reflectkit(max_iterations=2)))
    print(
        f"{len(questions)} questions, {DEFAULT_LOCAL_MODEL}, temperature 0, "
        f"max_tokens {PARAMS['max_tokens']} per call\n",
    )
    tallies = [await measure(name, strategy, questions) for name, strategy in strategies]
    return all(report(tallies).values()), tallies


def write_answers(path: str, tallies: list[Tally]) -> None:
    rows = [
        {
            "strategy": t.name,
            "question": q.text,
            "answer": o.answer,
            "tagged": o.tagged,
            "repaired": o.repaired,
            "correct": correct(o.answer, q),
        }
        for t in tallies
        for q, o in t.outcomes
    ]
    Path(path).write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, help="only the first N questions")
    parser.add_argument("--loop", action="store_true", help="also run the full loop")
    parser.add_argument("--json", metavar="FILE", help="write every answer to FILE (JSONL)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    ok, tallies = asyncio.run(amain(args))
    if args.json:
        write_answers(args.json, tallies)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
