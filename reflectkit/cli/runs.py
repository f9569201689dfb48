"""``reflectkit runs``: list, show, export and delete the runs in the run log.

Reads :mod:`reflectkit.stores.runlog`: data on stdout, notes and prompts on stderr. A log that is
switched off with no ``--run-log`` given, or an unknown or ambiguous id, is one line and exit
code 2 (a ConfigurationError, turned into that by the main group). Only click is imported at
start-up; :mod:`reflectkit.cli.app` registers the group.
"""

from __future__ import annotations

import json
import os
import textwrap
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from reflectkit.cli.options import json_option, output_option
from reflectkit.cli.support import CONTEXT_SETTINGS, EXIT_RUN_FAILED, fail
from reflectkit.errors import ConfigurationError

if TYPE_CHECKING:
    from reflectkit.stores.runlog import RunLog, RunRecord, RunStep, RunSummary

__all__ = ["runs"]

_STATUSES = [
    "running",
    "finished",
    "failed",
    "interrupted",
    "waiting",
]  # runlog.STATUSES, kept lazy
_status_option = click.option(
    "--status", type=click.Choice(_STATUSES), help="Only runs with this status."
)


@click.group(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--run-log",
    "run_log",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="The run log file (default: $REFLECTKIT_RUN_LOG, else the per-user file).",
)
@click.pass_context
def runs(ctx: click.Context, run_log: str | None) -> None:
    """Look at recorded runs: list, show, export, delete.

    Every run is recorded in the run log unless it is off (REFLECTKIT_RUN_LOG=off). IDs may be
    shortened to any unique prefix of at least 4 characters.
    """
    ctx.obj = run_log


def _open_run_log(path: str | None) -> RunLog:
    from reflectkit.stores.runlog import ENV_VAR, RunLog, default_path

    where = default_path() if path is None else path
    if where is None:
        raise ConfigurationError(
            f"the run log is off (${ENV_VAR}={os.environ.get(ENV_VAR, '').strip()}): "
            "give --run-log PATH"
        )
    return RunLog(where)


def _local_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="seconds")


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    """Rows of cells as aligned lines; columns in ``right`` align right, the last is ragged."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell if i == len(row) - 1 else cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _ending(run: RunSummary) -> str:
    """How a run ended, in a word: its stop reason, its error type, or - while running (and
    when interrupted: the status says it, ``show`` says why)."""
    if run.status == "failed":
        return run.error_type or "error"
    return run.stop_reason or "-"


def _cost(cost_usd: float) -> str:
    return f"${cost_usd:.4f}" if cost_usd else "-"


@runs.command("list")
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Most runs to show, newest first; 0 for all.",
)
@_status_option
@json_option("Print JSON lines, one run each.")
@click.pass_obj
def list_runs(run_log: str | None, limit: int, status: str | None, as_json: bool) -> None:
    """List recorded runs, newest first."""
    with _open_run_log(run_log) as log:
        found = log.list(limit=limit or None, status=status)
        if as_json:
            for run in found:
                click.echo(json.dumps(run.to_dict(), ensure_ascii=False))
            return
        if not found:
            what = f"{status} runs" if status else "runs"
            click.echo(f"no {what} in {log.path}", err=True)
            return
        short = log.short_ids(run.id for run in found)
    header = ["ID", "STARTED", "STATUS", "MODEL", "STOP", "TOKENS", "COST", "SECS", "QUESTION"]
    rows = [header] + [
        [
            short[run.id],
            _local_time(run.created_at),
            run.status,
            run.model,
            _ending(run),
            str(run.total_tokens),
            _cost(run.cost_usd),
            "-" if run.seconds is None else f"{run.seconds:.1f}",
            _one_line(run.question, 60),
        ]
        for run in found
    ]
    for line in _table(rows, right={5, 6, 7}):
        click.echo(line)


def _indented(text: str) -> str:
    return textwrap.indent(text.rstrip() or "(empty)", "  ", lambda _: True)


def _config_lines(config: dict[str, Any]) -> list[str]:
    """``key: value`` for each setting that is set (not None, not empty)."""
    lines = []
    for key, value in config.items():
        if value is None or value == {} or value == []:
            continue
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        lines.append(f"  {key}: {shown}")
    return lines


def _step_lines(step: RunStep) -> list[str]:
    """A step as ``runs show`` prints it: node and draft, tokens, then draft, verdict, stop."""
    usage = step.usage or {}
    tokens = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
    head = f"{step.seq}. {step.node}, draft {step.iteration}"
    lines = [head + (f" ({tokens} tokens)" if tokens else "")]
    draft, verdict = step.data.get("draft"), step.data.get("verdict")
    if isinstance(draft, dict):
        lines.append("   answer:")
        lines.append(textwrap.indent(_indented(str(draft.get("output", ""))), "   "))
    if isinstance(verdict, dict):
        decision = "pass" if verdict.get("passed") else "revise"
        score = verdict.get("score")
        lines.append(f"   verdict: {decision}" + ("" if score is None else f", score {score:g}"))
        if verdict.get("feedback"):
            lines.append(textwrap.indent(_indented(str(verdict["feedback"])), "   "))
    if step.data.get("stop_reason"):
        lines.append(f"   stop: {step.data['stop_reason']}")
    return lines


def _report(record: RunRecord) -> list[str]:
    """A run as ``runs show`` prints it: the facts, the question, the settings, each step,
    then the answer or the error."""
    ended = record.status in ("finished", "failed", "waiting")
    status = f"{record.status} ({_ending(record)})" if ended else record.status
    took = "" if record.seconds is None else f" ({record.seconds:.1f} s)"
    cost = f"cost {_cost(record.cost_usd)}" if record.cost_usd else "cost not known"
    lines = [f"run      {record.id}", f"status   {status}"]
    if record.status == "interrupted" and record.error_message:
        lines.append(f"why      {record.error_message}")
    lines += [
        f"started  {_local_time(record.created_at)}{took}",
        f"model    {record.model} (mode {record.mode})",
    ]
    if record.thread_id:
        lines.append(f"thread   {record.thread_id}")
    lines += [
        f"usage    {record.prompt_tokens} prompt + {record.completion_tokens} completion "
        f"tokens, {record.calls} call(s), {cost}",
        "",
        "question",
        _indented(record.question),
    ]
    if len(record.messages) > 1:
        lines.append(f"  ({len(record.messages)} messages in all: --json shows them)")
    lines += ["", "config", *_config_lines(record.config), "", "steps"]
    for step in record.steps:
        lines += ["  " + line for line in _step_lines(step)]
    if not record.steps:
        lines.append("  (none recorded)")
    if record.output is not None:
        lines += ["", "answer", _indented(record.output)]
    if record.error_type:
        lines += ["", "error", f"  {record.error_type}: {record.error_message or ''}".rstrip()]
    return lines


@runs.command()
@click.argument("run_id", metavar="ID")
@json_option("Print everything recorded, as JSON.")
@click.pass_obj
def show(run_log: str | None, run_id: str, as_json: bool) -> None:
    """Show run ID: question, settings, each step, answer or error."""
    with _open_run_log(run_log) as log:
        record = log.get(run_id)
    if as_json:
        click.echo(json.dumps(record.to_dict(), ensure_ascii=False, indent=2))
    else:
        click.echo("\n".join(_report(record)))


@runs.command()
@output_option()
@_status_option
@click.pass_obj
def export(run_log: str | None, output: str, status: str | None) -> None:
    """Write runs, oldest first, as JSON lines: everything recorded, one run a line."""
    with _open_run_log(run_log) as log:
        if output == "-":
            with click.open_file("-", "w", encoding="utf-8") as stdout:
                log.export(stdout, status=status)
            return
        count = log.export(output, status=status)
    click.echo(f"exported {count} run(s) to {output}", err=True)


@runs.command()
@click.argument("run_id", metavar="[ID]", required=False)
@click.option("--all", "everything", is_flag=True, help="Delete every run.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def delete(run_log: str | None, run_id: str | None, everything: bool, yes: bool) -> None:
    """Delete run ID (with its steps), or every run with --all."""
    if (run_id is None) == (not everything):
        raise click.UsageError("give a run ID or --all" + (", not both" if everything else ""))
    with _open_run_log(run_log) as log:
        if run_id is not None:
            record = log.get(run_id)
            target: str | None = record.id
            question = f"Delete run {record.id} ({_one_line(record.question, 40)!r})?"
        else:
            count = log.count()
            if count == 0:
                click.echo(f"no runs in {log.path}", err=True)
                return
            target, question = None, f"Delete all {count} run(s) in {log.path}?"
        if not yes and not _confirmed(question):
            fail("not confirmed: nothing deleted", EXIT_RUN_FAILED)
        deleted = log.delete(target)
    click.echo(f"deleted {deleted} run(s)", err=True)


def _confirmed(question: str) -> bool:
    """Ask on stderr; no answer (end of input, Ctrl-C) is a no."""
    try:
        return click.confirm(question, default=False, err=True)
    except click.Abort:
        click.echo(err=True)
        return False
