"""The run log: every run, its steps and its result, kept in SQLite to look at later.

A run that went wrong yesterday is hard to explain from memory; the log keeps what each run was
asked, how it was configured, every step (drafts, verdicts, usage) and how it ended, so that
``reflectkit runs list`` / ``runs show`` can answer "what happened?" after the fact.

* Where: ``$REFLECTKIT_RUN_LOG`` when it names a file, else ``<user data dir>/reflectkit/
  runs.sqlite3``; ``REFLECTKIT_RUN_LOG=off`` (or ``0``, ``false``, ``no``) switches logging off.
  :func:`open_run_log` turns a setting (None, a bool, a path or a :class:`RunLog`) into a log.
* Secrets: everything written goes through :func:`scrub` first (:mod:`.run_scrub`: strings
  redacted, values under secret-like names replaced). A secret never reaches the file, so it
  cannot linger in the WAL either.
* Privacy: the file holds prompts and answers, so it is created readable by its owner only
  (SQLite gives the ``-wal`` and ``-shm`` files the same mode), and deleting runs overwrites
  their bytes (``secure_delete``) and checkpoints the WAL, so deleted text leaves the disk.
  Reading a log that does not exist yet finds no runs and creates nothing.
* Cost: a run is one insert, one insert per step and one update, each its own short
  transaction; the file uses WAL with ``synchronous=NORMAL`` (no fsync per commit). Recording
  methods only queue the write for the writer thread (:mod:`.run_writer`), so a run never waits
  for the disk or for another process's lock (about 0.1 ms of CPU per step and 0.6 ms per
  finished run, measured here); reading, ``close()`` and interpreter exit wait for the queue to
  drain. A process killed (``SIGKILL``) or losing power may lose records queued or not synced.
* Failures to *record* (disk full, file locked for too long, a foreign file) are logged as a
  warning and never raised: a run must not fail because its log could not be written. Reading
  and deleting raise :class:`~reflectkit.errors.ConfigurationError` with a one-line message.
* A run ends once: the first ``finish`` or ``fail`` recorded stands, later ones are ignored
  (a consumer that stops reading a stream after its result must not turn a finished run into
  a failed one).
* A run whose process died before recording its end is ``interrupted``: each run records the
  process that owns it (:mod:`.run_owner`), and reading shows the runs still ``running`` whose
  owner on this host is gone as ``interrupted``, the reason in ``error_message`` (see
  :mod:`.run_interrupted`).
* Run ids are ULIDs in lower case (26 characters: milliseconds since 1970, then randomness), so
  they sort by start time; ``get`` and ``delete`` take any unique prefix of at least
  :data:`MIN_PREFIX` characters, case-insensitively, like git (:mod:`.run_ids`).

The log's tables are in :mod:`.run_schema`, the writes that record a run in :mod:`.run_writes`,
what reading gives in :mod:`.run_records`; this module is the store, and the home of their names.
"""

from __future__ import annotations

import builtins
import functools
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from reflectkit.errors import ConfigurationError
from reflectkit.redaction import one_line, snapshot
from reflectkit.stores import run_owner, run_records, run_writer, run_writes
from reflectkit.stores import sqlite as _sqlite
from reflectkit.stores.run_ids import MIN_PREFIX, common_prefix, lookup_key, new_run_id
from reflectkit.stores.run_interrupted import Gone, gone_runs, interrupt, shown, with_status
from reflectkit.stores.run_records import RunRecord, RunStep, RunSummary
from reflectkit.stores.run_schema import MIGRATIONS
from reflectkit.stores.run_scrub import scrub

if TYPE_CHECKING:
    from reflectkit.events import StepEvent
    from reflectkit.result import ReflectionResult

__all__ = [
    "ENV_VAR",
    "MIGRATIONS",
    "MIN_PREFIX",
    "STATUSES",
    "RunLog",
    "RunRecord",
    "RunStep",
    "RunSummary",
    "default_path",
    "new_run_id",
    "open_run_log",
    "scrub",
]

logger = logging.getLogger(__name__)

ENV_VAR = "REFLECTKIT_RUN_LOG"
"""Where the default run log is: a file path, or ``off`` (``0``, ``false``, ``no``) for none."""
STATUSES = ("running", "finished", "failed", "interrupted", "waiting")
_AWAITING_HUMAN = "awaiting_human"  # StopReason.AWAITING_HUMAN; result.py is not imported here
_OFF = frozenset({"off", "0", "false", "no"})
_ON = frozenset({"on", "1", "true", "yes"})
_BATCH = 200


def default_path() -> Path | None:
    """The log file the environment asks for: ``$REFLECTKIT_RUN_LOG`` when it names a file,
    None when it says ``off``/``0``/``false``/``no``, else ``<user data dir>/reflectkit/
    runs.sqlite3`` (also for ``on``/``1``/``true``/``yes``)."""
    value = os.environ.get(ENV_VAR, "").strip()
    if value.lower() in _OFF:
        return None
    if value and value.lower() not in _ON:
        return Path(value).expanduser()
    return _sqlite.user_data_dir() / "reflectkit" / "runs.sqlite3"


def open_run_log(setting: RunLog | str | os.PathLike[str] | bool | None = None) -> RunLog | None:
    """The run log a setting asks for, or None for none: ``None`` follows the environment (see
    :func:`default_path`), ``False`` is off, ``True`` is on even when the environment says off
    (at ``$REFLECTKIT_RUN_LOG`` if that names a file), a path is that file, a RunLog is itself.
    A log this opens belongs to the caller, who closes it; nothing touches the disk until the
    first record."""
    if isinstance(setting, RunLog):
        return setting
    if setting is None or setting is True:
        path = default_path()
        if path is None and setting is True:
            path = _sqlite.user_data_dir() / "reflectkit" / "runs.sqlite3"
        return None if path is None else RunLog(path)
    if setting is False:
        return None
    if isinstance(setting, (str, os.PathLike)) and os.fspath(setting).strip():
        return RunLog(setting)
    raise ConfigurationError(f"run_log must be None, a bool, a path or a RunLog, not {setting!r}")


class RunLog(_sqlite.SqliteStore):
    """Runs recorded in a SQLite file (``path``; default: see :func:`default_path`;
    ``":memory:"`` for a throw-away log). The file is created (owner-only), upgraded and opened
    on first record, and shared by threads under a lock and by processes through WAL; reading a
    file that does not exist finds no runs. ``close()`` it, or use the log as a context
    manager."""

    _noun = "run log"
    _errors = (sqlite3.Error, OSError, ValueError)

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        where = default_path() if path is None else path
        if where is None:
            raise ConfigurationError(f"the run log is off (${ENV_VAR}); give a path")
        name = os.fspath(where)
        if not name.strip():
            raise ConfigurationError("the run log path is empty")
        super().__init__(name if name == ":memory:" else os.path.expanduser(name))
        self._warned = False
        run_owner.current()  # read now (a few /proc files), not on an event loop at a run's start

    def __repr__(self) -> str:
        return f"RunLog({self.path!r})"

    def flush(self) -> None:
        """Wait until every record queued so far is written (or has failed and been logged)."""
        run_writer.flush()

    def close(self) -> None:
        """Write what is queued and close the connection; the log cannot be used afterwards."""
        run_writer.flush()
        super().close()

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA secure_delete = ON")
        _sqlite.migrate(conn, MIGRATIONS)

    def _absent(self) -> bool:
        """True when the file does not exist (and was never opened): reading finds no runs
        there, and creates nothing."""
        run_writer.flush()  # a queued first record may be about to create it
        return (
            not self._closed
            and self._conn is None
            and self.path != ":memory:"
            and not os.path.exists(self.path)
        )

    @contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        """The open connection, under the lock, once queued records are written; SQLite, file
        and JSON errors come out as one-line :class:`ConfigurationError` naming the file."""
        self.flush()
        with super()._session() as conn:
            yield conn

    def _record(self, what: str, write: Callable[[sqlite3.Connection], None]) -> None:
        """Queue one write of a recording method for the writer thread."""
        if self._closed:
            self._write_now(what, write)  # fails at once, and says so in the log
            return
        run_writer.submit(functools.partial(self._write_now, what, write))

    def _write_now(self, what: str, write: Callable[[sqlite3.Connection], None]) -> None:
        """One write. Any failure, even in preparing the data, is logged (a warning the first
        time, then at debug level) and swallowed: see the module docstring."""
        try:
            with self._session() as conn, snapshot():  # the environment read once per write
                write(conn)
        except Exception as exc:
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            logger.log(level, "could not record %s in %s: %s", what, self.path, one_line(exc))

    def start(
        self,
        *,
        messages: Sequence[Any],
        config: Mapping[str, Any],
        model: str,
        mode: str,
        thread_id: str | None = None,
    ) -> str:
        """Record a run that starts now ("running"), owned by this process; returns its new id
        (also when the start could not be recorded, so the caller's bookkeeping stays simple)."""
        run_id = new_run_id()
        owner = run_owner.current()  # the caller's process, taken now rather than in the writer
        write = run_writes.start(run_id, owner, model, mode, thread_id, messages, config)
        self._record(f"the start of run {run_id}", write)
        return run_id

    def step(
        self,
        run_id: str,
        *,
        node: str,
        iteration: int,
        data: Mapping[str, Any],
        usage: Mapping[str, Any] | None = None,
        seconds: float | None = None,
    ) -> None:
        """Append a step to run ``run_id``; steps are numbered 1, 2, ... in recording order
        (the number is taken in the same statement as the insert, so concurrent writers to one
        run cannot take the same one)."""
        self._record(
            f"a step of run {run_id}",
            run_writes.step(
                run_id, node=node, iteration=iteration, data=data, usage=usage, seconds=seconds
            ),
        )

    def step_event(self, run_id: str, event: StepEvent, *, seconds: float | None = None) -> None:
        """Record a :class:`~reflectkit.StepEvent` as a step: its draft, verdict and stop reason
        as the data (those that are set), its usage as the usage."""
        data = {"draft": event.draft, "verdict": event.verdict, "stop_reason": event.stop_reason}
        usage = None if event.usage is None else event.usage.model_dump()
        found = {key: value for key, value in data.items() if value is not None}
        self.step(
            run_id,
            node=event.node,
            iteration=event.iteration,
            data=found,
            usage=usage,
            seconds=seconds,
        )

    def finish(self, run_id: str, result: ReflectionResult) -> None:
        """Record that run ``run_id`` finished with ``result`` (unless it already ended): as
        ``waiting`` when the result waits for a person's verdict (stop reason
        ``awaiting_human``; resuming its thread is recorded as a new run), else ``finished``."""
        status = "waiting" if result.stop_reason.value == _AWAITING_HUMAN else "finished"
        self._record(f"the end of run {run_id}", run_writes.end(run_id, status, result, ("", "")))

    def fail(
        self, run_id: str, error: BaseException, partial: ReflectionResult | None = None
    ) -> None:
        """Record that run ``run_id`` failed with ``error`` (unless it already ended), keeping
        ``partial`` (the work done before the failure, e.g. ``RunError.partial``) when there is
        one."""
        message = str(error).strip() or type(error).__name__
        end = run_writes.end(run_id, "failed", partial, (type(error).__name__, message))
        self._record(f"the end of run {run_id}", end)

    def _no_run(self, run_id: str) -> ConfigurationError:
        return ConfigurationError(f"no run {run_id.strip()!r} in {self.path}")

    def _resolve(self, conn: sqlite3.Connection, run_id: str) -> str:
        key = lookup_key(run_id)
        rows = conn.execute(
            "SELECT id FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT 2", (key, key + "\x7f")
        ).fetchall()
        if not rows:
            raise self._no_run(run_id)
        if len(rows) > 1:
            raise ConfigurationError(f"run id {key!r} is ambiguous: give more characters")
        return str(rows[0][0])

    @contextmanager
    def _reading(self) -> Iterator[tuple[sqlite3.Connection, dict[str, Gone]]]:
        """A session for reading, with the runs found interrupted in it; their rows' rewrite is
        queued for the writer thread once it ends (so reading never waits for a lock)."""
        with self._session() as conn:
            gone = gone_runs(conn)
            yield conn, gone
        for run_id, found in gone.items():
            self._record(f"the interruption of run {run_id}", interrupt(run_id, found))

    def _records(
        self, conn: sqlite3.Connection, gone: Mapping[str, Gone], where: str, params: Sequence[Any]
    ) -> Iterator[RunRecord]:
        return (shown(record, gone) for record in run_records.read_records(conn, where, params))

    def get(self, run_id: str) -> RunRecord:
        """Everything recorded about the run whose id is (or uniquely starts with) ``run_id``.
        Raises :class:`ConfigurationError` for a prefix that is too short, ambiguous or
        unknown."""
        lookup_key(run_id)
        if self._absent():
            raise self._no_run(run_id)
        with self._reading() as (conn, gone):
            full = self._resolve(conn, run_id)
            for record in self._records(conn, gone, "WHERE id = ?", (full,)):
                return record
        raise self._no_run(run_id)  # another process deleted it in between

    def short_ids(self, ids: Iterable[str], minimum: int = 10) -> dict[str, str]:
        """The shortest prefix of each of ``ids`` (at least ``minimum`` characters, and never
        less than :data:`MIN_PREFIX`) that names no other run in the log, as git abbreviates
        hashes: for showing ids that :meth:`get` and :meth:`delete` will take back."""
        minimum = max(minimum, MIN_PREFIX)
        wanted = builtins.list(ids)
        if self._absent():
            return {run_id: run_id[:minimum] for run_id in wanted}
        prefixes: dict[str, str] = {}
        with self._session() as conn:
            for run_id in wanted:
                length = minimum
                for sql in (
                    "SELECT max(id) FROM runs WHERE id < ?",
                    "SELECT min(id) FROM runs WHERE id > ?",
                ):
                    other = conn.execute(sql, (run_id,)).fetchone()[0]
                    if other is not None:
                        length = max(length, common_prefix(run_id, other) + 1)
                prefixes[run_id] = run_id[:length]
        return prefixes

    def count(self, status: str | None = None) -> int:
        """How many runs are recorded (with ``status``, if given)."""
        _check_status(status)
        if self._absent():
            return 0
        with self._reading() as (conn, gone):
            where, params = with_status(status, gone)
            row = conn.execute(f"SELECT count(*) FROM runs WHERE {where}", params).fetchone()
        return int(row[0])

    def export(self, file: str | os.PathLike[str] | IO[str], *, status: str | None = None) -> int:
        """Write runs (those with ``status``, or all), oldest first, as JSON lines to ``file``
        (a path, replaced, or a text stream): one :class:`RunRecord` dict per line. Returns
        how many. The log is checked before a path is opened, so an unreadable log leaves the
        file as it was."""
        _check_status(status)
        gone: dict[str, Gone] = {}
        if not self._absent():
            with self._reading() as (_, gone):
                pass
        if not isinstance(file, (str, os.PathLike)):
            return self._export(file, status, gone)
        try:
            with open(file, "w", encoding="utf-8") as stream:
                return self._export(stream, status, gone)
        except OSError as exc:
            raise ConfigurationError(f"cannot write {os.fspath(file)}: {one_line(exc)}") from exc

    def _export(self, stream: IO[str], status: str | None, gone: Mapping[str, Gone]) -> int:
        if self._absent():
            return 0
        where, params = with_status(status, gone)
        after, count = "", 0
        while True:  # in batches, so other threads can write in between
            with self._session() as conn:
                batch = builtins.list(
                    self._records(
                        conn,
                        gone,
                        f"WHERE id > ? AND {where} ORDER BY id LIMIT ?",
                        (after, *params, _BATCH),
                    )
                )
            with snapshot():  # scrubbed again: rows an older version wrote may hold secrets
                lines = [json.dumps(scrub(r.to_dict()), ensure_ascii=False) for r in batch]
            stream.writelines(line + "\n" for line in lines)
            count += len(batch)
            if len(batch) < _BATCH:
                return count
            after = batch[-1].id

    def delete(self, run_id: str | None = None) -> int:
        """Delete the run ``run_id`` (a unique prefix will do) with its steps, or every run when
        None; returns how many runs were deleted. Their bytes are overwritten and the WAL is
        checkpointed, so the deleted text does not linger on disk."""
        if run_id is not None:
            lookup_key(run_id)
        if self._absent():
            if run_id is None:
                return 0
            raise self._no_run(run_id)
        with self._session() as conn:
            if run_id is None:
                deleted = conn.execute("DELETE FROM runs").rowcount
            else:
                full = self._resolve(conn, run_id)
                deleted = conn.execute("DELETE FROM runs WHERE id = ?", (full,)).rowcount
            if deleted and self.path != ":memory:":
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return deleted

    def list(self, limit: int | None = 20, status: str | None = None) -> builtins.list[RunSummary]:
        """The newest ``limit`` runs (all when None), newest first, with ``status`` if given."""
        _check_status(status)
        if limit is not None and limit < 0:
            raise ConfigurationError(f"limit must be >= 0, not {limit}")
        if self._absent():
            return []
        with self._reading() as (conn, gone):
            where, params = with_status(status, gone)
            rows = conn.execute(
                f"SELECT {run_records.SUMMARY_COLUMNS} FROM runs WHERE {where}"
                " ORDER BY id DESC LIMIT ?",
                (*params, -1 if limit is None else limit),
            ).fetchall()
            return [shown(run_records.summary_of(row)[0], gone) for row in rows]


def _check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise ConfigurationError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
