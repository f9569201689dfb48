"""Keep secrets out of messages, logs, traces and saved configurations.

Provider errors can echo request details, and configurations carry ``api_key`` and friends.
Everything reflectkit shows or stores passes through here first.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = [
    "REDACTED",
    "environment_secrets",
    "is_secret_name",
    "redact",
    "redact_mapping",
    "snapshot",
]

REDACTED = "[redacted]"

_SECRET_NAME = re.compile(r"(key|token|secret|password|passwd|credential|auth)", re.IGNORECASE)
# Credentials that look like credentials wherever they appear (OpenAI/Anthropic-style keys,
# bearer tokens, key=value pairs in URLs and error texts).
_SECRET_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._\-]{8,}"),
    re.compile(r"(?i)\b(api[_-]?key|token|secret|password)(\s*[=:]\s*)[\"']?[^\s\"',&]{6,}"),
)
_MIN_SECRET_LENGTH = 6


@functools.lru_cache(maxsize=1024)
def is_secret_name(name: str) -> bool:
    """True for names like ``api_key``, ``OPENAI_API_KEY``, ``auth_token`` (cached: names repeat,
    as the keys of every record a store writes do)."""
    return bool(_SECRET_NAME.search(name))


@functools.lru_cache(maxsize=8)
def _secret_names(names: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted(name for name in names if is_secret_name(name)))


_snapshot: ContextVar[tuple[str, ...] | None] = ContextVar("reflectkit_secrets", default=None)


def environment_secrets() -> tuple[str, ...]:
    """The values of secret-named environment variables, read now (the environment may change
    between calls) unless a :func:`snapshot` is in force. Which names look secret is cached per
    set of variable names, so a call costs a few microseconds, not a regex per variable."""
    taken = _snapshot.get()
    if taken is not None:
        return taken
    environ = os.environ
    found = (environ.get(name, "") for name in _secret_names(frozenset(environ)))
    return tuple(value for value in found if len(value) >= _MIN_SECRET_LENGTH)


@contextmanager
def snapshot() -> Iterator[None]:
    """Read the environment's secrets once for everything redacted inside the block: for bulk
    work such as recording a run, where thousands of strings are redacted at once."""
    token = _snapshot.set(environment_secrets())
    try:
        yield
    finally:
        _snapshot.reset(token)


# Every secret pattern contains one of these words: a text without any needs no regex pass, and
# most texts redacted (drafts, verdicts, keys of saved records) have none.
_PREFILTER = re.compile(r"sk-|bearer|api[_-]?key|token|secret|password", re.IGNORECASE)


@functools.lru_cache(maxsize=32)
def _longest_first(values: frozenset[str]) -> tuple[str, ...]:
    """Secret values to replace, longest first (so one containing another is replaced whole)."""
    kept = (value for value in values if len(value) >= _MIN_SECRET_LENGTH)
    return tuple(sorted(kept, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace known secret values (the environment's and ``secrets``) and key-like strings."""
    for value in _longest_first(frozenset((*secrets, *environment_secrets()))):
        if value in text:
            text = text.replace(value, REDACTED)
    if _PREFILTER.search(text) is None:
        return text
    for pattern in _SECRET_PATTERNS:
        if pattern.groups >= 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


def redact_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` with secret-named entries replaced and nested mappings redacted."""
    clean: dict[str, Any] = {}
    for name, value in values.items():
        if is_secret_name(name) and value is not None:
            clean[name] = REDACTED
        elif isinstance(value, Mapping):
            clean[name] = redact_mapping(value)
        elif isinstance(value, str):
            clean[name] = redact(value)
        else:
            clean[name] = value
    return clean
