"""SchemaCritic: the answer must be JSON that validates against a pydantic model (or any type
pydantic can validate). Validation errors, field by field, are the feedback; on a pass the
validated object is on the verdict (``verdict.parsed``) and the result (``result.parsed``)."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import TypeAdapter, ValidationError

from reflectkit.critics.base import CritiqueRequest
from reflectkit.errors import ConfigurationError
from reflectkit.verdict import Verdict

__all__ = ["SchemaCritic", "extract_json"]

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


class SchemaCritic:
    """Passes an answer that is JSON valid for ``schema``; otherwise says what is wrong with it.

    ``schema`` is a pydantic model class or any type pydantic validates (``list[int]``, a
    TypedDict, a dataclass). ``strict=True`` refuses type coercion (``"3"`` for an int).
    """

    expensive = False

    def __init__(self, schema: Any, *, strict: bool = False, name: str | None = None) -> None:
        try:
            self.adapter: TypeAdapter[Any] = TypeAdapter(schema)
        except Exception as error:  # pydantic raises several types for unusable schemas
            raise ConfigurationError(f"SchemaCritic cannot use {schema!r}: {error}") from None
        self.schema = schema
        self.strict = strict
        self.name = name or f"schema:{getattr(schema, '__name__', repr(schema))}"

    def _json_schema(self) -> str:
        try:
            return json.dumps(self.adapter.json_schema())
        except Exception:  # some types have no JSON schema; the errors still say enough
            return ""

    async def acritique(self, request: CritiqueRequest) -> Verdict:
        found, value = extract_json(request.answer)
        if not found:
            schema = self._json_schema()
            feedback = (
                f"{_NO_JSON} It must match this JSON schema: {schema}" if schema else _NO_JSON
            )
            return Verdict(passed=False, score=0, feedback=feedback, critic=self.name)
        try:
            parsed = self.adapter.validate_python(value, strict=self.strict)
        except ValidationError as error:
            issues = _describe(error)
            feedback = "The JSON does not match the required schema:\n" + "\n".join(
                f"- {line}" for line in issues
            )
            return Verdict(
                passed=False, score=0, issues=issues, feedback=feedback, critic=self.name
            )
        return Verdict(passed=True, score=10, critic=self.name, parsed=parsed)
