"""``reflectkit run --human``: a person judges each draft on the terminal.

The run pauses at each critique (a :class:`~reflectkit.HumanCritic`); the draft goes to stderr,
and a line read from stdin is the verdict: ``pass``, or what to fix (an empty line asks again).
When stdin has no more lines (a pipe that ended, ``PROMPT`` given as ``-``, ``</dev/null``) the
run stays paused in its checkpoint, and the command says, on one line, how to resume it:
``reflectkit run --thread-id THREAD --verdict pass`` (or ``--verdict "what to fix"``), with the
run's other options again. It then exits :data:`EXIT_AWAITING`. The answer alone still goes to
stdout once the person passes a draft (or the run stops on a budget or ``--max-iterations``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

import click

from reflectkit.cli.support import EXIT_AWAITING

if TYPE_CHECKING:
    from reflectkit.api import Reflector
    from reflectkit.result import ReflectionResult

__all__ = ["check_resume", "judge_on_terminal", "still_waiting"]


def check_resume(prompt: str | None, verdict: str | None, thread_id: str | None) -> None:
    """A run is started with PROMPT or resumed with ``--verdict`` and ``--thread-id``."""
    if verdict is None:
        if prompt is None:
            raise click.UsageError("Missing argument 'PROMPT'.")
        return
    if prompt is not None:
        raise click.UsageError("--verdict resumes a waiting run: leave out PROMPT")
    if thread_id is None:
        raise click.UsageError("--verdict needs the --thread-id of the waiting run")


def _read_verdict(question: str) -> str:
    """One line of stdin, after ``question`` on stderr; EOFError when stdin has no more."""
    click.echo(question, err=True, nl=False)
    line = sys.stdin.readline()
    if not line or not sys.stdin.isatty():
        click.echo(err=True)  # end the question's line: a terminal echoed the reply's own
    if not line:
        raise EOFError
    return line.rstrip("\n")


def judge_on_terminal(reflector: Reflector, result: ReflectionResult) -> ReflectionResult:
    """Ask for verdicts on stdin while the run waits (see the module docstring)."""
    from reflectkit.integrations.human import ask_human

    return ask_human(
        reflector, result, ask=_read_verdict, show=lambda text: click.echo(text, err=True)
    )


def still_waiting(result: ReflectionResult) -> NoReturn:
    """Exit :data:`EXIT_AWAITING` with the one line (stderr) that says how to resume the run."""
    click.echo(
        f"reflectkit: waiting: draft {len(result.iterations)} awaits a person's verdict; resume "
        f"with reflectkit run --thread-id {result.thread_id} --verdict pass (or --verdict "
        '"what to fix") and the same options',
        err=True,
    )
    sys.exit(EXIT_AWAITING)
