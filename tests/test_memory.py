"""The lesson store (reflectkit.stores.memory) on real SQLite files."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflectkit.errors import ConfigurationError
from reflectkit.stores import memory
from reflectkit.stores.memory import MAX_LESSON_CHARS, LessonStore, default_path, user_data_dir

CARRY = "When adding multi-digit numbers, carry the one into the next column."
CAPITAL = "Canberra, not Sydney, is the capital city of Australia; check capitals twice."


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LessonStore]:
    with LessonStore(tmp_path / "memory.sqlite3") as opened:
        yield opened


def _migration_rows(path: Path) -> list[tuple[str, float]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT name, applied_at FROM _migrations ORDER BY name").fetchall()
    finally:
        conn.close()


def _without_fts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make m002 meet a SQLite without the module it needs (a real 'no such module' error)."""
    missing = partial(memory._m002_lessons_fts, module="no_such_fts_module")
    monkeypatch.setattr(memory, "MIGRATIONS", [memory.MIGRATIONS[0], ("m002_lessons_fts", missing)])


def test_same_task_lessons_come_newest_first_whatever_their_outcome(store: LessonStore) -> None:
    first = store.add("sum-1", "What is 47 + 38?", "Check the ones column.", "failed")
    second = store.add("sum-1", "What is 47 + 38?", "Carry the one.")
    third = store.add("sum-1", "What is 47 + 38?", "Write the carry above.", "passed")
    store.add("other", "Unrelated", "Unrelated lesson", "passed")

    got = store.relevant("sum-1", "What is 47 + 38?", limit=3)
    assert [lesson.id for lesson in got] == [third.id, second.id, first.id]
    assert second.outcome == "pending"
    assert store.relevant("sum-1", "What is 47 + 38?", limit=1)[0].id == third.id
    assert store.relevant("sum-1", "anything", limit=0) == []


def test_similar_lessons_of_other_tasks_are_found(store: LessonStore) -> None:
    carry = store.add("sum-1", "What is 47 + 38? Add the numbers.", CARRY, "passed")
    capital = store.add("geo-1", "What is the capital of Australia?", CAPITAL, "passed")

    addition = store.relevant("sum-2", "Add these numbers: 586 + 237. Remember to carry.")
    assert [lesson.id for lesson in addition] == [carry.id]
    geography = store.relevant("geo-2", "What is the capital city of Canada?")
    assert [lesson.id for lesson in geography] == [capital.id]
    assert store.relevant("chem-1", "What is the boiling point of water?") == []


def test_helpful_only_keeps_other_tasks_lessons_that_led_to_a_pass(store: LessonStore) -> None:
    pending = store.add("sum-1", "Add 47 and 38", CARRY)
    failed = store.add("sum-2", "Add 19 and 25", "Adding: carry digits carefully.", "failed")
    question = "Add 58 and 67, carrying digits"

    assert store.relevant("sum-3", question) == []
    both = {lesson.id for lesson in store.relevant("sum-3", question, helpful_only=False)}
    assert both == {pending.id, failed.id}

    store.set_outcome(pending.id, "passed")
    assert [lesson.id for lesson in store.relevant("sum-3", question)] == [pending.id]
    # The task's own lessons come whatever their outcome.
    assert [lesson.id for lesson in store.relevant("sum-2", question, limit=1)] == [failed.id]


def test_relevant_fills_up_with_other_tasks_after_the_tasks_own(store: LessonStore) -> None:
    own = store.add("sum-1", "Add 47 and 38", "Line up the digits.")
    other = store.add("sum-2", "Add 19 and 25", CARRY, "passed")
    got = store.relevant("sum-1", "Add 47 and 38", limit=5)
    assert [lesson.id for lesson in got] == [own.id, other.id]


def test_uses_are_counted(store: LessonStore) -> None:
    lesson = store.add("sum-1", "Add 47 and 38", CARRY, "passed")
    assert lesson.uses == 0
    assert store.relevant("sum-1", "Add 47 and 38")[0].uses == 1
    assert store.relevant("sum-2", "Add 12 and 99 carefully")[0].uses == 2
    store.relevant("geo-1", "Capital of Peru?")
    assert store.all()[0].uses == 2


def test_an_old_database_is_upgraded_and_nothing_is_applied_twice(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    assert memory.migrate(conn, memory.MIGRATIONS[:1]) == ["m001_lessons"]
    conn.execute(
        "INSERT INTO lessons (task_key, question, text, outcome, created_at)"
        " VALUES ('sum-1', 'Add 47 and 38', ?, 'passed', 1.0)",
        (CARRY,),
    )
    conn.close()
    assert [name for name, _ in _migration_rows(path)] == ["m001_lessons"]

    with LessonStore(path) as store:
        assert store.full_text_search
        # Lessons written before the index existed are searchable after the upgrade.
        assert [lesson.text for lesson in store.relevant("sum-2", "Add numbers, carry")] == [CARRY]
    rows = _migration_rows(path)
    assert [name for name, _ in rows] == ["m001_lessons", "m002_lessons_fts"]

    with LessonStore(path) as store:
        assert store.count() == 1
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert memory.migrate(conn) == []
    finally:
        conn.close()
    assert _migration_rows(path) == rows


def test_without_fts5_search_falls_back_to_word_overlap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "nofts.sqlite3"
    _without_fts(monkeypatch)
    with (
        caplog.at_level(logging.WARNING, logger="reflectkit.stores.memory"),
        LessonStore(path) as store,
    ):
        assert not store.full_text_search
        carry = store.add("sum-1", "Add 47 and 38", CARRY, "passed")
        store.add("sum-2", "Add 19 and 25", "Adding: 100% of digits_count", "failed")
        store.add("geo-1", "Capital of Australia?", CAPITAL, "passed")
        assert [x.id for x in store.relevant("sum-3", "Add numbers and carry the digits")] == [
            carry.id
        ]
        assert len(store.relevant("sum-3", "digits_count 100%", helpful_only=False)) == 1
        assert store.relevant("sum-3", "Boiling point of water") == []
    assert "no_such_fts_module" in caplog.text
    assert [name for name, _ in _migration_rows(path)] == ["m001_lessons"]

    monkeypatch.undo()  # a SQLite with FTS5 opens the file: the index is built then
    with LessonStore(path) as store:
        assert store.full_text_search
        assert [x.id for x in store.relevant("sum-3", "Add numbers and carry")] == [carry.id]


ODD_TEXT = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec=None, exclude_categories=())),
    st.lists(
        st.sampled_from(
            ['"', "'", "*", "NEAR", "NEAR(", "AND", "OR", "NOT", "(", ")", ":", "^", "-", "+",
             "carry", "question:", "\x00", "%", "_", "\\", "ünïcødé", "数字", "\ud800", "{x}"]
        )
    ).map(" ".join),
)  # fmt: skip


@pytest.mark.parametrize("fts", [True, False], ids=["fts5", "fallback"])
def test_any_question_text_never_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fts: bool
) -> None:
    if not fts:
        _without_fts(monkeypatch)
    with LessonStore(tmp_path / "odd.sqlite3") as store:
        store.add("sum-1", 'What is "47" + 38? NEAR*', CARRY, "passed")
        assert store.full_text_search is fts

        @settings(deadline=None, max_examples=300)
        @given(task_key=ODD_TEXT, question=ODD_TEXT)
        def check(task_key: str, question: str) -> None:
            for lesson in store.relevant(task_key, question, helpful_only=False):
                assert lesson.text == CARRY

        check()


def test_default_path_honours_reflectkit_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "custom" / "lessons.db"
    monkeypatch.setenv("REFLECTKIT_MEMORY", str(target))
    assert default_path() == target
    store = LessonStore()
    assert not target.exists()  # nothing happens before first use
    with store:
        store.add("t", "q", "lesson")
    assert target.exists()


def test_default_path_follows_xdg_and_the_platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REFLECTKIT_MEMORY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert default_path() == tmp_path / "xdg" / "reflectkit" / "memory.sqlite3"
    assert user_data_dir("linux") == tmp_path / "xdg"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    assert user_data_dir("linux") == tmp_path / "home" / ".local" / "share"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert user_data_dir("freebsd14") == tmp_path / "home" / ".local" / "share"
    assert user_data_dir("darwin") == tmp_path / "home" / "Library" / "Application Support"
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert user_data_dir("win32") == tmp_path / "local"
    monkeypatch.delenv("LOCALAPPDATA")
    assert user_data_dir("win32") == tmp_path / "home" / "AppData" / "Local"


# The child pauses between lessons so that the parent's reads fall between its writes.
CHILD = """
import sys, time
from reflectkit.stores.memory import LessonStore
with LessonStore(sys.argv[1]) as store:
    for i in range(int(sys.argv[2])):
        store.add(f"child-{i % 7}", f"Add {i} and {i + 1}", f"Carry the one ({i}).", "passed")
        time.sleep(0.002)
"""


def test_two_processes_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    written = 200
    seen: list[int] = []
    with (
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(written)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as child,
        LessonStore(path) as store,
    ):
        mine = 0
        deadline = time.monotonic() + 60
        while child.poll() is None and time.monotonic() < deadline:
            seen.append(store.count() - mine)  # the child's lessons so far
            store.relevant("parent", "Add 3 and 4, carry", limit=3)  # writes too: uses + 1
            if len(seen) % 20 == 0:
                store.add("parent", "Add 3 and 4", "Parent lesson.")
                mine += 1
            time.sleep(0.001)
        _, errors = child.communicate(timeout=60)
        assert child.returncode == 0, errors
        assert store.count() == written + mine
    assert seen == sorted(seen)
    assert any(0 < n < written for n in seen)  # the parent read while the child wrote
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


def test_two_stores_and_many_threads_in_one_process(tmp_path: Path) -> None:
    path = tmp_path / "threads.sqlite3"
    with LessonStore(path) as one, LessonStore(path) as two:

        def work(n: int) -> None:
            for i in range(25):
                (one if n % 2 else two).add(f"t{n}", f"Add {i}", f"Carry ({n}, {i}).", "passed")
                one.relevant(f"t{n}", f"Add {i}")

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert one.count() == two.count() == 200


def test_an_unusable_path_is_a_one_line_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for path in (blocker / "memory.sqlite3", tmp_path):
        with LessonStore(path) as store, pytest.raises(ConfigurationError) as caught:
            store.count()
        assert str(path) in str(caught.value)
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("CREATE TABLE lessons (x)", "already exists"),  # another program's database
        ("m001; CREATE TABLE lessons_fts (x)", "already exists"),
        ("garbage", "not a database"),
    ],
)
def test_a_foreign_file_is_refused_and_left_alone(tmp_path: Path, setup: str, message: str) -> None:
    path = tmp_path / "foreign.sqlite3"
    if setup == "garbage":
        path.write_bytes(b"this is not SQLite" * 100)
    else:
        conn = sqlite3.connect(path, isolation_level=None)
        if setup.startswith("m001; "):
            memory.migrate(conn, memory.MIGRATIONS[:1])
            setup = setup.removeprefix("m001; ")
        conn.execute(setup)
        conn.close()
    before = path.read_bytes()
    with LessonStore(path) as store, pytest.raises(ConfigurationError, match=message) as caught:
        store.add("t", "q", "lesson")
    assert str(path) in str(caught.value)
    if setup == "garbage":
        assert path.read_bytes() == before
    else:
        rows = [name for name, _ in _migration_rows(path)]
        assert "m002_lessons_fts" not in rows  # the failed migration was rolled back


def test_bad_input_is_refused(store: LessonStore) -> None:
    with pytest.raises(ConfigurationError, match="text"):
        store.add("t", "q", "   ")
    with pytest.raises(ConfigurationError, match="task_key"):
        store.add("", "q", "lesson")
    with pytest.raises(ConfigurationError, match="outcome"):
        store.add("t", "q", "lesson", "maybe")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="no lesson with id 999"):
        store.set_outcome(999, "passed")
    with pytest.raises(ConfigurationError, match="limit"):
        store.relevant("t", "q", limit=-1)
    assert store.count() == 0


def test_long_lessons_are_cut_and_odd_text_is_stored(store: LessonStore) -> None:
    lesson = store.add("t", "q" * 10_000, "x" * 10_000)
    assert len(lesson.text) == len(lesson.question) == MAX_LESSON_CHARS
    odd = store.add("t\ud800", '\x00 NEAR("a" *)', "Lone \udfff surrogate")
    assert store.all() == [lesson, odd]


def test_forget_and_inspection(store: LessonStore) -> None:
    store.add("sum-1", "Add 1 and 2", CARRY, "passed")
    store.add("sum-1", "Add 3 and 4", CARRY, "passed")
    store.add("geo-1", "Capital of Australia?", CAPITAL, "passed")
    assert store.count() == 3
    assert store.forget("sum-1") == 2
    assert store.forget("sum-1") == 0
    assert store.relevant("sum-2", "Add numbers and carry") == []  # the index forgot them too
    assert [lesson.task_key for lesson in store.all()] == ["geo-1"]
    assert store.forget() == 1
    assert store.count() == 0


def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = LessonStore(tmp_path / "closed.sqlite3")
    store.add("t", "q", "lesson")
    store.close()
    store.close()
    with pytest.raises(ConfigurationError, match="closed"):
        store.count()


def test_an_in_memory_store_works() -> None:
    with LessonStore(":memory:") as store:
        store.add("t", "Add 1 and 2", CARRY, "passed")
        assert store.relevant("u", "Add 5 and 6 carry")[0].text == CARRY
