"""The run log (reflectkit.stores.runlog) on real SQLite files."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import reflectkit
from reflectkit.errors import ConfigurationError, RunError
from reflectkit.events import ResultEvent, StepEvent
from reflectkit.models.provider import ProviderFailure
from reflectkit.redaction import REDACTED
from reflectkit.result import ReflectionResult, StopReason
from reflectkit.stores import run_ids, run_writer, runlog
from reflectkit.stores.runlog import RunLog, new_run_id, open_run_log, scrub
from reflectkit.testing import ScriptedLLM, fail
from reflectkit.usage import Usage
from tests.conftest import QUESTION, verdict

LOOP_REPLIES = [
    "<thinking>x = 7, 7 - 3 = 5</thinking><output>5</output>",
    verdict(False, "7 - 3 is 4", score=2),
    "<thinking>7 - 3 = 4</thinking><output>4</output>",
    verdict(True, score=9),
]


@pytest.fixture
def log(tmp_path: Path) -> Iterator[RunLog]:
    with RunLog(tmp_path / "runs.sqlite3") as opened:
        yield opened


@pytest.fixture
def same_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every new run id fall in the millisecond of the last one (a clock stuck in the past),
    so that ids share their first 10 characters."""
    monkeypatch.setattr(time, "time_ns", lambda: 0)


async def _reflect(
    replies: Sequence[str | ProviderFailure],
) -> tuple[list[StepEvent], ReflectionResult]:
    """A real run on a scripted model, with the run log off: its step events and result."""
    fake = ScriptedLLM(replies)
    steps: list[StepEvent] = []
    result = None
    with reflectkit.Reflector(model=fake.model, run_log=False) as reflector:
        async for event in reflector.astream(QUESTION):
            if isinstance(event, StepEvent):
                steps.append(event)
            elif isinstance(event, ResultEvent):
                result = event.result
    assert result is not None
    return steps, result


def _start(log: RunLog, question: str = QUESTION, **config: Any) -> str:
    return log.start(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": question},
        ],
        config={"model": "fake/model", **config},
        model="fake/model",
        mode="loop",
    )


def _result(output: str = "4", stop: StopReason = StopReason.PASSED) -> ReflectionResult:
    usage = Usage(prompt_tokens=10, completion_tokens=2, calls=1, cost_usd=0.001)
    return ReflectionResult(output=output, stop_reason=stop, usage=usage, model="m", mode="loop")


def _query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _on_disk(path: Path) -> bytes:
    """The bytes of the log file and its -wal and -shm files, once queued writes are done."""
    run_writer.flush()
    files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    return b"".join(p.read_bytes() for p in files if p.exists())


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """reflectkit's warnings (not, say, asyncio's about a task collected meanwhile)."""
    run_writer.flush()  # failures to record are logged by the writer thread
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("reflectkit")
    ]


def test_migrations_are_applied_once_and_recorded_by_name(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    with RunLog(path) as log:
        _start(log)
    first = _query(path, "SELECT name, applied_at FROM _migrations ORDER BY name")
    assert [name for name, _ in first] == [name for name, _ in runlog.MIGRATIONS]
    with RunLog(path) as log:
        _start(log)
        assert log.count() == 2
    assert _query(path, "SELECT name, applied_at FROM _migrations ORDER BY name") == first


def test_an_older_file_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert reflectkit.stores.sqlite.migrate(conn, runlog.MIGRATIONS[:1]) == ["m001_runs"]
    finally:
        conn.close()
    with RunLog(path) as log:
        run_id = _start(log)
        log.step(run_id, node="generate", iteration=1, data={})
        assert len(log.get(run_id).steps) == 1
    assert [name for (name,) in _query(path, "SELECT name FROM _migrations ORDER BY name")] == [
        "m001_runs",
        "m002_steps",
        "m003_run_owner",
        "m004_waiting",
    ]


async def test_a_finished_run_round_trips(log: RunLog) -> None:
    steps, result = await _reflect(LOOP_REPLIES)
    run_id = _start(log, temperature=0)
    for event in steps:
        log.step_event(run_id, event, seconds=0.5)
    log.finish(run_id, result)

    record = log.get(run_id)
    assert (record.id, record.status, record.output, record.stop_reason) == (
        run_id,
        "finished",
        "4",
        "passed",
    )
    assert record.question == QUESTION
    assert record.messages[-1] == {"role": "user", "content": QUESTION}
    assert record.config == {"model": "fake/model", "temperature": 0}
    assert (record.prompt_tokens, record.completion_tokens, record.calls) == (
        result.usage.prompt_tokens,
        result.usage.completion_tokens,
        result.usage.calls,
    )
    assert record.total_tokens == result.usage.total_tokens
    assert record.seconds is not None
    assert record.ended_at is not None
    assert record.seconds == pytest.approx(record.ended_at - record.created_at)
    assert record.error_type is record.error_message is None
    assert [(s.seq, s.node, s.iteration) for s in record.steps] == [
        (1, "generate", 1),
        (2, "critique", 1),
        (3, "revise", 2),
        (4, "critique", 2),
        (5, "finalize", 2),
    ]
    first, critique = record.steps[0], record.steps[1]
    assert first.data["draft"]["output"] == "5"
    assert first.usage is not None
    assert first.usage["calls"] == 1
    assert first.seconds == 0.5
    assert critique.data["verdict"]["feedback"] == "7 - 3 is 4"
    assert record.steps[-1].data == {"stop_reason": "passed"}
    assert record.result == result.to_dict()  # nothing lost or redacted on the way
    assert json.loads(json.dumps(record.to_dict())) == record.to_dict()


async def test_a_failed_run_keeps_its_error_and_partial_work(log: RunLog) -> None:
    with pytest.raises(RunError) as caught:
        await _reflect([LOOP_REPLIES[0], fail(400, "the provider refused the critique")])
    error = caught.value
    assert error.partial is not None
    run_id = _start(log)
    log.fail(run_id, error, error.partial)

    record = log.get(run_id)
    assert (record.status, record.stop_reason, record.output) == ("failed", "error", None)
    assert record.error_type == type(error).__name__
    assert record.error_message is not None
    assert "the provider refused the critique" in record.error_message
    assert record.result == error.partial.to_dict()
    assert record.prompt_tokens == error.partial.usage.prompt_tokens > 0

    bare = _start(log)
    log.fail(bare, KeyboardInterrupt())
    record = log.get(bare)
    assert (record.error_type, record.error_message, record.result) == (
        "KeyboardInterrupt",
        "KeyboardInterrupt",
        None,
    )


def test_a_run_ends_once(log: RunLog, caplog: pytest.LogCaptureFixture) -> None:
    run_id = _start(log)
    log.finish(run_id, _result())
    log.fail(run_id, RuntimeError("the consumer went away"))
    log.finish(run_id, _result("5"))
    record = log.get(run_id)
    assert (record.status, record.output, record.error_type) == ("finished", "4", None)
    assert _warnings(caplog) == []


def test_a_running_run_has_no_end_yet(log: RunLog) -> None:
    run_id = _start(log)
    record = log.get(run_id)
    assert (record.status, record.ended_at, record.seconds, record.stop_reason) == (
        "running",
        None,
        None,
        None,
    )
    assert record.steps == []
    assert record.result is None


def test_recording_for_an_unknown_run_warns_and_does_not_raise(
    log: RunLog, caplog: pytest.LogCaptureFixture
) -> None:
    _start(log)
    log.step("01nosuchrun0000000000000000", node="generate", iteration=1, data={})
    log.finish("01nosuchrun0000000000000000", _result())
    assert len(_warnings(caplog)) == 1  # the first failure warns, later ones go to debug
    assert "could not record a step of run 01nosuchrun" in _warnings(caplog)[0]


def test_ids_are_lower_case_ulids_that_sort_by_time() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_run_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 26 and set(i) <= set(run_ids._CROCKFORD) for i in ids)
    stamps = [int.from_bytes(_decode(i)[:6], "big") for i in (ids[0], ids[-1])]
    assert before <= stamps[0] <= stamps[1] <= after


def _decode(run_id: str) -> bytes:
    value = 0
    for char in run_id:
        value = value * 32 + run_ids._CROCKFORD.index(char)
    return value.to_bytes(16, "big")


def test_ids_in_one_millisecond_or_after_the_clock_went_back_still_increase(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = time.time_ns()
    clock = iter([now, now, now, now - 5_000_000_000, now])
    monkeypatch.setattr(time, "time_ns", lambda: next(clock))
    ids = [new_run_id() for _ in range(5)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5
    assert len({i[:10] for i in ids}) == 1  # one millisecond ...
    assert len({i[:14] for i in ids}) == 5  # ... yet short prefixes still tell them apart


def test_an_overflowing_random_part_carries_into_the_next_millisecond(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ms = time.time_ns() // 1_000_000 + 60_000
    monkeypatch.setattr(run_ids, "_last_id", (ms, 2**80 - 1))
    monkeypatch.setattr(time, "time_ns", lambda: ms * 1_000_000)
    run_id = new_run_id()
    assert int.from_bytes(_decode(run_id)[:6], "big") == ms + 1


@pytest.mark.usefixtures("same_millisecond")
def test_any_unique_prefix_finds_a_run(log: RunLog) -> None:
    one, two = _start(log, "first"), _start(log, "second")
    assert one[:10] == two[:10]
    assert log.get(one.upper()).question == "first"
    short = log.short_ids([one, two])
    assert short[one] != short[two]
    assert all(len(s) >= 10 for s in short.values())
    assert log.get(short[one]).id == one
    assert log.get(f"  {short[two]}  ").id == two
    assert log.short_ids([one], minimum=26) == {one: one}
    for prefix, message in [
        (one[:3], "at least 4 characters"),
        (one[:10], "ambiguous: give more characters"),
        ("zzzzzz", "no run 'zzzzzz' in"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            log.get(prefix)
        with pytest.raises(ConfigurationError, match=message):
            log.delete(prefix)
    assert log.count() == 2


def test_list_is_newest_first_with_a_limit_and_a_status(log: RunLog) -> None:
    ids = [_start(log, f"question {n}") for n in range(5)]
    log.finish(ids[0], _result())
    log.finish(ids[3], _result())
    log.fail(ids[4], RuntimeError("boom"))
    assert [r.id for r in log.list()] == ids[::-1]
    assert [r.id for r in log.list(limit=2)] == [ids[4], ids[3]]
    assert [r.id for r in log.list(limit=None, status="finished")] == [ids[3], ids[0]]
    assert [r.question for r in log.list(status="running")] == ["question 2", "question 1"]
    assert log.list(limit=0) == []
    assert (log.count(), log.count("failed")) == (5, 1)
    summary = log.list(limit=1)[0]
    assert summary.to_dict()["error_message"] == "boom"
    assert not hasattr(summary, "steps")
    with pytest.raises(ConfigurationError, match="limit must be >= 0"):
        log.list(limit=-1)
    with pytest.raises(ConfigurationError, match="status must be one of"):
        log.list(status="done")


def test_the_question_is_the_last_user_text(log: RunLog) -> None:
    parts = [
        {"type": "text", "text": "What is in"},
        {"type": "image_url", "image_url": {"url": "http://x/cat.png"}},
        {"type": "text", "text": "this picture?"},
    ]
    run_id = log.start(
        messages=[{"role": "user", "content": "earlier"}, {"role": "user", "content": parts}],
        config={},
        model="m",
        mode="single",
    )
    assert log.get(run_id).question == "What is in this picture?"
    assert log.get(log.start(messages=[], config={}, model="m", mode="loop")).question == ""


def test_export_writes_json_lines_to_a_path_or_a_stream(
    log: RunLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runlog, "_BATCH", 2)  # several batches
    ids = [_start(log, f"question {n}") for n in range(5)]
    log.step(ids[1], node="generate", iteration=1, data={"draft": {"output": "4"}})
    log.finish(ids[1], _result())
    stream = io.StringIO()
    assert log.export(stream) == 5
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["id"] for line in lines] == ids  # oldest first
    assert lines[1] == log.get(ids[1]).to_dict()
    assert lines[1]["steps"][0]["data"] == {"draft": {"output": "4"}}

    target = tmp_path / "out.jsonl"
    target.write_text("old contents\n")
    assert log.export(target, status="finished") == 1
    assert [json.loads(line)["id"] for line in target.read_text().splitlines()] == [ids[1]]
    assert log.export(str(target), status="failed") == 0
    assert target.read_text() == ""
    with pytest.raises(ConfigurationError, match="cannot write"):
        log.export(tmp_path / "no" / "such" / "dir" / "out.jsonl")
    with pytest.raises(ConfigurationError, match="status must be one of"):
        log.export(stream, status="nope")


def test_delete_one_or_all_takes_the_steps_along(log: RunLog, tmp_path: Path) -> None:
    ids = [_start(log, f"question {n}") for n in range(3)]
    for run_id in ids:
        for n in range(3):
            log.step(run_id, node="generate", iteration=n, data={})
    assert log.delete(ids[1][:20]) == 1
    assert [r.id for r in log.list()] == [ids[2], ids[0]]
    path = tmp_path / "runs.sqlite3"
    assert _query(path, "SELECT DISTINCT run_id FROM steps ORDER BY run_id") == [
        (ids[0],),
        (ids[2],),
    ]
    assert log.delete() == 2
    assert log.list() == []
    assert _query(path, "SELECT count(*) FROM steps") == [(0,)]
    assert log.delete() == 0


def test_deleted_text_leaves_the_disk(log: RunLog, tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    keep = _start(log, "keep this question")
    gone = _start(log, "purple elephant, please forget me " * 50)  # overflows a page too
    log.step(gone, node="generate", iteration=1, data={"draft": {"output": "purple elephant"}})
    log.finish(gone, _result("the purple elephant answer"))
    assert b"purple elephant" in _on_disk(path)
    log.delete(gone)
    assert b"purple elephant" not in _on_disk(path)
    assert log.get(keep).question == "keep this question"


def _path_of(log: RunLog | None) -> str:
    assert log is not None
    log.close()
    return log.path


def test_the_environment_and_settings_choose_the_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setattr(sys, "platform", "linux")
    default = tmp_path / "data" / "reflectkit" / "runs.sqlite3"
    for off in ("off", "0", "false", "NO", " Off "):
        monkeypatch.setenv(runlog.ENV_VAR, off)
        assert runlog.default_path() is None
        assert open_run_log(None) is None
        with pytest.raises(ConfigurationError, match="the run log is off"):
            RunLog()
    assert _path_of(open_run_log(True)) == str(default)
    monkeypatch.setenv(runlog.ENV_VAR, str(tmp_path / "env.sqlite3"))
    assert runlog.default_path() == tmp_path / "env.sqlite3"
    assert _path_of(open_run_log(None)) == str(tmp_path / "env.sqlite3")
    for on in ("", "on", "1", "true", "yes"):
        monkeypatch.setenv(runlog.ENV_VAR, on)
        assert runlog.default_path() == default
    monkeypatch.setenv(runlog.ENV_VAR, "~/runs.sqlite3")
    assert runlog.default_path() == Path.home() / "runs.sqlite3"

    assert open_run_log(False) is None
    assert _path_of(open_run_log(tmp_path / "given.sqlite3")) == str(tmp_path / "given.sqlite3")
    with RunLog(tmp_path / "given.sqlite3") as given:
        assert open_run_log(given) is given
    for bad in ("", "   ", 3, object()):
        with pytest.raises(ConfigurationError, match="run_log must be"):
            open_run_log(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="path is empty"):
        RunLog("")
    assert not default.exists()
    assert not (tmp_path / "env.sqlite3").exists()


def test_reading_a_missing_file_finds_nothing_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "later" / "runs.sqlite3"
    with RunLog(path) as log:
        assert log.list() == []
        assert log.count() == 0
        assert log.export(io.StringIO()) == 0
        assert log.delete() == 0
        assert log.short_ids(["01abcdefghjkmnpqrstvwxyz01"]) == {
            "01abcdefghjkmnpqrstvwxyz01": "01abcdefgh"
        }
        for call in (log.get, log.delete):
            with pytest.raises(ConfigurationError, match="no run 'abcd'"):
                call("abcd")
    assert not path.parent.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_the_file_is_private_to_its_owner(log: RunLog, tmp_path: Path) -> None:
    _start(log)
    log.flush()
    for name in ("runs.sqlite3", "runs.sqlite3-wal"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_wal_and_synchronous_normal(log: RunLog, tmp_path: Path) -> None:
    _start(log)
    log.flush()
    assert _query(tmp_path / "runs.sqlite3", "PRAGMA journal_mode") == [("wal",)]
    assert log._conn is not None
    assert log._conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    assert log._conn.execute("PRAGMA foreign_keys").fetchone() == (1,)


def test_recording_into_a_corrupt_file_warns_and_reading_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "runs.sqlite3"
    path.write_bytes(b"this is not SQLite at all" * 200)
    before = path.read_bytes()
    with RunLog(path) as log:
        run_id = log.start(messages=[], config={}, model="m", mode="loop")
        log.step(run_id, node="generate", iteration=1, data={})
        log.finish(run_id, _result())
        assert len(run_id) == 26
        warned = _warnings(caplog)
        assert len(warned) == 1
        assert f"could not record the start of run {run_id} in {path}" in warned[0]
        assert "not a database" in warned[0]
        for read in (log.list, log.count, lambda: log.get(run_id), log.delete):
            with pytest.raises(ConfigurationError, match="not a database") as caught:
                read()
            assert str(path) in str(caught.value)
            assert "\n" not in str(caught.value)
        out = tmp_path / "keep.jsonl"
        out.write_text("kept\n")
        with pytest.raises(ConfigurationError, match="not a database"):
            log.export(out)
        assert out.read_text() == "kept\n"
    assert path.read_bytes() == before


def test_recording_never_raises_even_for_odd_data(
    log: RunLog, caplog: pytest.LogCaptureFixture
) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text for you")

    run_id = log.start(messages=[Unprintable()], config={}, model="m", mode="loop")
    assert "no text for you" in _warnings(caplog)[0]
    with pytest.raises(ConfigurationError, match="no run"):
        log.get(run_id)
    odd = log.start(
        messages=[{"role": "user", "content": "lone \ud800 surrogate"}],
        config={"path": Path("/x"), "when": 1.5, "tags": {"a"}, "kind": ReflectionResult},
        model="m",
        mode="loop",
    )
    record = log.get(odd)
    assert record.question == "lone ? surrogate"
    assert record.config == {"path": "/x", "when": 1.5, "tags": ["a"], "kind": "ReflectionResult"}


def test_a_closed_log_refuses_work(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = RunLog(tmp_path / "runs.sqlite3")
    _start(log)
    log.close()
    _start(log)
    assert "is closed" in _warnings(caplog)[0]
    with pytest.raises(ConfigurationError, match="is closed"):
        log.list()


def test_an_in_memory_log_works() -> None:
    with RunLog(":memory:") as log:
        run_id = _start(log)
        log.finish(run_id, _result())
        assert log.get(run_id).status == "finished"
        assert log.delete() == 1


def test_two_logs_and_many_threads_share_one_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "shared.sqlite3"
    with RunLog(path) as one, RunLog(path) as two:
        shared = _start(one)

        def work(n: int) -> None:
            log = one if n % 2 else two
            own = _start(log, f"thread {n}")
            for i in range(25):
                log.step(shared, node="generate", iteration=n, data={"i": i})
                log.step(own, node="critique", iteration=i, data={})
            log.finish(own, _result())

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        steps = two.get(shared).steps
        assert [s.seq for s in steps] == list(range(1, 201))
        assert sorted((s.iteration, s.data["i"]) for s in steps) == [
            (n, i) for n in range(8) for i in range(25)
        ]
        assert one.count("finished") == 8
        assert all(len(one.get(r.id).steps) == 25 for r in one.list(status="finished"))
    assert _warnings(caplog) == []


CHILD = """
import logging, sys
logging.basicConfig()  # failures to record go to stderr, where the parent looks for them
from reflectkit.stores.runlog import RunLog
with RunLog(sys.argv[1]) as log:
    for i in range(int(sys.argv[3])):
        log.step(sys.argv[2], node="critique", iteration=i, data={"from": "child"})
    own = log.start(messages=[], config={}, model="child", mode="loop")
"""


def test_two_processes_write_one_run(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    written = 150
    with RunLog(path) as log:
        run_id = _start(log)
        log.flush()  # recording is asynchronous: the child's steps need the run to exist
        with subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), run_id, str(written)],
            stderr=subprocess.PIPE,
            text=True,
        ) as child:
            mine = 0
            while child.poll() is None or mine < written:
                log.step(run_id, node="generate", iteration=mine, data={"from": "parent"})
                mine += 1
            _, errors = child.communicate(timeout=60)
        assert child.returncode == 0, errors
        assert "could not record" not in errors
        steps = log.get(run_id).steps
        assert [s.seq for s in steps] == list(range(1, written + mine + 1))
        assert sum(s.data["from"] == "child" for s in steps) == written
        assert [r.model for r in log.list()] == ["child", "fake/model"]


def test_scrub_keeps_data_and_drops_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "env-known-value-1234")

    class Settings(BaseModel):
        api_key: str
        temperature: float

    @dataclasses.dataclass
    class Point:
        x: int
        auth: str

    assert scrub(
        {
            "settings": Settings(api_key="abc", temperature=0.5),
            "point": Point(1, "bearer-ish"),
            "usage": {"prompt_tokens": 3, "max_tokens": 9, "token_budget": 100},
            "password": 123456,
            "api_key": None,
            "secret_flag": True,
            "note": "call with env-known-value-1234 and sk-abcdefgh12345",
            "items": ("a", 1, None),
        }
    ) == {
        "settings": {"api_key": REDACTED, "temperature": 0.5},
        "point": {"x": 1, "auth": REDACTED},
        "usage": {"prompt_tokens": 3, "max_tokens": 9, "token_budget": 100},
        "password": REDACTED,
        "api_key": None,
        "secret_flag": True,
        "note": f"call with {REDACTED} and {REDACTED}",
        "items": ["a", 1, None],
    }


PLANTED_KEY = "sk-planted-0123456789abcdefXYZ"  # key-shaped and in the environment
PLANTED_TOKEN = "planted-token-7f3a9c21e4b8"  # only the environment knows it is secret
PLANTED_NAMED = "zz-only-by-name-314159"  # only the name it is given under says so


def test_planted_secrets_never_reach_the_disk_or_the_export(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED_KEY)
    monkeypatch.setenv("MYSERVICE_TOKEN", PLANTED_TOKEN)
    path = tmp_path / "runs.sqlite3"
    with RunLog(path) as log:
        failed = log.start(
            messages=[
                {"role": "system", "content": f"Your key is {PLANTED_KEY}."},
                {"role": "user", "content": f"Log in with token {PLANTED_TOKEN} and say hi"},
            ],
            config={
                "model": "gpt-4o-mini",
                "model_kwargs": {"api_key": PLANTED_KEY, "temperature": 0},
                "critic_kwargs": {"api_key": PLANTED_NAMED, "password": PLANTED_NAMED},
                "extra_headers": {"Authorization": f"Bearer {PLANTED_TOKEN}"},
            },
            model=f"openai/gpt-4o-mini#{PLANTED_TOKEN}",
            mode="loop",
            thread_id=f"thread-{PLANTED_TOKEN}",
        )
        log.step(
            failed,
            node="generate",
            iteration=1,
            data={"draft": {"text": f"hi, my key is {PLANTED_KEY}", "output": "hi"}},
            usage={"prompt_tokens": 12, "api_key": PLANTED_NAMED},
        )
        partial = _result(f"partial {PLANTED_TOKEN}", StopReason.ERROR)
        error = RuntimeError(
            f"Incorrect API key provided: {PLANTED_KEY}. You passed api_key={PLANTED_NAMED} "
            f"and token {PLANTED_TOKEN}"
        )
        log.fail(failed, error, partial)
        finished = _start(log, f"again with {PLANTED_TOKEN}")
        log.finish(finished, _result(f"done, {PLANTED_KEY}"))

        raw = _on_disk(path)  # while open: the WAL holds the recent writes
        assert Path(f"{path}-wal").stat().st_size > 0
        export = io.StringIO()
        assert log.export(export) == 2
        record = log.get(failed)
    for secret in (PLANTED_KEY, PLANTED_TOKEN, PLANTED_NAMED):
        for core in (secret, secret[-12:]):
            assert core.encode() not in raw, secret
            assert core not in export.getvalue(), secret
    # What is not secret survives, so the log is still worth reading.
    assert record.question == f"Log in with token {REDACTED} and say hi"
    assert record.config["model_kwargs"] == {"api_key": REDACTED, "temperature": 0}
    assert record.steps[0].usage == {"prompt_tokens": 12, "api_key": REDACTED}
    assert record.error_message is not None
    assert "Incorrect API key provided" in record.error_message
    assert b"say hi" in raw
    assert b"Incorrect API key provided" in raw


async def test_a_reflector_records_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    fake = ScriptedLLM(LOOP_REPLIES)
    with reflectkit.Reflector(model=fake.model, run_log=path) as reflector:
        result = await reflector.arun(QUESTION)
    assert result.run_id is not None
    with RunLog(path) as log:
        record = log.get(result.run_id)
    assert (record.status, record.output, record.stop_reason) == ("finished", "4", "passed")
    assert [s.node for s in record.steps] == [
        "generate",
        "critique",
        "revise",
        "critique",
        "finalize",
    ]
    assert record.result is not None
    assert record.result["output"] == "4"
