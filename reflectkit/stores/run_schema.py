"""The run log's schema: its tables, made and upgraded by named migrations.

``runs`` holds one row per run (what it was asked, how it was configured, how it ended, and the
process that owns it); ``steps`` one row per recorded step, deleted with its run. The file is
brought up to date by :func:`reflectkit.stores.sqlite.migrate`, which applies each migration of
:data:`MIGRATIONS` once, in order, and records its name.
"""

from __future__ import annotations

import sqlite3

from reflectkit.stores.sqlite import Migration

__all__ = ["MIGRATIONS"]


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


_OWNER_COLUMNS = "owner_pid, owner_host, owner_started, owner_boot, owner_pid_ns"


def _rebuild_runs(conn: sqlite3.Connection, statuses: tuple[str, ...], copied: str) -> None:
    """Make ``runs`` again with the owner's columns and a CHECK that allows ``statuses``, keeping
    the ``copied`` columns of its rows. SQLite cannot change a CHECK constraint, so this is the
    way SQLite documents (new table, copy, drop, rename; foreign keys are off while migrations
    run, so ``steps`` keeps its rows and its reference); the indexes are made again, a partial
    one finding the running runs."""
    allowed = ", ".join(f"'{status}'" for status in statuses)
    conn.execute(
        "CREATE TABLE runs_new (id TEXT PRIMARY KEY, created_at REAL NOT NULL, ended_at REAL,"
        f" status TEXT NOT NULL CHECK (status IN ({allowed})),"
        " model TEXT NOT NULL, mode TEXT NOT NULL, thread_id TEXT, input_json TEXT NOT NULL,"
        " config_json TEXT NOT NULL, output TEXT, stop_reason TEXT,"
        " prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,"
        " calls INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0, seconds REAL,"
        " error_type TEXT, error_message TEXT, result_json TEXT, owner_pid INTEGER,"
        " owner_host TEXT, owner_started INTEGER, owner_boot TEXT, owner_pid_ns TEXT)"
    )
    conn.execute(f"INSERT INTO runs_new ({copied}) SELECT {copied} FROM runs")
    conn.execute("DROP TABLE runs")
    conn.execute("ALTER TABLE runs_new RENAME TO runs")
    conn.execute("CREATE INDEX runs_created_at ON runs (created_at)")
    conn.execute("CREATE INDEX runs_running ON runs (owner_host) WHERE status = 'running'")


def _m003_run_owner(conn: sqlite3.Connection) -> bool:
    """Record each run's owning process, and allow ``interrupted``."""
    _rebuild_runs(conn, ("running", "finished", "failed", "interrupted"), _RUN_COLUMNS)
    return True


def _m004_waiting(conn: sqlite3.Connection) -> bool:
    """Allow ``waiting``: a run that ended paused for a person's verdict (a HumanCritic)."""
    statuses = ("running", "finished", "failed", "interrupted", "waiting")
    _rebuild_runs(conn, statuses, f"{_RUN_COLUMNS}, {_OWNER_COLUMNS}")
    return True


MIGRATIONS: list[tuple[str, Migration]] = [
    ("m001_runs", _m001_runs),
    ("m002_steps", _m002_steps),
    ("m003_run_owner", _m003_run_owner),
    ("m004_waiting", _m004_waiting),
]
