"""What every ``reflectkit`` command shares: exit codes, one-line failures, ``-o KEY=VALUE``.

The main group (:mod:`reflectkit.cli`) and the commands defined next to what they drive (``runs``,
``serve``, ``eval``, ``recycle``, ``export``) import this; it imports only click, so ``reflectkit
--help`` stays free of LiteLLM, LangGraph and the server.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

__all__ = [
    "CONTEXT_SETTINGS",
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_RUN_FAILED",
    "BadInput",
    "fail",
    "option_value",
]

EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

CONTEXT_SETTINGS: dict[str, object] = {"help_option_names": ["-h", "--help"]}
"""Every command's: ``-h`` and ``--help``. Commands defined outside the main group carry it too,
since click fixes a command's help option the first time it builds one, so a command first run
on its own (``python -m reflectkit.server.command``) would otherwise lose ``-h`` for good."""


class BadInput(click.ClickException):
    """A setting or input that cannot be used: exit code 2, like every usage error."""

    exit_code = EXIT_BAD_INPUT


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
