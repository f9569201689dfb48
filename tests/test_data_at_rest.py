"""Files that hold prompts, drafts and lessons are their owner's only, under an ordinary umask.

Checkpoints hold prompts and drafts as they were (unredacted: a resumed run needs them), the
lesson memory holds questions and lessons, the run log holds prompts and answers. Each is
created ``0600`` with its ``-wal`` and ``-shm`` files, in directories reflectkit creates
``0700``, whatever the umask; these tests set the common umask of 022, under which a plain
``sqlite3.connect`` makes a file every local user can read.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import reflectkit as rk
from reflectkit.stores.durability import open_checkpointer
from reflectkit.stores.memory import LessonStore
from reflectkit.stores.runlog import RunLog
from reflectkit.stores.sqlite import connect
from reflectkit.testing import FunctionLLM, Request

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    """The umask most systems give users: new files 0644, new directories 0755."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _modes(directory: Path) -> dict[str, int]:
    """The mode of every file in ``directory``, by name."""
    return {p.name: _mode(p) for p in directory.iterdir() if p.is_file()}


def test_the_umask_would_make_a_plain_sqlite_file_readable_by_all(tmp_path: Path) -> None:
    """The premise: without care, the umask decides, and SQLite's files are world-readable."""
    import sqlite3

    conn = sqlite3.connect(tmp_path / "plain.sqlite3")
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    assert _mode(tmp_path / "plain.sqlite3") == 0o644


def test_a_checkpoint_file_its_side_files_and_its_directories_are_private(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "new" / "checkpoints"
    path = directory / "checkpoints.sqlite3"
    seen: list[dict[str, int]] = []

    def reply(request: Request) -> str:
        seen.append(_modes(directory))  # mid-run: the saver is open, its WAL in use
        return "<output>4</output>"

    result = rk.reflect(
        "2+2",
        model=FunctionLLM(reply).model,
        mode="single",
        thread_id="t-1",
        checkpointer=path,
        run_log=False,
    )
    assert result.output == "4"
    assert seen[0].keys() >= {"checkpoints.sqlite3", "checkpoints.sqlite3-wal"}
    assert set(seen[0].values()) == {0o600}
    assert _mode(path) == 0o600
    assert _mode(directory) == 0o700
    assert _mode(directory.parent) == 0o700  # every directory reflectkit made


def test_the_default_checkpoint_directory_is_created_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("REFLECTKIT_CHECKPOINTS", raising=False)

    async def open_default() -> None:
        async with open_checkpointer(None):
            pass

    asyncio.run(open_default())
    assert _mode(tmp_path / "data") == 0o700
    assert _mode(tmp_path / "data" / "reflectkit") == 0o700
    assert _mode(tmp_path / "data" / "reflectkit" / "checkpoints.sqlite3") == 0o600


def test_the_lesson_memory_and_its_side_files_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "lessons"
    with LessonStore(directory / "memory.sqlite3") as store:
        store.add("task", "What is 2+2?", "Add the units first.")
        modes = _modes(directory)  # open: the WAL and shared memory exist
    assert modes.keys() == {"memory.sqlite3", "memory.sqlite3-wal", "memory.sqlite3-shm"}
    assert set(modes.values()) == {0o600}
    assert _mode(directory) == 0o700


def test_the_run_log_and_its_side_files_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    with RunLog(directory / "runs.sqlite3") as log:
        log.start(messages=[{"role": "user", "content": "2+2"}], config={}, model="m", mode="loop")
        log.flush()
        modes = _modes(directory)
    assert modes.keys() == {"runs.sqlite3", "runs.sqlite3-wal", "runs.sqlite3-shm"}
    assert set(modes.values()) == {0o600}
    assert _mode(directory) == _mode(directory.parent) == 0o700


def test_existing_files_and_directories_keep_their_modes(tmp_path: Path) -> None:
    """A directory or a file the user made is theirs to set: reflectkit neither widens nor
    narrows it (a team may share a checkpoint file through a group on purpose)."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    path = shared / "checkpoints.sqlite3"
    connect(path).close()
    path.chmod(0o640)
    connect(path).close()
    assert _mode(shared) == 0o750
    assert _mode(path) == 0o640
