"""Durable runs through the public API: ``thread_id`` saves state after every step, and a run
that failed or was killed continues from its last completed step without paying again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import reflectkit as rk
from reflectkit.testing import FunctionLLM, Request, ScriptedLLM
from tests.conftest import QUESTION, verdict

FEEDBACK = "The number is 7, so the answer is 7 - 3 = 4."


def _kind(request: Request) -> str:
    text = "\n".join(str(m.get("content")) for m in request.messages)
    if "You are a strict reviewer" in text:
        return "critique"
    return "revise" if FEEDBACK in text else "generate"


async def test_a_failed_run_resumes_from_its_last_completed_step(tmp_path: Path) -> None:
    saves = tmp_path / "checkpoints.sqlite3"
    # Draft, critique, then the provider fails on the revision.
    first = ScriptedLLM(["<output>5</output>", verdict(False, FEEDBACK)])
    with pytest.raises(rk.RunError) as failure:
        await rk.areflect(QUESTION, first.model, thread_id="t-1", checkpointer=saves)
    assert failure.value.thread_id == "t-1"
    assert failure.value.partial is not None
    assert failure.value.partial.output == "5"

    second = ScriptedLLM(["<output>4</output>", verdict(True)])
    result = await rk.areflect(QUESTION, second.model, thread_id="t-1", checkpointer=saves)
    assert [_kind(r) for r in second.requests] == ["revise", "critique"]
    assert result.output == "4"
    assert result.stop_reason is rk.StopReason.PASSED
    assert [it.draft.output for it in result.iterations] == ["5", "4"]
    assert result.iterations[0].verdict is not None
    assert result.iterations[0].verdict.feedback == FEEDBACK
    assert result.thread_id == "t-1"
    # Usage counts the first process's calls too: they are part of the run.
    assert result.usage.calls == 4


async def test_a_finished_thread_gives_its_result_again_without_calls(tmp_path: Path) -> None:
    saves = tmp_path / "c.sqlite3"
    fake = ScriptedLLM(["<output>4</output>", verdict(True)])
    first = await rk.areflect(QUESTION, fake.model, thread_id="done", checkpointer=saves)
    again = await rk.areflect(QUESTION, fake.model, thread_id="done", checkpointer=saves)
    assert len(fake.requests) == 2
    assert again.output == first.output == "4"
    assert again.iterations == first.iterations


async def test_threads_are_separate_and_bound_to_their_prompt(tmp_path: Path) -> None:
    saves = tmp_path / "c.sqlite3"
    fake = ScriptedLLM(["<output>4</output>", verdict(True), "<output>9</output>", verdict(True)])
    reflector = rk.Reflector(fake.model, checkpointer=saves)
    assert (await reflector.arun(QUESTION, thread_id="a")).output == "4"
    assert (await reflector.arun("What is 3 * 3?", thread_id="b")).output == "9"
    with pytest.raises(rk.ConfigurationError, match="different prompt"):
        await reflector.arun("What is 3 * 3?", thread_id="a")
    assert len(fake.requests) == 4


def test_sync_reflect_resumes_too(tmp_path: Path) -> None:
    saves = tmp_path / "c.sqlite3"
    first = ScriptedLLM(["<output>5</output>"])
    with pytest.raises(rk.RunError):
        rk.reflect(QUESTION, first.model, thread_id="s", checkpointer=saves)
    second = ScriptedLLM([verdict(True)])
    result = rk.reflect(QUESTION, second.model, thread_id="s", checkpointer=saves)
    assert [_kind(r) for r in second.requests] == ["critique"]
    assert result.output == "5"
    assert result.passed


@pytest.mark.parametrize(
    ("settings", "thread", "message"),
    [
        ({"checkpointer": False}, "t", "needs a checkpointer"),
        ({"trials": 2, "critic": lambda q, a: True}, "t", "trials"),
        ({}, "  ", "non-empty string"),
        ({}, 7, "non-empty string"),
    ],
)
async def test_bad_durable_settings_fail_before_any_call(
    tmp_path: Path, settings: dict[str, object], thread: object, message: str
) -> None:
    fake = ScriptedLLM(["<output>4</output>", verdict(True)])
    settings.setdefault("checkpointer", tmp_path / "c.sqlite3")
    with pytest.raises(rk.ConfigurationError, match=message):
        await rk.areflect(QUESTION, fake.model, thread_id=thread, **settings)  # type: ignore[arg-type]
    assert fake.requests == []


def test_a_bad_checkpointer_setting_is_refused_at_construction() -> None:
    with pytest.raises(rk.ConfigurationError, match="checkpointer"):
        rk.Reflector("m", checkpointer=42)
    with pytest.raises(rk.ConfigurationError, match="unsupported checkpointer URL"):
        rk.Reflector("m", checkpointer="mysql://user:pw@host/db")


async def test_the_default_checkpointer_is_a_file_under_the_user_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    fake = ScriptedLLM(["<output>4</output>", verdict(True)])
    await rk.areflect(QUESTION, fake.model, thread_id="d")
    assert (tmp_path / "reflectkit" / "checkpoints.sqlite3").is_file()


async def test_runs_without_thread_id_write_no_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    fake = ScriptedLLM(["<output>4</output>", verdict(True)])
    await rk.areflect(QUESTION, fake.model)
    assert not (tmp_path / "reflectkit" / "checkpoints.sqlite3").exists()


_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import reflectkit as rk
    from reflectkit.testing import FunctionLLM

    calls, saves, crash = sys.argv[1], sys.argv[2], sys.argv[3] == "crash"
    FEEDBACK = {feedback!r}

    def reply(request):
        text = "\\n".join(str(m.get("content")) for m in request.messages)
        if "You are a strict reviewer" in text:
            kind = "critique"
        else:
            kind = "revise" if FEEDBACK in text else "generate"
        with open(calls, "a") as log:
            log.write(kind + "\\n")
        if kind == "critique":
            passed = "<answer>\\n4\\n</answer>" in text
            return json.dumps({{"verdict": "pass" if passed else "revise", "feedback": FEEDBACK}})
        if kind == "revise":
            if crash:
                time.sleep(600)  # killed here, mid-step
            return "<output>4</output>"
        return "<output>5</output>"

    fake = FunctionLLM(reply)
    result = rk.reflect({question!r}, fake.model, thread_id="killed", checkpointer=saves)
    print(json.dumps(result.to_dict()))
    """
).format(feedback=FEEDBACK, question=QUESTION)


def _child(script: Path, calls: Path, saves: Path, how: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen(
        [sys.executable, str(script), str(calls), str(saves), how],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_a_killed_run_resumes_without_repeating_completed_calls(tmp_path: Path) -> None:
    script, saves = tmp_path / "child.py", tmp_path / "checkpoints.sqlite3"
    script.write_text(_CHILD)
    killed_calls, resumed_calls = tmp_path / "killed.log", tmp_path / "resumed.log"

    child = _child(script, killed_calls, saves, "crash")
    deadline = time.monotonic() + 120
    while "revise" not in (killed_calls.read_text() if killed_calls.exists() else ""):
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        assert time.monotonic() < deadline, "the child never reached the revision"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert killed_calls.read_text().split() == ["generate", "critique", "revise"]

    resumed = _child(script, resumed_calls, saves, "resume")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    # generate and the first critique completed before the kill: neither is paid for again.
    assert resumed_calls.read_text().split() == ["revise", "critique"]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["output"] == "4"
    assert result["stop_reason"] == "passed"
    assert [it["draft"]["output"] for it in result["iterations"]] == ["5", "4"]
    assert result["thread_id"] == "killed"


def test_function_llm_kinds_match_the_prompts() -> None:
    """The step detection the tests above rely on, checked against a real loop."""
    seen: list[str] = []

    def reply(request: Request) -> str:
        seen.append(_kind(request))
        if seen[-1] == "critique":
            return verdict(len(seen) > 2, FEEDBACK)
        return "<output>4</output>" if seen[-1] == "revise" else "<output>5</output>"

    result = rk.reflect(QUESTION, FunctionLLM(reply).model)
    assert seen == ["generate", "critique", "revise", "critique"]
    assert result.output == "4"


async def test_a_failed_run_resumes_from_postgres(postgres_url: str) -> None:
    thread = f"pg-{os.getpid()}-{time.time_ns()}"
    first = ScriptedLLM(["<output>5</output>", verdict(False, FEEDBACK)])
    with pytest.raises(rk.RunError):
        await rk.areflect(QUESTION, first.model, thread_id=thread, checkpointer=postgres_url)
    second = ScriptedLLM(["<output>4</output>", verdict(True)])
    result = await rk.areflect(QUESTION, second.model, thread_id=thread, checkpointer=postgres_url)
    assert [_kind(r) for r in second.requests] == ["revise", "critique"]
    assert result.output == "4"
    assert result.stop_reason is rk.StopReason.PASSED
    again = await rk.areflect(QUESTION, second.model, thread_id=thread, checkpointer=postgres_url)
    assert again.output == "4"
    assert len(second.requests) == 2
