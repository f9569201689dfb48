"""What reading the run log gives: a run's summary, its steps, its whole record.

:class:`RunSummary` is a run as ``runs list`` shows it, :class:`RunRecord` everything recorded
about it (``runs show``, ``export``), :class:`RunStep` one of its steps. :func:`read_records`
builds records from the rows of the run log's tables (see :mod:`.run_schema`) as the file has
them; the run log then shows a run found interrupted as such (see :mod:`.run_interrupted`).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["SUMMARY_COLUMNS", "RunRecord", "RunStep", "RunSummary", "read_records", "summary_of"]


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


SUMMARY_COLUMNS = (
    "id, created_at, ended_at, status, model, mode, thread_id, input_json, output, stop_reason,"
    " prompt_tokens, completion_tokens, calls, cost_usd, seconds, error_type, error_message"
)
"""The columns of ``runs`` that :func:`summary_of` reads, in its order."""


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


def summary_of(row: Sequence[Any]) -> tuple[RunSummary, list[Any]]:
    """The summary of a row of :data:`SUMMARY_COLUMNS`, and the run's input messages."""
    loaded = json.loads(row[7])
    messages = loaded if isinstance(loaded, list) else []
    fields = [*row[:7], _question(messages), *row[8:]]
    return RunSummary(*fields), messages


def read_records(
    conn: sqlite3.Connection, where: str, params: Sequence[Any]
) -> Iterator[RunRecord]:
    """The records of the runs that ``where`` (the rest of the query after ``FROM runs``, with
    ``params``) selects, with their steps, as the file has them."""
    rows = conn.execute(
        f"SELECT {SUMMARY_COLUMNS}, config_json, result_json FROM runs {where}", params
    ).fetchall()
    for row in rows:
        summary, messages = summary_of(row[:17])
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
