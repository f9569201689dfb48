"""What the run log writes, scrubbed of secrets first.

The run log keeps each run's messages, configuration, steps and result; none of it may carry a
secret to the file (where it would linger in the WAL too). So everything written goes through
:func:`scrub`: every string through :func:`~reflectkit.redaction.redact` (known secret values
from the environment, key-like strings), and every value under a secret-like name
(``api_key``, ``auth_token``) replaced, except None, booleans and token counts
(``prompt_tokens``). :func:`scrub_text` and :func:`scrub_json` are the two forms the log binds.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from reflectkit.redaction import REDACTED, is_secret_name, redact
from reflectkit.redaction import environment_secrets as _secrets_now

__all__ = ["scrub", "scrub_json", "scrub_text"]

_PLAIN = (bool, type(None))
_NUMBER = (int, float)
# Secret-like names whose numbers are counts, not secrets: prompt_tokens, max_tokens ...
_TOKEN_COUNT = re.compile(r"tokens|token_(?:budget|count|limit)", re.IGNORECASE)


def scrub_text(value: str) -> str:
    """``value`` redacted and safe to bind (lone surrogates replaced)."""
    return redact(value.encode("utf-8", "replace").decode("utf-8"))


def _key(name: str) -> str:
    """A mapping key, redacted: keys repeat in every record, so their redaction is cached per
    set of secrets in force."""
    return _cached_key(name, _secrets_now())


@functools.lru_cache(maxsize=1024)
def _cached_key(name: str, secrets: tuple[str, ...]) -> str:
    return scrub_text(name)


def _keeps(name: str, value: Any) -> bool:
    """Whether ``value`` may be kept under ``name``: always unless the name is secret-like;
    then only None, a bool, or a number under a token-count name (``prompt_tokens``)."""
    if not is_secret_name(name) or isinstance(value, _PLAIN):
        return True
    return isinstance(value, _NUMBER) and bool(_TOKEN_COUNT.search(name))


def scrub(value: Any) -> Any:
    """``value`` as JSON-ready data with secrets removed: pydantic models and dataclasses become
    dicts, every string (keys too) is redacted, and a value under a secret-like name is replaced
    unless it is None, a bool or a token count (so ``prompt_tokens`` survive, a numeric
    ``password`` does not)."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, (*_PLAIN, *_NUMBER)):
        return value
    if isinstance(value, type):
        return scrub_text(value.__qualname__)
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {
            _key(str(key)): scrub(item) if _keeps(str(key), item) else REDACTED
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [scrub(item) for item in value]
    return scrub_text(str(value))


def scrub_json(value: Any) -> str:
    """``value`` scrubbed (:func:`scrub`) and encoded as compact JSON."""
    return json.dumps(scrub(value), ensure_ascii=False, separators=(",", ":"))
