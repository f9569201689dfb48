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
from reflectkit.critics.base import Critic, CriticSetup, critic_label
from reflectkit.critics.compose import AllOf
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


class TypedCritic(AllOf):
    """The critic of a run with an ``output_type``: ``AllOf(check, critic, order="given")``,
    recorded under the user's critic's name.

    The check comes first, whatever the user's critic costs: a failed check is the round's
    verdict, its errors going to the revise step verbatim, and the user's critic is neither
    asked nor paid. When both pass, the verdict is the user's critic's own (its score, its raw
    reply); either way it carries the check's validated object (``AllOf``'s ``parsed``), so
    ``result.parsed`` is an ``output_type`` instance whenever the final answer validated.
    """

    def __init__(self, check: SchemaCritic, critic: Critic | None) -> None:
        members = [check] if critic is None else [check, critic]
        super().__init__(*members, order="given", name=(critic or check).name)
        self.user_critic = critic

    def label(self, setup: CriticSetup) -> str:
        """The user's critic's label (the check's when there is none)."""
        return critic_label(self.user_critic or self.critics[0], setup)

    def _combine(self, verdicts: list[Verdict]) -> Verdict:
        """Every member passed: the last one's verdict (its usage is all there is: the check
        costs nothing), with the check's object."""
        return verdicts[-1].model_copy(update={"parsed": verdicts[0].parsed})
