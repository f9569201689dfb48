"""The options several commands share, each defined once: the model, the LLM critic's model,
``-n/--max-iterations``, ``--mode``, ``-o/--option`` (LiteLLM arguments), ``--template-dir``
and the exports' ``-o/--output``. Each command words its own help, since the same option means a
run's setting in ``run`` and a default of every request in ``serve``.

Only click is imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = [
    "critic_model_option",
    "litellm_option",
    "max_iterations_option",
    "mode_option",
    "model_option",
    "output_option",
    "template_dir_option",
]

F = TypeVar("F", bound=Callable[..., Any])


def model_option(help: str) -> Callable[[F], F]:
    """``-m/--model``, read from ``$REFLECTKIT_MODEL`` when not given."""
    return click.option("-m", "--model", envvar="REFLECTKIT_MODEL", show_envvar=True, help=help)


def critic_model_option(help: str) -> Callable[[F], F]:
    """``--critic-model``: the LLM critic's model (the same model when not given)."""
    return click.option("--critic-model", help=help)


def max_iterations_option(help: str) -> Callable[[F], F]:
    """``-n/--max-iterations``: most drafts, 1 to 100, 3 by default."""
    return click.option(
        "-n",
        "--max-iterations",
        type=click.IntRange(1, 100),
        default=3,
        show_default=True,
        help=help,
    )


def mode_option(help: str) -> Callable[[F], F]:
    """``--mode``: auto, loop or single, auto by default."""
    return click.option(
        "--mode",
        type=click.Choice(["auto", "loop", "single"]),
        default="auto",
        show_default=True,
        help=help,
    )


def litellm_option(help: str, *, short: bool = True) -> Callable[[F], F]:
    """``-o/--option KEY=VALUE``, repeatable, into the ``options`` parameter (parse each with
    :func:`reflectkit.cli.support.option_value`). ``short=False`` leaves ``-o`` to a command
    whose ``-o`` is its output file."""
    flags = ("-o", "--option") if short else ("--option",)
    return click.option(*flags, "options", multiple=True, metavar="KEY=VALUE", help=help)


def output_option() -> Callable[[F], F]:
    """``-o/--output FILE`` of the export commands: replaced if it exists, ``-`` for stdout."""
    return click.option(
        "-o",
        "--output",
        default="-",
        show_default=True,
        metavar="FILE",
        help="File to write (replaced); - for stdout.",
    )


def template_dir_option() -> Callable[[F], F]:
    """``--template-dir``: a directory of templates that override the built-in ones."""
    return click.option(
        "--template-dir",
        type=click.Path(exists=True, file_okay=False),
        help="Directory of templates that override the built-in ones.",
    )
