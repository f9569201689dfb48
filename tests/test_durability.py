"""Checkpointers (reflectkit/stores/durability.py) against real SQLite files and a real PostgreSQL.

The graph is built with ``build_graph(..., checkpointer=saver)`` and run with a ``thread_id``;
each check then reopens the store through a new :class:`Checkpointer`, as a new process would.
LangGraph reports types its serializer does not trust through a log warning and a serde event,
not a Python warning, so ``filterwarnings = error`` would not see them: the ``serde`` fixture
does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.serde.event_hooks import SerdeEvent, register_serde_event_listener
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from pydantic import BaseModel

import reflectkit as rk
from reflectkit.result import Draft, Iteration, ReflectionResult, StopReason
from reflectkit.stores.durability import (
    ENV_VAR,
    NEW_FILE_SECONDS,
    POSTGRES_INSTALL,
    CheckpointLossWarning,
    default_path,
    open_checkpointer,
    serializer,
)
from reflectkit.tags import ParseStatus
from reflectkit.testing import FunctionLLM, Request, ScriptedLLM, fail
from reflectkit.usage import Usage
from reflectkit.verdict import Verdict
from tests.conftest import QUESTION, verdict

INPUT = {"messages": [{"role": "user", "content": QUESTION}]}


def _thread() -> RunnableConfig:
    # Unique per test: a Postgres server given by URL is shared with other sessions.
    return {"configurable": {"thread_id": f"test-{uuid.uuid4()}"}}


class SerdeReports:
    """What LangGraph's serializer reported during a test: an event for each object of a type
    it warned about or blocked, and its log lines about deserializing (which it writes once
    per type and process, so the events are the check that cannot be fooled)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.events: list[SerdeEvent] = []
        self._caplog = caplog

    @property
    def logged(self) -> list[str]:
        messages = (record.getMessage() for record in self._caplog.records)
        return [message for message in messages if "deserializ" in message.lower()]

    def assert_none(self) -> None:
        assert self.events == []
        assert self.logged == []


@pytest.fixture
def serde(caplog: pytest.LogCaptureFixture) -> Iterator[SerdeReports]:
    reports = SerdeReports(caplog)
    caplog.set_level(logging.WARNING)
    unregister = register_serde_event_listener(reports.events.append)
    try:
        yield reports
    finally:
        unregister()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where checkpoints go: a fresh SQLite file, or the test PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "checkpoints.sqlite3")
    url: str = request.getfixturevalue("postgres_url")
    return url


def _assert_reflectkit_types(result: ReflectionResult) -> None:
    assert type(result) is ReflectionResult
    assert type(result.stop_reason) is StopReason
    assert type(result.parse_status) is ParseStatus
    assert type(result.usage) is Usage
    for iteration in result.iterations:
        assert type(iteration) is Iteration
        assert type(iteration.draft) is Draft
        assert type(iteration.draft.parse_status) is ParseStatus
        assert type(iteration.draft_usage) is Usage
        assert type(iteration.critique_usage) is Usage
        assert type(iteration.verdict) is Verdict
        assert type(iteration.verdict.usage) is Usage


async def test_a_finished_run_reads_back_as_the_same_objects(
    store: str, serde: SerdeReports
) -> None:
    fake = ScriptedLLM(
        ["<output>5</output>", verdict(False, "wrong"), "<output>4</output>", verdict(True)]
    )
    thread = _thread()
    async with open_checkpointer(store) as saver:
        graph = rk.build_graph(model=fake.model, checkpointer=saver)
        out = await graph.ainvoke(INPUT, thread)

    async with open_checkpointer(store) as saver:
        graph = rk.build_graph(model=fake.model, checkpointer=saver)
        state = await graph.aget_state(thread)

    assert state.next == ()
    saved = state.values
    _assert_reflectkit_types(saved["result"])
    assert saved["result"] == out["result"]
    assert [i.draft.output for i in saved["result"].iterations] == ["5", "4"]
    assert saved["result"].iterations[0].verdict.feedback == "wrong"
    assert type(saved["usage"]) is Usage
    assert saved["usage"] == out["result"].usage
    assert all(type(i) is Iteration for i in saved["iterations"])
    # Equal, and a StopReason from SQLite; the Postgres saver keeps str values (StrEnum too)
    # inline as JSON, so there the top-level value comes back as a plain str.
    assert saved["stop_reason"] == StopReason.PASSED
    assert saved["messages"] == INPUT["messages"]
    serde.assert_none()


async def test_a_failed_run_resumes_without_repeating_completed_calls(
    store: str, serde: SerdeReports
) -> None:
    # generate and critique succeed; revise finds the script empty and the run fails.
    first = ScriptedLLM(["<output>5</output>", verdict(False, "wrong")])
    thread = _thread()
    async with open_checkpointer(store) as saver:
        graph = rk.build_graph(model=first.model, checkpointer=saver)
        with pytest.raises(rk.RunError):
            await graph.ainvoke(INPUT, thread)
    assert len(first.requests) == 3

    second = ScriptedLLM(["<output>4</output>", verdict(True)])
    async with open_checkpointer(store) as saver:
        graph = rk.build_graph(model=second.model, checkpointer=saver)
        state = await graph.aget_state(thread)
        assert state.next == ("revise",)  # the last completed step was the critique
        (judged,) = state.values["iterations"]
        assert type(judged) is Iteration
        assert type(judged.verdict) is Verdict
        assert judged.verdict.feedback == "wrong"

        out = await graph.ainvoke(None, thread)

    assert len(first.requests) == 3
    assert len(second.requests) == 2  # revise and its critique; no second generate
    assert "wrong" in second.requests[0].last_user_text  # the revise prompt, from saved state
    result = out["result"]
    _assert_reflectkit_types(result)
    assert result.stop_reason is StopReason.PASSED
    assert [i.draft.output for i in result.iterations] == ["5", "4"]
    assert result.usage.calls == 4
    serde.assert_none()


async def test_langgraphs_default_serializer_would_report_them(
    tmp_path: Path, serde: SerdeReports
) -> None:
    """The control for the checks above: without the allow-list reflectkit's types are
    reported, so a test that sees no reports has shown something."""
    fake = ScriptedLLM(["<output>4</output>", verdict(True)])
    path, thread = tmp_path / "c.sqlite3", _thread()
    async with open_checkpointer(path) as saver:
        await rk.build_graph(model=fake.model, checkpointer=saver).ainvoke(INPUT, thread)
    serde.assert_none()
    async with aiosqlite.connect(path) as conn:
        plain = AsyncSqliteSaver(conn, serde=JsonPlusSerializer())
        await rk.build_graph(model=fake.model, checkpointer=plain).aget_state(thread)
    reported = {(e["module"], e["name"]) for e in serde.events}
    assert ("reflectkit.result", "ReflectionResult") in reported


class Ticket(BaseModel):
    """A type of the caller's own, as a larger graph's state might hold."""

    number: int


def test_the_allow_list_takes_the_callers_types(serde: SerdeReports) -> None:
    saved = serializer().dumps_typed(Ticket(number=7))

    assert serializer([Ticket]).loads_typed(saved) == Ticket(number=7)
    serde.assert_none()

    assert serializer().loads_typed(saved) == {"number": 7}  # refused: its fields only
    assert [(e["kind"], e["name"]) for e in serde.events] == [("msgpack_blocked", "Ticket")]


async def test_memory_checkpointer_runs_and_writes_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    fake = ScriptedLLM(["<output>4</output>", verdict(True)])
    checkpointer = open_checkpointer(":memory:")
    assert (checkpointer.kind, checkpointer.location) == ("sqlite", ":memory:")
    thread = _thread()
    async with checkpointer as saver:
        graph = rk.build_graph(model=fake.model, checkpointer=saver)
        await graph.ainvoke(INPUT, thread)
        state = await graph.aget_state(thread)
    assert type(state.values["result"]) is ReflectionResult
    assert _files(tmp_path) == []


def _files(directory: Path) -> list[Path]:
    return list(directory.iterdir())


async def test_a_saver_passed_in_is_used_as_is_and_left_open(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "own.sqlite3") as conn:
        own = AsyncSqliteSaver(conn, serde=serializer())
        checkpointer = open_checkpointer(own)
        assert (checkpointer.kind, checkpointer.location) == ("custom", "AsyncSqliteSaver")
        assert checkpointer.saver is own
        assert await checkpointer.open() is own
        await checkpointer.close()
        await checkpointer.close()

        fake = ScriptedLLM(["<output>4</output>", verdict(True)])
        out = await rk.build_graph(model=fake.model, checkpointer=own).ainvoke(INPUT, _thread())
        assert out["output"] == "4"
        async with conn.execute("SELECT count(*) FROM checkpoints") as cursor:
            assert (await cursor.fetchone()) is not None


async def test_open_close_and_open_again(tmp_path: Path) -> None:
    checkpointer = open_checkpointer(tmp_path / "c.sqlite3")
    assert "closed" in repr(checkpointer)
    with pytest.raises(rk.ConfigurationError, match="not open"):
        _ = checkpointer.saver

    first, again = await asyncio.gather(checkpointer.open(), checkpointer.open())
    assert first is again is checkpointer.saver  # concurrent opens share one connection
    assert await checkpointer.open() is first
    assert "open" in repr(checkpointer)
    await checkpointer.close()
    await checkpointer.close()
    assert "closed" in repr(checkpointer)

    reopened = await checkpointer.open()
    assert reopened is not first
    await reopened.aget_tuple(_thread())
    await checkpointer.close()


async def test_the_environment_variable_names_the_default_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "from-env" / "c.sqlite3"
    monkeypatch.setenv(ENV_VAR, f"  {path}  ")
    assert default_path() == path
    for setting in (None, True):
        checkpointer = open_checkpointer(setting)
        assert (checkpointer.kind, checkpointer.location) == ("sqlite", str(path))
    async with open_checkpointer():
        pass
    assert path.is_file()


def test_the_environment_variable_may_name_a_postgres_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, "postgresql://app:hunter2hunter2@db.internal:5432/runs")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    checkpointer = open_checkpointer()
    assert checkpointer.kind == "postgres"
    assert checkpointer.location == "postgresql://db.internal:5432/runs"
    assert default_path() == tmp_path / "reflectkit" / "checkpoints.sqlite3"


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG_DATA_HOME is Linux's")
async def test_without_the_variable_the_default_is_in_the_user_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    expected = tmp_path / "reflectkit" / "checkpoints.sqlite3"
    assert default_path() == expected
    async with open_checkpointer() as saver:
        await saver.aget_tuple(_thread())
    assert expected.is_file()


def test_paths_are_made_absolute_when_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert open_checkpointer("~/runs/c.sqlite3").location == str(
        tmp_path / "home" / "runs" / "c.sqlite3"
    )
    monkeypatch.chdir(tmp_path)
    relative = open_checkpointer(Path("runs") / "c.sqlite3")
    monkeypatch.chdir(tmp_path / "..")
    assert relative.location == str(Path(tmp_path, "runs", "c.sqlite3").resolve())


@pytest.mark.parametrize(
    "setting",
    [0, 1, 2.5, False, b"c.sqlite3", object(), "", "   ", Path(" ")],
    ids=["0", "1", "float", "False", "bytes", "object", "empty", "blank", "blank-path"],
)
def test_bad_settings_fail_before_anything_is_opened(setting: Any) -> None:
    with pytest.raises(rk.ConfigurationError):
        open_checkpointer(setting)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://app:hunter2hunter2@db/runs",
        "sqlite:///tmp/c.sqlite3",
        "redis://:hunter2hunter2@cache:6379/0?password=hunter2hunter2",
        "postgresql://app:hunter2hunter2@[::1/runs",
    ],
)
def test_other_urls_fail_without_showing_a_password(url: str) -> None:
    with pytest.raises(rk.ConfigurationError) as caught:
        open_checkpointer(url)
    message = str(caught.value)
    assert url.split("://")[0] in message
    assert "hunter2" not in message
    assert "\n" not in message


def test_the_allow_list_takes_classes_only() -> None:
    with pytest.raises(rk.ConfigurationError, match="classes"):
        open_checkpointer(":memory:", allowed_types=["reflectkit.result.Draft"])  # type: ignore[list-item]


def test_a_postgres_location_shows_no_credentials() -> None:
    checkpointer = open_checkpointer(
        "postgres://app:hunter2hunter2@db:5432/runs?sslmode=require&password=hunter2hunter2"
    )
    assert checkpointer.kind == "postgres"
    assert "hunter2" not in checkpointer.location
    assert "hunter2" not in repr(checkpointer)
    assert "sslmode=require" in checkpointer.location


async def test_a_directory_that_cannot_be_created_fails_on_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    checkpointer = open_checkpointer(blocker / "runs" / "c.sqlite3")
    with pytest.raises(rk.ConfigurationError) as caught:
        await checkpointer.open()
    message = str(caught.value)
    assert message.startswith(f"checkpoint file {blocker / 'runs' / 'c.sqlite3'}: ")
    assert "\n" not in message
    assert caught.value.__cause__ is None
    with pytest.raises(rk.ConfigurationError, match="not open"):
        _ = checkpointer.saver


async def test_a_file_that_is_not_a_database_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("my notes, not a database\n" * 100)
    with pytest.raises(rk.ConfigurationError, match="not a database"):
        await open_checkpointer(path).open()
    assert path.read_text() == "my notes, not a database\n" * 100


async def test_a_database_whose_tables_clash_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    async with aiosqlite.connect(path) as conn:
        await conn.execute("CREATE VIEW writes AS SELECT 1 AS x")  # not LangGraph's table
        await conn.commit()
    with pytest.raises(rk.ConfigurationError, match=r"^checkpoint file .*other\.sqlite3: "):
        await open_checkpointer(path).open()


@pytest.mark.parametrize(
    ("setting", "module", "hint"),
    [
        (":memory:", "aiosqlite", 'pip install "reflectkit"'),
        ("postgresql://db/runs", "psycopg", POSTGRES_INSTALL),
    ],
)
async def test_a_missing_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, setting: str, module: str, hint: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(rk.ConfigurationError) as caught:
        await open_checkpointer(setting).open()
    assert module in str(caught.value)
    assert hint in str(caught.value)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_an_unreachable_postgres_fails_with_a_configuration_error() -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://app:hunter2hunter2@127.0.0.1:{_closed_port()}/runs?connect_timeout=5"
    with pytest.raises(rk.ConfigurationError) as caught:
        await open_checkpointer(url).open()
    message = str(caught.value)
    assert message.startswith("Postgres checkpointer postgresql://127.0.0.1:")
    assert "hunter2" not in message


async def test_a_wrong_postgres_password_is_not_shown(postgres_url: str) -> None:
    wrong = "not-the-password-" + uuid.uuid4().hex
    scheme, _, rest = postgres_url.partition("://")
    credentials, _, where = rest.rpartition("@")
    user = credentials.partition(":")[0]
    url = f"{scheme}://{user}:{wrong}@{where}"
    checkpointer = open_checkpointer(url)
    try:
        await checkpointer.open()
    except rk.ConfigurationError as error:
        caught = error
    else:
        await checkpointer.close()
        pytest.skip("the server given by URL lets this user in without checking the password")
    message = str(caught)
    assert "password authentication failed" in message
    assert wrong not in message
    assert wrong not in repr(caught)
    assert caught.__cause__ is None


# Damaged and emptied checkpoint files. A run is "killed" after its generate and critique steps
# by copying its checkpoint file and write-ahead log while the run is under way (what a SIGKILL
# leaves on disk: the steps saved in the log, not yet in the file), then the copy is damaged
# and resumed. Resumed, the run revises the first draft (2 iterations, 4 calls in all); started
# over, it writes a new first draft and passes it (1 iteration, 2 calls: the first 2 paid twice).


def _killed_after_two_steps(tmp_path: Path) -> Path:
    """A checkpoint file (with its -wal) as a run killed during its third call leaves it."""
    live, crash = tmp_path / "live", tmp_path / "crash"
    crash.mkdir()
    replies = iter(["<output>5</output>", verdict(False, "wrong")])

    def reply(request: Request) -> str:
        for step in replies:
            return step
        for file in live.iterdir():  # the third call: copy the files as they are now
            shutil.copy(file, crash / file.name)
        raise fail(503, "killed")

    with pytest.raises(rk.RunError):
        rk.reflect(
            QUESTION,
            model=FunctionLLM(reply).model,
            thread_id="t-1",
            checkpointer=live / "c.sqlite3",
            run_log=False,
            retry=rk.RetryPolicy(max_attempts=1),
        )
    (crash / "c.sqlite3-shm").unlink(missing_ok=True)  # rebuilt from the log on open
    assert (crash / "c.sqlite3-wal").stat().st_size > 32
    return crash / "c.sqlite3"


def _resume(path: Path) -> tuple[rk.ReflectionResult, ScriptedLLM]:
    model = ScriptedLLM(["<output>4</output>", verdict(True)] * 2)
    result = rk.reflect(
        QUESTION, model=model.model, thread_id="t-1", checkpointer=path, run_log=False
    )
    return result, model


def test_a_killed_runs_files_resume_without_a_warning(tmp_path: Path) -> None:
    """The control: the copy is a sound checkpoint, and its log passes the checks."""
    path = _killed_after_two_steps(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result, model = _resume(path)
    assert len(model.requests) == 2
    assert [i.draft.output for i in result.iterations] == ["5", "4"]
    assert result.usage.calls == 4


def _garble_wal_header(path: Path) -> None:
    wal = Path(f"{path}-wal")
    data = bytearray(wal.read_bytes())
    data[:32] = bytes(range(32))
    wal.write_bytes(bytes(data))


def _garble_first_frame(path: Path) -> None:
    """Bytes in the first frame's page change: SQLite drops it and every frame after it."""
    wal = Path(f"{path}-wal")
    data = bytearray(wal.read_bytes())
    data[32 + 24 + 100 : 32 + 24 + 116] = b"\xff" * 16
    wal.write_bytes(bytes(data))


def _empty_the_file(path: Path) -> None:
    path.write_bytes(b"")
    Path(f"{path}-wal").unlink()
    old = time.time() - NEW_FILE_SECONDS - 5
    os.utime(path, (old, old))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_garble_wal_header, "write-ahead log .* is damaged \\(its header is not SQLite's\\)"),
        (_garble_first_frame, "a frame fails its checksum and committed frames follow it"),
        (lambda path: path.unlink(), "holds data but the database file is missing"),
        (lambda path: path.write_bytes(b""), "holds data but the database file is empty"),
        (_empty_the_file, "it is empty, and \\d+ s old"),
    ],
    ids=["wal-header", "wal-frame", "wal-without-db", "wal-with-empty-db", "old-empty-file"],
)
def test_a_thread_lost_with_its_data_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any, reason: str
) -> None:
    path = _killed_after_two_steps(tmp_path)
    damage(path)
    caplog.set_level(logging.WARNING, logger="reflectkit.stores.durability")
    with pytest.warns(CheckpointLossWarning, match=f"thread 't-1' has no saved state .*{reason}"):
        result, _ = _resume(path)
    assert [i.draft.output for i in result.iterations] == ["4"]  # started over: the warning's
    assert result.usage.calls == 2  # reason
    logged = [r.getMessage() for r in caplog.records if r.name == "reflectkit.stores.durability"]
    assert any(re.search(f"looks like it lost data.*{reason}", m) for m in logged)
    assert any(re.search(f"thread 't-1' has no saved state.*{reason}", m) for m in logged)


def test_a_torn_last_transaction_is_not_damage(tmp_path: Path) -> None:
    """A crash mid-write leaves the log's last frames bad with no commit after them: SQLite rolls
    that transaction back by design, and the steps before it resume."""
    path = _killed_after_two_steps(tmp_path)
    wal = Path(f"{path}-wal")
    data = bytearray(wal.read_bytes())
    data[-16:] = b"\xff" * 16  # the last frame: the commit of the last step saved
    wal.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result, _ = _resume(path)
    assert result.iterations[0].draft.output == "5"  # resumed
    assert result.output == "4"


def test_a_new_empty_file_and_a_new_thread_are_not_warned_about(tmp_path: Path) -> None:
    """An empty file may be one another process is creating this moment, and a thread in a
    sound file with no state is simply new."""
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result, _ = _resume(path)
        again, _ = _resume(path)
    assert result.output == again.output == "4"


async def test_lost_data_is_told_on_the_checkpointer(tmp_path: Path) -> None:
    path = _killed_after_two_steps(tmp_path)
    _garble_wal_header(path)
    checkpointer = open_checkpointer(path)
    async with checkpointer:
        pass
    assert checkpointer.lost_data is not None
    assert "its header is not SQLite's" in checkpointer.lost_data
    async with checkpointer:  # opened again: SQLite has tidied the log away
        pass
    assert checkpointer.lost_data is None


@pytest.mark.parametrize("pages", ["one", "all"])
def test_a_corrupted_page_is_a_configuration_error_naming_the_file(
    tmp_path: Path, pages: str
) -> None:
    path = tmp_path / "c.sqlite3"
    with pytest.raises(rk.RunError):
        rk.reflect(
            QUESTION,
            model=ScriptedLLM(["<output>5</output>"]).model,
            thread_id="t-1",
            checkpointer=path,
            run_log=False,
        )
    data = bytearray(path.read_bytes())
    page = 4096
    damaged = range(page, len(data), page) if pages == "all" else [len(data) - page]
    for offset in damaged:
        data[offset : offset + page] = bytes(range(256)) * (page // 256)
    path.write_bytes(bytes(data))
    model = ScriptedLLM(["<output>4</output>", verdict(True)])
    with pytest.raises(rk.ConfigurationError) as caught:
        rk.reflect(QUESTION, model=model.model, thread_id="t-1", checkpointer=path, run_log=False)
    message = str(caught.value)
    assert message.startswith(f"checkpoint file {path} is damaged (")
    assert "move it aside" in message
    assert caught.value.__cause__ is None
    assert model.requests == []  # found before anything was paid for


async def test_a_file_with_a_damaged_header_says_to_move_it_aside(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    async with open_checkpointer(path):
        pass
    data = bytearray(path.read_bytes())
    data[:16] = b"not sqlite here!"
    path.write_bytes(bytes(data))
    with pytest.raises(rk.ConfigurationError, match=r"not a database .* move it aside"):
        await open_checkpointer(path).open()
    assert path.read_bytes() == bytes(data)  # refused, never written over
