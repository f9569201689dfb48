"""Typed answers (``output_type=``): the check every draft's answer must pass, how the model is
told the schema, and whether the provider's native structured output carries it.

The check is a :class:`~reflectkit.critics.SchemaCritic` on ``output_type`` (a pydantic model,
any type pydantic validates, or a JSON Schema as a dict). It runs before any other critic: it is
free, and when it fails its errors are the revise step's feedback verbatim and no LLM critic is
paid for that draft. On a pass its validated object is ``ReflectionResult.parsed``.

How the answer is written (``structured_output``):

* ``"tags"``: the answer is JSON inside the output tag; the request turn carries the JSON Schema
  (the ``output_format`` template). Works with every provider, and keeps the reasoning visible.
* ``"native"``: the generator's calls carry ``response_format`` with the JSON Schema, and the
  protocol's prompt is left out (a reply held to JSON cannot also hold tags), as for a native
  reasoning model; the reasoning is then only what the provider returns as reasoning.
* ``"auto"``: native for a native reasoning model (its reasoning does not need the tags) whose
  provider takes a JSON Schema according to LiteLLM; tags otherwise.
"""

from __future__ import annotations

import json
import re
from typing import Any

from reflectkit.config import ReflectConfig, StructuredOutput
from reflectkit.critics.base import Critic, CriticSetup, CritiqueRequest, check_critic, critic_label
from reflectkit.critics.schema import SchemaCritic, type_name
from reflectkit.errors import ConfigurationError
from reflectkit.models.capabilities import ModelProfile
from reflectkit.models.llm import supports_response_schema
from reflectkit.verdict import Verdict

__all__ = [
    "StructuredOutput",
    "TypedCritic",
    "output_check",
    "response_format",
    "schema_text",
    "uses_native",
]

_NAME = re.compile(r"[^A-Za-z0-9_-]+")


def output_check(config: ReflectConfig) -> SchemaCritic | None:
    """The check for ``config.output_type`` (None without one); an unusable type is a
    ConfigurationError, raised when the run is built."""
    if config.output_type is None:
        if config.structured_output == "native":
            raise ConfigurationError("structured_output='native' needs an output_type")
        return None
    return SchemaCritic(config.output_type)


def schema_text(check: SchemaCritic) -> str:
    """The JSON Schema the model is shown, compact; ``{}`` (any JSON) for a type without one."""
    schema = check.json_schema()
    return json.dumps(schema if schema is not None else {}, ensure_ascii=False)


def response_format(check: SchemaCritic) -> dict[str, Any]:
    """The ``response_format`` that asks a provider for JSON valid for the check's schema."""
    schema = check.json_schema()
    if not schema:
        return {"type": "json_object"}
    name = _NAME.sub("_", type_name(check.schema))[:64] or "answer"
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def uses_native(config: ReflectConfig, profile: ModelProfile, model: str) -> bool:
    """Whether the generator's calls use the provider's structured output (see the module)."""
    setting = config.structured_output
    if config.output_type is None or setting == "tags":
        return False
    if setting == "native":
        return True
    kwargs = config.model_kwargs
    if kwargs.get("tools") or "response_format" in kwargs:
        return False  # a reply may call tools; a caller's own response_format goes as it is
    return profile.reasoning and not profile.tuned and supports_response_schema(model)


class TypedCritic:
    """The critic of a run with an ``output_type``: the check first, then the user's critic
    (if any) on answers that passed it.

    A failed check is the verdict, as it is: its errors go to the revise step verbatim and the
    user's critic is not asked (nor paid). Whatever the user's critic decides, the verdict
    carries the check's validated object, so ``result.parsed`` is an ``output_type`` instance
    whenever the final answer validated. The run records the user's critic's name.
    """

    def __init__(self, check: SchemaCritic, critic: Critic | None) -> None:
        self.check_critic = check
        self.critic = critic
        self.expensive = bool(getattr(critic, "expensive", False))
        self.name = critic.name if critic is not None else check.name

    def check(self, setup: CriticSetup) -> None:
        """The user's critic's own check (validation has nothing to check)."""
        if self.critic is not None:
            check_critic(self.critic, setup)

    def label(self, setup: CriticSetup) -> str:
        return critic_label(self.critic or self.check_critic, setup)

    async def acritique(self, request: CritiqueRequest) -> Verdict:
        validated = await self.check_critic.acritique(request)
        if not validated.passed or self.critic is None:
            return validated
        verdict = await self.critic.acritique(request)
        return verdict.model_copy(update={"parsed": validated.parsed})
