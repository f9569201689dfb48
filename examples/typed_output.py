"""Typed answers: ``output_type=`` on scripted models (no key, no network).

Run it with ``python examples/typed_output.py``. Swap the scripted models for real ones
(``model="gpt-4o-mini"``) to see real drafts validated and revised, and drop ``run_log=False``
to keep the runs in your run log (``reflectkit runs list``). See docs/typed-output.md.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, Field

import reflectkit as rk
from reflectkit.testing import ScriptedLLM


class City(BaseModel):
    name: str
    country: str
    population: int = Field(gt=0)


QUESTION = "What is the largest city of France, and how many people live there?"


def show(title: str, result: rk.ReflectionResult) -> None:
    print(f"== {title}")
    for iteration in result.iterations:
        verdict = iteration.verdict
        judged = "-" if verdict is None else ("pass" if verdict.passed else "revise")
        print(f"   draft {iteration.number}: {iteration.draft.output!r} -> {judged}")
        if verdict is not None and verdict.feedback:
            for line in verdict.feedback.splitlines():
                print(f"      {line}")
    print(
        f"   parsed: {result.parsed!r}  ({result.stop_reason.value}, {result.usage.calls} calls)\n"
    )


async def validation_alone() -> None:
    """No critic: validation judges, and its errors are the revise feedback, word for word."""
    model = ScriptedLLM(
        [
            '<thinking>Paris.</thinking><output>{"name": "Paris", "population": -1}</output>',
            "<thinking>Add the country; the population is about 2.1 million.</thinking>"
            '<output>{"name": "Paris", "country": "France", "population": 2100000}</output>',
        ]
    )
    result = await rk.areflect(QUESTION, model=model.model, output_type=City, run_log=False)
    show("output_type=City, no critic", result)
    assert result.parsed == City(name="Paris", country="France", population=2100000)
    assert "population: Input should be greater than 0" in model.requests[1].last_user_text


async def with_an_llm_critic() -> None:
    """An LLM critic judges only valid answers: the invalid first draft costs no critique."""
    model = ScriptedLLM(
        [
            "<output>Paris, about two million people.</output>",
            '<output>{"name": "Paris", "country": "France", "population": 2100000}</output>',
        ]
    )
    critic = ScriptedLLM(['{"verdict": "pass", "score": 9, "feedback": ""}'])
    result = await rk.areflect(
        QUESTION, model=model.model, critic_model=critic.model, output_type=City, run_log=False
    )
    show("output_type=City, with an LLM critic", result)
    assert len(critic.requests) == 1  # asked about the valid revision only


async def a_stream() -> None:
    """The text streams as in any run; the parsed object comes with the last event."""
    model = ScriptedLLM(
        ['<output>{"name": "Lyon", "country": "France", "population": 520000}</output>']
    )
    reflector = rk.Reflector(model.model, output_type=City, run_log=False)
    print("== a stream")
    async for event in reflector.astream("The third city of France?"):
        if isinstance(event, rk.OutputDelta):
            print(f"   text: {event.text}")
        elif isinstance(event, rk.ResultEvent):
            print(f"   parsed: {event.parsed!r}\n")
            assert isinstance(event.parsed, City)


async def a_json_schema() -> None:
    """A JSON Schema as a dict works too (the proxy's response_format, `run --output-schema`)."""
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    model = ScriptedLLM(
        ['<output>{"answer": "4", "why": "2+2"}</output>', '<output>{"answer": 4}</output>']
    )
    result = await rk.areflect("2+2?", model=model.model, output_type=schema, run_log=False)
    show("output_type=<a JSON Schema>", result)
    assert result.parsed == {"answer": 4}


async def main() -> None:
    await validation_alone()
    await with_an_llm_critic()
    await a_stream()
    await a_json_schema()


if __name__ == "__main__":
    asyncio.run(main())
