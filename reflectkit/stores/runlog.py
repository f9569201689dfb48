"""The run log: every run, its steps and its result, kept in SQLite to look at later.

A run that went wrong yesterday is hard to explain from memory; the log keeps what each run was
asked, how it was configured, every step (drafts, verdicts, usage) and how it ended, so that
``reflectkit runs list`` / ``runs show`` can answer "what happened?" after the fact.

* Where: ``$REFLECTKIT_RUN_LOG`` when it names a file, else ``<user data dir>/reflectkit/
  runs.sqlite3``; ``REFLECTKIT_RUN_LOG=off`` (or ``0``, ``false``, ``no``) switches logging off.
  :func:`open_run_log` turns a setting (None, a bool, a path or a :class:`RunLog`) into a log.
* Secrets: everything written goes through :func:`scrub` first: every string through
  :func:`~reflectkit.redaction.redact` (known secret values from the environment, key-like
  strings), and every value under a secret-like name (``api_key``, ``auth_token``) replaced,
  except None, booleans and token counts (``prompt_tokens``). A secret never reaches the file,
  so it cannot linger in the WAL either.
* Privacy: the file holds prompts and answers, so it is created readable by its owner only
  (SQLite gives the ``-wal`` and ``-shm`` files the same mode), and deleting runs overwrites
  their bytes (``secure_delete``) and checkpoints the WAL, so deleted text leaves the disk.
  Reading a log that does not exist yet finds no runs and creates nothing.
* Cost: a run is one insert, one insert per step and one update, each its own short
  transaction; the file uses WAL with ``synchronous=NORMAL`` (no fsync per commit). Recording
  methods only queue the write: one writer thread per log scrubs, encodes and commits, so a run
  never waits for the disk or for another process's lock (about 0.1 ms of CPU per step and
  0.6 ms per finished run, measured here). Reading methods first wait for the queue to drain, so
  a log reads its own writes; ``close()`` and interpreter exit drain it too. A process that is
  killed (``SIGKILL``) or loses power may lose the records still queued or not yet synced.
* Failures to *record* (disk full, file locked for too long, a foreign file) are logged as a
  warning and never raised: a run must not fail because its log could not be written. Reading
  and deleting raise :class:`~reflectkit.errors.ConfigurationError` with a one-line message.
* A run ends once: the first ``finish`` or ``fail`` recorded stands, later ones are ignored
  (a consumer that stops reading a stream after its result must not turn a finished run into
  a failed one).
* A run whose process died before recording its end is ``interrupted``: each run records the
  process that owns it (:mod:`reflectkit.stores.run_owner`), and reading finds the runs still
  ``running`` whose owner on this host is gone, shows them as ``interrupted`` (with the reason
  in ``error_message``) and queues the rewrite of their rows for the writer thread. Runs of
  other hosts, and rows written before owners were recorded, stay as the file says.
* Run ids are ULIDs in lower case (26 characters: milliseconds since 1970, then randomness), so
  they sort by start time; ``get`` and ``delete`` take any unique prefix of at least
  :data:`MIN_PREFIX` characters, case-insensitively, like git.
"""

from __future__ import annotations

import atexit
import builtins
import dataclasses
import functools
import json
import logging
import os
import queue
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from reflectkit.errors import ConfigurationError, ReflectkitError
from reflectkit.redaction import REDACTED, is_secret_name, one_line, redact, snapshot
from reflectkit.redaction import environment_secrets as _secrets_now
from reflectkit.stores import run_owner
from reflectkit.stores import sqlite as _sqlite

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
STATUSES = ("running", "finished", "failed", "interrupted")
MIN_PREFIX = 4
"""The fewest characters of a run id that :meth:`RunLog.get` and :meth:`RunLog.delete` take."""
_OFF = frozenset({"off", "0", "false", "no"})
_ON = frozenset({"on", "1", "true", "yes"})
_PLAIN = (bool, type(None))
_NUMBER = (int, float)
# Secret-like names whose numbers are counts, not secrets: prompt_tokens, max_tokens ...
_TOKEN_COUNT = re.compile(r"tokens|token_(?:budget|count|limit)", re.IGNORECASE)
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_RANDOM_BITS = 80
_id_lock = threading.Lock()
_last_id = (0, 0)
_BATCH = 200


def new_run_id() -> str:
    """A new run id: a lower-case ULID, sortable by creation time and, within one process,
    strictly increasing. When the millisecond repeats (or the clock went back) the random part
    steps up by a random amount rather than by one, so ids made in one burst still differ within
    their first 14 characters and short prefixes stay usable."""
    global _last_id
    with _id_lock:
        ms, rand = time.time_ns() // 1_000_000, secrets.randbits(_RANDOM_BITS)
        last_ms, last_rand = _last_id
        if ms <= last_ms:
            # A step of at least 2**60 changes the first 14 characters (they hold the bits from
            # 60 up: 48 of time, the top 20 of randomness); hundreds of thousands of ids fit in one
            # millisecond before the random part would overflow, far more than one process makes.
            step = (1 << (_RANDOM_BITS - 20)) + secrets.randbits(_RANDOM_BITS - 19)
            ms, rand = last_ms, last_rand + step
            if rand >> _RANDOM_BITS:  # the random part overflowed: carry into the next ms
                ms, rand = last_ms + 1, secrets.randbits(_RANDOM_BITS - 1)
        _last_id = (ms, rand)
    value = (ms << _RANDOM_BITS) | rand
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


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


def _text(value: str) -> str:
    """``value`` redacted and safe to bind (lone surrogates replaced)."""
    return redact(value.encode("utf-8", "replace").decode("utf-8"))


def _key(name: str) -> str:
    """A mapping key, redacted: keys repeat in every record, so their redaction is cached per
    set of secrets in force."""
    return _cached_key(name, _secrets_now())


@functools.lru_cache(maxsize=1024)
def _cached_key(name: str, secrets: tuple[str, ...]) -> str:
    return _text(name)


def _keeps(name: str, value: Any) -> bool:
    """Whether ``value`` may be kept under ``name``: always unless the name is secret-like;
    then only None, a bool, or a number under a token-count name (``prompt_tokens``)."""
    if not is_secret_name(name) or isinstance(value, _PLAIN):
        return True
    return isinstance(value, _NUMBER) and bool(_TOKEN_COUNT.search(name))


def scrub(value: Any) -> Any:
    """``value`` as JSON-ready data with secrets removed: pydantic models and dataclasses become
    dicts, every string (keys too) is redacted, and a value under a secret-like name is replaced
    unless it is None, a bool or a token count (so ``prompt_tokens`` survive, a numeric
    ``password`` does not)."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, (*_PLAIN, *_NUMBER)):
        return value
    if isinstance(value, type):
        return _text(value.__qualname__)
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {
            _key(str(key)): scrub(item) if _keeps(str(key), item) else REDACTED
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [scrub(item) for item in value]
    return _text(str(value))


def _json(value: Any) -> str:
    return json.dumps(scrub(value), ensure_ascii=False, separators=(",", ":"))


def _m001_runs(conn: sqlite3.Connection) -> bool:
    conn.execute(
        "CREATE TABLE runs (id TEXT PRIMARY KEY, created_at REAL NOT NULL, ended_at REAL,"
        " status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed')),"
        " model TEXT NOT NULL, mode TEXT NOT NULL, thread_id TEXT, input_json TEXT NOT NULL,"
        " config_json TEXT NOT NULL, output TEXT, stop_reason TEXT,"
        " prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,"
        " calls INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0, seconds REAL,"
        " error_type TEXT, error_message TEXT, result_json TEXT)"
    )
    conn.execute("CREATE INDEX runs_created_at ON runs (created_at)")
    return True


def _m002_steps(conn: sqlite3.Connection) -> bool:
    conn.execute(
        "CREATE TABLE steps (run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
        " seq INTEGER NOT NULL, node TEXT NOT NULL, iteration INTEGER NOT NULL,"
        " data_json TEXT NOT NULL, usage_json TEXT, seconds REAL, created_at REAL NOT NULL,"
        " PRIMARY KEY (run_id, seq)) WITHOUT ROWID"
    )
    return True


_RUN_COLUMNS = (
    "id, created_at, ended_at, status, model, mode, thread_id, input_json, config_json, output,"
    " stop_reason, prompt_tokens, completion_tokens, calls, cost_usd, seconds, error_type,"
    " error_message, result_json"
)


def _m003_run_owner(conn: sqlite3.Connection) -> bool:
    """Record each run's owning process, and allow ``interrupted``. SQLite cannot change a
    CHECK constraint, so ``runs`` is rebuilt the way SQLite documents (new table, copy, drop,
    rename; foreign keys are off while migrations run, so ``steps`` keeps its rows and its
    reference), and its index is made again. A partial index finds the running runs."""
    conn.execute(
        "CREATE TABLE runs_new (id TEXT PRIMARY KEY, created_at REAL NOT NULL, ended_at REAL,"
        " status TEXT NOT NULL"
        " CHECK (status IN ('running', 'finished', 'failed', 'interrupted')),"
        " model TEXT NOT NULL, mode TEXT NOT NULL, thread_id TEXT, input_json TEXT NOT NULL,"
        " config_json TEXT NOT NULL, output TEXT, stop_reason TEXT,"
        " prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,"
        " calls INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0, seconds REAL,"
        " error_type TEXT, error_message TEXT, result_json TEXT, owner_pid INTEGER,"
        " owner_host TEXT, owner_started INTEGER, owner_boot TEXT, owner_pid_ns TEXT)"
    )
    conn.execute(f"INSERT INTO runs_new ({_RUN_COLUMNS}) SELECT {_RUN_COLUMNS} FROM runs")
    conn.execute("DROP TABLE runs")
    conn.execute("ALTER TABLE runs_new RENAME TO runs")
    conn.execute("CREATE INDEX runs_created_at ON runs (created_at)")
    conn.execute("CREATE INDEX runs_running ON runs (owner_host) WHERE status = 'running'")
    return True


MIGRATIONS: list[tuple[str, _sqlite.Migration]] = [
    ("m001_runs", _m001_runs),
    ("m002_steps", _m002_steps),
    ("m003_run_owner", _m003_run_owner),
]


@dataclass(frozen=True)
class RunSummary:
    """One run as ``runs list`` shows it. ``question`` is the last user message's text; times
    are Unix seconds; ``seconds`` is the wall time from start to finish (None while running).
    An ``interrupted`` run's ``error_message`` says why, and its ``ended_at`` is when it was
    last heard of (its last step, else its start)."""

    id: str
    created_at: float
    ended_at: float | None
    status: str
    model: str
    mode: str
    thread_id: str | None
    question: str
    output: str | None
    stop_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    calls: int
    cost_usd: float
    seconds: float | None
    error_type: str | None
    error_message: str | None

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunStep:
    """One recorded step: the node, its iteration, its data (``draft``, ``verdict``,
    ``stop_reason`` for the loop's own steps), its usage and how long it took."""

    seq: int
    node: str
    iteration: int
    data: dict[str, Any]
    usage: dict[str, Any] | None
    seconds: float | None
    created_at: float


@dataclass(frozen=True)
class RunRecord(RunSummary):
    """Everything recorded about a run: the summary, the input messages, the (redacted)
    configuration, the steps in order and the result (``ReflectionResult.to_dict()``; for a
    failed run the partial result, or None)."""

    messages: list[Any]
    config: dict[str, Any]
    steps: list[RunStep]
    result: dict[str, Any] | None


_SUMMARY = (
    "id, created_at, ended_at, status, model, mode, thread_id, input_json, output, stop_reason,"
    " prompt_tokens, completion_tokens, calls, cost_usd, seconds, error_type, error_message"
)


_STATUS = (
    "CASE WHEN status = 'running' AND id IN (SELECT value FROM json_each(?))"
    " THEN 'interrupted' ELSE status END"
)
"""A run's status as reading shows it, given the ids (a JSON array) of the runs found gone: the
rewrite of their rows may not have landed yet, or may have failed (a read-only file)."""


@dataclass(frozen=True)
class _Gone:
    """A run the file says is running whose owner is gone: why, and when it was last heard of."""

    why: str
    ended_at: float


_Run = TypeVar("_Run", bound=RunSummary)


def _gone_runs(conn: sqlite3.Connection) -> dict[str, _Gone]:
    """The runs the file says are running whose owner, a process on this host, is gone (see
    :func:`reflectkit.stores.run_owner.why_gone`); each owner is judged once."""
    here = run_owner.current()
    rows = conn.execute(
        "SELECT id, owner_pid, owner_started, owner_boot, owner_pid_ns FROM runs"
        " WHERE status = 'running' AND owner_host = ? AND owner_pid IS NOT NULL",
        (here.host,),
    ).fetchall()
    verdicts: dict[run_owner.Owner, str | None] = {}
    gone: dict[str, _Gone] = {}
    for run_id, *owned in rows:
        owner = run_owner.Owner(owned[0], here.host, *owned[1:])
        if owner not in verdicts:
            verdicts[owner] = run_owner.why_gone(owner, here)
        why = verdicts[owner]
        if why is not None:
            gone[run_id] = _Gone(_text(why), _last_heard(conn, run_id))
    return gone


def _last_heard(conn: sqlite3.Connection, run_id: str) -> float:
    """When run ``run_id`` was last heard of: its last step, else its start."""
    row = conn.execute(
        "SELECT max(created_at, coalesce((SELECT max(created_at) FROM steps WHERE run_id = ?), 0))"
        " FROM runs WHERE id = ?",
        (run_id, run_id),
    ).fetchone()
    return float(row[0])


def _interrupt(run_id: str, gone: _Gone) -> Callable[[sqlite3.Connection], None]:
    """A write that marks run ``run_id`` interrupted, unless it has ended meanwhile."""

    def write(conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE runs SET status = 'interrupted', ended_at = ?, seconds = ? - created_at,"
            " error_message = ? WHERE id = ? AND status = 'running'",
            (gone.ended_at, gone.ended_at, gone.why, run_id),
        )

    return write


def _shown(run: _Run, gone: Mapping[str, _Gone]) -> _Run:
    """``run`` as reading shows it: interrupted when it was found gone, whatever the file says."""
    found = gone.get(run.id) if run.status == "running" else None
    if found is None:
        return run
    return dataclasses.replace(
        run,
        status="interrupted",
        ended_at=found.ended_at,
        seconds=found.ended_at - run.created_at,
        error_message=found.why,
    )


def _with_status(status: str | None, gone: Mapping[str, _Gone]) -> tuple[str, tuple[Any, ...]]:
    """A condition (and its parameters) for the runs with ``status`` as shown, or all."""
    return f"(? IS NULL OR {_STATUS} = ?)", (status, json.dumps(sorted(gone)), status)


def _question(messages: Any) -> str:
    """The text of the last user message in ``messages`` (content a string or text parts)."""
    if not isinstance(messages, list):
        return ""
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    content = users[-1].get("content") if users else None
    if isinstance(content, list):
        content = " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type", "text") == "text"
        )
    return content.strip() if isinstance(content, str) else ""


def _summary(row: Sequence[Any]) -> tuple[RunSummary, list[Any]]:
    loaded = json.loads(row[7])
    messages = loaded if isinstance(loaded, list) else []
    fields = [*row[:7], _question(messages), *row[8:]]
    return RunSummary(*fields), messages


def _common_prefix(a: str, b: str) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


_writes: queue.Queue[tuple[RunLog, str, Callable[[sqlite3.Connection], None]]] = queue.Queue()
_writer: threading.Thread | None = None
_writer_lock = threading.Lock()


def _start_writer() -> None:
    """Start the process's one writer thread, unless it runs (again after a fork)."""
    global _writer
    with _writer_lock:
        if _writer is not None and _writer.is_alive():
            return
        if _writer is None:
            atexit.register(_flush)  # the thread is a daemon: drain before the process exits
        _writer = threading.Thread(target=_drain, name="reflectkit-runlog", daemon=True)
        _writer.start()


def _drain() -> None:
    while True:
        log, what, write = _writes.get()
        try:
            log._write_now(what, write)
        finally:
            _writes.task_done()


def _flush() -> None:
    """Wait until the writer has handled every write queued so far (by any log)."""
    if _writer is not None and threading.current_thread() is not _writer:
        _writes.join()


class RunLog:
    """Runs recorded in a SQLite file (``path``; default: see :func:`default_path`;
    ``":memory:"`` for a throw-away log). The file is created (owner-only), upgraded and opened
    on first record, and shared by threads under a lock and by processes through WAL; reading a
    file that does not exist finds no runs. ``close()`` it, or use the log as a context
    manager."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        where = default_path() if path is None else path
        if where is None:
            raise ConfigurationError(f"the run log is off (${ENV_VAR}); give a path")
        name = os.fspath(where)
        if not name.strip():
            raise ConfigurationError("the run log path is empty")
        self.path = name if name == ":memory:" else os.path.expanduser(name)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._warned = False

    def __repr__(self) -> str:
        return f"RunLog({self.path!r})"

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def flush(self) -> None:
        """Wait until every record queued so far is written (or has failed and been logged)."""
        _flush()

    def close(self) -> None:
        """Write what is queued and close the connection; the log cannot be used afterwards."""
        _flush()
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _open(self) -> sqlite3.Connection:
        if self._closed:
            raise ConfigurationError(f"run log {self.path} is closed")
        if self._conn is None:
            conn = _sqlite.connect(self.path)  # a new file is created owner-only
            try:
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA secure_delete = ON")
                _sqlite.migrate(conn, MIGRATIONS)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _absent(self) -> bool:
        """True when the file does not exist (and was never opened): reading finds no runs
        there, and creates nothing."""
        _flush()  # a queued first record may be about to create it
        return (
            not self._closed
            and self._conn is None
            and self.path != ":memory:"
            and not os.path.exists(self.path)
        )

    @contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        """The open connection, under the lock; SQLite, file and JSON errors come out as one-line
        :class:`ConfigurationError` naming the file."""
        self.flush()
        with self._lock:
            try:
                yield self._open()
            except ReflectkitError:
                raise
            except (sqlite3.Error, OSError, ValueError) as exc:
                raise ConfigurationError(f"run log {self.path}: {one_line(exc)}") from exc

    def _record(self, what: str, write: Callable[[sqlite3.Connection], None]) -> None:
        """Queue one write of a recording method for the writer thread."""
        if self._closed:
            self._write_now(what, write)  # fails at once, and says so in the log
            return
        _start_writer()
        _writes.put((self, what, write))

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

    def _one_row(
        self, sql: str, params: Callable[[], Sequence[Any]]
    ) -> Callable[[sqlite3.Connection], None]:
        """A write for :meth:`_record` that runs ``sql`` and fails unless it changed a row."""

        def write(conn: sqlite3.Connection) -> None:
            if conn.execute(sql, params()).rowcount == 0:
                raise ConfigurationError("no such run")

        return write

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
        self._record(
            f"the start of run {run_id}",
            self._one_row(
                "INSERT INTO runs (id, created_at, status, model, mode, thread_id, input_json,"
                " config_json, owner_pid, owner_host, owner_started, owner_boot, owner_pid_ns)"
                " VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                lambda: (
                    run_id,
                    time.time(),
                    _text(model),
                    _text(mode),
                    None if thread_id is None else _text(thread_id),
                    _json(list(messages)),
                    _json(config),
                    *dataclasses.astuple(owner),
                ),
            ),
        )
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
            self._one_row(
                "INSERT INTO steps (run_id, seq, node, iteration, data_json, usage_json,"
                " seconds, created_at) SELECT ?, coalesce(max(seq), 0) + 1, ?, ?, ?, ?, ?, ?"
                " FROM steps WHERE run_id = ?",
                lambda: (
                    run_id,
                    _text(node),
                    iteration,
                    _json(data),
                    None if usage is None else _json(usage),
                    seconds,
                    time.time(),
                    run_id,
                ),
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

    def _end(
        self, run_id: str, status: str, result: ReflectionResult | None, error: tuple[str, str]
    ) -> None:
        """Record the end of a run still running: ``result`` is the answer of a finished run
        or the partial work of a failed one; ``error`` its type name and message ("" if none)."""
        answer = result if status == "finished" else None
        usage = None if result is None else result.usage

        def params() -> tuple[Any, ...]:
            now = time.time()
            return (
                status,
                now,
                now,
                None if answer is None else _text(answer.output),
                "error" if answer is None else answer.stop_reason.value,
                0 if usage is None else usage.prompt_tokens,
                0 if usage is None else usage.completion_tokens,
                0 if usage is None else usage.calls,
                0.0 if usage is None else usage.cost_usd,
                error[0] or None,
                _text(error[1]) if error[0] else None,
                None if result is None else _json(result.to_dict()),
                run_id,
            )

        def write(conn: sqlite3.Connection) -> None:
            updated = conn.execute(
                "UPDATE runs SET status = ?, ended_at = ?, seconds = ? - created_at, output = ?,"
                " stop_reason = ?, prompt_tokens = ?, completion_tokens = ?, calls = ?,"
                " cost_usd = ?, error_type = ?, error_message = ?, result_json = ?"
                " WHERE id = ? AND status = 'running'",
                params(),
            ).rowcount
            if updated:
                return
            row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise ConfigurationError("no such run")
            logger.debug("run %s already %s: its %s end is not recorded", run_id, row[0], status)

        self._record(f"the end of run {run_id}", write)

    def finish(self, run_id: str, result: ReflectionResult) -> None:
        """Record that run ``run_id`` finished with ``result`` (unless it already ended)."""
        self._end(run_id, "finished", result, ("", ""))

    def fail(
        self, run_id: str, error: BaseException, partial: ReflectionResult | None = None
    ) -> None:
        """Record that run ``run_id`` failed with ``error`` (unless it already ended), keeping
        ``partial`` (the work done before the failure, e.g. ``RunError.partial``) when there is
        one."""
        message = str(error).strip() or type(error).__name__
        self._end(run_id, "failed", partial, (type(error).__name__, message))

    @staticmethod
    def _key(run_id: str) -> str:
        key = run_id.strip().lower()
        if len(key) < MIN_PREFIX:
            raise ConfigurationError(f"give at least {MIN_PREFIX} characters of a run id")
        return key

    def _no_run(self, run_id: str) -> ConfigurationError:
        return ConfigurationError(f"no run {run_id.strip()!r} in {self.path}")

    def _resolve(self, conn: sqlite3.Connection, run_id: str) -> str:
        key = self._key(run_id)
        rows = conn.execute(
            "SELECT id FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT 2", (key, key + "\x7f")
        ).fetchall()
        if not rows:
            raise self._no_run(run_id)
        if len(rows) > 1:
            raise ConfigurationError(f"run id {key!r} is ambiguous: give more characters")
        return str(rows[0][0])

    @contextmanager
    def _reading(self) -> Iterator[tuple[sqlite3.Connection, dict[str, _Gone]]]:
        """A session for reading, with the runs found interrupted in it; their rows' rewrite is
        queued for the writer thread once it ends (so reading never waits for a lock)."""
        with self._session() as conn:
            gone = _gone_runs(conn)
            yield conn, gone
        for run_id, found in gone.items():
            self._record(f"the interruption of run {run_id}", _interrupt(run_id, found))

    def _records(
        self,
        conn: sqlite3.Connection,
        gone: Mapping[str, _Gone],
        where: str,
        params: Sequence[Any],
    ) -> Iterator[RunRecord]:
        rows = conn.execute(
            f"SELECT {_SUMMARY}, config_json, result_json FROM runs {where}", params
        ).fetchall()
        for row in rows:
            summary, messages = _summary(row[:17])
            summary = _shown(summary, gone)
            steps = [
                RunStep(seq, node, it, json.loads(data), json.loads(u) if u else None, sec, at)
                for seq, node, it, data, u, sec, at in conn.execute(
                    "SELECT seq, node, iteration, data_json, usage_json, seconds, created_at"
                    " FROM steps WHERE run_id = ? ORDER BY seq",
                    (summary.id,),
                )
            ]
            yield RunRecord(
                **vars(summary),
                messages=messages,
                config=json.loads(row[17]),
                steps=steps,
                result=json.loads(row[18]) if row[18] else None,
            )

    def get(self, run_id: str) -> RunRecord:
        """Everything recorded about the run whose id is (or uniquely starts with) ``run_id``.
        Raises :class:`ConfigurationError` for a prefix that is too short, ambiguous or
        unknown."""
        self._key(run_id)
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
        shown: dict[str, str] = {}
        with self._session() as conn:
            for run_id in wanted:
                length = minimum
                for sql in (
                    "SELECT max(id) FROM runs WHERE id < ?",
                    "SELECT min(id) FROM runs WHERE id > ?",
                ):
                    other = conn.execute(sql, (run_id,)).fetchone()[0]
                    if other is not None:
                        length = max(length, _common_prefix(run_id, other) + 1)
                shown[run_id] = run_id[:length]
        return shown

    def count(self, status: str | None = None) -> int:
        """How many runs are recorded (with ``status``, if given)."""
        _check_status(status)
        if self._absent():
            return 0
        with self._reading() as (conn, gone):
            where, params = _with_status(status, gone)
            row = conn.execute(f"SELECT count(*) FROM runs WHERE {where}", params).fetchone()
        return int(row[0])

    def export(self, file: str | os.PathLike[str] | IO[str], *, status: str | None = None) -> int:
        """Write runs (those with ``status``, or all), oldest first, as JSON lines to ``file``
        (a path, replaced, or a text stream): one :class:`RunRecord` dict per line. Returns
        how many. The log is checked before a path is opened, so an unreadable log leaves the
        file as it was."""
        _check_status(status)
        gone: dict[str, _Gone] = {}
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

    def _export(self, stream: IO[str], status: str | None, gone: Mapping[str, _Gone]) -> int:
        if self._absent():
            return 0
        where, params = _with_status(status, gone)
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
            self._key(run_id)
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
            where, params = _with_status(status, gone)
            rows = conn.execute(
                f"SELECT {_SUMMARY} FROM runs WHERE {where} ORDER BY id DESC LIMIT ?",
                (*params, -1 if limit is None else limit),
            ).fetchall()
            return [_shown(_summary(row)[0], gone) for row in rows]


def _check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise ConfigurationError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
