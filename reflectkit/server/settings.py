"""The proxy's settings: where it listens, who may call it, what it serves, and its limits.

Each is read from the environment too, as ``REFLECTKIT_SERVER_<NAME>`` (pydantic-settings), so
``reflectkit serve``, its worker processes, ``uvicorn --factory`` and a container configure the
proxy alike: a value given in Python (or a command-line flag) wins over the environment, which
wins over the default. A bad value in the environment is one line naming the variable.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import os
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from reflectkit.config import Mode, OnCriticError, RetryPolicy, resolve_model
from reflectkit.errors import ConfigurationError

__all__ = ["API_KEY_ENV_VAR", "ENV_PREFIX", "ServerSettings", "is_loopback"]

ENV_PREFIX = "REFLECTKIT_SERVER_"
"""Every setting is read from ``REFLECTKIT_SERVER_<NAME>`` when not given (``..._PORT=8100``)."""

API_KEY_ENV_VAR = f"{ENV_PREFIX}API_KEY"
"""The environment variable the proxy's API key is read from when none is given."""

LogLevel = Literal["critical", "error", "warning", "info", "debug"]

_BOOLEAN_WORDS = {"true": True, "1": True, "yes": True, "on": True}
_BOOLEAN_WORDS |= {"false": False, "0": False, "no": False, "off": False}


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine (``127.0.0.0/8``, ``::1``,
    ``localhost``). An empty host or ``0.0.0.0`` means every interface: not loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def env_var(field: str) -> str:
    """The environment variable of a setting: ``port`` -> ``REFLECTKIT_SERVER_PORT``."""
    return f"{ENV_PREFIX}{field.upper()}"


class ServerSettings(BaseSettings):
    """How ``reflectkit serve`` runs: where it listens, who may call it, what it serves, and its
    limits.

    A request for ``<prefix><model>`` (``reflect/gpt-4o-mini``) runs reflectkit on ``model``; a
    bare allowed ``model`` is passed straight through as one plain call when ``passthrough`` is
    on, refused otherwise. ``mode``, ``max_iterations``, ``critic_model`` and
    ``on_critic_error`` are the defaults of reflected requests, which may choose their own (the
    ``reflectkit`` request field). Listening on anything but loopback without an ``api_key`` is
    refused.

    Every field not given is read from ``REFLECTKIT_SERVER_<NAME>`` (see :data:`ENV_PREFIX`;
    empty means unset): lists and tables as JSON (``models`` also comma-separated), switches as
    true/false. A value given in Python or as a ``reflectkit serve`` flag wins over the
    environment, which wins over the default. Connection limits (``header_timeout``,
    ``max_connections``, ``idle_timeout``) are uvicorn's: ``reflectkit serve`` applies them, and
    :func:`reflectkit.server.uvicorn_options` does under your own uvicorn.

    Raises:
        ConfigurationError: A value is invalid (one line naming the field, or the variable it
            came from, never the value), or the server would listen beyond loopback without
            an API key.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        frozen=True,
        extra="forbid",
        arbitrary_types_allowed=True,
    )

    host: str = "127.0.0.1"
    """The address to listen on (``REFLECTKIT_SERVER_HOST``, ``--host``). Anything but loopback
    (``0.0.0.0``, a public address) needs an ``api_key``."""
    port: int = Field(default=8000, ge=0, le=65535)
    """The port (``REFLECTKIT_SERVER_PORT``, ``--port``); default 8000."""
    api_key: SecretStr | None = None
    """The bearer token clients must send (``REFLECTKIT_SERVER_API_KEY``, ``--api-key``);
    default none, which only loopback allows. Never printed, logged or put in an error."""
    models: Annotated[tuple[str, ...], NoDecode] = ()
    """The upstream LiteLLM model strings clients may ask for, exact names or ``fnmatch``
    patterns (``"openai/*"``) (``REFLECTKIT_SERVER_MODELS`` as ``a,b`` or a JSON list; ``-m``,
    repeated). Empty, the default: the one default model, ``$REFLECTKIT_MODEL``, else the
    embedded local model. A request's ``critic_model`` must be one of them too."""
    prefix: str = "reflect/"
    """The prefix of reflected model names, a name followed by ``/``
    (``REFLECTKIT_SERVER_PREFIX``; no flag)."""
    passthrough: bool = True
    """Serve bare model names as one plain call each, without reflection
    (``REFLECTKIT_SERVER_PASSTHROUGH``, ``--passthrough/--no-passthrough``); default on. Off,
    they get a 404."""
    mode: Mode = "auto"
    """The default mode of reflected requests, ``auto``, ``loop`` or ``single``
    (``REFLECTKIT_SERVER_MODE``, ``--mode``)."""
    max_iterations: int = Field(default=3, ge=1, le=100)
    """The default most drafts of a reflected request, 1 to 100
    (``REFLECTKIT_SERVER_MAX_ITERATIONS``, ``-n``); default 3."""
    max_iterations_limit: int = Field(default=10, ge=1, le=100)
    """The most drafts a request may ask for; more is a 400
    (``REFLECTKIT_SERVER_MAX_ITERATIONS_LIMIT``; no flag); default 10."""
    critic_model: str | None = None
    """The default model of the LLM critic (``REFLECTKIT_SERVER_CRITIC_MODEL``,
    ``--critic-model``); default none: the requested model itself."""
    on_critic_error: OnCriticError = "raise"
    """What a reflected request does when its critic fails (``REFLECTKIT_SERVER_ON_CRITIC_ERROR``,
    ``--on-critic-error``): ``raise`` (the default) answers with an error; ``keep_best`` with
    the best draft so far (stop reason ``critic_error``)."""
    upstream_kwargs: dict[str, Any] = Field(default_factory=dict)
    """LiteLLM arguments for every upstream call, the critic's included (``api_base``,
    ``api_key`` ...) (``REFLECTKIT_SERVER_UPSTREAM_KWARGS`` as a JSON object; ``-o KEY=VALUE``,
    repeated); default none. ``model``, ``messages``, ``stream``, ``num_retries`` and
    ``max_retries`` are reflectkit's and refused."""
    timeout: float = Field(default=120.0, gt=0)
    """Seconds one upstream call may take (``REFLECTKIT_SERVER_TIMEOUT``, ``--timeout``);
    default 120."""
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    """How failed upstream calls are retried (``REFLECTKIT_SERVER_RETRY`` as a JSON object,
    ``{"max_attempts": 2}``; no flag); default :class:`~reflectkit.RetryPolicy`'s."""
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    """The largest request body; larger ones get a 413 (``REFLECTKIT_SERVER_MAX_BODY_BYTES``,
    ``--max-body-bytes``); default 2 MiB, at least 1024."""
    max_concurrent_requests: int = Field(default=64, ge=1)
    """Requests served at once, per worker; more wait in a queue
    (``REFLECTKIT_SERVER_MAX_CONCURRENT_REQUESTS``, ``--max-concurrent-requests``); default 64."""
    queue_timeout: float = Field(default=10.0, ge=0)
    """Seconds a request waits for a free slot before it is refused with a 429
    (``REFLECTKIT_SERVER_QUEUE_TIMEOUT``, ``--queue-timeout``); default 10."""
    keepalive_interval: float = Field(default=15.0, gt=0)
    """Seconds of silence in a stream (a loop's critique) before an SSE comment line keeps it
    open (``REFLECTKIT_SERVER_KEEPALIVE_INTERVAL``, ``--keepalive-interval``); default 15."""
    header_timeout: float = Field(default=10.0, gt=0)
    """Seconds a connection has to send a request's head, else 408 and closed (uvicorn's;
    ``REFLECTKIT_SERVER_HEADER_TIMEOUT``, ``--header-timeout``); default 10."""
    body_timeout: float = Field(default=30.0, gt=0)
    """Seconds a request has to send its body, else 408 and closed (the app's;
    ``REFLECTKIT_SERVER_BODY_TIMEOUT``, ``--body-timeout``); default 30."""
    max_connections: int = Field(default=512, ge=1)
    """Client connections open at once, per worker; more are refused with a 503 (uvicorn's;
    ``REFLECTKIT_SERVER_MAX_CONNECTIONS``, ``--max-connections``); default 512."""
    idle_timeout: float = Field(default=75.0, gt=0)
    """Seconds an idle keep-alive connection is kept open (uvicorn's;
    ``REFLECTKIT_SERVER_IDLE_TIMEOUT``, ``--idle-timeout``); default 75."""
    run_log: bool | str = False
    """Record reflected runs in the run log: False (the default), True (``$REFLECTKIT_RUN_LOG``
    if that names a file, else the default file) or a path (``REFLECTKIT_SERVER_RUN_LOG`` as
    true/false or a path; ``--run-log/--no-run-log``)."""
    workers: int = Field(default=1, ge=1, le=256)
    """Server processes sharing the port (uvicorn workers), 1 to 256; 1 serves in the
    ``reflectkit serve`` process (``REFLECTKIT_SERVER_WORKERS``, ``--workers``)."""
    graceful_timeout: float = Field(default=30.0, ge=0)
    """Seconds the requests in flight get to finish on SIGTERM or Ctrl-C (new connections are
    refused meanwhile); then they are cut (``REFLECTKIT_SERVER_GRACEFUL_TIMEOUT``,
    ``--graceful-timeout``); default 30."""
    log_level: LogLevel = "info"
    """The log level of uvicorn's and reflectkit's lines (``REFLECTKIT_SERVER_LOG_LEVEL``,
    ``--log-level``); ``warning`` drops the access log and keeps failed requests."""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise ConfigurationError(_one_line(error, values)) from None
        except SettingsError as error:  # a value the environment spells as bad JSON
            raise ConfigurationError(_bad_json(error)) from None

    @field_validator("models", mode="before")
    @classmethod
    def _model_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # from the environment: JSON, or names separated by commas
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return tuple(name.strip() for name in text.split(",") if name.strip())
        return value

    @field_validator("run_log", mode="before")
    @classmethod
    def _run_log_switch(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in _BOOLEAN_WORDS:
            return _BOOLEAN_WORDS[value.strip().lower()]  # "true" from the environment, no path
        return value

    @field_validator("api_key")
    @classmethod
    def _usable_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        if not value.get_secret_value().strip():
            raise ValueError("the API key cannot be empty")
        return SecretStr(value.get_secret_value().strip())

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.endswith("/") or len(value) < 2:
            raise ValueError("the prefix must be a name followed by '/', like 'reflect/'")
        return value

    @field_validator("upstream_kwargs")
    @classmethod
    def _upstream_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in ("model", "messages", "stream", "num_retries", "max_retries"):
            if name in value:
                raise ValueError(f"{name!r} is set by reflectkit and cannot be an upstream kwarg")
        return dict(value)

    @model_validator(mode="after")
    def _exposed_needs_key(self) -> ServerSettings:
        if not is_loopback(self.host) and self.api_key is None:
            raise ValueError(
                f"refusing to listen on {self.host or 'every interface'!r} without an API key: "
                f"set {API_KEY_ENV_VAR} (or pass --api-key), or listen on 127.0.0.1"
            )
        return self

    @property
    def served_models(self) -> tuple[str, ...]:
        """The allowed upstream models (names or patterns); the default model if none given."""
        return self.models or (resolve_model(None),)

    def allows(self, model: str) -> bool:
        """Whether ``model`` may be called upstream."""
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.served_models)

    def listed_models(self) -> list[str]:
        """The model ids ``GET /v1/models`` lists: each exact allowed model (patterns cannot be
        listed), with the reflection prefix, and bare too when ``passthrough`` is on."""
        exact = [m for m in self.served_models if not any(c in m for c in "*?[")]
        ids = [f"{self.prefix}{m}" for m in exact]
        return ids + exact if self.passthrough else ids

    def check(self) -> None:
        """Re-check a copy made without validation (``model_copy(update=...)``)."""
        if not is_loopback(self.host) and self.api_key is None:
            raise ConfigurationError(
                f"refusing to listen on {self.host!r} without an API key: set {API_KEY_ENV_VAR}"
            )


def _one_line(error: ValidationError, given: dict[str, Any]) -> str:
    """Pydantic's errors as one line; a value that came from the environment is named by its
    variable, so the operator knows what to fix (the value itself is never shown: it may be
    a key)."""
    parts = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        if field and field not in given and os.environ.get(env_var(field), "") != "":
            where = env_var(field)
        else:
            where = ".".join(str(p) for p in item["loc"]) or "ServerSettings"
        parts.append(f"{where}: {item['msg']}")
    return "invalid ServerSettings: " + "; ".join(parts)


def _bad_json(error: SettingsError) -> str:
    text = str(error)
    field = text.split('"')[1] if text.count('"') >= 2 else ""
    where = env_var(field) if field else f"a {ENV_PREFIX}* variable"
    return f"invalid ServerSettings: {where}: not valid JSON"
