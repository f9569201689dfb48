"""Every kind of critic, each driving the loop on a scripted model (no key, no network).

Run it with ``python examples/critics.py``. Swap the scripted models for real ones
(``model="gpt-4o-mini"``) to see the same critics at work on real drafts, and drop
``run_log=False`` to keep their runs in your run log (``reflectkit runs list``).
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

import reflectkit as rk
from reflectkit.testing import ScriptedLLM


def show(title: str, result: rk.ReflectionResult) -> None:
    print(f"== {title}")
    for iteration in result.iterations:
        verdict = iteration.verdict
        judged = "-" if verdict is None else ("pass" if verdict.passed else "revise")
        print(f"   draft {iteration.number}: {iteration.draft.output[:60]!r} -> {judged}")
        if verdict is not None and verdict.feedback:
            print(f"      feedback: {verdict.feedback.splitlines()[0][:90]}")
    print(
        f"   answer: {result.output[:60]!r}  ({result.stop_reason.value}, "
        f"{result.usage.calls} calls)\n"
    )


async def function_critic() -> None:
    """A plain function: its text goes to the revise step verbatim."""
    model = ScriptedLLM(["<output>5</output>", "<output>4</output>"])

    def is_four(question: str, answer: str) -> bool | str:
        return answer.strip() == "4" or "12 - 5 = 7, and 7 - 3 is not 5."

    result = await rk.areflect(
        "If a number plus 5 equals 12, what is that number minus 3?",
        model=model.model,
        critic=is_four,
        run_log=False,  # a demo on a fake model: it stays out of your run log
    )
    show("FunctionCritic", result)
    assert result.passed


class City(BaseModel):
    name: str
    country: str
    population_millions: float


async def schema_critic() -> None:
    """JSON that must validate: the validation errors are the feedback."""
    model = ScriptedLLM(
        [
            '<output>{"name": "Paris", "country": "France"}</output>',
            '<output>{"name": "Paris", "country": "France", "population_millions": 2.1}</output>',
        ]
    )
    result = await rk.areflect(
        "Describe Paris as JSON.",
        model=model.model,
        critic=rk.SchemaCritic(City),
        run_log=False,  # a demo on a fake model: it stays out of your run log
    )
    show("SchemaCritic", result)
    assert result.parsed == City(name="Paris", country="France", population_millions=2.1)


async def code_test_critic() -> None:
    """Code run against tests in a separate process; failing output is the feedback."""
    model = ScriptedLLM(
        [
            "<output>```python\ndef add(a, b):\n    return a - b\n```</output>",
            "<output>```python\ndef add(a, b):\n    return a + b\n```</output>",
        ]
    )
    critic = rk.CodeTestCritic("assert add(2, 3) == 5\nassert add(-1, 1) == 0")
    result = await rk.areflect(
        "Write add(a, b).",
        model=model.model,
        critic=critic,
        run_log=False,  # a demo on a fake model: it stays out of your run log
    )
    show("CodeTestCritic", result)
    assert result.passed


async def llm_critic_behind_cheap_checks() -> None:
    """An LLM critic, reached only after the cheap code critic passes."""
    writer = ScriptedLLM(["<output>Paris is the capital of France.</output>"])
    judge = ScriptedLLM(['{"verdict": "pass", "score": 9, "feedback": "Correct."}'])

    def mentions_paris(question: str, answer: str) -> bool:
        return "Paris" in answer

    critic = [rk.LLMCritic(judge.model), mentions_paris]  # a list is AllOf, cheap critics first
    result = await rk.areflect(
        "What is the capital of France?",
        model=writer.model,
        critic=critic,
        run_log=False,  # a demo on a fake model: it stays out of your run log
    )
    show("AllOf(mentions_paris, LLMCritic)", result)
    assert result.passed


async def main() -> None:
    await function_critic()
    await schema_critic()
    await code_test_critic()
    await llm_critic_behind_cheap_checks()


if __name__ == "__main__":
    asyncio.run(main())
