"""The one exception tree of reflectkit.

Every error reflectkit raises on purpose is a :class:`ReflectkitError`. The tree splits errors a
caller must fix (bad configuration or input, raised before any model is paid for) from errors that
happen while a run is under way (a provider failed, a critic raised)::

    ReflectkitError
    ├── ConfigurationError            fix the call: nothing was sent to a model   (also ValueError)
    │   ├── InputError                the prompt or messages are unusable
    │   ├── TemplateError             a prompt template is missing or does not render
    │   ├── UnknownModelError         LiteLLM cannot tell which provider serves the model
    │   ├── MissingCredentialsError   the provider needs an API key that is not set
    │   ├── LocalModelError           the local model cannot run: extra missing, bad GGUF file,
    │   │                             or its worker process died (LocalModelCrashError)
    │   └── ModelRequestsBlockedError a hosted model was called while requests are blocked (tests)
    └── RunError                      the run started and then failed; ``.partial`` keeps the work
        ├── ProviderError             a model call failed; ``.retryable`` says if trying again helps
        │   ├── RateLimitedError      429; ``.retry_after`` seconds when the provider said so
        │   ├── ProviderTimeoutError
        │   ├── ProviderConnectionError
        │   ├── ProviderServerError   5xx
        │   ├── ProviderAuthError     the provider rejected the credentials
        │   ├── ContextWindowError    the prompt is longer than the model accepts
        │   ├── ProviderRequestError  any other 4xx (bad request, unknown model name, policy)
        │   └── LocalModelCrashError  the local model's worker process died mid-call (a native
        │                             crash, an abort, a kill); also a LocalModelError
        └── CriticError               a critic raised or returned something unusable

One more :class:`RunError` lives with the tool that raises it:
:class:`reflectkit.data.recycle.RecycleError`, an oracle's reply for one record was unusable.

``retryable`` is the single flag the retry layer reads: rate limits, timeouts, connection errors
and server errors are retried with backoff; everything else fails at once. Messages never carry
secrets: provider text is passed through :func:`reflectkit.redaction.redact` first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from reflectkit.usage import Usage


class PartialResult(Protocol):
    """What :attr:`RunError.partial` holds: the work a failed run kept.

    Always a :class:`reflectkit.ReflectionResult` (stop reason ``error``) at run time; typed here
    by the part of its shape a caller reads, so that this module, which every other module
    imports, imports none of them (the result's module is built on the tag parser and verdicts,
    which raise the errors defined here)."""

    @property
    def output(self) -> str: ...
    @property
    def thinking(self) -> list[str]: ...
    @property
    def reflections(self) -> list[str]: ...
    @property
    def iterations(self) -> Sequence[Any]: ...
    @property
    def stop_reason(self) -> str: ...
    @property
    def usage(self) -> Usage: ...
    @property
    def model(self) -> str: ...
    @property
    def seconds(self) -> float: ...
    @property
    def run_id(self) -> str | None: ...
    @property
    def thread_id(self) -> str | None: ...
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of everything the failed run kept."""
        ...


class ReflectkitError(Exception):
    """Root of every error reflectkit raises on purpose."""


class ConfigurationError(ReflectkitError, ValueError):
    """The call or its configuration is wrong; raised before any model call is made."""


class InputError(ConfigurationError):
    """The prompt or the message list cannot be used (empty, no user turn, wrong shape)."""


class TemplateError(ConfigurationError):
    """A prompt template is missing, does not parse, or needs a variable it was not given."""


class UnknownModelError(ConfigurationError):
    """LiteLLM cannot tell which provider serves this model string."""

    def __init__(self, model: str, detail: str = "") -> None:
        self.model = model
        """The model string."""
        hint = (
            f"unknown model {model!r}: LiteLLM cannot tell its provider; "
            "prefix it with one (e.g. 'openai/...', 'anthropic/...', 'ollama/...')"
        )
        super().__init__(f"{hint} ({detail})" if detail else hint)


class MissingCredentialsError(ConfigurationError):
    """The model's provider needs credentials that are not in the environment."""

    def __init__(self, model: str, env_vars: list[str]) -> None:
        self.model = model
        """The model string."""
        self.env_vars = list(env_vars)
        """The environment variables that would hold its key."""
        names = " and ".join(self.env_vars)
        super().__init__(
            f"model {model!r} needs an API key: set {names} in the environment "
            "(or pass api_key=...)"
        )


class LocalModelError(ConfigurationError):
    """The local model cannot run here: the ``local`` extra is missing, or the model file is
    unknown, missing or not a GGUF file."""


class ModelRequestsBlockedError(ConfigurationError):
    """A hosted model was called while :func:`reflectkit.testing.block_model_requests` is on."""

    def __init__(self, model: str) -> None:
        self.model = model
        """The model string that was blocked."""
        super().__init__(
            f"request to hosted model {model!r} blocked: model requests are switched off "
            "(tests must use reflectkit.testing fakes or the local model)"
        )


class RunError(ReflectkitError):
    """A run started and then failed.

    ``partial`` holds what the run produced before it failed (drafts, critiques, usage), so work
    already paid for is not lost; it is ``None`` when the failure came before the first step.
    """

    partial: PartialResult | None = None
    """A :class:`reflectkit.ReflectionResult` with what the run did before it failed."""
    run_id: str | None = None
    """The failed run's id in the run log (``reflectkit runs show ID``), when it was recorded."""
    thread_id: str | None = None
    """The run's ``thread_id`` when it was durable: run again with it to resume."""


class ProviderError(RunError):
    """A model call failed at the provider or on the way to it."""

    retryable: bool = False
    """Whether a retry may succeed (rate limits, timeouts, connection and server errors)."""

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        status_code: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        """The model string."""
        self.status_code = status_code
        """The provider's HTTP status, when there was one."""
        if retryable is not None:
            self.retryable = retryable


class RateLimitedError(ProviderError):
    """The provider answered 429; ``retry_after`` is its Retry-After in seconds, if it sent one."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        status_code: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, model=model, status_code=status_code)
        self.retry_after = retry_after
        """Seconds the provider asked to wait (``Retry-After``), when it said."""


class ProviderTimeoutError(ProviderError):
    """The call took longer than its timeout."""

    retryable = True


class ProviderConnectionError(ProviderError):
    """The provider could not be reached."""

    retryable = True


class ProviderServerError(ProviderError):
    """The provider answered with a 5xx status."""

    retryable = True


class ProviderAuthError(ProviderError):
    """The provider rejected the credentials (401/403)."""


class ContextWindowError(ProviderError):
    """The prompt does not fit the model's context window; retrying cannot help."""


class ProviderRequestError(ProviderError):
    """The provider refused the request (a 4xx other than 401, 403 and 429)."""


class CriticError(RunError):
    """A critic raised, or returned something that is not a verdict."""


class LocalModelCrashError(LocalModelError, ProviderError):
    """The embedded local model's worker process died during a call: llama.cpp crashed
    (SIGSEGV, SIGILL, an abort) or the process was killed (SIGKILL, often for memory).

    The caller's process is unharmed: the model runs in a child process, and the next call starts
    a new one. The message is one line saying how the worker died and what to do (for a crash,
    the command that reinstalls llama.cpp portably). It is a :class:`LocalModelError` (the local
    model cannot run as installed) and a :class:`ProviderError` (a run that was under way keeps
    its ``partial`` work). Not retried: a crash in native code usually repeats.
    """

    returncode: int | None = None
    """The worker's exit status (negative: the signal that ended it), when known."""

    def __init__(self, message: str, *, model: str | None = None) -> None:
        ProviderError.__init__(self, message, model=model, retryable=False)
