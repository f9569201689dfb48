"""``reflectkit serve``: run the OpenAI-compatible proxy with uvicorn.

Only click is imported here at start-up, so the main command line can register this command
(``cli.add_command(serve)``) without loading Starlette, uvicorn or LiteLLM for other commands.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, cast

import click

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
    from reflectkit.config import Mode, OnCriticError

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
def serve(
    host: str,
    port: int,
    api_key: str | None,
    models: tuple[str, ...],
    passthrough: bool,
    mode: str,
    max_iterations: int,
    critic_model: str | None,
    on_critic_error: str,
    options: tuple[str, ...],
    run_log: bool,
    log_level: str,
    **limits: Any,
) -> None:
    """Serve an OpenAI-compatible API that reflects on any model (docs/server.md).

    POST /v1/chat/completions with model "reflect/<model>" runs reflectkit on <model>; a bare
    "<model>" is passed through as one plain call. Listening beyond loopback needs --api-key.
    """
    from pydantic import SecretStr

    from reflectkit.server import ServerSettings, create_app

    settings = ServerSettings(
        host=host,
        port=port,
        api_key=SecretStr(api_key) if api_key else None,
        models=models,
        passthrough=passthrough,
        mode=cast("Mode", mode),
        max_iterations=max_iterations,
        critic_model=critic_model,
        on_critic_error=cast("OnCriticError", on_critic_error),
        upstream_kwargs=dict(option_value(raw) for raw in options),
        run_log=run_log,
        **limits,
    )
    app = create_app(settings)
    import uvicorn

    from reflectkit.server import uvicorn_options

    click.echo(
        f"reflectkit: serving {', '.join(settings.served_models)} on "
        f"http://{host}:{port}/v1 ({'API key required' if settings.api_key else 'no API key'})",
        err=True,
    )
    # uvicorn_options: deadlines for request heads, a cap on connections, and idle connections
    # kept longer than clients keep them (httpx, under the OpenAI SDK, drops them after 5 s:
    # with uvicorn's default of 5 s too, a client may send on a connection at the moment the
    # server closes it, and the request fails with a read error).
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=_log_config(log_level),
        log_level=log_level,
        server_header=False,
        lifespan="off",
        **uvicorn_options(settings),
    )


if __name__ == "__main__":
    serve()
