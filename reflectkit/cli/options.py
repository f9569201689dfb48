"""The options several commands share, each defined once: the model, the LLM critic's model,
``-n/--max-iterations``, ``--mode``, ``--on-critic-error``, ``-o/--option`` (LiteLLM
arguments), ``--template-dir``, the exports' ``-o/--output``, ``--concurrency``, ``--json``
and ``--no-progress``; and :func:`defaulted_options`, a command's block of plain settings as one
table. Each command words its own help, since the same option means a run's setting in ``run``
and a default of every request in ``serve``.

Only click is imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = [
    "concurrency_option",
    "critic_model_option",
    "defaulted_options",
    "json_option",
    "litellm_option",
    "max_iterations_option",
    "mode_option",
    "model_option",
    "no_progress_option",
    "on_critic_error_option",
    "output_option",
    "ray_arguments",
    "ray_options",
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


def on_critic_error_option(help: str) -> Callable[[F], F]:
    """``--on-critic-error``: raise or keep_best, raise by default (ReflectConfig's
    ``on_critic_error``)."""
    return click.option(
        "--on-critic-error",
        type=click.Choice(["raise", "keep_best"]),
        default="raise",
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


def template_dir_option(
    help: str = "Directory of templates that override the built-in ones.",
) -> Callable[[F], F]:
    """``--template-dir``: a directory of templates that override the built-in ones."""
    return click.option("--template-dir", type=click.Path(exists=True, file_okay=False), help=help)


def concurrency_option(
    short: str, default: int, help: str, *, most: int | None = None
) -> Callable[[F], F]:
    """``--concurrency`` with the short flag ``short``: how many run at once, from 1 to ``most``
    (no limit when None), ``default`` shown."""
    return click.option(
        short,
        "--concurrency",
        type=click.IntRange(1, most),
        default=default,
        show_default=True,
        help=help,
    )


def ray_options(what: str) -> Callable[[F], F]:
    """``--ray [ADDRESS]`` and ``--ray-actors N``: run ``what`` on Ray actors, on a new local
    cluster (``--ray`` alone) or the cluster at ADDRESS; pass them on with :func:`ray_arguments`.
    A bare ``--ray`` takes the next word as its address, so it goes after the arguments (or is
    written ``--ray=auto``)."""
    ray = click.option(
        "--ray",
        "ray",
        is_flag=False,
        flag_value="",
        default=None,
        metavar="[ADDRESS]",
        help=f"Run {what} on Ray actors: a local cluster, or the one at ADDRESS "
        "(auto, ray://host:10001). Needs pip install 'reflectkit[ray]'.",
    )
    actors = click.option(
        "--ray-actors",
        type=click.IntRange(1),
        metavar="N",
        help="Ray actors to start [default: the cluster's CPUs]; each runs --concurrency at once.",
    )

    def apply(function: F) -> F:
        return ray(actors(function))

    return apply


def ray_arguments(ray: str | None, ray_actors: int | None) -> dict[str, Any]:
    """``--ray`` and ``--ray-actors`` as the ``ray=`` and ``ray_actors=`` keyword arguments of
    batch, evaluate and recycle: ``ray`` None (not given), True (a local cluster) or an
    address."""
    setting = None if ray is None else (ray.strip() or True)
    return {"ray": setting, "ray_actors": ray_actors}


def json_option(help: str) -> Callable[[F], F]:
    """``--json``, into the ``as_json`` parameter: print JSON, not text."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def no_progress_option(help: str) -> Callable[[F], F]:
    """``--no-progress``: no progress bar on stderr."""
    return click.option("--no-progress", is_flag=True, help=help)


def defaulted_options(**table: tuple[click.ParamType[Any], Any, str]) -> Callable[[F], F]:
    """One ``--name`` option per keyword (underscores written as dashes), in the order given,
    each ``(type, default, help)`` with its default shown: a block of plain settings written as
    one table, each setting once (``reflectkit serve``'s limits)."""

    def apply(function: F) -> F:
        # Stacked decorators apply bottom-up: the last option first, so --help lists them in order.
        for name, (kind, default, help) in reversed(table.items()):
            flag = "--" + name.replace("_", "-")
            option = click.option(flag, type=kind, default=default, show_default=True, help=help)
            function = option(function)
        return function

    return apply
