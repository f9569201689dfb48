"""The proxy's settings: where it listens, who may call it, what it serves, and its limits."""

from __future__ import annotations

import fnmatch
import ipaddress
import os
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from reflectkit.config import Mode, OnCriticError, RetryPolicy, resolve_model
from reflectkit.errors import ConfigurationError
from reflectkit.validation import StrictModel

__all__ = ["API_KEY_ENV_VAR", "ServerSettings", "is_loopback"]

API_KEY_ENV_VAR = "REFLECTKIT_SERVER_API_KEY"
"""The environment variable the proxy's API key is read from when none is given."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine (``127.0.0.0/8``, ``::1``,
    ``localhost``). An empty host or ``0.0.0.0`` means every interface: not loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _key_from_environment() -> SecretStr | None:
    value = os.environ.get(API_KEY_ENV_VAR, "").strip()
    return SecretStr(value) if value else None


class ServerSettings(StrictModel):
    """How ``reflectkit serve`` runs.

    ``models`` are the upstream LiteLLM model strings clients may ask for, as exact names or
    ``fnmatch`` patterns (``"openai/*"``); empty means the one default model
    (``$REFLECTKIT_MODEL``, else the embedded local model). A request for ``<prefix><model>``
    (``reflect/gpt-4o-mini``) runs reflectkit on ``model``; a bare allowed ``model`` is passed
    straight through as one plain call when ``passthrough`` is on, refused otherwise.
    ``upstream_kwargs`` go to LiteLLM on every upstream call (``api_base``, ``api_key`` ...);
    ``timeout`` bounds each upstream call and ``retry`` says how failed ones are retried.
    ``mode``, ``max_iterations``, ``critic_model`` and ``on_critic_error`` are the defaults of
    reflected requests, which may choose their own (the ``reflectkit`` request field).

    ``api_key`` (default: ``$REFLECTKIT_SERVER_API_KEY``) is the bearer token clients must send;
    listening on anything but loopback without one is refused. Limits: ``max_body_bytes`` per
    request (413 beyond it), ``max_concurrent_requests`` running at once, and ``queue_timeout``
    seconds a request waits for a free slot before it is refused with 429. A stream silent for
    ``keepalive_interval`` seconds (a loop's critique) gets an SSE comment line. ``run_log``:
    record reflected runs in the run log (False, the default; True; or a path).

    Connections (see :mod:`reflectkit.server.limits`): a request head must arrive within
    ``header_timeout`` seconds and its body within ``body_timeout`` seconds (408 otherwise); at
    most ``max_connections`` are open at once (more get a 503); an idle one is closed after
    ``idle_timeout`` seconds. ``body_timeout`` is the app's; the others are uvicorn's, applied
    by ``reflectkit serve`` or by :func:`reflectkit.server.uvicorn_options` under your own.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_key: SecretStr | None = Field(default_factory=_key_from_environment)
    models: tuple[str, ...] = ()
    prefix: str = "reflect/"
    passthrough: bool = True
    mode: Mode = "auto"
    max_iterations: int = Field(default=3, ge=1, le=100)
    max_iterations_limit: int = Field(default=10, ge=1, le=100)
    critic_model: str | None = None
    on_critic_error: OnCriticError = "raise"
    upstream_kwargs: dict[str, Any] = Field(default_factory=dict)
    timeout: float = Field(default=120.0, gt=0)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_concurrent_requests: int = Field(default=64, ge=1)
    queue_timeout: float = Field(default=10.0, ge=0)
    keepalive_interval: float = Field(default=15.0, gt=0)
    header_timeout: float = Field(default=10.0, gt=0)
    body_timeout: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=512, ge=1)
    idle_timeout: float = Field(default=75.0, gt=0)
    run_log: bool | str = False

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
