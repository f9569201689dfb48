"""Every run is recorded in the run log through the public API: input, redacted config, steps,
usage, stop reason, errors; and a secret given to a run never reaches the log file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import reflectkit as rk
from reflectkit.stores.runlog import RunLog
from reflectkit.testing import ScriptedLLM
from tests.conftest import QUESTION, verdict


async def test_a_run_is_recorded_with_its_steps_and_result(tmp_path: Path) -> None:
    fake = ScriptedLLM(
        ["<output>5</output>", verdict(False, "recount"), "<output>4</output>", verdict(True)]
    )
    path = tmp_path / "runs.sqlite3"
    result = await rk.areflect(QUESTION, fake.model, run_log=path, temperature=0)
    assert result.run_id is not None
    assert len(result.run_id) == 26
    with RunLog(path) as log:
        record = log.get(result.run_id)
    assert record.status == "finished"
    assert record.stop_reason == "passed"
    assert record.output == "4"
    assert record.question == QUESTION
    assert record.model == fake.model
    assert record.mode == "loop"
    assert record.calls == 4
    assert record.total_tokens == result.usage.total_tokens
    assert record.config["model_kwargs"] == {"temperature": 0}
    assert [(s.node, s.iteration) for s in record.steps] == [
        ("generate", 1),
        ("critique", 1),
        ("revise", 2),
        ("critique", 2),
        ("finalize", 2),
    ]
    assert record.steps[1].data["verdict"]["feedback"] == "recount"
    assert record.steps[2].data["draft"]["output"] == "4"
    assert record.result is not None
    assert record.result["output"] == "4"
    assert record.seconds is not None
    assert record.seconds >= 0


async def test_a_failed_run_is_recorded_with_its_partial_work(tmp_path: Path) -> None:
    fake = ScriptedLLM(["<output>5</output>", verdict(False, "recount")])  # revise fails
    path = tmp_path / "runs.sqlite3"
    with pytest.raises(rk.RunError) as failure:
        await rk.areflect(QUESTION, fake.model, run_log=path)
    assert failure.value.run_id is not None
    with RunLog(path) as log:
        record = log.get(failure.value.run_id)
    assert record.status == "failed"
    assert record.stop_reason == "error"
    assert record.error_type == type(failure.value).__name__
    assert record.error_message
    assert record.result is not None
    assert record.result["output"] == "5"
    assert [s.node for s in record.steps] == ["generate", "critique"]


async def test_a_stream_the_caller_abandons_is_recorded_as_stopped(tmp_path: Path) -> None:
    fake = ScriptedLLM(["<output>5</output>", verdict(False, "x"), "<output>4</output>"] * 2)
    path = tmp_path / "runs.sqlite3"
    reflector = rk.Reflector(fake.model, run_log=path)
    stream = reflector.astream(QUESTION)
    async for event in stream:
        if isinstance(event, rk.StepEvent):
            break
    await stream.aclose()  # type: ignore[attr-defined]
    reflector.close()
    with RunLog(path) as log:
        (summary,) = log.list()
    assert summary.status == "failed"
    assert summary.error_type == "CancelledError"
    assert summary.error_message == "the caller stopped the run"


async def test_the_log_can_be_switched_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    default = tmp_path / "reflectkit" / "runs.sqlite3"
    fake = ScriptedLLM(["<output>4</output>", verdict(True)] * 3)
    assert (await rk.areflect(QUESTION, fake.model, run_log=False)).run_id is None
    monkeypatch.setenv("REFLECTKIT_RUN_LOG", "off")
    assert (await rk.areflect(QUESTION, fake.model)).run_id is None
    assert not default.exists()
    monkeypatch.delenv("REFLECTKIT_RUN_LOG")
    recorded = await rk.areflect(QUESTION, fake.model)
    with RunLog(default) as log:
        assert [s.id for s in log.list()] == [recorded.run_id]


async def test_a_run_log_passed_in_stays_open_and_is_shared(tmp_path: Path) -> None:
    fake = ScriptedLLM(["<output>4</output>", verdict(True)] * 2)
    with RunLog(tmp_path / "runs.sqlite3") as log:
        for _ in range(2):
            with rk.Reflector(fake.model, run_log=log) as reflector:
                await reflector.arun(QUESTION)
        assert len(log.list()) == 2


async def test_concurrent_runs_are_all_recorded(tmp_path: Path) -> None:
    fake = ScriptedLLM(["<output>4</output>"] * 20)
    with rk.Reflector(fake.model, mode="single", run_log=tmp_path / "r.sqlite3") as reflector:
        results = await asyncio.gather(*(reflector.arun(f"q{i}") for i in range(20)))
    with RunLog(tmp_path / "r.sqlite3") as log:
        runs = log.list(limit=None)
    assert {r.id for r in runs} == {r.run_id for r in results}
    assert {r.question for r in runs} == {f"q{i}" for i in range(20)}


def test_a_planted_secret_never_reaches_the_log_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-planted-0123456789abcdefSECRET"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    path = tmp_path / "runs.sqlite3"
    # The key in the settings, in the prompt, in the model's reply and in a provider error.
    fake = ScriptedLLM([f"<output>4 {secret}</output>", verdict(True, f"fine {secret}")])
    rk.reflect(f"{QUESTION} (my key is {secret})", fake.model, run_log=path, api_key=secret)
    failing = ScriptedLLM([rk.testing.fail(401, f"invalid key {secret}")])
    with pytest.raises(rk.ReflectkitError):
        rk.reflect(QUESTION, failing.model, run_log=path, api_key=secret)
    exported = tmp_path / "runs.jsonl"
    with RunLog(path) as log:
        assert len(log.list()) == 2
        log.export(exported)
    files = [p for p in tmp_path.iterdir() if p.name.startswith("runs.")]
    assert {p.name for p in files} >= {"runs.sqlite3", "runs.jsonl"}
    for file in files:  # the database, its WAL, and the export
        assert secret.encode() not in file.read_bytes(), file.name
    assert "[redacted]" in exported.read_text()


async def test_a_locked_log_file_does_not_stall_the_run(tmp_path: Path) -> None:
    import sqlite3
    import time

    path = tmp_path / "runs.sqlite3"
    fake = ScriptedLLM(["<output>4</output>"] * 2)
    with rk.Reflector(fake.model, mode="single", run_log=path) as reflector:
        await reflector.arun(QUESTION)  # creates the file
        reflector._run_log.flush()  # type: ignore[union-attr]
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the lock
        try:
            started = time.perf_counter()
            result = await reflector.arun(QUESTION)
            assert time.perf_counter() - started < 2  # the busy timeout is 10 s
        finally:
            other.execute("COMMIT")
            other.close()
    with RunLog(path) as log:
        assert result.run_id in {r.id for r in log.list()}  # written once the lock was free
