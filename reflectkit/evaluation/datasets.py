"""Evaluation datasets: JSONL files, verifiers, and the built-in ``arithmetic``
(``humaneval`` is in :mod:`reflectkit.evaluation.humaneval`; both by name in
:mod:`reflectkit.evaluation.catalog`).

A dataset is a list of :class:`Example` and a checker that says whether an answer is right
(and, for the ``verifier`` mode, what to tell the model when it is not). See docs/eval.md for
the JSONL schema.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import random
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reflectkit.errors import ConfigurationError
from reflectkit.evaluation.matchers import check_expected, last_number, matches
from reflectkit.ray_pool import send_by_value

__all__ = [
    "ArithmeticProblem",
    "Check",
    "Checker",
    "Dataset",
    "Example",
    "arithmetic",
    "arithmetic_problems",
    "load_verifier",
    "matcher_check",
    "read_jsonl",
]


@dataclass(frozen=True)
class Example:
    """One dataset row: a prompt (a string or a list of messages) and what a right answer is.

    ``match`` names the matcher for ``answer``; ``data`` is the whole row as read, for
    verifiers that need more than the answer (test code, a schema, ...).
    """

    id: str
    prompt: str | list[dict[str, Any]]
    answer: Any = None
    match: str = "exact"
    tolerance: float | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """Whether an answer is right, and (when not) feedback that may go to the model."""

    passed: bool
    feedback: str = ""


Checker = Callable[[Example, str], Awaitable[Check]]
"""``async (example, answer) -> Check``."""


@dataclass(frozen=True)
class Dataset:
    """Examples and how to check answers to them.

    ``check`` scores answers. ``feedback`` is what the ``verifier`` mode's critic runs; it
    defaults to ``check``, and differs where scoring uses something the model must not be
    coached on (HumanEval: hidden tests score, the docstring's examples give feedback).
    """

    name: str
    examples: list[Example]
    check: Checker
    feedback: Checker | None = None

    @property
    def critic_check(self) -> Checker:
        return self.feedback or self.check

    def head(self, limit: int | None) -> Dataset:
        """The first ``limit`` examples (all of them for None or 0)."""
        return replace(self, examples=self.examples[:limit]) if limit else self


async def matcher_check(example: Example, answer: str) -> Check:
    """Check ``answer`` with the example's matcher. The feedback says the answer is wrong and
    asks for the work again; it never reveals the expected answer."""
    if matches(answer, example.answer, example.match, example.tolerance):
        return Check(True)
    if example.match == "numeric":
        got = last_number(answer)
        if got is None:
            return Check(
                False, "Your answer has no number. Work it out step by step and give the number."
            )
        return Check(
            False,
            f"Your answer {got:g} is wrong. Work it out again step by step and give the number.",
        )
    return Check(False, "Your answer is not right. Work it out again step by step.")


def _as_check(value: Any) -> Check:
    """A verifier's return value as a Check: a bool, a string (empty passes, else it is the
    feedback), a Check, or anything with ``passed`` and ``feedback`` (a Verdict)."""
    if isinstance(value, Check):
        return value
    if isinstance(value, bool):
        return Check(value, "" if value else "The answer did not pass the check.")
    if isinstance(value, str):
        return Check(not value.strip(), value)
    if hasattr(value, "passed"):
        return Check(bool(value.passed), str(getattr(value, "feedback", "") or ""))
    raise ConfigurationError(
        f"a verifier must return a bool, a str or a Check, not {type(value).__name__}"
    )


def wrap_verifier(fn: Callable[..., Any]) -> Checker:
    """A user's ``verify(example, answer) -> bool | str | Check`` (sync or async) as a
    Checker. A sync verifier runs in a worker thread, so slow checks do not stall the loop."""
    import asyncio

    async def check(example: Example, answer: str) -> Check:
        if inspect.iscoroutinefunction(fn):
            value = await fn(example, answer)
        else:
            value = await asyncio.to_thread(fn, example, answer)
            if inspect.isawaitable(value):
                value = await value
        return _as_check(value)

    return check


def load_verifier(spec: str) -> Callable[..., Any]:
    """The function a ``--verifier`` names: ``package.module:function``, ``path/to/file.py:
    function``, or ``path/to/file.py`` (its ``verify`` function)."""
    target, _, name = spec.rpartition(":") if ":" in spec else (spec, ":", "verify")
    if not target:
        raise ConfigurationError(f"verifier {spec!r}: expected MODULE:FUNCTION or FILE.py")
    try:
        if target.endswith(".py") or Path(target).is_file():
            path = Path(target)
            if not path.is_file():
                raise ConfigurationError(f"verifier file {target!r} does not exist")
            module_name = f"reflectkit_verifier_{abs(hash(path.resolve()))}"
            loader = importlib.util.spec_from_file_location(module_name, path)
            if loader is None or loader.loader is None:
                raise ConfigurationError(f"verifier file {target!r} cannot be imported")
            module = importlib.util.module_from_spec(loader)
            sys.modules[module_name] = module
            loader.loader.exec_module(module)
            send_by_value(module)  # Ray's workers cannot import it by that name
        else:
            module = importlib.import_module(target)
    except ConfigurationError:
        raise
    except Exception as error:
        raise ConfigurationError(
            f"verifier {spec!r} could not be imported: {type(error).__name__}: {error}"
        ) from None
    fn: Any = getattr(module, name, None)
    if not callable(fn):
        raise ConfigurationError(f"verifier {spec!r}: {target} has no function {name!r}")
    function: Callable[..., Any] = fn
    return function


def _example(row: Any, number: int, default_match: str | None, verified: bool) -> Example:
    if not isinstance(row, dict):
        raise ConfigurationError(f"line {number}: a row must be a JSON object")
    prompt = row.get("prompt", row.get("messages"))
    if "prompt" in row and "messages" in row:
        raise ConfigurationError(f"line {number}: give either prompt or messages, not both")
    if not (isinstance(prompt, str) and prompt.strip()) and not (
        isinstance(prompt, list) and prompt
    ):
        raise ConfigurationError(
            f"line {number}: needs a non-empty 'prompt' (string) or 'messages' (list)"
        )
    answer = row.get("answer")
    numeric = isinstance(answer, (int, float)) and not isinstance(answer, bool)
    kind = row.get("match") or default_match or ("numeric" if numeric else "exact")
    if not verified:
        try:
            check_expected(kind, answer)
        except ConfigurationError as error:
            raise ConfigurationError(f"line {number}: {error}") from None
    tolerance = row.get("tolerance")
    if tolerance is not None and not isinstance(tolerance, (int, float)):
        raise ConfigurationError(f"line {number}: tolerance must be a number")
    ident = row.get("id")
    return Example(
        id=str(ident) if ident is not None else str(number),
        prompt=prompt,
        answer=answer,
        match=str(kind),
        tolerance=float(tolerance) if tolerance is not None else None,
        data=row,
    )


def read_jsonl(
    path: str | Path, *, match: str | None = None, verified: bool = False
) -> list[Example]:
    """The examples of a JSONL file (blank lines skipped). ``match`` is the matcher for rows
    without one; ``verified`` means a verifier decides, so rows need no usable ``answer``."""
    examples: list[Example] = []
    seen: set[str] = set()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ConfigurationError(f"cannot read dataset {str(path)!r}: {error}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise ConfigurationError(f"{path}:{number}: not JSON: {error}") from None
        example = _example(row, number, match, verified)
        if example.id in seen:
            raise ConfigurationError(f"{path}:{number}: duplicate id {example.id!r}")
        seen.add(example.id)
        examples.append(example)
    if not examples:
        raise ConfigurationError(f"dataset {str(path)!r} has no rows")
    return examples


@dataclass(frozen=True)
class ArithmeticProblem:
    """A seeded word problem and its answer."""

    text: str
    answer: int


_NAMES = ["Mia", "Tom", "Ana", "Raj", "Lea", "Sam", "Ivy", "Ben"]
_THINGS = ["apples", "shells", "stickers", "marbles", "books", "coins", "cards", "pens"]


def arithmetic_problems(n: int = 30, seed: int = 2026) -> list[ArithmeticProblem]:
    """``n`` arithmetic word problems ("Mia has 7 shells and finds 5 more..."), the same for
    the same seed: additions, subtractions, multiplications and two-step problems."""
    rng = random.Random(seed)
    problems = []
    for _ in range(n):
        name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
        a, b, c = rng.randint(2, 20), rng.randint(2, 12), rng.randint(2, 6)
        kind = rng.choice(["add", "sub", "mul", "two_step"])
        if kind == "add":
            text = f"{name} has {a} {thing} and finds {b} more. How many {thing} does {name} have?"
            answer = a + b
        elif kind == "sub":
            text = f"{name} has {a + b} {thing} and gives away {b}. How many {thing} are left?"
            answer = a
        elif kind == "mul":
            text = f"{name} buys {c} boxes of {b} {thing} each. How many {thing} is that in total?"
            answer = c * b
        else:
            text = (
                f"{name} has {a} {thing}, buys {b} more, then gives away {c}. "
                f"How many {thing} does {name} have?"
            )
            answer = a + b - c
        problems.append(ArithmeticProblem(text + " Answer with the number.", answer))
    return problems


def arithmetic(n: int = 30, seed: int = 2026) -> Dataset:
    """The built-in ``arithmetic`` dataset: :func:`arithmetic_problems`, checked numerically."""
    examples = [
        Example(f"arithmetic-{i:03d}", p.text, p.answer, "numeric", data={"answer": p.answer})
        for i, p in enumerate(arithmetic_problems(n, seed), start=1)
    ]
    return Dataset("arithmetic", examples, matcher_check)
