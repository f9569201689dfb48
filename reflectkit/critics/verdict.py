"""A critic's verdict, and a tolerant reader for the verdicts LLM critics write."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import Field

from reflectkit.usage import Usage
from reflectkit.validation import StrictModel

__all__ = ["Verdict", "parse_verdict"]


class Verdict(StrictModel):
    """What a critic decided about a draft.

    ``feedback`` goes to the revise step; ``issues`` lists specific problems; ``score`` is 0-10
    when the critic gives one. ``malformed`` marks an LLM verdict that could not be read, whose raw
    text then serves as the feedback.
    """

    passed: bool
    score: float | None = Field(default=None, ge=0, le=10)
    issues: list[str] = Field(default_factory=list)
    feedback: str = ""
    critic: str | None = None
    malformed: bool = False
    raw: str | None = None
    usage: Usage | None = None
    parsed: Any = None
    """What the critic parsed out of the answer, if it parses (SchemaCritic's validated object)."""


_PASS_WORDS = {
    "pass",
    "passed",
    "passes",
    "accept",
    "accepted",
    "approve",
    "approved",
    "correct",
    "ok",
    "okay",
    "yes",
    "true",
    "good",
    "lgtm",
    "done",
}
_REVISE_WORDS = {
    "revise",
    "revision",
    "needs_revision",
    "needs revision",
    "fail",
    "failed",
    "reject",
    "rejected",
    "incorrect",
    "wrong",
    "no",
    "false",
    "improve",
    "retry",
}
_VERDICT_KEYS = ("verdict", "decision", "status", "result", "outcome", "pass", "passed")
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_LINE_VERDICT = re.compile(r"(?im)^\W*(?:verdict|decision)\W*[:=]\W*([a-z_ ]+)")


def _json_candidates(text: str) -> list[str]:
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    return candidates


def _load_object(text: str) -> dict[str, Any] | None:
    for candidate in _json_candidates(text):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return {str(k).strip().lower(): v for k, v in value.items()}
    return None


def _decision(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().strip(".!").lower().replace("-", "_")
        if word in _PASS_WORDS:
            return True
        if word in _REVISE_WORDS or word.replace("_", " ") in _REVISE_WORDS:
            return False
    return None


def _score(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if number != number:  # NaN
        return None
    return min(10.0, max(0.0, number))


def _issues(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, list):
        return [str(item).strip() for item in value if str(item).strip()]
    return []


def parse_verdict(text: str, critic: str | None = None) -> Verdict:
    """Read an LLM critic's reply. Never raises: an unreadable reply is a "revise" verdict whose
    feedback is the raw text, marked ``malformed``."""
    obj = _load_object(text)
    if obj is not None:
        passed = next(
            (d for key in _VERDICT_KEYS if (d := _decision(obj.get(key))) is not None), None
        )
        feedback = obj.get("feedback", obj.get("comments", obj.get("critique", "")))
        feedback = feedback if isinstance(feedback, str) else json.dumps(feedback)
        issues = _issues(obj.get("issues", obj.get("problems", [])))
        if passed is not None:
            return Verdict(
                passed=passed,
                score=_score(obj.get("score")),
                issues=issues,
                feedback=feedback.strip(),
                critic=critic,
                raw=text,
            )
    line = _LINE_VERDICT.search(text)
    decision = _decision(line.group(1)) if line else _decision(text)
    if decision is not None:
        return Verdict(
            passed=decision, feedback="" if decision else text.strip(), critic=critic, raw=text
        )
    return Verdict(passed=False, feedback=text.strip(), critic=critic, malformed=True, raw=text)
