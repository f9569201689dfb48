"""SchemaCritic: the answer must be JSON that validates against a pydantic model (or any type
pydantic can validate), or against a JSON Schema given as a dict. Validation errors, field by
field, are the feedback; on a pass the validated object is on the verdict (``verdict.parsed``)
and the result (``result.parsed``). It is the check behind ``output_type=`` (see
docs/typed-output.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from reflectkit.critics.base import CritiqueRequest
from reflectkit.errors import ConfigurationError
from reflectkit.verdict import Verdict

__all__ = ["SchemaCritic", "extract_json", "type_name"]

_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n(.*?)```", re.DOTALL)
_NO_JSON = "No JSON found in the answer: reply with one JSON value, and nothing else."


def extract_json(text: str) -> tuple[bool, Any]:
    """Find the JSON value in an answer: the whole text, a fenced block, or the first JSON object
    or array inside prose. Returns (found, value)."""
    stripped = text.strip()
    candidates = [stripped, *(m.group(1).strip() for m in _FENCE.finditer(text))]
    for candidate in candidates:
        try:
            return True, json.loads(candidate)
        except ValueError:
            continue
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        return True, value
    return False, None


def _describe(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "the value"
        lines.append(f"{where}: {item['msg']}")
    return lines


def _json_schema_issues(validator: Any, value: Any) -> list[str]:
    """What ``value`` breaks of a JSON Schema, one line per error, in the document's order."""
    lines = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.path))):
        where = ".".join(str(p) for p in error.path) or "the value"
        lines.append(f"{where}: {error.message}")
    return lines


def _json_schema_validator(schema: Mapping[str, Any]) -> Any:
    """A validator for a JSON Schema given as a dict (its ``$schema`` picks the draft; 2020-12
    when it names none), or a ConfigurationError saying why the schema is unusable."""
    import jsonschema  # a LiteLLM dependency; imported when a JSON Schema is first used

    try:
        kind = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        kind.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise ConfigurationError(f"not a usable JSON Schema: {error.message}") from None
    return kind(schema)


def type_name(schema: Any) -> str:
    """How a schema is named in verdicts and records: a type's name, a JSON Schema's title."""
    if isinstance(schema, Mapping):
        return str(schema.get("title") or "json_schema")
    return str(getattr(schema, "__name__", repr(schema)))


class SchemaCritic:
    """Passes an answer that is JSON valid for ``schema``; otherwise says what is wrong with it.

    ``schema`` is a pydantic model class or any type pydantic validates (``list[int]``, a
    TypedDict, a dataclass), or a JSON Schema as a dict (validated with ``jsonschema``; the
    parsed value is then the plain JSON value). ``strict=True`` refuses type coercion (``"3"``
    for an int; pydantic types only). An unusable schema is a ConfigurationError here.

    The JSON is the whole answer, a fenced block in it, or the first JSON object or array inside
    prose. An answer with none fails with the JSON Schema in the feedback; an invalid one fails
    with each validation error, field by field; a valid one passes with the validated object as
    the verdict's ``parsed`` (and so the result's ``parsed``).

    Args:
        schema: A pydantic model class, any type pydantic validates, or a JSON Schema dict.
        strict: Refuse type coercion (pydantic types only).
        name: The label on its verdicts; None: ``schema:<the type's name or the schema's
            title>``.

    Raises:
        ConfigurationError: pydantic or jsonschema cannot use ``schema``.
    """

    expensive = False

    def __init__(self, schema: Any, *, strict: bool = False, name: str | None = None) -> None:
        self.adapter: TypeAdapter[Any] | None = None
        self.validator: Any = None
        if isinstance(schema, Mapping):
            self.validator = _json_schema_validator(schema)
        else:
            try:
                self.adapter = TypeAdapter(schema)
            except Exception as error:  # pydantic raises several types for unusable schemas
                raise ConfigurationError(
                    f"SchemaCritic cannot use {schema!r}: {_first_line(error)}"
                ) from None
        self.schema = schema
        self.strict = strict
        self.name = name or f"schema:{type_name(schema)}"

    def json_schema(self) -> dict[str, Any] | None:
        """The schema as JSON Schema, or None for a type that has none (a callable's type)."""
        if self.adapter is None:
            return dict(self.schema)
        try:
            return self.adapter.json_schema()
        except Exception:  # some types have no JSON schema; the errors still say enough
            return None

    def _json_schema(self) -> str:
        schema = self.json_schema()
        return json.dumps(schema) if schema is not None else ""

    def _issues(self, value: Any) -> tuple[list[str], Any]:
        """What is wrong with ``value`` (nothing when it is valid), and the validated object."""
        if self.adapter is None:
            return _json_schema_issues(self.validator, value), value
        try:
            return [], self.adapter.validate_python(value, strict=self.strict)
        except ValidationError as error:
            return _describe(error), None

    async def acritique(self, request: CritiqueRequest) -> Verdict:
        """Find the JSON in the answer and validate it (see the class)."""
        found, value = extract_json(request.answer)
        if not found:
            schema = self._json_schema()
            feedback = (
                f"{_NO_JSON} It must match this JSON schema: {schema}" if schema else _NO_JSON
            )
            return Verdict(passed=False, score=0, feedback=feedback, critic=self.name)
        issues, parsed = self._issues(value)
        if issues:
            feedback = "The JSON does not match the required schema:\n" + "\n".join(
                f"- {line}" for line in issues
            )
            return Verdict(
                passed=False, score=0, issues=issues, feedback=feedback, critic=self.name
            )
        return Verdict(passed=True, score=10, critic=self.name, parsed=parsed)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
