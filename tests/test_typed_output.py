"""Typed answers (``output_type=``): validation is the first critic, its errors are the revise
feedback verbatim, ``result.parsed`` is the validated object; on the fakes, through the library,
a stream, the proxy (a real uvicorn and the real ``openai`` client) and the LangChain model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner
from langchain_core.exceptions import OutputParserException
from pydantic import BaseModel

import reflectkit as rk
from reflectkit.cli.app import cli
from reflectkit.config import RetryPolicy
from reflectkit.integrations.langchain import ReflectiveChatModel
from reflectkit.server import ServerSettings
from reflectkit.testing import ScriptedLLM
from tests.conftest import verdict
from tests.server.helpers import FAKES, running

KEY = "typed-proxy-key-8d2e"
QUESTION = "What is the largest city of France, and how many people live there?"


class City(BaseModel):
    name: str
    population: int


MISSING = '<thinking>Paris.</thinking><output>{"name": "Paris"}</output>'
VALID = (
    "<thinking>Paris, about 2.1 million.</thinking>"
    '<output>{"name": "Paris", "population": 2100000}</output>'
)
PARIS = City(name="Paris", population=2100000)


def test_an_answer_that_fails_validation_is_revised_on_its_errors_verbatim() -> None:
    generator = ScriptedLLM([MISSING, VALID])
    critic = ScriptedLLM([verdict(True)])
    result = rk.reflect(QUESTION, generator.model, critic_model=critic.model, output_type=City)
    assert result.stop_reason == "passed"
    assert result.parsed == PARIS
    assert isinstance(result.parsed, City)
    first = result.iterations[0].verdict
    assert first is not None
    assert not first.passed
    assert (
        first.feedback
        == "The JSON does not match the required schema:\n- population: Field required"
    )
    # The feedback reached the model's revision call as it was written.
    assert first.feedback in generator.requests[1].last_user_text
    # The schema was shown with the request; the LLM critic was paid for the valid draft only.
    assert '"required": ["name", "population"]' in generator.requests[0].last_user_text
    assert len(critic.requests) == 1
    assert '"population": 2100000' in critic.requests[0].last_user_text
    assert result.iterations[0].critique_usage.calls == 0


def test_without_a_critic_validation_alone_runs_the_loop() -> None:
    generator = ScriptedLLM(["<output>not json at all</output>", VALID])  # no reply for a critic
    result = rk.reflect(QUESTION, generator.model, output_type=City)
    assert (result.mode, result.stop_reason, result.parsed) == ("loop", "passed", PARIS)
    assert result.usage.calls == 2
    verdict = result.iterations[0].verdict
    assert verdict is not None
    feedback = verdict.feedback
    assert feedback.startswith("No JSON found in the answer")
    assert feedback in generator.requests[1].last_user_text


def test_parsed_stays_the_validated_object_when_the_users_critic_rejects_it() -> None:
    generator = ScriptedLLM([VALID])
    result = rk.reflect(
        QUESTION,
        generator.model,
        output_type=City,
        critic=lambda q, a: "too vague",
        max_iterations=1,
    )
    assert result.stop_reason == "max_iterations"
    verdict = result.iterations[0].verdict
    assert verdict is not None
    assert verdict.feedback == "too vague"
    assert result.parsed == PARIS
    assert result.critic == "<lambda>"


def test_a_json_schema_dict_is_an_output_type_too() -> None:
    schema = {
        "title": "Answer",
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0}},
        "required": ["n"],
    }
    generator = ScriptedLLM(['<output>{"n": -4}</output>', '<output>{"n": 4}</output>'])
    result = rk.reflect("2+2", generator.model, output_type=schema)
    assert result.parsed == {"n": 4}
    verdict = result.iterations[0].verdict
    assert verdict is not None
    assert verdict.issues == ["n: -4 is less than the minimum of 0"]


def test_a_single_pass_validates_once_and_never_revises() -> None:
    generator = ScriptedLLM([VALID, MISSING])
    typed = rk.Reflector(generator.model, mode="single", output_type=City)
    assert typed.run(QUESTION).parsed == PARIS
    failed = typed.run(QUESTION)
    assert (failed.stop_reason, failed.parsed) == ("single_pass", None)
    verdict = failed.iterations[0].verdict
    assert verdict is not None
    assert verdict.issues == ["population: Field required"]
    assert generator.remaining == 0


async def test_a_stream_yields_the_text_and_the_parsed_object_at_the_end() -> None:
    generator = ScriptedLLM([MISSING, VALID], chunk_size=7)
    events = [e async for e in rk.Reflector(generator.model, output_type=City).astream(QUESTION)]
    text = "".join(e.text for e in events if isinstance(e, rk.OutputDelta))
    assert json.loads(text) == PARIS.model_dump()
    last = events[-1]
    assert isinstance(last, rk.ResultEvent)
    assert last.parsed == PARIS


def test_native_structured_output_sends_the_schema_and_no_tags() -> None:
    generator = ScriptedLLM(['{"name": "Paris"}', '{"name": "Paris", "population": 2100000}'])
    result = rk.reflect(QUESTION, generator.model, output_type=City, structured_output="native")
    assert result.parsed == PARIS
    first, revision = generator.requests
    sent = first.params["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "City"
    assert sent["json_schema"]["schema"]["required"] == ["name", "population"]
    assert revision.params["response_format"] == sent
    assert first.system_text == ""  # no protocol prompt: a JSON reply cannot hold the tags
    assert "<thinking>" not in revision.last_user_text
    assert "population: Field required" in revision.last_user_text


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"output_type": 5}, "SchemaCritic cannot use 5"),
        ({"output_type": {"type": "objectx"}}, "not a usable JSON Schema"),
        ({"structured_output": "native"}, "structured_output='native' needs an output_type"),
    ],
)
def test_an_unusable_output_type_fails_the_construction(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(rk.ConfigurationError, match=message) as caught:
        rk.Reflector(ScriptedLLM([]).model, **settings)
    assert "\n" not in str(caught.value)


def test_the_config_keeps_the_type_and_records_its_name() -> None:
    config = rk.ReflectConfig(output_type=City).with_settings(max_iterations=2)
    assert config.output_type is City
    assert config.public_dict()["output_type"] == "City"
    assert rk.ReflectConfig(output_type={"type": "integer"}).public_dict()["output_type"] == {
        "type": "integer"
    }


@pytest.fixture(scope="module")
def proxy() -> Iterator[openai.OpenAI]:
    settings = ServerSettings(api_key=KEY, models=(FAKES,), retry=RetryPolicy(max_attempts=1))
    with (
        running(settings) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0) as client,
    ):
        yield client


def test_the_proxy_validates_a_json_schema_response_format(proxy: openai.OpenAI) -> None:
    # A draft that fails validation gets no critique: the proxy's LLM critic (the same fake)
    # is asked once, about the valid revision.
    fake = ScriptedLLM([MISSING, VALID, verdict(True)])
    reply = proxy.chat.completions.parse(
        model=f"reflect/{fake.model}",
        messages=[{"role": "user", "content": QUESTION}],
        response_format=City,
        extra_body={"reflectkit": {"mode": "loop"}},
    )
    message = reply.choices[0].message
    assert message.parsed == PARIS
    assert (reply.model_extra or {})["reflectkit"]["stop_reason"] == "passed"
    # The SDK sends the model's JSON Schema; jsonschema's errors are the feedback.
    assert "- the value: 'population' is a required property" in fake.requests[1].last_user_text
    assert "response_format" not in fake.requests[0].params  # validated here, not forwarded


def test_the_proxy_holds_json_object_to_an_object(proxy: openai.OpenAI) -> None:
    fake = ScriptedLLM(["<output>[1, 2]</output>", '<output>{"sum": 3}</output>', verdict(True)])
    reply = proxy.chat.completions.create(
        model=f"reflect/{fake.model}",
        messages=[{"role": "user", "content": "1+2 as JSON"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(reply.choices[0].message.content or "") == {"sum": 3}
    assert "the value: [1, 2] is not of type 'object'" in fake.requests[1].last_user_text


async def test_the_langchain_model_gives_the_parsed_object() -> None:
    generator = ScriptedLLM([MISSING, VALID, VALID])
    reply = await ReflectiveChatModel(generator.model, output_type=City).ainvoke(QUESTION)
    assert reply.additional_kwargs["parsed"] == PARIS
    structured = ReflectiveChatModel(generator.model, mode="single").with_structured_output(City)
    assert await structured.ainvoke(QUESTION) == PARIS


async def test_langchain_structured_output_that_never_validated_raises() -> None:
    generator = ScriptedLLM([MISSING])
    structured = ReflectiveChatModel(generator.model, mode="single").with_structured_output(City)
    with pytest.raises(OutputParserException, match="did not validate"):
        await structured.ainvoke(QUESTION)


def test_the_cli_takes_a_json_schema_file(tmp_path: Path) -> None:
    schema = tmp_path / "city.json"
    schema.write_text(json.dumps(City.model_json_schema()))
    fake = ScriptedLLM([MISSING, VALID])
    run = CliRunner().invoke(
        cli, ["run", QUESTION, "--model", fake.model, "--output-schema", str(schema)]
    )
    assert run.exit_code == 0
    assert json.loads(run.stdout) == PARIS.model_dump()
    missing = CliRunner().invoke(cli, ["run", "q", "--output-schema", str(tmp_path / "none")])
    assert missing.exit_code == 2
    assert missing.stderr.startswith("reflectkit: error: --output-schema: cannot read")
