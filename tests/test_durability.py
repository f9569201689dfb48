"""Checkpointers (reflectkit/durability.py) against real SQLite files and a real PostgreSQL.

The graph is built with ``build_graph(..., checkpointer=saver)`` and run with a ``thread_id``;
each check then reopens the store through a new :class:`Checkpointer`, as a new process would.
LangGraph reports types its serializer does not trust through a log warning and a serde event,
not a Python warning, so ``filterwarnings = error`` would not see them: the ``serde`` fixture
does.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import uuid
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
from reflectkit.critics.verdict import Verdict
from reflectkit.durability import (
    ENV_VAR,
    POSTGRES_INSTALL,
    default_path,
    open_checkpointer,
    serializer,
)
from reflectkit.result import Draft, Iteration, ReflectionResult, StopReason
from reflectkit.tags import ParseStatus
from reflectkit.testing import ScriptedLLM
from reflectkit.usage import Usage
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
