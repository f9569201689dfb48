"""Does a small untuned model keep to the tag protocol, and does format help cost correctness?

Runs the embedded SmolLM2-135M-Instruct (``local/smollm2-135m``, greedy, temperature 0) over the
short questions with known answers in ``benchmarks/data/adherence.jsonl``, with several
strategies side by side in one run, all through reflectkit's model layer (which calls the local
model directly, not through LiteLLM) and with the same token budget per call:

* **plain**: the question alone, no system prompt, no tags; the whole reply is the answer.
* **Reflection-70B prompt**: Reflection-70B's system prompt, word for word, then the parser.
* **reflectkit, no help**: ``mode="single"``, ``format_help="off"``: the protocol's prompt only.
* **format help, no grammar**: the example as a demonstration exchange, the opening tag
  prefilled, and the repair call when a reply has no answer block (the default before the
  grammar).
* **grammar** variants: the same, and decoding constrained by the tag grammar
  (:mod:`reflectkit.models.local.grammar`): without the example, with the thinking unbounded or
  bounded to fewer characters; with the worked example used before (a capital, no reasoning to
  show).
* **format help (default)**: whatever reflectkit does for this model by default.

Columns: *tags as written*: replies whose answer came from a real output block before any
repair (the honest adherence figure: a repaired answer is in an output block by construction);
*accuracy*: final answers that contain an expected answer as a whole word, case-insensitively
(the "loosely right" reading a person would apply to a chatty small model; it favours long
untagged replies, which have more chances to contain the answer); *completion tokens* and
*calls* summed over the set (repairs included); *seconds* of wall time.

Run from the repository root (needs the ``local`` extra)::

    python benchmarks/adherence.py                       # every question and strategy
    python benchmarks/adherence.py --limit 20            # a quick look
    python benchmarks/adherence.py --only plain,default  # some strategies (keys: --help)
    python benchmarks/adherence.py --threads 1           # on a machine shared with others
    python benchmarks/adherence.py --loop                # also the full loop (LLM critic)

Targets for the default: >= 95% tags as written, and accuracy at least the best of plain and
no help.
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
from reflectkit.drafting import usable
from reflectkit.models.llm import ModelClient
from reflectkit.models.local import DEFAULT_LOCAL_MODEL

DATA = Path(__file__).parent / "data" / "adherence.jsonl"
# The worked example before this one: a capital, with no reasoning to show (templates that
# override the built-in example).
FACT_EXAMPLE = Path(__file__).parent / "data" / "fact_exemplar"
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


def reflectkit(params: dict[str, Any], **settings: Any) -> Strategy:
    reflector = rk.Reflector(DEFAULT_LOCAL_MODEL, **params, **settings)

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


DEFAULT = "format help (default)"


def report(tallies: list[Tally]) -> dict[str, bool]:
    total = len(tallies[0].outcomes)
    header = (
        f"{'strategy':<40} {'tags as written':>16} {'accuracy':>15} "
        f"{'compl. tokens':>13} {'calls':>6} {'seconds':>8}"
    )
    print(header)
    print("-" * len(header))
    accuracy: dict[str, int] = {}
    tagged: dict[str, int] = {}
    for tally in tallies:
        outcomes = [o for _, o in tally.outcomes]
        right = sum(correct(o.answer, q) for q, o in tally.outcomes)
        accuracy[tally.name] = right
        if outcomes[0].tagged is None:
            before = "-"
        else:
            tagged[tally.name] = sum(bool(o.tagged) for o in outcomes)
            before = percent(tagged[tally.name], total)
        tokens = sum(o.completion_tokens for o in outcomes)
        calls = sum(o.calls for o in outcomes)
        print(
            f"{tally.name:<40} {before:>16} {percent(right, total):>15} "
            f"{tokens:>13} {calls:>6} {tally.seconds:>8.1f}"
        )
    checks: dict[str, bool] = {}
    if DEFAULT in tagged:
        checks["tags as written >= 95% by default"] = tagged[DEFAULT] >= 0.95 * total
        baselines = [accuracy[n] for n in ("plain", "reflectkit, no help") if n in accuracy]
        if baselines:
            checks["accuracy by default >= best of plain and no help"] = accuracy[DEFAULT] >= max(
                baselines
            )
    print()
    for name, ok in checks.items():
        print(f"{name:<52} {'PASS' if ok else 'FAIL'}")
    return checks


def strategies(
    client: ModelClient, params: dict[str, Any], loop: bool
) -> dict[str, tuple[str, Callable[[], Strategy]]]:
    """Every strategy by key: its name in the table and how to make it."""
    no_grammar = FormatHelp(grammar=False)
    table: dict[str, tuple[str, Callable[[], Strategy]]] = {
        "plain": ("plain", lambda: plain(client)),
        "r70b": ("Reflection-70B prompt", lambda: reflection_70b(client)),
        "nohelp": (
            "reflectkit, no help",
            lambda: reflectkit(params, mode="single", format_help="off"),
        ),
        "help": (
            "format help, no grammar",
            lambda: reflectkit(params, mode="single", format_help=no_grammar),
        ),
        "grammar-noexample": (
            "grammar, no example",
            lambda: reflectkit(
                params, mode="single", format_help=FormatHelp(grammar=True, exemplar=False)
            ),
        ),
        "grammar-free": (
            "grammar, thinking unbounded",
            lambda: reflectkit(
                params,
                mode="single",
                format_help=FormatHelp(grammar=True, max_thinking_chars=None),
            ),
        ),
        "grammar-600": (
            "grammar, thinking <= 600 chars",
            lambda: reflectkit(
                params, mode="single", format_help=FormatHelp(grammar=True, max_thinking_chars=600)
            ),
        ),
        "fact-example": (
            "grammar, the fact example (before)",
            lambda: reflectkit(params, mode="single", template_dir=FACT_EXAMPLE),
        ),
        "default": (DEFAULT, lambda: reflectkit(params, mode="single")),
    }
    if loop:
        table["loop"] = (
            "reflectkit loop, format help",
            lambda: reflectkit(params, max_iterations=2),
        )
    return table


async def amain(args: argparse.Namespace) -> tuple[bool, list[Tally]]:
    questions = load(args.limit)
    params = dict(PARAMS)
    if args.threads:
        params["n_threads"] = args.threads
    client = ModelClient(DEFAULT_LOCAL_MODEL, params)
    await client.complete([{"role": "user", "content": "Hi"}])  # load the model once, untimed
    table = strategies(client, params, args.loop)
    keys = args.only.split(",") if args.only else list(table)
    unknown = [k for k in keys if k not in table]
    if unknown:
        raise SystemExit(f"unknown strategies {unknown}; choose from {', '.join(table)}")
    threads = f", n_threads {args.threads}" if args.threads else ""
    print(
        f"{len(questions)} questions, {DEFAULT_LOCAL_MODEL}, temperature 0, "
        f"max_tokens {PARAMS['max_tokens']} per call{threads}\n",
    )
    tallies = []
    for key in keys:
        name, make = table[key]
        tallies.append(await measure(name, make(), questions))
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
    parser.add_argument(
        "--only",
        metavar="KEYS",
        help="comma-separated strategies: plain, r70b, nohelp, help, grammar-noexample, "
        "grammar-free, grammar-600, fact-example, default (and loop with --loop)",
    )
    parser.add_argument(
        "--threads", type=int, help="n_threads for every call (1 on a machine shared with others)"
    )
    parser.add_argument("--json", metavar="FILE", help="write every answer to FILE (JSONL)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    ok, tallies = asyncio.run(amain(args))
    if args.json:
        write_answers(args.json, tallies)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
