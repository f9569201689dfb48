"""``reflectkit serve``: run the OpenAI-compatible proxy with uvicorn.

A flag given on the command line wins; a setting not given is read from its
``REFLECTKIT_SERVER_<NAME>`` variable, else its default (:class:`ServerSettings` reads them), so
the defaults ``--help`` shows are those of an empty environment.

Only click is imported here at start-up, so the main command line can register this command
(``cli.add_command(serve)``) without loading Starlette, uvicorn or LiteLLM for other commands.
"""

from __future__ import annotations

import copy
import signal
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from reflectkit.cli.options import (
    critic_model_option,
    defaulted_options,
    litellm_option,
    max_iterations_option,
    mode_option,
    on_critic_error_option,
)
from reflectkit.cli.support import CONTEXT_SETTINGS, option_value

if TYPE_CHECKING:
    from reflectkit.server import ServerSettings

__all__ = ["serve"]

_SECONDS = click.FloatRange(min=0, min_open=True)
_WAIT = click.FloatRange(min=0)
_COUNT = click.IntRange(min=1)
_BYTES = click.IntRange(min=1024)


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging setup with reflectkit's loggers on its terminal handler and format.

    reflectkit's library loggers have only a NullHandler (a library must not print), so without
    this the server's lines (a failed request, a retried upstream call) would go nowhere.
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["reflectkit"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port."
)
@click.option(
    "--api-key",
    envvar="REFLECTKIT_SERVER_API_KEY",
    show_envvar=True,
    help="Bearer token clients must send (required off loopback); prefer the env var.",
)
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    metavar="MODEL",
    help="Upstream LiteLLM model (or fnmatch pattern) to serve; repeat for more. "
    "Default: $REFLECTKIT_MODEL, else the embedded local model.",
)
@click.option(
    "--passthrough/--no-passthrough",
    default=True,
    show_default=True,
    help="Serve bare model names as plain calls (else only reflect/<model>).",
)
@mode_option("Default mode of reflected requests.")
@max_iterations_option("Default most drafts of a reflected request.")
@critic_model_option("Default model of the LLM critic (default: the same model).")
@on_critic_error_option(
    "Default for a critic that fails: raise answers with an error; keep_best answers with the "
    "best draft so far (stop reason critic_error)."
)
@litellm_option("LiteLLM argument for every upstream call (api_base=..., api_key=...); repeatable.")
@defaulted_options(  # ServerSettings' limits, each an option of the same name
    timeout=(_SECONDS, 120.0, "Seconds one upstream call may take."),
    max_body_bytes=(_BYTES, 2 * 1024 * 1024, "Largest request body; larger ones get a 413."),
    max_concurrent_requests=(_COUNT, 64, "Requests served at once; more wait in a queue."),
    queue_timeout=(_WAIT, 10.0, "Seconds a request waits for a free slot before a 429."),
    keepalive_interval=(
        _SECONDS,
        15.0,
        "Seconds of silence in a stream before a keep-alive comment.",
    ),
    header_timeout=(
        _SECONDS,
        10.0,
        "Seconds a connection has to send a request's headers (else 408, closed).",
    ),
    body_timeout=(_SECONDS, 30.0, "Seconds a request has to send its body (else 408, closed)."),
    max_connections=(_COUNT, 512, "Client connections open at once; more are refused with 503."),
    idle_timeout=(_SECONDS, 75.0, "Seconds an idle keep-alive connection is kept open."),
    workers=(
        click.IntRange(1, 256),
        1,
        "Server processes sharing the port (uvicorn workers); 1 serves in this process.",
    ),
    graceful_timeout=(
        _WAIT,
        30.0,
        "Seconds the requests in flight get to finish on SIGTERM or Ctrl-C; then they are cut.",
    ),
)
@click.option(
    "--run-log/--no-run-log",
    default=False,
    show_default=True,
    help="Record reflected runs in the run log.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
    help="Log level of uvicorn and reflectkit ('warning' drops the access log, keeps failed "
    "requests).",
)
def serve(**given: Any) -> None:
    """Serve an OpenAI-compatible API that reflects on any model (docs/server.md).

    POST /v1/chat/completions with model "reflect/<model>" runs reflectkit on <model>; a bare
    "<model>" is passed through as one plain call. Listening beyond loopback needs --api-key.
    Every setting not given here is read from REFLECTKIT_SERVER_<NAME> (REFLECTKIT_SERVER_PORT).
    """
    settings = _settings(click.get_current_context(), given)
    from reflectkit.server.running import run

    click.echo(
        f"reflectkit: serving {', '.join(settings.served_models)} on "
        f"http://{settings.host}:{settings.port}/v1 "
        f"({'API key required' if settings.api_key else 'no API key'}"
        f"{f', {settings.workers} workers' if settings.workers > 1 else ''})",
        err=True,
    )
    # uvicorn_options (applied by run): deadlines for request heads, a cap on connections, and
    # idle connections kept longer than clients keep them (httpx, under the OpenAI SDK, drops
    # them after 5 s: with uvicorn's default of 5 s too, a client may send on a connection at
    # the moment the server closes it, and the request fails with a read error).
    stopped_by = run(settings, _log_config(settings.log_level))
    if stopped_by is not None:
        # A stop that was asked for, done as asked: the requests in flight were given their
        # grace period (any cut is logged above), so it is a success.
        name = signal.Signals(stopped_by).name
        click.echo(f"reflectkit: stopped by {name}", err=True)


def _settings(context: click.Context, given: dict[str, Any]) -> ServerSettings:
    """The settings from the flags given on the command line (or the API key's variable); the
    others are left to :class:`ServerSettings`, which reads the environment, then defaults."""
    from pydantic import SecretStr

    from reflectkit.server import ServerSettings

    explicit = {
        name: value
        for name, value in given.items()
        if context.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
    }
    if "api_key" in explicit:
        explicit["api_key"] = SecretStr(explicit["api_key"]) if explicit["api_key"] else None
    if "options" in explicit:
        explicit["upstream_kwargs"] = dict(option_value(raw) for raw in explicit.pop("options"))
    return ServerSettings(**explicit)


if __name__ == "__main__":
    serve()
