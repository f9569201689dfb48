"""ReflectConfig: everything that shapes a run, validated once, before any model is called."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, InstanceOf, field_validator

from reflectkit.errors import ConfigurationError
from reflectkit.redaction import redact, redact_mapping
from reflectkit.tags import REFLECTION_TAGS, TagScheme
from reflectkit.validation import StrictModel

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_ENV_VAR",
    "FormatHelp",
    "Mode",
    "OnCriticError",
    "ReflectConfig",
    "RetryPolicy",
    "StructuredOutput",
    "config_from_arguments",
    "resolve_model",
]

MODEL_ENV_VAR = "REFLECTKIT_MODEL"
"""The environment variable that names the model when none is passed."""

DEFAULT_MODEL = "local/smollm2-135m"
"""The model when none is given anywhere: SmolLM2-135M-Instruct, run in-process (needs the
``local`` extra), so reflectkit works with no API key and no network."""

Mode = Literal["auto", "loop", "single"]

StructuredOutput = Literal["auto", "tags", "native"]
"""How a typed answer (``output_type``) is written: see :mod:`reflectkit.typed`."""

OnCriticError = Literal["raise", "keep_best"]
"""What a failed critique does to the run: fail it, or end it with the best draft so far."""

# Retries are reflectkit's own (see RetryPolicy); LiteLLM's and the SDKs' are switched off.
_RETRY_KWARGS = ("num_retries", "max_retries")


class RetryPolicy(StrictModel):
    """How failed model calls are retried.

    Only retryable failures (429, 5xx, timeouts, connection errors) are retried, with exponential
    backoff and jitter between ``initial_wait`` and ``max_wait`` seconds. A 429's Retry-After is
    honoured when it is at most ``max_retry_after`` seconds; a longer one fails the call at once.
    """

    max_attempts: int = Field(default=4, ge=1, le=20)
    """Calls at most, the first included (1 to 20; 1: no retries)."""
    initial_wait: float = Field(default=1.0, ge=0)
    """Seconds before the first retry; each later wait doubles, plus up to 50% jitter."""
    max_wait: float = Field(default=30.0, ge=0)
    """The longest wait between two attempts, in seconds."""
    max_retry_after: float = Field(default=60.0, ge=0)
    """The longest Retry-After a 429 may ask for and still be retried (waiting that long)."""


class FormatHelp(StrictModel):
    """Help for models that do not keep to the tag format on their own.

    Pass it as ``format_help=FormatHelp(...)``, or ``format_help="off"`` for none. A ``None``
    field means "decide from the model's capabilities" (see
    :mod:`reflectkit.models.capabilities`). See docs/format-help.md.
    """

    exemplar: bool | None = None
    """Show a worked example (the ``exemplar_question``/``exemplar_answer`` templates); None:
    on for models marked ``needs_format_help`` (the local model)."""
    exemplar_in: Literal["turns", "system"] = "turns"
    """Where the example goes: ``"turns"``, a demonstration exchange after the system prompt,
    or ``"system"``, inside the system prompt. Turns work better on SmolLM2-135M (see
    docs/format-help.md for figures)."""
    prefill: bool | None = None
    """Start the reply with the opening thinking tag as an assistant prefix; None: on where the
    provider can continue one (``prefill`` capability: the local model, Anthropic)."""
    repair: bool = True
    """When a reply has no usable output block, ask once more for the final answer only. Where
    the provider continues prefixes, the model's own reply is continued with its open blocks
    closed and the output tag opened; elsewhere a short user turn asks for the answer in the
    output tag. It costs a call only when the format failed."""
    repair_max_tokens: int = Field(default=256, ge=1)
    """The most tokens the repair call may write."""
    grammar: bool | None = None
    """Constrain decoding with a GBNF grammar of the scheme's tags (see
    :mod:`reflectkit.models.local.grammar`), so the reply is written in the tags: thinking, an
    optional reflection, then the answer. None: on where the provider takes a ``grammar``
    parameter (``grammar`` capability: the local model). Never with tools, and not when
    ``model_kwargs`` already carry a ``grammar`` of your own; the repair stays the fallback."""
    max_thinking_chars: int | None = Field(default=300, ge=1)
    """The grammar's bound on the thinking block, in characters (a reflection block gets half as
    many), so a small model that rambles still reaches its answer within ``max_tokens``; None
    leaves them unbounded. Raise it for bigger local models that reason at length."""


_MERGED_DICTS = frozenset({"model_kwargs", "critic_kwargs", "revise_kwargs"})
"""Settings that are dictionaries of call parameters: merged key by key, not replaced."""


class ReflectConfig(StrictModel):
    """The settings of a :class:`~reflectkit.Reflector`: each field is the ``Reflector``
    parameter of the same name (documented there), and ``model_kwargs`` its extra keywords.
    Frozen and validated: an invalid value raises :class:`~reflectkit.ConfigurationError` with
    a one-line message.

    ``model_kwargs`` pass through to LiteLLM on every generator call (``temperature``,
    ``api_base``, ``api_key`` ...). ``critic_kwargs`` pass through on the default LLM critic's
    calls; when the critic uses the generator's model it starts from ``model_kwargs`` and
    ``critic_kwargs`` override them. ``revise_kwargs`` override ``model_kwargs`` on revision
    calls only: a temperature above 0 there keeps a revision from copying the draft it
    replaces, which is what a verifier's "wrong, try again" needs. ``model=None`` means
    $REFLECTKIT_MODEL, else :data:`DEFAULT_MODEL`.

    Stops (see :mod:`reflectkit.stopping`): ``max_iterations`` drafts; ``token_budget`` total
    tokens, ``cost_budget`` USD and ``time_budget`` seconds for the whole run; ``min_score``
    ends the run once a verdict scores at least that much. ``critic_timeout`` bounds one
    critique (a critic that hangs fails the run with a CriticError). ``on_critic_error`` says
    what a critic that fails does to the run: ``"raise"`` (the default) fails it with a
    :class:`~reflectkit.CriticError` whose ``.partial`` keeps the work; ``"keep_best"`` ends it
    with the best draft judged so far, stop reason ``critic_error`` and the error's message in
    ``ReflectionResult.critic_error`` (see docs/critics.md, "When the critic fails").

    Records and durability: ``run_log`` is where runs are recorded (None: ``$REFLECTKIT_RUN_LOG``
    or the default file; False: nowhere; a path; a :class:`~reflectkit.stores.runlog.RunLog`), see
    docs/run-log.md. ``checkpointer`` is where runs given a ``thread_id`` save their state after
    every step (None: ``$REFLECTKIT_CHECKPOINTS`` or the default SQLite file; a path; a
    ``postgresql://`` URL; a LangGraph saver; False: no durable runs), see docs/durability.md.

    Reflexion (see :mod:`reflectkit.reflexion`): ``trials`` whole attempts, each failed one
    followed by a lesson the next one sees; ``memory`` keeps lessons across runs: ``True`` for
    the default SQLite file, a path, or a :class:`~reflectkit.stores.memory.LessonStore`.
    ``memory``, ``run_log`` and ``checkpointer`` are checked by their stores when a
    ``Reflector`` opens them (still before any model call), so a ``ReflectConfig`` stays plain
    data.

    Typed answers (see docs/typed-output.md): ``output_type`` is a pydantic model, any type
    pydantic validates, or a JSON Schema as a dict; every answer is validated against it before
    any other critic, and ``ReflectionResult.parsed`` is the validated object.
    ``structured_output`` says how the answer is written: JSON in the output tag (``"tags"``),
    the provider's structured output (``"native"``), or ``"auto"``. Like ``critic``, the type is
    held as given and checked when a run is built.
    """

    model: str | None = None
    critic: Any = None
    critic_model: str | None = None
    max_iterations: int = Field(default=3, ge=1, le=100)
    mode: Mode = "auto"
    scheme: InstanceOf[TagScheme] = REFLECTION_TAGS
    template_dir: Path | None = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    critic_kwargs: dict[str, Any] = Field(default_factory=dict)
    revise_kwargs: dict[str, Any] = Field(default_factory=dict)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout: float | None = Field(default=120.0, gt=0)
    format_help: FormatHelp | Literal["auto", "off"] = "auto"
    token_budget: int | None = Field(default=None, ge=1)
    cost_budget: float | None = Field(default=None, gt=0)
    time_budget: float | None = Field(default=None, gt=0)
    min_score: float | None = Field(default=None, ge=0, le=10)
    critic_timeout: float | None = Field(default=300.0, gt=0)
    on_critic_error: OnCriticError = "raise"
    output_type: Any = None
    structured_output: StructuredOutput = "auto"
    trials: int = Field(default=1, ge=1, le=20)
    memory: Any = None
    run_log: Any = None
    checkpointer: Any = None

    @property
    def resolved_format_help(self) -> FormatHelp:
        """``format_help`` as a FormatHelp: "auto" is the default one, "off" turns all off."""
        if self.format_help == "off":
            return FormatHelp(exemplar=False, prefill=False, repair=False, grammar=False)
        if self.format_help == "auto":
            return FormatHelp()
        return self.format_help

    @field_validator("model", "critic_model")
    @classmethod
    def _model_string(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("a model name cannot be empty")
        return value.strip() if value is not None else None

    @field_validator("model_kwargs", "critic_kwargs", "revise_kwargs")
    @classmethod
    def _no_foreign_retries(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in _RETRY_KWARGS:
            if name in value:
                raise ValueError(f"{name!r} is not passed to LiteLLM; use retry=RetryPolicy(...)")
        for name in ("model", "messages", "stream"):
            if name in value:
                raise ValueError(f"{name!r} is set by reflectkit and cannot be a model kwarg")
        return dict(value)

    @field_validator("template_dir")
    @classmethod
    def _existing_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"template_dir {str(value)!r} is not a directory")
        return value

    @property
    def resolved_model(self) -> str:
        """The generator model: ``model``, else $REFLECTKIT_MODEL, else the local model."""
        return resolve_model(self.model)

    @property
    def resolved_critic_model(self) -> str:
        """The LLM critic's model: ``critic_model``, else the generator's."""
        return self.critic_model or self.resolved_model

    def with_settings(self, **settings: Any) -> ReflectConfig:
        """This configuration with ``settings`` on top: the one rule wherever a ``config=`` meets
        keyword settings (:class:`~reflectkit.Reflector`, :func:`~reflectkit.build_graph`, and so
        ``batch``, ``reflect``, the CLI and the server, which build a ``Reflector``).

        A keyword wins over the config's value; the three keyword dictionaries (``model_kwargs``,
        ``critic_kwargs``, ``revise_kwargs``) merge key by key, the keyword's keys winning.
        Nothing is dropped: an unknown name is a ``ConfigurationError``, a bad value fails
        validation as it would in ``ReflectConfig(...)``.
        """
        unknown = sorted(set(settings) - set(type(self).model_fields))
        if unknown:
            raise ConfigurationError(f"unknown setting(s): {', '.join(unknown)}")
        merged = dict(self)
        for name, value in settings.items():
            if name in _MERGED_DICTS and isinstance(value, dict):
                merged[name] = {**merged[name], **value}
            else:
                merged[name] = value
        return type(self)(**merged)

    def public_dict(self) -> dict[str, Any]:
        """The configuration as plain data with secrets redacted: safe to log or store."""
        critic = self.critic
        critic_name = None if critic is None else getattr(critic, "name", type(critic).__name__)
        return {
            "model": self.model,
            "critic": critic_name,
            "critic_model": self.critic_model,
            "max_iterations": self.max_iterations,
            "mode": self.mode,
            "scheme": {
                "thinking": self.scheme.thinking,
                "reflection": self.scheme.reflection,
                "output": self.scheme.output,
            },
            "template_dir": str(self.template_dir) if self.template_dir else None,
            "model_kwargs": redact_mapping(self.model_kwargs),
            "critic_kwargs": redact_mapping(self.critic_kwargs),
            "revise_kwargs": redact_mapping(self.revise_kwargs),
            "retry": self.retry.model_dump(),
            "timeout": self.timeout,
            "format_help": self.resolved_format_help.model_dump(),
            "token_budget": self.token_budget,
            "cost_budget": self.cost_budget,
            "time_budget": self.time_budget,
            "min_score": self.min_score,
            "critic_timeout": self.critic_timeout,
            "on_critic_error": self.on_critic_error,
            "output_type": _type_record(self.output_type),
            "structured_output": self.structured_output,
            "trials": self.trials,
            "memory": None
            if self.memory in (None, False)
            else str(getattr(self.memory, "path", self.memory)),
            "run_log": self.run_log
            if self.run_log is None or isinstance(self.run_log, bool)
            else str(getattr(self.run_log, "path", self.run_log)),
            "checkpointer": self._checkpointer_location(),
        }

    def _checkpointer_location(self) -> str | bool | None:
        """Where durable runs are saved, as a person reads it, with no password: the setting as
        given (the store resolves it when a run opens it; ``Reflector`` records that)."""
        setting = self.checkpointer
        if setting is None or isinstance(setting, bool):
            return setting
        if isinstance(setting, (str, os.PathLike)):
            return redact(os.fspath(setting))
        return type(setting).__name__


def _type_record(output_type: Any) -> Any:
    """An output type as records keep it: a JSON Schema as it is (plain data), a type by name."""
    if output_type is None or isinstance(output_type, Mapping):
        return output_type
    return str(getattr(output_type, "__name__", repr(output_type)))


def resolve_model(model: str | None) -> str:
    """The model to use: the one given, else $REFLECTKIT_MODEL, else :data:`DEFAULT_MODEL`."""
    if model:
        return model
    return os.environ.get(MODEL_ENV_VAR, "").strip() or DEFAULT_MODEL


_SETTINGS = (*ReflectConfig.model_fields, "config")
"""Every name a near-miss keyword is compared with."""


def config_from_arguments(
    arguments: Mapping[str, Any], given: frozenset[str], config: ReflectConfig | None
) -> ReflectConfig:
    """The configuration a call's settings describe (``Reflector(...)``'s arguments).

    ``arguments`` holds every setting parameter's value, defaults included, and
    ``model_kwargs`` (the keywords left over for LiteLLM); ``given`` the names the caller actually
    passed. Without ``config``, the arguments are the configuration; with it, only the settings
    given go on top of it by the one rule, :meth:`ReflectConfig.with_settings` (a default cannot
    tell ``max_iterations=3`` from no ``max_iterations``, so it must not override the config).
    A leftover keyword that is a near-miss of a setting's name is refused, since it would
    otherwise be sent to LiteLLM silently.
    """
    values = {name: arguments[name] for name in ReflectConfig.model_fields if name in arguments}
    model_kwargs: dict[str, Any] = dict(values.get("model_kwargs") or {})
    _refuse_misspelt_settings(model_kwargs)
    if values.get("template_dir") is not None:
        values["template_dir"] = Path(values["template_dir"])
    for name in ("critic_kwargs", "revise_kwargs"):
        if name in values and values[name] is None:
            values[name] = {}
    if "retry" in values and values["retry"] is None:
        values["retry"] = RetryPolicy()
    if config is None:
        return ReflectConfig(**values)
    explicit = {name: values[name] for name in given if name in values and name != "model_kwargs"}
    if model_kwargs:
        explicit["model_kwargs"] = model_kwargs
    return config.with_settings(**explicit)


def _refuse_misspelt_settings(model_kwargs: Mapping[str, Any]) -> None:
    """Extra keywords go to LiteLLM, so a misspelt setting would be sent there silently."""
    for name in model_kwargs:
        close = difflib.get_close_matches(name, _SETTINGS, n=1, cutoff=0.8)
        if close:
            raise ConfigurationError(
                f"unknown setting {name!r}: did you mean {close[0]!r}? (unknown keywords are "
                "passed to LiteLLM, so reflectkit refuses near-misses of its own settings)"
            )
