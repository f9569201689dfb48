"""The writes that record a run: its start, each of its steps, and its end.

Each function here makes one write, a function of the run log's connection that the writer
thread (:mod:`.run_writer`) runs later: its values are scrubbed of secrets (:mod:`.run_scrub`)
and its timestamps taken when it runs, and it fails unless it changes a row (a run that does
not exist). A run ends once: :func:`end` leaves a run that has already ended as it is.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from reflectkit.errors import ConfigurationError
from reflectkit.stores.run_owner import Owner
from reflectkit.stores.run_scrub import scrub_json, scrub_text

if TYPE_CHECKING:
    from reflectkit.result import ReflectionResult

__all__ = ["Write", "end", "start", "step"]

logger = logging.getLogger(__name__)

Write = Callable[[sqlite3.Connection], None]
"""One write to the run log, run on its connection by the writer thread."""


def _one_row(sql: str, params: Callable[[], Sequence[Any]]) -> Write:
    """A write that runs ``sql`` and fails unless it changed a row."""

    def write(conn: sqlite3.Connection) -> None:
        if conn.execute(sql, params()).rowcount == 0:
            raise ConfigurationError("no such run")

    return write


def start(
    run_id: str,
    owner: Owner,
    model: str,
    mode: str,
    thread_id: str | None,
    messages: Sequence[Any],
    config: Mapping[str, Any],
) -> Write:
    """The insert of run ``run_id``, running, owned by ``owner``, on ``model`` in ``mode``
    (with ``thread_id`` when durable), asked ``messages`` and configured by ``config``."""
    return _one_row(
        "INSERT INTO runs (id, created_at, status, model, mode, thread_id, input_json,"
        " config_json, owner_pid, owner_host, owner_started, owner_boot, owner_pid_ns)"
        " VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        lambda: (
            run_id,
            time.time(),
            scrub_text(model),
            scrub_text(mode),
            None if thread_id is None else scrub_text(thread_id),
            scrub_json(list(messages)),
            scrub_json(config),
            *dataclasses.astuple(owner),
        ),
    )


def step(
    run_id: str,
    *,
    node: str,
    iteration: int,
    data: Mapping[str, Any],
    usage: Mapping[str, Any] | None,
    seconds: float | None,
) -> Write:
    """The insert of a step of run ``run_id``, numbered after its last one in the same
    statement (so concurrent writers to one run cannot take the same number)."""
    return _one_row(
        "INSERT INTO steps (run_id, seq, node, iteration, data_json, usage_json,"
        " seconds, created_at) SELECT ?, coalesce(max(seq), 0) + 1, ?, ?, ?, ?, ?, ?"
        " FROM steps WHERE run_id = ?",
        lambda: (
            run_id,
            scrub_text(node),
            iteration,
            scrub_json(data),
            None if usage is None else scrub_json(usage),
            seconds,
            time.time(),
            run_id,
        ),
    )


def end(run_id: str, status: str, result: ReflectionResult | None, error: tuple[str, str]) -> Write:
    """The end of run ``run_id``, unless it has already ended: ``result`` is the answer of a
    finished run (or the draft a waiting one paused on) or the partial work of a failed one;
    ``error`` its type name and message ("" if none)."""
    answer = result if status in ("finished", "waiting") else None
    usage = None if result is None else result.usage

    def params() -> tuple[Any, ...]:
        now = time.time()
        return (
            status,
            now,
            now,
            None if answer is None else scrub_text(answer.output),
            "error" if answer is None else answer.stop_reason.value,
            0 if usage is None else usage.prompt_tokens,
            0 if usage is None else usage.completion_tokens,
            0 if usage is None else usage.calls,
            0.0 if usage is None else usage.cost_usd,
            error[0] or None,
            scrub_text(error[1]) if error[0] else None,
            None if result is None else scrub_json(result.to_dict()),
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

    return write
