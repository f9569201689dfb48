"""Runs whose process died before recording their end: found on reading, shown as interrupted.

Each run records the process that owns it (:mod:`reflectkit.stores.run_owner`). Reading the
run log finds the runs the file says are still ``running`` whose owner on this host is gone
(:func:`gone_runs`), shows them as ``interrupted`` with the reason in ``error_message``
(:func:`shown`, :func:`with_status`), and queues the rewrite of their rows (:func:`interrupt`)
for the writer thread, so that reading never waits for a lock. Runs of other hosts, and rows
written before owners were recorded, stay as the file says.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from reflectkit.stores import run_owner
from reflectkit.stores.run_records import RunSummary
from reflectkit.stores.run_scrub import scrub_text

__all__ = ["Gone", "gone_runs", "interrupt", "shown", "with_status"]

_STATUS = (
    "CASE WHEN status = 'running' AND id IN (SELECT value FROM json_each(?))"
    " THEN 'interrupted' ELSE status END"
)
"""A run's status as reading shows it, given the ids (a JSON array) of the runs found gone: the
rewrite of their rows may not have landed yet, or may have failed (a read-only file)."""


@dataclass(frozen=True)
class Gone:
    """A run the file says is running whose owner is gone: why, and when it was last heard of."""

    why: str
    ended_at: float


_Run = TypeVar("_Run", bound=RunSummary)


def gone_runs(conn: sqlite3.Connection) -> dict[str, Gone]:
    """The runs the file says are running whose owner, a process on this host, is gone (see
    :func:`reflectkit.stores.run_owner.why_gone`); each owner is judged once."""
    here = run_owner.current()
    rows = conn.execute(
        "SELECT id, owner_pid, owner_started, owner_boot, owner_pid_ns FROM runs"
        " WHERE status = 'running' AND owner_host = ? AND owner_pid IS NOT NULL",
        (here.host,),
    ).fetchall()
    verdicts: dict[run_owner.Owner, str | None] = {}
    gone: dict[str, Gone] = {}
    for run_id, *owned in rows:
        owner = run_owner.Owner(owned[0], here.host, *owned[1:])
        if owner not in verdicts:
            verdicts[owner] = run_owner.why_gone(owner, here)
        why = verdicts[owner]
        if why is not None:
            gone[run_id] = Gone(scrub_text(why), _last_heard(conn, run_id))
    return gone


def _last_heard(conn: sqlite3.Connection, run_id: str) -> float:
    """When run ``run_id`` was last heard of: its last step, else its start."""
    row = conn.execute(
        "SELECT max(created_at, coalesce((SELECT max(created_at) FROM steps WHERE run_id = ?), 0))"
        " FROM runs WHERE id = ?",
        (run_id, run_id),
    ).fetchone()
    return float(row[0])


def interrupt(run_id: str, gone: Gone) -> Callable[[sqlite3.Connection], None]:
    """A write that marks run ``run_id`` interrupted, unless it has ended meanwhile."""

    def write(conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE runs SET status = 'interrupted', ended_at = ?, seconds = ? - created_at,"
            " error_message = ? WHERE id = ? AND status = 'running'",
            (gone.ended_at, gone.ended_at, gone.why, run_id),
        )

    return write


def shown(run: _Run, gone: Mapping[str, Gone]) -> _Run:
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


def with_status(status: str | None, gone: Mapping[str, Gone]) -> tuple[str, tuple[Any, ...]]:
    """A condition (and its parameters) for the runs with ``status`` as shown, or all."""
    return f"(? IS NULL OR {_STATUS} = ?)", (status, json.dumps(sorted(gone)), status)
