"""A critic's verdict, and a tolerant reader for the verdicts LLM critics write."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
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
    """The draft is good enough: the loop stops."""
    score: float | None = Field(default=None, ge=0, le=10)
    """0 to 10, when the critic gives one (``min_score`` compares with it)."""
    issues: list[str] = Field(default_factory=list)
    """What is wrong, one item each."""
    feedback: str = ""
    """What the revise step is told."""
    critic: str | None = None
    """The label of the critic that judged."""
    malformed: bool = False
    """An LLM critic's reply could not be read; the verdict asks for a revision with the raw reply
    as feedback."""
    raw: str | None = None
    """An LLM critic's reply, as written."""
    usage: Usage | None = None
    """The critic's own calls."""
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
# A verdict said in words, anywhere: "Verdict: pass", "**Decision**: reject", and the
# '"verdict": "revise"' of a JSON object that does not parse.
_SAID_VERDICT = re.compile(r"(?i)\b(?:verdict|decision)\b\W{0,4}[:=]\W{0,4}([a-z_-]+)")
# Where a JSON object may start ("{" then a key or "}"), and how many such places are tried:
# a reply full of braces (code) must not cost a decode attempt per brace.
_OBJECT_START = re.compile(r'\{\s*["}]')
_MOST_OBJECTS_TRIED = 200


def _json_objects(text: str) -> list[tuple[int, int, dict[str, Any]]]:
    """The JSON objects written in ``text`` with their spans, in order, keys lower-cased: whole,
    fenced, or among prose. An object inside another (an example quoted in a feedback string)
    is part of it, not one of its own."""
    decoder = json.JSONDecoder()
    found: list[tuple[int, int, dict[str, Any]]] = []
    at = 0
    for _ in range(_MOST_OBJECTS_TRIED):
        start = _OBJECT_START.search(text, at)
        if start is None:
            break
        try:
            value, end = decoder.raw_decode(text, start.start())
        except ValueError:
            at = start.start() + 1
            continue
        if isinstance(value, dict):
            keys = {str(k).strip().lower(): v for k, v in value.items()}
            found.append((start.start(), end, keys))
        at = end
    return found


def _object_decision(obj: dict[str, Any]) -> bool | None:
    return next((d for key in _VERDICT_KEYS if (d := _decision(obj.get(key))) is not None), None)


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


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


def parse_verdict(text: str, critic: str | None = None, *, shown: Iterable[str] = ()) -> Verdict:
    """Read an LLM critic's reply. Never raises: an unreadable reply is a "revise" verdict whose
    feedback is the raw text, marked ``malformed``.

    The critic's own verdict is its last: the last JSON object with a verdict in the reply or,
    with none, the last verdict said in words (``Verdict: pass``). ``shown`` are the texts the
    critic was given to judge (the answer, tool results): a verdict that stands in them too is
    a quotation, not the critic's, and does not count. And whatever the critic quotes, a pass
    stands only if nothing else in the reply says revise (another verdict object, or a
    ``"verdict": "revise"`` in JSON that does not parse): a reply whose verdicts disagree is a
    revise, marked ``malformed``, its text the feedback. What an answer plants can make a critic
    stricter, never turn its revise into a pass.
    """
    seen = [_normal(piece) for piece in shown]
    planted = [obj for piece in shown for _, _, obj in _json_objects(piece)]
    objects = _json_objects(text)
    judged = [
        (obj, decision)
        for _, _, obj in objects
        if (decision := _object_decision(obj)) is not None and obj not in planted
    ]
    said = [
        decision
        for match in _SAID_VERDICT.finditer(text)
        if (decision := _decision(match.group(1))) is not None
        and not any(start <= match.start() < end for start, end, _ in objects)
        and not any(_normal(match.group(0)) in piece for piece in seen)
    ]
    if judged:
        obj, passed = judged[-1]
        objected = not all(decision for _, decision in judged) or False in said
        if passed and objected:
            return Verdict(
                passed=False, feedback=text.strip(), critic=critic, malformed=True, raw=text
            )
        feedback = obj.get("feedback", obj.get("comments", obj.get("critique", "")))
        feedback = feedback if isinstance(feedback, str) else json.dumps(feedback)
        return Verdict(
            passed=passed,
            score=_score(obj.get("score")),
            issues=_issues(obj.get("issues", obj.get("problems", []))),
            feedback=feedback.strip(),
            critic=critic,
            raw=text,
        )
    decision = all(said) if said else _decision(text)
    if decision is not None:
        return Verdict(
            passed=decision, feedback="" if decision else text.strip(), critic=critic, raw=text
        )
    return Verdict(passed=False, feedback=text.strip(), critic=critic, malformed=True, raw=text)
