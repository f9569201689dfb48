"""``on_critic_error="keep_best"``: a critic that fails ends the run with the best draft so far.

The default (``"raise"``: the run fails with a CriticError) is covered in tests/test_loop.py and
tests/test_critics.py; these tests cover the other choice on the fakes, through every way in:
the library, streaming, Reflexion, the run log and the CLI.
"""

from __future__ import annotations

import ast
import asyncio
import itertools
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import reflectkit as rk
from reflectkit.cli import cli
from reflectkit.events import ResultEvent, StepEvent
from reflectkit.stores.runlog import RunLog
from reflectkit.testing import ScriptedLLM, fail
from tests.conftest import verdict

DRAFTS = ["<output>5</output>", "<output>4</output>", "<output>3</output>"]


def _second_call_raises() -> rk.FunctionCritic:
    """Scores the first draft 6 and asks for a revision; crashes on the second critique."""
    calls = 0

    def flaky(question: str, answer: str) -> rk.Verdict:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("validator unreachable")
        return rk.Verdict(passed=False, score=6, feedback="closer")

    return rk.FunctionCritic(flaky, name="flaky")


async def test_a_critic_that_raises_on_the_second_critique_keeps_the_best_earlier_draft() -> None:
    fake = ScriptedLLM(DRAFTS[:2])
    result = await rk.areflect(
        "q",
        model=fake.model,
        critic=_second_call_raises(),
        on_critic_error="keep_best",
        run_log=False,
    )
    assert result.stop_reason is rk.StopReason.CRITIC_ERROR
    assert (result.output, result.final_iteration, result.selection) == ("5", 1, "best")
    assert [i.draft.output for i in result.iterations] == ["5", "4"]
    assert result.iterations[1].verdict is None  # the draft the failed critique was judging
    assert result.critic_error == "critic flaky raised ConnectionError: validator unreachable"
    assert not result.passed
    assert fake.remaining == 0  # no more drafts after the failure
    data = json.loads(json.dumps(result.to_dict()))
    assert (data["stop_reason"], data["critic_error"]) == ("critic_error", result.critic_error)
    page = result._repr_html_()  # the notebook view says the answer was not judged, and why
    assert "The critic failed, so this is the best draft so far" in page
    assert "validator unreachable" in page


async def test_the_default_still_raises() -> None:
    fake = ScriptedLLM(DRAFTS[:2])
    with pytest.raises(rk.CriticError, match="validator unreachable") as caught:
        await rk.areflect("q", model=fake.model, critic=_second_call_raises(), run_log=False)
    assert caught.value.partial is not None
    assert caught.value.partial.stop_reason is rk.StopReason.ERROR


async def test_a_critic_that_hangs_past_critic_timeout_keeps_the_best() -> None:
    calls = 0

    async def slow(question: str, answer: str) -> rk.Verdict:
        nonlocal calls
        calls += 1
        if calls == 2:
            await asyncio.sleep(60)
        return rk.Verdict(passed=False, score=3, feedback="again")

    fake = ScriptedLLM(DRAFTS[:2])
    start = time.perf_counter()
    result = await rk.areflect(
        "q",
        model=fake.model,
        critic=slow,
        critic_timeout=0.2,
        on_critic_error="keep_best",
        run_log=False,
    )
    assert time.perf_counter() - start < 5
    assert (result.stop_reason, result.output) == (rk.StopReason.CRITIC_ERROR, "5")
    assert result.critic_error == "critic slow gave no verdict within 0.2 s"


async def test_a_critic_returning_nonsense_on_the_first_draft_keeps_that_draft() -> None:
    fake = ScriptedLLM(DRAFTS[:1])
    result = await rk.areflect(
        "q", model=fake.model, critic=lambda q, a: None, on_critic_error="keep_best", run_log=False
    )
    assert (result.stop_reason, result.output, result.final_iteration) == ("critic_error", "5", 1)
    assert result.critic_error is not None
    assert "return a bool, a str or a Verdict" in result.critic_error


async def test_an_llm_critic_whose_model_fails_keeps_the_best_and_redacts_the_key() -> None:
    writer = ScriptedLLM(DRAFTS[:2])
    secret = "sk-judge-0123456789abcdef0123"
    judge = ScriptedLLM(
        [verdict(False, "no", score=7), fail(401, f"bad key {secret}")], name="judge"
    )
    result = await rk.areflect(
        "q",
        model=writer.model,
        critic_model=judge.model,
        critic_kwargs={"api_key": secret},
        on_critic_error="keep_best",
        run_log=False,
    )
    assert (result.stop_reason, result.output) == (rk.StopReason.CRITIC_ERROR, "5")
    assert result.critic_error is not None
    assert "401" in result.critic_error or "bad key" in result.critic_error
    assert secret not in json.dumps(result.to_dict())


async def test_a_generator_failure_still_raises_with_keep_best() -> None:
    fake = ScriptedLLM([DRAFTS[0], verdict(False, "no"), fail(400, "bad request")])
    with pytest.raises(rk.ProviderRequestError):
        await rk.areflect("q", model=fake.model, on_critic_error="keep_best", run_log=False)


async def test_streaming_ends_with_a_normal_result_and_the_run_log_says_finished(
    tmp_path: Path,
) -> None:
    log = RunLog(tmp_path / "runs.db")
    fake = ScriptedLLM(DRAFTS[:2])
    reflector = rk.Reflector(
        fake.model, critic=_second_call_raises(), on_critic_error="keep_best", run_log=log
    )
    async with reflector:
        events = [event async for event in reflector.astream("q")]
    last = events[-1]
    assert isinstance(last, ResultEvent)
    assert (last.result.stop_reason, last.result.output) == ("critic_error", "5")
    stops = [e for e in events if isinstance(e, StepEvent) and e.node == "critique"]
    assert (stops[-1].iteration, stops[-1].stop_reason) == (2, rk.StopReason.CRITIC_ERROR)
    assert last.result.run_id is not None
    record = log.get(last.result.run_id)
    assert (record.status, record.stop_reason, record.output) == ("finished", "critic_error", "5")
    assert record.error_type is None
    log.close()


async def test_a_failed_critic_ends_the_reflexion_trials_too() -> None:
    fake = ScriptedLLM([*DRAFTS[:2], "<output>a lesson</output>", DRAFTS[2]])
    calls = 0

    def critic(question: str, answer: str) -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:  # trial 2's first critique
            raise RuntimeError("down")
        return False

    result = await rk.areflect(
        "q",
        model=fake.model,
        critic=critic,
        max_iterations=2,
        trials=3,
        on_critic_error="keep_best",
        run_log=False,
    )
    assert result.stop_reason is rk.StopReason.CRITIC_ERROR
    assert [t.stop_reason for t in result.trials] == ["max_iterations", "critic_error"]
    assert result.output == "3"
    assert fake.remaining == 0


async def test_build_graph_takes_the_setting() -> None:
    fake = ScriptedLLM(DRAFTS[:1])
    graph = rk.build_graph(model=fake.model, critic=lambda q, a: 1.5, on_critic_error="keep_best")
    out = await graph.ainvoke({"messages": [{"role": "user", "content": "q"}]})
    assert (out["stop_reason"], out["output"]) == (rk.StopReason.CRITIC_ERROR, "5")
    assert out["result"].critic_error is not None


def test_a_bad_value_is_a_configuration_error() -> None:
    with pytest.raises(rk.ConfigurationError, match="on_critic_error: Input should be") as caught:
        rk.Reflector(ScriptedLLM([]).model, on_critic_error="ignore", run_log=False)
    assert "\n" not in str(caught.value)


def test_the_cli_flag() -> None:
    fake = ScriptedLLM(DRAFTS[:1])
    judge = ScriptedLLM([fail(400, "judge refused")], name="judge")
    args = ["run", "q", "-m", fake.model, "--critic-model", judge.model, "--json"]
    result = CliRunner().invoke(
        cli, [*args, "--on-critic-error", "keep_best", "--show-thinking"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["stop_reason"], data["output"]) == ("critic_error", "5")
    assert "judge refused" in data["critic_error"]
    assert "── critique 1 failed ──" in result.stderr
    assert "── stop: critic_error after 1 draft(s)" in result.stderr

    bad = CliRunner().invoke(cli, [*args, "--on-critic-error", "skip"], catch_exceptions=False)
    assert bad.exit_code == 2
    assert "--on-critic-error" in bad.stderr


def test_batch_and_eval_take_the_flag(tmp_path: Path) -> None:
    """``reflectkit batch`` and ``reflectkit eval`` pass --on-critic-error to every run: with
    keep_best a refusing critic leaves each prompt its draft instead of failing it."""
    source = tmp_path / "prompts.jsonl"
    source.write_text('"q1"\n"q2"\n')
    fake = ScriptedLLM(["<output>5</output>"] * 4)
    judge = ScriptedLLM([fail(400, "judge refused")], name="judge")
    common = ["-m", fake.model, "--critic-model", judge.model, "--no-progress"]
    out = tmp_path / "out.jsonl"
    kept = CliRunner().invoke(
        cli,
        ["batch", str(source), "-o", str(out), *common, "--on-critic-error", "keep_best"],
        catch_exceptions=False,
    )
    assert kept.exit_code == 0, kept.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["result"]["stop_reason"], r["result"]["output"]) for r in rows] == [
        ("critic_error", "5"),
        ("critic_error", "5"),
    ]
    failed = CliRunner().invoke(
        cli,
        ["batch", str(source), "-o", str(tmp_path / "raised.jsonl"), *common],
        catch_exceptions=False,
    )
    assert failed.exit_code == 1  # the default: each prompt failed on its critic
    assert "2 failed" in failed.stderr

    data = tmp_path / "questions.jsonl"
    data.write_text('{"prompt": "q", "answer": 5}\n')
    fresh = ScriptedLLM(["<output>5</output>"], name="fresh")
    args = ["-m", fresh.model, "--critic-model", judge.model, "--no-progress", "--json"]
    report = CliRunner().invoke(
        cli,
        ["eval", str(data), *args, "--modes", "loop", "--on-critic-error", "keep_best"],
        catch_exceptions=False,
    )
    assert report.exit_code == 0, report.stderr
    found = json.loads(report.stdout)
    (mode,) = found["modes"]
    assert (mode["correct"], mode["failures"]) == (1, 0)  # scored on the kept draft
    assert found["settings"]["on_critic_error"] == "keep_best"


def test_every_stop_reason_is_documented() -> None:
    """The stop-reason table in docs/concepts.md names every member, and every member has the
    docstring the API reference renders it from (one without is left off the page): a new
    stop reason that either forgets fails here."""
    root = Path(__file__).parent.parent
    concepts = (root / "docs" / "concepts.md").read_text()
    source = ast.parse((root / "reflectkit" / "result.py").read_text())
    (enum,) = (n for n in source.body if isinstance(n, ast.ClassDef) and n.name == "StopReason")
    documented = {
        statement.targets[0].id
        for statement, following in itertools.pairwise(enum.body)
        if isinstance(statement, ast.Assign)
        and isinstance(statement.targets[0], ast.Name)
        and isinstance(following, ast.Expr)
        and isinstance(following.value, ast.Constant)
    }
    for reason in rk.StopReason:
        assert f"| `{reason.value}` |" in concepts, reason
        assert reason.name in documented, reason
