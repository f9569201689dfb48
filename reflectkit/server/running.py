"""Running the proxy under uvicorn, as ``reflectkit serve`` does: one process, or ``workers``
processes sharing the port, and a graceful stop.

One process serves the app object made here. Several are uvicorn's workers: each is a fresh
interpreter that imports :func:`worker_app` as a factory and builds its own app with
:func:`~reflectkit.server.create_app`, so the settings reach it through the environment
(:func:`worker_environment` writes every setting as its ``REFLECTKIT_SERVER_<NAME>`` variable,
which :class:`ServerSettings` reads back).

On SIGTERM or SIGINT (and SIGHUP with one worker; with several, SIGHUP restarts the workers, as
uvicorn does) the listening socket is closed (new connections are refused), requests and streams
in flight go on for up to ``graceful_timeout`` seconds, and what is still open then
is cancelled: uvicorn logs the cut, and each request cut leaves its ``503 server_stopping``
line (:class:`~reflectkit.server.failures.FailureLog`). :func:`run` returns the signal that
stopped the server, so the command can exit 0 for a stop it was asked for.

Each process loads LiteLLM before it takes connections (when a served model goes through it):
otherwise its first request pays the import, seconds on a busy machine, while the event loop
and every other request wait.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from uvicorn.supervisors.multiprocess import Multiprocess

from reflectkit.models.direct import direct_backend
from reflectkit.models.registry import load_litellm
from reflectkit.server.app import create_app
from reflectkit.server.limits import uvicorn_options
from reflectkit.server.settings import ServerSettings, env_var

__all__ = ["FACTORY", "run", "worker_app", "worker_environment"]

FACTORY = "reflectkit.server.running:worker_app"
"""The app factory uvicorn's workers import."""

WORKER_PROTOCOL = "reflectkit.server.limits:EnvironmentGuardedH11"
"""The guarded HTTP protocol for workers, by name: a class made at run time cannot be sent to
another process, so this one reads its limits from the environment too."""


def worker_environment(settings: ServerSettings) -> dict[str, str | None]:
    """Every setting as the environment variable a worker reads it from; ``None`` for a setting
    that is unset (its variable must be removed, not inherited). Secrets are in it: it is for
    ``os.environ`` of the server's own processes, never for printing."""
    variables: dict[str, str | None] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            text: str | None = None
        elif isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, str):
            text = value
        elif isinstance(value, (bool, int, float)):
            text = json.dumps(value)
        else:  # tuples, tables, the retry policy
            text = json.dumps(value)
        variables[env_var(name)] = text
    return variables


def _warm(settings: ServerSettings) -> None:
    """Import LiteLLM now if a served model is called through it (the embedded model's calls
    are not, and skip the import)."""
    if any(direct_backend(model) is None for model in settings.served_models):
        load_litellm()


def worker_app() -> Starlette:
    """One worker's app: ``create_app()`` from the environment, LiteLLM loaded first."""
    app = create_app()
    _warm(app.state.proxy.settings)
    return app


class _Server(uvicorn.Server):
    """uvicorn's server, which, stopped by a signal, says which instead of raising it again
    (uvicorn re-raises it, which would kill the process with that signal after a clean stop)."""

    stopped_by: int | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # SIGHUP (the terminal that started the server closed) stops it as SIGTERM does, with
        # its grace period, where it would otherwise kill the process at once. A server started
        # with nohup ignores SIGHUP, and keeps ignoring it.
        hangup = threading.current_thread() is threading.main_thread() and (
            signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN
        )
        previous = signal.signal(signal.SIGHUP, self.handle_exit) if hangup else None
        try:
            with super().capture_signals():
                yield
                if self._captured_signals:
                    self.stopped_by = self._captured_signals[0]
                self._captured_signals.clear()
        finally:
            if hangup:
                signal.signal(signal.SIGHUP, previous)


class _Workers(Multiprocess):
    """uvicorn's worker supervisor, which closes its own copy of the listening socket once it
    has told the workers to stop: they close theirs, so new connections are refused rather
    than left waiting in the backlog while the requests in flight finish."""

    stopped_by: int | None = None

    def handle_int(self) -> None:
        self.stopped_by = self.stopped_by or signal.SIGINT
        super().handle_int()

    def handle_term(self) -> None:
        self.stopped_by = self.stopped_by or signal.SIGTERM
        super().handle_term()

    def terminate_all(self) -> None:
        super().terminate_all()
        for sock in self.sockets:
            sock.close()


def run(settings: ServerSettings, log_config: dict[str, Any]) -> int | None:
    """Serve until stopped; the signal that stopped the server (None if nothing did)."""
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": log_config,
        "log_level": settings.log_level,
        "server_header": False,
        "lifespan": "off",
        "timeout_graceful_shutdown": settings.graceful_timeout,
        **uvicorn_options(settings),
    }
    if settings.workers == 1:
        config = uvicorn.Config(create_app(settings), **common)
        _warm(settings)
        server = _Server(config)
        server.run()
        return server.stopped_by
    for name, value in worker_environment(settings).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    common["http"] = WORKER_PROTOCOL
    config = uvicorn.Config(FACTORY, factory=True, workers=settings.workers, **common)
    sock = config.bind_socket()
    workers = _Workers(config, sockets=[sock])
    try:
        workers.run()
    finally:
        sock.close()
    return workers.stopped_by
