"""SQLite plumbing shared by reflectkit's stores (the lesson memory and the run log).

* :func:`user_data_dir` is where per-user files go when no path is given.
* :func:`connect` opens a file the way every store needs it: autocommit (transactions are
  explicit, so a store decides what is atomic), usable from any thread (each store serialises
  its use of the connection under its own lock), a busy timeout so that writers in other
  processes are waited for rather than failed, and WAL so that readers never block a writer.
* Files hold prompts, answers and lessons, so :func:`create_private` makes a new one readable
  by its owner only (``0600``, whatever the umask; SQLite gives its ``-wal``, ``-shm`` and
  ``-journal`` files the database's mode) in directories it creates owner-only (``0700``).
  A file or directory that exists keeps the mode it has.
* :func:`migrate` applies named migrations (as in simonw/llm): ``_migrations`` records each name
  once; each runs in its own ``BEGIN IMMEDIATE`` transaction, so two processes opening a new
  file cannot both apply it, and one that fails leaves the file as it was. Foreign keys are
  off while migrations run, as SQLite's procedure for rebuilding a table asks (a ``DROP TABLE``
  with them on would empty the tables that reference it, through ``ON DELETE CASCADE``), and
  checked before each migration commits.
* :class:`SqliteStore` is the life of a store kept in one such file: one connection, opened,
  set up and upgraded on first use, shared by threads under a lock, closed by ``close()`` or at
  the end of a ``with`` block; failures come out as one-line
  :class:`~reflectkit.errors.ConfigurationError` naming the file.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar, Self

from reflectkit.errors import ConfigurationError, ReflectkitError
from reflectkit.redaction import one_line

__all__ = [
    "BUSY_TIMEOUT",
    "DIRECTORY_MODE",
    "FILE_MODE",
    "Migration",
    "SqliteStore",
    "connect",
    "create_private",
    "migrate",
    "user_data_dir",
]

logger = logging.getLogger(__name__)

BUSY_TIMEOUT = 10.0  # seconds a statement waits for another writer's lock
FILE_MODE = 0o600  # a store's file, and so its -wal and -shm files: the owner's only
DIRECTORY_MODE = 0o700  # the directories reflectkit creates for them

Migration = Callable[[sqlite3.Connection], bool]
"""A migration step: changes the schema on the connection it is given and returns True, or
returns False to be rolled back and left unrecorded (tried again on the next open)."""


def user_data_dir(platform: str | None = None) -> Path:
    """The per-user data directory: ``$XDG_DATA_HOME`` (if absolute) or ``~/.local/share`` on
    Linux and other Unixes, ``~/Library/Application Support`` on macOS, ``%LOCALAPPDATA%`` (or
    ``~/AppData/Local``) on Windows. ``platform`` defaults to :data:`sys.platform`."""
    platform = sys.platform if platform is None else platform
    if platform.startswith("win"):
        local = os.environ.get("LOCALAPPDATA")
        return Path(local) if local else Path.home() / "AppData" / "Local"
    if platform == "darwin":
        return Path.home() / "Library" / "Application Support"
    xdg = os.environ.get("XDG_DATA_HOME", "")
    return Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"


def create_private(path: str | os.PathLike[str]) -> None:
    """Create the file ``path`` readable and writable by its owner only (:data:`FILE_MODE`),
    and each missing directory above it accessible to its owner only (:data:`DIRECTORY_MODE`),
    whatever the umask. A file or directory that exists is left as it is. Raises ``OSError``."""
    target = Path(os.path.expanduser(os.fspath(path)))
    missing = [d for d in (target.parent, *target.parent.parents) if not d.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            os.mkdir(directory, DIRECTORY_MODE)  # the umask can only take bits away
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)  # an empty file is an empty SQLite database: SQLite takes it from here


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. The switch needs an exclusive lock, and SQLite answers "locked" at once
    (without the busy timeout) when connections race to switch a new file; so retry here."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open (creating it and its directory if need be) the SQLite file at ``path``, or a
    throw-away database for ``":memory:"``: autocommit (``isolation_level=None``), shareable
    between threads (``check_same_thread=False``; callers serialise use), waiting up to
    :data:`BUSY_TIMEOUT` seconds for other writers, in WAL mode. A new file, and the directories
    made for it, are its owner's only (:func:`create_private`). Raises ``sqlite3.Error`` or
    ``OSError``; a file that is not a database is refused before anything is written to it."""
    name = os.fspath(path)
    in_memory = name == ":memory:"
    if not in_memory:
        name = os.path.expanduser(name)
        create_private(name)
    conn = sqlite3.connect(
        name, timeout=BUSY_TIMEOUT, check_same_thread=False, isolation_level=None
    )
    try:
        if not in_memory:
            _use_wal(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: sqlite3.Connection, migrations: Sequence[tuple[str, Migration]]) -> list[str]:
    """Apply the ``migrations`` not yet recorded in ``_migrations``, in order, each in its own
    transaction; returns the names applied. ``conn`` must be in autocommit mode
    (``isolation_level=None``). One returning False is rolled back, unrecorded. Foreign keys are
    not enforced while they run (a migration may rebuild a table), and restored afterwards."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
    pending = [(name, function) for name, function in migrations if name not in done]
    if not pending:
        return []
    enforced = conn.execute("PRAGMA foreign_keys").fetchone()[0]
    conn.execute("PRAGMA foreign_keys = OFF")  # a no-op inside a transaction: so before them
    try:
        applied = [name for name, function in pending if _apply(conn, name, function)]
    finally:
        if enforced:
            conn.execute("PRAGMA foreign_keys = ON")
    if applied:
        logger.debug("applied migrations %s", applied)
    return applied


def _apply(conn: sqlite3.Connection, name: str, function: Migration) -> bool:
    """Apply one migration in its own transaction, unless another connection has meanwhile;
    it commits only if it returns True and leaves every foreign key satisfied."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        seen = conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone()
        if seen is not None or not function(conn):
            conn.execute("ROLLBACK")
            return False
        if conn.execute("PRAGMA foreign_key_check").fetchone() is not None:
            raise sqlite3.IntegrityError(f"migration {name} would break a foreign key")
        conn.execute(
            "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, time.time())
        )
        conn.execute("COMMIT")
        return True
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class SqliteStore(abc.ABC):
    """A store kept in the SQLite file ``path`` (``":memory:"`` for a throw-away one): one
    connection, opened by :func:`connect` and made ready by :meth:`_prepare` on first use,
    shared by threads under a lock; ``close()`` it, or use the store as a context manager.

    A store names itself in messages (``_noun``), and says which errors its sessions turn
    into a :class:`~reflectkit.errors.ConfigurationError` (``_errors``) and how they read
    (:meth:`_detail`)."""

    _noun: ClassVar[str]
    """What messages call the store: "run log", "lesson store"."""
    _errors: ClassVar[tuple[type[BaseException], ...]] = (sqlite3.Error, OSError)
    """The errors of a session that come out as a ConfigurationError naming the file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; the store cannot be used afterwards."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @abc.abstractmethod
    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Make a connection just opened ready for use (pragmas, migrations); if this raises,
        the connection is closed and the error goes on."""

    def _open(self) -> sqlite3.Connection:
        """The connection, opened and prepared on first use; refused once the store is closed."""
        if self._closed:
            raise ConfigurationError(f"{self._noun} {self.path} is closed")
        if self._conn is None:
            conn = connect(self.path)  # a new file is created owner-only
            try:
                self._prepare(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _detail(self, error: BaseException) -> str:
        """``error`` as the one line a session's ConfigurationError ends with."""
        return one_line(error)

    @contextlib.contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        """The open connection, under the lock; ``_errors`` come out as a one-line
        :class:`~reflectkit.errors.ConfigurationError` naming the file."""
        with self._lock:
            try:
                yield self._open()
            except ReflectkitError:
                raise
            except self._errors as exc:
                raise ConfigurationError(f"{self._noun} {self.path}: {self._detail(exc)}") from exc
