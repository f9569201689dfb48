"""Runs whose process died: reflectkit.stores.run_owner judges the processes that own runs, and the
run log (the Python API and ``reflectkit runs``) shows their runs interrupted. Real processes,
real signals and real SQLite files throughout."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from reflectkit.cli.app import cli
from reflectkit.result import ReflectionResult, StopReason
from reflectkit.stores.run_owner import Owner, current, why_gone
from reflectkit.stores.runlog import RunLog

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="signals and os.kill probes")

# A run mid-flight in a process of its own: the fake model says so, then blocks until killed.
CHILD = """
import sys, time
import reflectkit as rk
from reflectkit.stores.runlog import RunLog
from reflectkit.testing import FunctionLLM

log = RunLog(sys.argv[1])

def reply(request):
    log.flush()  # the start of the run is in the file before the parent looks
    print("mid-flight", flush=True)
    time.sleep(600)
    return "<output>4</output>"

model = FunctionLLM(reply)
with rk.Reflector(model=model.model, run_log=log) as reflector:
    reflector.run("What is 2+2?")
"""

GONE = "the process that ran it (pid {pid} on {host}) is gone: it crashed or was killed"


def _proc_stat(pid: int) -> tuple[str, int]:
    """The state and start time (fields 3 and 22) of process ``pid``, read here on their own."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return fields[0], int(fields[19])


@contextmanager
def _sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A child process that sleeps until it is killed (and is always reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        yield child
    finally:
        child.kill()
        child.wait(timeout=60)


def _dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return child.pid


def _runs(path: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["runs", "--run-log", str(path), *args], catch_exceptions=False)


def _insert(path: Path, run_id: str, owner: Owner | None, question: str = "2+2") -> None:
    """Write a running run straight into the file, owned by ``owner`` (None: an old row)."""
    owned = (None,) * 5 if owner is None else dataclasses.astuple(owner)
    messages = json.dumps([{"role": "user", "content": question}])
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(
            "INSERT INTO runs (id, created_at, status, model, mode, input_json, config_json,"
            " owner_pid, owner_host, owner_started, owner_boot, owner_pid_ns)"
            " VALUES (?, ?, 'running', 'fake/model', 'loop', ?, '{}', ?, ?, ?, ?, ?)",
            (run_id, time.time(), messages, *owned),
        )
    finally:
        conn.close()


def _query(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@linux_only
def test_this_process_is_named_by_pid_host_start_time_boot_and_namespace() -> None:
    here = current()
    assert (here.pid, here.host) == (os.getpid(), socket.gethostname())
    assert here.started == _proc_stat(os.getpid())[1]
    assert here.boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert here.pid_ns == os.readlink("/proc/self/ns/pid")
    assert why_gone(here) is None


@posix_only
def test_a_live_process_is_not_gone_and_a_killed_one_is() -> None:
    with _sleeper() as child:
        started = _proc_stat(child.pid)[1] if current().boot else None
        owner = dataclasses.replace(current(), pid=child.pid, started=started)
        assert why_gone(owner) is None
        child.kill()
        if current().boot:  # until its parent reaps it, a killed process is a zombie
            deadline = time.monotonic() + 30
            while _proc_stat(child.pid)[0] != "Z" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert why_gone(owner) == GONE.format(pid=child.pid, host=owner.host)
        child.wait(timeout=60)
        assert why_gone(owner) == GONE.format(pid=child.pid, host=owner.host)


@linux_only
def test_a_reused_pid_and_a_restarted_machine_are_gone() -> None:
    here = current()
    assert here.started is not None
    reused = dataclasses.replace(here, started=here.started - 1)
    assert why_gone(reused) == GONE.format(pid=here.pid, host=here.host) + (
        ", and its pid now names another process"
    )
    rebooted = dataclasses.replace(here, boot="00000000-0000-0000-0000-000000000000")
    assert why_gone(rebooted) == (
        f"the process that ran it (pid {here.pid} on {here.host}) is gone: "
        f"{here.host} has restarted since"
    )


@posix_only
def test_what_cannot_be_judged_from_here_is_not_gone() -> None:
    dead = dataclasses.replace(current(), pid=_dead_pid(), started=None)
    assert why_gone(dead) is not None
    for owner in (
        dataclasses.replace(dead, host="elsewhere.example"),  # another host
        dataclasses.replace(dead, pid_ns="pid:[1]"),  # a container that shares our host name
        dataclasses.replace(dead, pid=0),  # os.kill(0, 0) would probe our own process group
        dataclasses.replace(dead, pid=-1),  # ... and -1 every process we may signal
    ):
        assert why_gone(owner) is None, owner
    if current().boot:  # one side has /proc, the other not: two systems under one name
        assert why_gone(dataclasses.replace(dead, boot=None, pid_ns=None)) is None


@posix_only
def test_a_killed_process_leaves_its_run_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True
    ) as child:
        watchdog = threading.Timer(120, child.kill)
        watchdog.start()
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "mid-flight\n"
            with RunLog(path) as log:
                [live] = log.list()
                assert live.status == "running"  # another process's live run
                assert log.count("interrupted") == 0
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(timeout=60) == -signal.SIGKILL
        finally:
            watchdog.cancel()
    why = GONE.format(pid=child.pid, host=socket.gethostname())

    with RunLog(path) as log:
        [run] = log.list()
        assert (run.id, run.status, run.error_message) == (live.id, "interrupted", why)
        assert run.ended_at == run.created_at  # killed before its first step was recorded
        assert run.seconds == 0
        record = log.get(run.id[:12])
        assert (record.status, record.error_message, record.steps) == ("interrupted", why, [])
        assert record.question == "What is 2+2?"
        assert log.list(status="running") == []
        assert log.list(status="interrupted") == [run]
        assert (log.count(), log.count("running"), log.count("interrupted")) == (1, 0, 1)

    assert _query(path, "SELECT status, error_message, ended_at FROM runs") == [
        ("interrupted", why, run.ended_at)  # the row itself was rewritten
    ]
    table = _runs(path, "list")
    assert table.exit_code == 0
    assert table.stdout.splitlines()[1].split()[3:9] == [
        "interrupted",
        live.model,
        "-",
        "0",
        "-",
        "0.0",
    ]
    assert _runs(path, "list", "--status", "running").stderr == f"no running runs in {path}\n"
    assert len(_runs(path, "list", "--status", "interrupted").stdout.splitlines()) == 2
    shown = _runs(path, "show", run.id).stdout
    assert shown.startswith(f"run      {run.id}\nstatus   interrupted\nwhy      {why}\n")
    exported = _runs(path, "export", "--status", "interrupted").stdout.splitlines()
    assert [json.loads(line)["status"] for line in exported] == ["interrupted"]


@posix_only
def test_each_row_is_judged_by_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    with RunLog(path) as log:
        mine = log.start(messages=[], config={}, model="fake/model", mode="loop")
    here = current()
    dead = dataclasses.replace(here, pid=_dead_pid(), started=None)
    rows: dict[str, Owner | None] = {
        "01aaaaaaaaaaaaaaaaaaaaaaaa": dead,
        "01bbbbbbbbbbbbbbbbbbbbbbbb": dataclasses.replace(dead, host="elsewhere.example"),
        "01cccccccccccccccccccccccc": None,  # written before owners were recorded
        "01dddddddddddddddddddddddd": dataclasses.replace(dead, pid_ns="pid:[1]"),
    }
    if here.started is not None:
        rows["01eeeeeeeeeeeeeeeeeeeeeeee"] = dataclasses.replace(here, started=here.started + 1)
    for run_id, owner in rows.items():
        _insert(path, run_id, owner)
    interrupted = {"01aaaaaaaaaaaaaaaaaaaaaaaa", "01eeeeeeeeeeeeeeeeeeeeeeee"} & set(rows)

    with RunLog(path) as log:
        before = {run_id: log.get(run_id).to_dict() for run_id in [*rows, mine]}
        assert {k for k, v in before.items() if v["status"] == "interrupted"} == interrupted
        assert {run.id for run in log.list(status="running")} == set(rows) - interrupted | {mine}
        assert log.count("interrupted") == len(interrupted)
        log.flush()
        stored = dict(_query(path, "SELECT id, status FROM runs"))
        assert {k for k, v in stored.items() if v == "interrupted"} == interrupted
        # What a read showed before the rewrite landed is what the rewritten row says.
        assert {run_id: log.get(run_id).to_dict() for run_id in before} == before
    assert before["01aaaaaaaaaaaaaaaaaaaaaaaa"]["error_message"] == GONE.format(
        pid=dead.pid, host=here.host
    )
    if "01eeeeeeeeeeeeeeeeeeeeeeee" in before:
        reused = before["01eeeeeeeeeeeeeeeeeeeeeeee"]["error_message"]
        assert reused.endswith("and its pid now names another process")


@posix_only
def test_an_interrupted_run_was_last_heard_of_at_its_last_step(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    with RunLog(path) as log:
        log.start(messages=[], config={}, model="m", mode="loop")
    dead = dataclasses.replace(current(), pid=_dead_pid(), started=None)
    _insert(path, "01aaaaaaaaaaaaaaaaaaaaaaaa", dead)
    with RunLog(path) as log:
        log.step("01aaaaaaaaaaaaaaaaaaaaaaaa", node="generate", iteration=1, data={})
        log.flush()
        record = log.get("01aaaaaaaaaaaaaaaaaaaaaaaa")
        assert record.status == "interrupted"
        assert record.ended_at == record.steps[0].created_at > record.created_at
        assert record.seconds == pytest.approx(record.ended_at - record.created_at)
        result = ReflectionResult(output="4", stop_reason=StopReason.PASSED, model="m", mode="loop")
        log.finish("01aaaaaaaaaaaaaaaaaaaaaaaa", result)  # too late: a run ends once
        assert log.get("01aaaaaaaaaaaaaaaaaaaaaaaa").status == "interrupted"


# The schema as m001_runs and m002_steps made it, before owners were recorded.
OLD_SCHEMA = [
    "CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)",
    "CREATE TABLE runs (id TEXT PRIMARY KEY, created_at REAL NOT NULL, ended_at REAL,"
    " status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed')),"
    " model TEXT NOT NULL, mode TEXT NOT NULL, thread_id TEXT, input_json TEXT NOT NULL,"
    " config_json TEXT NOT NULL, output TEXT, stop_reason TEXT,"
    " prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,"
    " calls INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0, seconds REAL,"
    " error_type TEXT, error_message TEXT, result_json TEXT)",
    "CREATE INDEX runs_created_at ON runs (created_at)",
    "CREATE TABLE steps (run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
    " seq INTEGER NOT NULL, node TEXT NOT NULL, iteration INTEGER NOT NULL,"
    " data_json TEXT NOT NULL, usage_json TEXT, seconds REAL, created_at REAL NOT NULL,"
    " PRIMARY KEY (run_id, seq)) WITHOUT ROWID",
    "INSERT INTO _migrations VALUES ('m001_runs', 1.0), ('m002_steps', 1.0)",
    "INSERT INTO runs VALUES ('01aaaaaaaaaaaaaaaaaaaaaaaa', 10.0, 12.5, 'finished', 'm', 'loop',"
    " NULL, '[{\"role\": \"user\", \"content\": \"2+2\"}]', '{}', '4', 'passed', 7, 3, 2, 0.5,"
    ' 2.5, NULL, NULL, \'{"output": "4"}\')',
    "INSERT INTO runs VALUES ('01bbbbbbbbbbbbbbbbbbbbbbbb', 20.0, 21.0, 'failed', 'm', 'single',"
    " 't-1', '[]', '{}', NULL, 'error', 0, 0, 1, 0, 1.0, 'RuntimeError', 'boom', NULL)",
    "INSERT INTO runs (id, created_at, status, model, mode, input_json, config_json)"
    " VALUES ('01cccccccccccccccccccccccc', 30.0, 'running', 'm', 'loop', '[]', '{}')",
    "INSERT INTO steps VALUES ('01aaaaaaaaaaaaaaaaaaaaaaaa', 1, 'generate', 1, '{}', NULL, 1, 11)",
    "INSERT INTO steps VALUES ('01aaaaaaaaaaaaaaaaaaaaaaaa', 2, 'finalize', 1, '{}', NULL, 0, 12)",
    "INSERT INTO steps VALUES ('01cccccccccccccccccccccccc', 1, 'generate', 1, '{}', NULL, 1, 31)",
]
OLD_COLUMNS = (
    "id, created_at, ended_at, status, model, mode, thread_id, input_json, config_json, output,"
    " stop_reason, prompt_tokens, completion_tokens, calls, cost_usd, seconds, error_type,"
    " error_message, result_json"
)


def test_a_file_of_the_old_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in OLD_SCHEMA:
            conn.execute(statement)
    finally:
        conn.close()
    runs = _query(path, f"SELECT {OLD_COLUMNS} FROM runs ORDER BY id")
    steps = _query(path, "SELECT * FROM steps ORDER BY run_id, seq")

    with RunLog(path) as log:
        assert [run.status for run in log.list()] == ["running", "failed", "finished"]
        assert log.get("01cc").error_message is None  # no owner: it stays as the file says
        assert [step.node for step in log.get("01aa").steps] == ["generate", "finalize"]
        assert log.delete("01cc") == 1  # the steps' reference to runs survived the rebuild

    assert _query(path, f"SELECT {OLD_COLUMNS} FROM runs ORDER BY id") == runs[:2]
    assert _query(path, "SELECT * FROM steps ORDER BY run_id, seq") == steps[:2]
    assert [name for (name,) in _query(path, "SELECT name FROM _migrations ORDER BY name")] == [
        "m001_runs",
        "m002_steps",
        "m003_run_owner",
        "m004_waiting",
    ]
    indexes = {row[1] for row in _query(path, "PRAGMA index_list(runs)")}
    assert {"runs_created_at", "runs_running"} <= indexes
    assert [row[2] for row in _query(path, "PRAGMA foreign_key_list(steps)")] == ["runs"]
    assert _query(path, "PRAGMA foreign_key_check") == []
    assert _query(path, "PRAGMA integrity_check") == [("ok",)]
    assert "runs_new" not in str(_query(path, "SELECT sql FROM sqlite_master"))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        update = "UPDATE runs SET status = ? WHERE id = '01aaaaaaaaaaaaaaaaaaaaaaaa'"
        conn.execute(update, ("interrupted",))
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute(update, ("paused",))
    finally:
        conn.close()


@posix_only
def test_a_read_shows_the_run_interrupted_without_waiting_for_the_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    with RunLog(path) as log:
        log.start(messages=[], config={}, model="m", mode="loop")
    _insert(path, "01aaaaaaaaaaaaaaaaaaaaaaaa", dataclasses.replace(current(), pid=_dead_pid()))
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process's long write holds the lock
        with RunLog(path) as log:
            began = time.monotonic()
            assert log.count("interrupted") == 1
            assert time.monotonic() - began < 5  # the busy timeout is 10 s
            status = "SELECT status FROM runs WHERE id = '01aaaaaaaaaaaaaaaaaaaaaaaa'"
            assert holder.execute(status).fetchall() == [("running",)]
            holder.execute("ROLLBACK")
            log.flush()  # the queued rewrite, once the lock is free
            assert holder.execute(status).fetchall() == [("interrupted",)]
    finally:
        holder.close()
