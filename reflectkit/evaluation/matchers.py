"""How an answer is compared with the expected one: ``exact``, ``numeric``, ``regex``,
``contains``.

Every matcher takes the model's answer (tags already stripped) and the expected value, and
returns whether it matches. An expected value that is a list accepts any of its items.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from typing import Any, Literal

from reflectkit.errors import ConfigurationError

__all__ = [
    "MATCHERS",
    "MatchKind",
    "check_expected",
    "last_number",
    "matches",
    "normalise",
]

MatchKind = Literal["exact", "numeric", "regex", "contains"]

DEFAULT_TOLERANCE = 1e-6
_NUMBER = re.compile(r"[-−]?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?|[-−]?\.\d+")
_EDGE_PUNCTUATION = " \t\n\"'`.,;:!?*_()[]{}"


def normalise(text: str) -> str:
    """Text as ``exact`` and ``contains`` compare it: Unicode NFKC, case folded, runs of
    whitespace made one space, and quotes, brackets, Markdown emphasis and final punctuation
    stripped from both ends ("**Paris.**" and "paris" are equal)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(folded.split()).strip(_EDGE_PUNCTUATION)


def last_number(text: str) -> float | None:
    """The last number written in ``text`` ("1,250", "-3.5", "2e3"), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    return float(found[-1].replace(",", "").replace("−", "-"))


def _exact(answer: str, expected: Any, tolerance: float | None) -> bool:
    return normalise(answer) == normalise(str(expected))


def _contains(answer: str, expected: Any, tolerance: float | None) -> bool:
    return normalise(str(expected)) in normalise(answer)


def _regex(answer: str, expected: Any, tolerance: float | None) -> bool:
    return re.search(str(expected), answer) is not None


def _numeric(answer: str, expected: Any, tolerance: float | None) -> bool:
    got = last_number(answer)
    if got is None:
        return False
    want = float(expected)
    limit = DEFAULT_TOLERANCE if tolerance is None else tolerance
    return math.isclose(got, want, rel_tol=0.0, abs_tol=limit)


MATCHERS: dict[str, Callable[[str, Any, float | None], bool]] = {
    "exact": _exact,
    "numeric": _numeric,
    "regex": _regex,
    "contains": _contains,
}
"""The matchers by name."""


def check_expected(kind: str, expected: Any) -> None:
    """Fail early on an expected value its matcher cannot use (a regex that does not compile,
    a numeric answer that is not a number)."""
    if kind not in MATCHERS:
        raise ConfigurationError(f"unknown match {kind!r}: use one of {', '.join(MATCHERS)}")
    values = expected if isinstance(expected, list) else [expected]
    if not values or any(v is None for v in values):
        raise ConfigurationError("an example needs an answer (or a verifier)")
    for value in values:
        if kind == "regex":
            try:
                re.compile(str(value))
            except re.error as error:
                raise ConfigurationError(
                    f"answer {value!r} is not a valid regex: {error}"
                ) from None
        elif kind == "numeric":
            try:
                float(value)
            except (TypeError, ValueError):
                raise ConfigurationError(f"numeric answer {value!r} is not a number") from None


def matches(
    answer: str, expected: Any, kind: str = "exact", tolerance: float | None = None
) -> bool:
    """Whether ``answer`` matches ``expected`` (any item of it, for a list) under ``kind``.
    ``tolerance`` is the absolute tolerance of ``numeric`` (default 1e-6)."""
    matcher = MATCHERS.get(kind)
    if matcher is None:
        raise ConfigurationError(f"unknown match {kind!r}: use one of {', '.join(MATCHERS)}")
    values = expected if isinstance(expected, list) else [expected]
    return any(matcher(answer, value, tolerance) for value in values)
