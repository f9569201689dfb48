"""Episodic memory for Reflexion: lessons learnt from failed attempts, kept in SQLite.

Reflexion (Shinn et al., 2023) has the model write a short self-reflection after a failed attempt
("I forgot to carry the one") and shows it on the next attempt. :class:`LessonStore` keeps these
lessons in SQLite so they outlive the process: a later trial of the same task sees all of them
(newest first, pending ones included), and a *different* task sees the lessons of similar
questions that led to a pass, ranked by FTS5 bm25 over question and lesson text.

* Named migrations (as in simonw/llm): ``_migrations`` records each name once; each runs in its
  own ``BEGIN IMMEDIATE`` transaction, so two processes opening a new file cannot both apply it.
* Without FTS5, ``m002_lessons_fts`` logs a warning and stays unrecorded (a later SQLite with FTS5
  applies it and indexes existing lessons); search meanwhile falls back to LIKE filtering ranked
  by word overlap. :attr:`LessonStore.full_text_search` tells which is in use.
* One connection per store, opened on first use, shared by threads under a lock; files use WAL
  and a busy timeout, so several stores and processes can share one file.
* Values are always bound parameters, and the search query is the question's words, each quoted,
  so quotes, ``NEAR``, ``*`` or an empty question cannot break it.
* Questions and lesson texts are cut to :data:`MAX_LESSON_CHARS`: a lesson is a few sentences,
  and the store should not grow with pasted transcripts.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast, get_args

from reflectkit.errors import ConfigurationError
from reflectkit.stores import sqlite as _sqlite
from reflectkit.stores.sqlite import BUSY_TIMEOUT as BUSY_TIMEOUT  # re-exported: it lived here
from reflectkit.stores.sqlite import Migration, user_data_dir

__all__ = ["MAX_LESSON_CHARS", "Lesson", "LessonStore", "Outcome", "default_path", "user_data_dir"]

logger = logging.getLogger(__name__)

Outcome = Literal["pending", "passed", "failed"]
MAX_LESSON_CHARS = 4000
_MAX_QUERY_WORDS = 32
_COLUMNS = ("id", "task_key", "question", "text", "outcome", "created_at", "uses")
_SELECT = "SELECT " + ", ".join(f"l.{c}" for c in _COLUMNS) + " FROM lessons AS l"
_WORD = re.compile(r"\w+")
# Function words match nearly every lesson; dropping them keeps unrelated tasks apart.
_STOPWORD_TEXT = (
    "a about after all also an and any are as at be been before but by can could did do does "
    "each for from had has have how i if in into is it its just may me more most my no not of on "
    "one or our should so some such than that the their them then there these they this those to "
    "up use used using was we were what when where which while who why will with would you your"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True)
class Lesson:
    """One stored self-reflection and how it fared."""

    id: int
    """The row id, for ``LessonStore.set_outcome``."""
    task_key: str
    """The task the lesson belongs to."""
    question: str
    """The question it was learned on."""
    text: str
    """The lesson."""
    outcome: Outcome
    """``"pending"`` until a run that was shown it ends, then ``"passed"`` or ``"failed"``."""
    created_at: float
    """When it was written, in seconds since the epoch (``time.time()``)."""
    uses: int
    """How many runs were shown it."""


def default_path() -> Path:
    """``$REFLECTKIT_MEMORY`` if set, else ``<user data dir>/reflectkit/memory.sqlite3``."""
    override = os.environ.get("REFLECTKIT_MEMORY")
    if override:
        return Path(override).expanduser()
    return user_data_dir() / "reflectkit" / "memory.sqlite3"


def _m001_lessons(conn: sqlite3.Connection) -> bool:
    conn.execute(
        "CREATE TABLE lessons (id INTEGER PRIMARY KEY AUTOINCREMENT, task_key TEXT NOT NULL,"
        " question TEXT NOT NULL, text TEXT NOT NULL, outcome TEXT NOT NULL DEFAULT 'pending'"
        " CHECK (outcome IN ('pending', 'passed', 'failed')), created_at REAL NOT NULL,"
        " uses INTEGER NOT NULL DEFAULT 0)"
    )
    conn.execute("CREATE INDEX lessons_task_key ON lessons (task_key, created_at)")
    return True


def _m002_lessons_fts(conn: sqlite3.Connection, module: str = "fts5") -> bool:
    """Full-text index over question and text, content-linked to ``lessons`` and kept in sync by
    triggers. Returns False (not applied) when SQLite has no such ``module``."""
    try:
        conn.execute(
            f"CREATE VIRTUAL TABLE lessons_fts USING {module}(question, text,"
            " content='lessons', content_rowid='id', tokenize='porter unicode61')"
        )
    except sqlite3.OperationalError as exc:
        if "no such module" not in str(exc):
            raise
        logger.warning("SQLite has no %s; lesson search falls back to word overlap", module)
        return False
    conn.execute(
        "CREATE TRIGGER lessons_fts_insert AFTER INSERT ON lessons BEGIN"
        " INSERT INTO lessons_fts (rowid, question, text)"
        " VALUES (new.id, new.question, new.text); END"
    )
    delete = (
        " INSERT INTO lessons_fts (lessons_fts, rowid, question, text)"
        " VALUES ('delete', old.id, old.question, old.text);"
    )
    conn.execute(f"CREATE TRIGGER lessons_fts_delete AFTER DELETE ON lessons BEGIN{delete} END")
    conn.execute(
        "CREATE TRIGGER lessons_fts_update AFTER UPDATE OF question, text ON lessons BEGIN"
        f"{delete} INSERT INTO lessons_fts (rowid, question, text)"
        " VALUES (new.id, new.question, new.text); END"
    )
    conn.execute("INSERT INTO lessons_fts (lessons_fts) VALUES ('rebuild')")
    return True


MIGRATIONS: list[tuple[str, Migration]] = [
    ("m001_lessons", _m001_lessons),
    ("m002_lessons_fts", _m002_lessons_fts),
]


def migrate(
    conn: sqlite3.Connection, migrations: Sequence[tuple[str, Migration]] | None = None
) -> list[str]:
    """Apply the ``migrations`` (default :data:`MIGRATIONS`) not yet recorded in ``_migrations``;
    see :func:`reflectkit.stores.sqlite.migrate`. Returns the names applied."""
    return _sqlite.migrate(conn, MIGRATIONS if migrations is None else migrations)


def _clean(text: str, limit: int | None = None) -> str:
    """``text`` safe to bind (lone surrogates replaced), stripped and cut to ``limit`` chars."""
    text = text.encode("utf-8", "replace").decode("utf-8").strip()
    if limit is not None and len(text) > limit:
        logger.info("lesson text cut from %d to %d characters", len(text), limit)
        text = text[:limit]
    return text


def _words(text: str, most: int | None = _MAX_QUERY_WORDS) -> list[str]:
    """The distinct non-stopword words of ``text``, lower-cased, in order, at most ``most``."""
    words = dict.fromkeys(w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS)
    return list(words)[:most]


def _check_outcome(outcome: str) -> Outcome:
    if outcome not in get_args(Outcome):
        raise ConfigurationError(f"outcome must be pending, passed or failed, not {outcome!r}")
    return cast("Outcome", outcome)


class LessonStore(_sqlite.SqliteStore):
    """Reflexion's episodic memory: lessons in a SQLite file (``path``; default
    ``$REFLECTKIT_MEMORY``, else ``<user data dir>/reflectkit/memory.sqlite3``; ``":memory:"``
    for a throw-away store). The file is created (owner-only: lessons quote questions), upgraded
    and opened on first use; ``close()`` it, or use the store as a context manager. SQLite
    failures raise :class:`ConfigurationError`. Pass it as ``memory=`` (see docs/reflexion.md)."""

    _noun = "lesson store"

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(os.fspath(default_path() if path is None else path))
        self._fts = False

    def _prepare(self, conn: sqlite3.Connection) -> None:
        migrate(conn)
        found = "SELECT 1 FROM sqlite_master WHERE name = 'lessons_fts'"
        self._fts = conn.execute(found).fetchone() is not None

    def _detail(self, error: BaseException) -> str:
        return " ".join(str(error).split()) or type(error).__name__  # as it was: not redacted

    @property
    def full_text_search(self) -> bool:
        """True when the FTS5 index is in use, False when search falls back to word overlap."""
        with self._session():
            return self._fts

    def add(self, task_key: str, question: str, text: str, outcome: Outcome = "pending") -> Lesson:
        """Store a lesson for ``task_key``; ``text`` over :data:`MAX_LESSON_CHARS` is cut."""
        task_key, question = _clean(task_key), _clean(question, MAX_LESSON_CHARS)
        text = _clean(text, MAX_LESSON_CHARS)
        if not task_key:
            raise ConfigurationError("a lesson needs a non-empty task_key")
        if not text:
            raise ConfigurationError("a lesson needs non-empty text")
        outcome = _check_outcome(outcome)
        created = time.time()
        with self._session() as conn:
            cursor = conn.execute(
                "INSERT INTO lessons (task_key, question, text, outcome, created_at, uses)"
                " VALUES (?, ?, ?, ?, ?, 0)",
                (task_key, question, text, outcome, created),
            )
        assert cursor.lastrowid is not None
        return Lesson(cursor.lastrowid, task_key, question, text, outcome, created, 0)

    def set_outcome(self, lesson_id: int, outcome: Outcome) -> None:
        """Record whether the attempt that used lesson ``lesson_id`` passed."""
        outcome = _check_outcome(outcome)
        with self._session() as conn:
            cursor = conn.execute(
                "UPDATE lessons SET outcome = ? WHERE id = ?", (outcome, lesson_id)
            )
        if cursor.rowcount == 0:
            raise ConfigurationError(f"no lesson with id {lesson_id} in {self.path}")

    def relevant(
        self, task_key: str, question: str, *, limit: int = 3, helpful_only: bool = True
    ) -> list[Lesson]:
        """Up to ``limit`` lessons for an attempt at ``question``: first this ``task_key``'s, newest
        first and whatever their outcome; then other tasks' lessons most similar to ``question``
        (only those whose attempt passed when ``helpful_only``). Counts a use of each."""
        if limit < 0:
            raise ConfigurationError(f"limit must be >= 0, not {limit}")
        task_key = _clean(task_key)
        words = _words(_clean(question))
        with self._session() as conn:
            rows = conn.execute(
                f"{_SELECT} WHERE l.task_key = ? ORDER BY l.created_at DESC, l.id DESC LIMIT ?",
                (task_key, limit),
            ).fetchall()
            if len(rows) < limit and words:
                rows += self._similar(conn, task_key, words, limit - len(rows), helpful_only)
            lessons = [Lesson(*row) for row in rows]
            if lessons:
                marks = ", ".join("?" * len(lessons))
                conn.execute(
                    f"UPDATE lessons SET uses = uses + 1 WHERE id IN ({marks})",
                    [lesson.id for lesson in lessons],
                )
        return [replace(lesson, uses=lesson.uses + 1) for lesson in lessons]

    def _similar(
        self, conn: sqlite3.Connection, task_key: str, words: list[str], limit: int, helpful: bool
    ) -> list[Any]:
        """Rows of other tasks' lessons ranked by similarity to ``words``."""
        outcome = " AND l.outcome = 'passed'" if helpful else ""
        if self._fts:
            # Each word quoted: FTS5 syntax in the user's text (", *, NEAR, AND) stays literal.
            match = " OR ".join(f'"{word}"' for word in words)
            try:
                return conn.execute(
                    f"{_SELECT} JOIN lessons_fts ON lessons_fts.rowid = l.id"
                    f" WHERE lessons_fts MATCH ? AND l.task_key != ?{outcome}"
                    " ORDER BY bm25(lessons_fts), l.id DESC LIMIT ?",
                    (match, task_key, limit),
                ).fetchall()
            except sqlite3.OperationalError as exc:
                logger.debug("FTS query %r failed (%s); using word overlap", match, exc)
        # Fallback: LIKE (on at most 8 words) narrows the candidates; shared words rank them.
        few = [w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for w in words[:8]]
        like = " OR ".join(["l.question || ' ' || l.text LIKE ? ESCAPE '\\'"] * len(few))
        candidates = conn.execute(
            f"{_SELECT} WHERE l.task_key != ?{outcome} AND ({like})"
            " ORDER BY l.created_at DESC LIMIT 1000",
            [task_key, *(f"%{w}%" for w in few)],
        ).fetchall()
        wanted = set(words)
        scored = [(len(wanted.intersection(_words(f"{r[2]} {r[3]}", None))), r) for r in candidates]
        return [row for score, row in sorted(scored, key=lambda s: -s[0]) if score][:limit]

    def forget(self, task_key: str | None = None) -> int:
        """Delete the lessons of ``task_key`` (all lessons when None); returns how many."""
        with self._session() as conn:
            if task_key is None:
                cursor = conn.execute("DELETE FROM lessons")
            else:
                cursor = conn.execute("DELETE FROM lessons WHERE task_key = ?", (_clean(task_key),))
        return cursor.rowcount

    def count(self) -> int:
        """How many lessons are stored."""
        with self._session() as conn:
            (number,) = conn.execute("SELECT count(*) FROM lessons").fetchone()
        return int(number)

    def all(self) -> list[Lesson]:
        """Every lesson, oldest first (for inspection)."""
        with self._session() as conn:
            rows = conn.execute(f"{_SELECT} ORDER BY l.id").fetchall()
        return [Lesson(*row) for row in rows]
