"""A person as the critic: HumanCritic pauses a durable run (stop reason ``awaiting_human``),
and the person's verdict resumes it by thread id, in the same process or a new one, from
Python, the command line and a notebook-style ``input()`` loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import reflectkit as rk
from reflectkit.critics import human_verdict
from reflectkit.stores.runlog import RunLog
from reflectkit.testing import ScriptedLLM
from tests.conftest import QUESTION

ROOT = Path(__file__).resolve().parents[1]
FIX = "12 - 5 is 7, and 7 - 3 is 4."


def _reflector(fake: ScriptedLLM, tmp_path: Path, **settings: Any) -> rk.Reflector:
    return rk.Reflector(
        fake.model,
        critic=settings.pop("critic", rk.HumanCritic()),
        checkpointer=tmp_path / "checkpoints.sqlite3",
        run_log=tmp_path / "runs.sqlite3",
        **settings,
    )


async def test_a_paused_run_resumes_with_feedback_then_passes(tmp_path: Path) -> None:
    fake = ScriptedLLM(["<thinking>12 + 5</thinking><output>17</output>", "<output>4</output>"])
    async with _reflector(fake, tmp_path) as reflector:
        paused = await reflector.arun(QUESTION)
        assert paused.stop_reason is rk.StopReason.AWAITING_HUMAN
        assert paused.awaiting_human
        assert not paused.passed
        assert paused.output == "17"  # the draft to judge
        assert paused.thread_id is not None
        assert paused.thread_id.startswith("human-")
        assert paused.iterations[0].verdict is None
        assert len(fake.requests) == 1

        again = await reflector.aresume(paused, FIX)
        assert again.awaiting_human
        assert again.output == "4"
        assert again.thread_id == paused.thread_id
        assert FIX in str(fake.requests[1].messages)  # the feedback reached the revision

        done = await reflector.aresume(paused.thread_id, "PASS ")
        assert done.stop_reason is rk.StopReason.PASSED
        assert done.output == "4"
        assert len(fake.requests) == 2  # no step was paid for twice
        verdicts = [it.verdict for it in done.iterations]
        assert [(v.passed, v.feedback, v.critic) for v in verdicts if v] == [
            (False, FIX, "human"),
            (True, "", "human"),
        ]
        assert done.usage.calls == 2

        with pytest.raises(rk.ConfigurationError, match=r"not waiting for a person.*passed"):
            await reflector.aresume(done, "pass")
    with RunLog(tmp_path / "runs.sqlite3") as log:
        runs = list(reversed(log.list()))
    assert [(r.status, r.stop_reason) for r in runs] == [
        ("waiting", "awaiting_human"),
        ("waiting", "awaiting_human"),
        ("finished", "passed"),
    ]
    assert {r.thread_id for r in runs} == {paused.thread_id}
    assert [r.output for r in runs] == ["17", "4", "4"]


async def test_an_unchanged_revision_goes_back_to_the_person(tmp_path: Path) -> None:
    """With a machine critic an unchanged revision stops the run (``no_change``); a person who
    asked for a change sees it again, and the run goes on until they pass it."""
    fake = ScriptedLLM(["<output>17</output>", "<output>17</output>", "<output>4</output>"])
    async with _reflector(fake, tmp_path, max_iterations=3) as reflector:
        paused = await reflector.arun(QUESTION)
        same = await reflector.aresume(paused, FIX)
        assert (same.stop_reason, same.output) == (rk.StopReason.AWAITING_HUMAN, "17")
        fixed = await reflector.aresume(same, "Still 17: subtract 3 from 7.")
        assert (fixed.stop_reason, fixed.output) == (rk.StopReason.AWAITING_HUMAN, "4")
        done = await reflector.aresume(fixed, "pass")
    assert (done.stop_reason, done.output, len(fake.requests)) == (rk.StopReason.PASSED, "4", 3)


async def test_a_typed_answer_goes_to_the_person_once_it_validates(tmp_path: Path) -> None:
    """``output_type`` with a HumanCritic: validation judges first (an invalid draft is revised
    without bothering the person), then the run pauses. The typed critic wraps the person, and
    the run must still know one is there (a thread of its own, a pause, a resume)."""
    fake = ScriptedLLM(["<output>seventeen</output>", '<output>{"n": 4}</output>'])
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    async with _reflector(fake, tmp_path, output_type=schema) as reflector:
        paused = await reflector.arun(QUESTION)
        assert paused.stop_reason is rk.StopReason.AWAITING_HUMAN
        assert paused.thread_id is not None
        assert paused.output == '{"n": 4}'
        first = paused.iterations[0].verdict
        assert first is not None
        assert first.feedback.startswith("No JSON found in the answer")
        done = await reflector.aresume(paused, "pass")
    assert (done.stop_reason, done.parsed, len(fake.requests)) == (
        rk.StopReason.PASSED,
        {"n": 4},
        2,
    )


async def test_the_stream_ends_with_the_pause(tmp_path: Path) -> None:
    fake = ScriptedLLM(["<output>17</output>"])
    async with _reflector(fake, tmp_path) as reflector:
        events = [e async for e in reflector.astream(QUESTION, thread_id="t-stream")]
    last = events[-1]
    assert isinstance(last, rk.ResultEvent)
    assert last.result.stop_reason is rk.StopReason.AWAITING_HUMAN
    assert last.result.thread_id == "t-stream"
    steps = [e.node for e in events if isinstance(e, rk.StepEvent)]
    assert steps == ["generate"]  # no critique verdict, no finalize: the run waits


async def test_running_a_waiting_thread_again_keeps_it_waiting(tmp_path: Path) -> None:
    fake = ScriptedLLM(["<output>17</output>"])
    async with _reflector(fake, tmp_path) as reflector:
        first = await reflector.arun(QUESTION, thread_id="t")
        second = await reflector.arun(QUESTION, thread_id="t")
    assert first.awaiting_human
    assert second.awaiting_human
    assert second.output == "17"
    assert len(fake.requests) == 1


async def test_cheap_critics_judge_before_the_person(tmp_path: Path) -> None:
    asked: list[str] = []

    def has_digit(question: str, answer: str) -> bool | str:
        asked.append(answer)
        return any(c.isdigit() for c in answer) or "Answer with a number."

    fake = ScriptedLLM(["<output>four</output>", "<output>4</output>"])
    critic = rk.AllOf(rk.HumanCritic(), has_digit)  # cheap first: the person comes last
    async with _reflector(fake, tmp_path, critic=critic) as reflector:
        paused = await reflector.arun(QUESTION)
        assert paused.awaiting_human
        assert paused.output == "4"
        assert paused.iterations[0].verdict is not None
        assert paused.iterations[0].verdict.feedback == "Answer with a number."
        done = await reflector.aresume(paused, True)
    assert done.passed
    assert len(fake.requests) == 2
    # The code critic is asked again when the critique resumes (it is cheap; a model is not).
    assert asked == ["four", "4", "4"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"checkpointer": False}, "needs a checkpointer"),
        ({"time_budget": 60}, "time_budget cannot be used"),
        ({"mode": "single"}, "mode='single' has no critic"),
        ({"trials": 2}, "Reflexion"),
        (
            {"critic": [rk.LLMCritic("reflectkit-test/x"), rk.HumanCritic()]},
            "asked before the HumanCritic",
        ),
    ],
)
def test_settings_a_pause_cannot_keep_are_refused(settings: dict[str, Any], message: str) -> None:
    settings = {"critic": rk.HumanCritic(), **settings}
    with pytest.raises(rk.ConfigurationError, match=message):
        rk.Reflector(ScriptedLLM([]).model, run_log=False, **settings)


def test_a_person_first_then_a_model_is_allowed() -> None:
    critic = rk.AllOf(rk.HumanCritic(), rk.LLMCritic("reflectkit-test/x"), order="given")
    rk.Reflector(ScriptedLLM([]).model, critic=critic, run_log=False)


async def test_bad_resumes_fail_before_anything_runs(tmp_path: Path) -> None:
    fake = ScriptedLLM(["<output>17</output>"])
    async with _reflector(fake, tmp_path) as reflector:
        paused = await reflector.arun(QUESTION)
        with pytest.raises(rk.ConfigurationError, match="empty verdict"):
            await reflector.aresume(paused, "  ")
        with pytest.raises(rk.ConfigurationError, match="has no run"):
            await reflector.aresume("no-such-thread", "pass")
        with pytest.raises(rk.ConfigurationError, match="unusable verdict"):
            await reflector.aresume(paused, 3)
    plain = rk.Reflector(fake.model, checkpointer=tmp_path / "checkpoints.sqlite3", run_log=False)
    with pytest.raises(rk.ConfigurationError, match="no HumanCritic"):
        await plain.aresume(paused, "pass")
    assert len(fake.requests) == 1
    with RunLog(tmp_path / "runs.sqlite3") as log:
        assert log.count() == 1  # refused resumes are not recorded as runs


def test_verdicts_a_person_can_give() -> None:
    assert human_verdict(True).passed
    assert human_verdict("Pass").passed
    refused = human_verdict(False)
    assert not refused.passed
    assert refused.feedback
    assert human_verdict("Say 4.") == rk.Verdict(passed=False, feedback="Say 4.", critic="human")
    given = rk.Verdict(passed=False, score=0.2, feedback="meh")
    assert human_verdict(given).score == 0.2
    assert human_verdict({"passed": True, "score": 1.0}).score == 1.0


async def test_outside_a_graph_the_critic_says_what_it_needs() -> None:
    request = rk.CritiqueRequest(
        question="q", answer="a", draft=rk.Draft(text="a", output="a"), iteration=1
    )
    with pytest.raises(rk.CriticError, match="checkpointer and a thread_id"):
        await rk.HumanCritic().acritique(request)


def test_ask_human_and_the_notebook_view(tmp_path: Path) -> None:
    fake = ScriptedLLM(["<output>17</output>", "<output>4</output>"])
    shown: list[str] = []
    replies = iter(["", FIX, "pass"])
    with _reflector(fake, tmp_path) as reflector:
        paused = reflector.run(QUESTION)
        html = paused._repr_html_()
        assert "awaits a person" in html
        assert paused.thread_id in html
        done = rk.ask_human(reflector, paused, ask=lambda _: next(replies), show=shown.append)
    assert done.passed
    assert done.output == "4"
    assert len(shown) == 2  # each draft once; the empty reply only asked again
    assert "17" in shown[0]
    assert "4" in shown[1]
    assert "awaits a person" not in done._repr_html_()


_CHILD = textwrap.dedent(
    """
    import json, sys
    import reflectkit as rk
    from reflectkit.testing import FunctionLLM

    calls, saves, verdicts = sys.argv[1], sys.argv[2], sys.argv[3:]

    def reply(request):
        text = "\\n".join(str(m.get("content")) for m in request.messages)
        kind = "revise" if {fix!r} in text else "generate"
        with open(calls, "a") as log:
            log.write(kind + "\\n")
        return "<output>4</output>" if kind == "revise" else "<output>17</output>"

    reflector = rk.Reflector(FunctionLLM(reply).model, critic=rk.HumanCritic(),
                             checkpointer=saves)
    if not verdicts:
        print(json.dumps(reflector.run({question!r}, thread_id="desk-7").to_dict()))
    for verdict in verdicts:  # a new process: it knows only the thread's id
        print(json.dumps(reflector.resume("desk-7", verdict).to_dict()))
    """
).format(fix=FIX, question=QUESTION)


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def _process(script: Path, calls: Path, saves: Path, *verdicts: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, str(script), str(calls), str(saves), *verdicts],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.strip().splitlines()]


def test_a_paused_run_survives_its_process_and_resumes_in_new_ones(tmp_path: Path) -> None:
    script, saves, calls = tmp_path / "child.py", tmp_path / "c.sqlite3", tmp_path / "calls"
    script.write_text(_CHILD)
    [paused] = _process(script, calls, saves)
    assert (paused["stop_reason"], paused["output"]) == ("awaiting_human", "17")
    assert calls.read_text().split() == ["generate"]

    revised, done = _process(script, calls, saves, FIX, "pass")
    assert (revised["stop_reason"], revised["output"]) == ("awaiting_human", "4")
    assert (done["stop_reason"], done["output"]) == ("passed", "4")
    assert calls.read_text().split() == ["generate", "revise"]  # the model was not called again
    assert done["usage"]["calls"] == 2
    assert [it["verdict"]["feedback"] for it in done["iterations"]] == [FIX, ""]


_CLI = textwrap.dedent(
    """
    import sys
    from reflectkit.cli.app import main
    from reflectkit.testing import ScriptedLLM

    fake = ScriptedLLM(["<output>17</output>", "<output>4</output>"], name="desk")
    sys.argv = ["reflectkit", *sys.argv[1:], "-m", fake.model]
    main()
    """
)


def _cli(script: Path, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), "run", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=180,
    )


def test_the_command_line_asks_on_stdin_and_says_how_to_resume(tmp_path: Path) -> None:
    script, saves = tmp_path / "cli.py", str(tmp_path / "c.sqlite3")
    script.write_text(_CLI)
    durable = ("--human", "--thread-id", "t1", "--checkpoints", saves)
    # The person asks for a fix, then stdin ends: the run waits, and says how to resume it.
    waiting = _cli(script, f"{FIX}\n", QUESTION, *durable)
    assert waiting.returncode == 3, waiting.stderr
    assert waiting.stdout == ""
    assert "── answer ──\n17" in waiting.stderr
    assert "── answer ──\n4" in waiting.stderr
    last = waiting.stderr.strip().splitlines()[-1]
    assert last.startswith("reflectkit: waiting: draft 2 awaits")
    assert "reflectkit run --thread-id t1 --verdict pass" in last

    resumed = _cli(script, "", "--thread-id", "t1", "--verdict", "pass", "--checkpoints", saves)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == "4\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([QUESTION, "--verdict", "pass", "--thread-id", "t1"], "leave out PROMPT"),
        (["--verdict", "pass"], "needs the --thread-id"),
        ([], "Missing argument 'PROMPT'"),
    ],
)
def test_the_command_line_refuses_a_resume_it_cannot_make(args: list[str], message: str) -> None:
    from click.testing import CliRunner

    from reflectkit.cli.app import cli

    result = CliRunner().invoke(cli, ["run", *args])
    assert result.exit_code == 2
    assert message in result.stderr


async def test_the_graph_alone_pauses_and_takes_langgraphs_resume() -> None:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command

    fake = ScriptedLLM(["<output>17</output>", "<output>4</output>"])
    graph = rk.build_graph(model=fake.model, critic=rk.HumanCritic(), checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "g"}}
    paused = await graph.ainvoke({"messages": [{"role": "user", "content": QUESTION}]}, config)
    [pause] = paused["__interrupt__"]
    assert pause.value["answer"] == "17"
    assert pause.value["iteration"] == 1
    again = await graph.ainvoke(Command(resume=FIX), config)
    assert again["__interrupt__"][0].value["answer"] == "4"
    done = await graph.ainvoke(Command(resume="pass"), config)
    assert done["stop_reason"] is rk.StopReason.PASSED
    assert done["output"] == "4"
