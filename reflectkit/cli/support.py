"""What every ``reflectkit`` command shares: exit codes, one-line failures, ``-o KEY=VALUE``,
and stopping on a signal with a line that says so.

The main group (:mod:`reflectkit.cli.app`) and the other commands of :mod:`reflectkit.cli`
(``runs``, ``serve``, ``eval``, ``recycle``, ``export``) import this; it imports only click, so
``reflectkit --help`` stays free of LiteLLM, LangGraph and the server.
"""

from __future__ import annotations

import json
import signal
import sys
from types import FrameType
from typing import Any, NoReturn

import click

__all__ = [
    "CONTEXT_SETTINGS",
    "EXIT_AWAITING",
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_RUN_FAILED",
    "EXIT_SIGNAL_BASE",
    "BadInput",
    "Stopped",
    "fail",
    "option_value",
    "stop_on_signals",
]

EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_AWAITING = 3
"""``reflectkit run --human`` ended with the run paused for a person's verdict (stdin ran out)."""
EXIT_SIGNAL_BASE = 128
"""A command stopped by signal N exits 128 + N, as a shell reports a process the signal killed."""
EXIT_INTERRUPTED = EXIT_SIGNAL_BASE + signal.SIGINT

STOP_SIGNALS = ("SIGTERM", "SIGHUP")
"""The signals :func:`stop_on_signals` turns into :class:`Stopped` (Windows has no SIGHUP)."""

CONTEXT_SETTINGS: dict[str, object] = {"help_option_names": ["-h", "--help"]}
"""Every command's: ``-h`` and ``--help``. Commands defined outside the main group carry it too,
since click fixes a command's help option the first time it builds one, so a command first run
on its own (``python -m reflectkit.cli.serve``) would otherwise lose ``-h`` for good."""


class BadInput(click.ClickException):
    """A setting or input that cannot be used: exit code 2, like every usage error."""

    exit_code = EXIT_BAD_INPUT


class Stopped(SystemExit):
    """A signal stopped the command: raised in the main thread, wherever it was, by the handler
    :func:`stop_on_signals` installs, so ``finally`` blocks and a run's cancellation run as they
    do on Ctrl-C.

    A SystemExit, so ``except Exception`` lets it pass and asyncio lets it out of its event loop;
    its code, 128 + the signal's number, is the exit code even if nothing reports it. ``note``
    says what became of the command's work; the command that knows sets it.
    """

    def __init__(self, signum: int, note: str = "") -> None:
        super().__init__(EXIT_SIGNAL_BASE + signum)
        self.signum = signum
        self.note = note

    @property
    def exit_code(self) -> int:
        return EXIT_SIGNAL_BASE + self.signum

    def line(self) -> str:
        """``stopped by SIGTERM: <note>`` (``interrupted: <note>`` for Ctrl-C)."""
        name = signal.Signals(self.signum).name
        head = "interrupted" if self.signum == signal.SIGINT else f"stopped by {name}"
        return f"{head}: {self.note}" if self.note else head


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


def stop_on_signals() -> None:
    """Make SIGTERM and SIGHUP raise :class:`Stopped` in the main thread. For the command line's
    entry point only: it changes how the whole process takes those signals.

    A signal the process was started ignoring stays ignored: ``nohup reflectkit batch ...``
    asks for SIGHUP to be ignored, so the command survives its terminal closing."""
    for name in STOP_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _stop)


def fail(message: str, code: int) -> NoReturn:
    """Print ``reflectkit: error: <first line of message>`` on stderr and exit with ``code``."""
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    click.echo(f"reflectkit: error: {first}", err=True)
    sys.exit(code)


def option_value(raw: str) -> tuple[str, Any]:
    """One ``-o KEY=VALUE``: the value as JSON when it parses (``0``, ``true``, ``[1, 2]``),
    else the text as given."""
    key, sep, value = raw.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"expected KEY=VALUE, got {raw!r}", param_hint="--option")
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed
