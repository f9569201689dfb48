"""Alpaca instruction data, as recycling reads it: the fields, the key a record is matched by,
and a file's records with the error that makes each unusable, if any.

A file is JSON lines or one JSON array (like ``alpaca_data.json``); a record is an object with
a non-empty ``instruction`` and, optionally, ``input`` and ``output``, all strings. The public
names are re-exported by :mod:`reflectkit.data.recycle`, their documented home.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

from reflectkit.errors import ConfigurationError, InputError
from reflectkit.redaction import one_line
from reflectkit.stores.jsonl import canonical_sha256

__all__ = ["FIELDS", "read_records", "record_hash"]

FIELDS = ("instruction", "input", "output")
"""The Alpaca fields: what is read, hashed and written."""

MESSAGE_CHARS = 500
"""The longest message a recycling error, log line or failure record carries."""


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 of a record's Alpaca fields as canonical JSON (other keys do not count; a
    missing field counts as empty): the key resume matches records by."""
    return canonical_sha256({name: record.get(name) or "" for name in FIELDS})


def _checked(value: Any) -> dict[str, str]:
    """An input record with its Alpaca fields as strings; raises InputError if it has none."""
    if not isinstance(value, dict):
        raise InputError(f"a record must be a JSON object, not {type(value).__name__}")
    for name in FIELDS:
        if value.get(name) is not None and not isinstance(value[name], str):
            raise InputError(f"{name!r} must be a string, not {type(value[name]).__name__}")
    if not str(value.get("instruction") or "").strip():
        raise InputError("the record has no 'instruction'")
    return {name: value.get(name) or "" for name in FIELDS}


def _parsed(line: str) -> dict[str, str] | InputError:
    try:
        return _checked(json.loads(line))
    except InputError as error:
        return error
    except ValueError as error:
        return InputError(f"not JSON: {error}")


def read_records(
    path: str | os.PathLike[str],
) -> Iterator[tuple[int, dict[str, str] | InputError]]:
    """The records of an Alpaca file, numbered from 1, each a dict of the Alpaca fields or the
    error that makes it unusable: JSON lines, or one JSON array (like ``alpaca_data.json``).
    Blank lines are skipped. A file that cannot be read raises ConfigurationError."""
    try:
        with open(path, encoding="utf-8") as file:
            head = file.read(4096).lstrip()
            file.seek(0)
            if head.startswith("["):
                items = json.load(file)
                for number, item in enumerate(items, start=1):
                    yield number, _parsed(json.dumps(item))
                return
            for number, line in enumerate(file, start=1):
                if line.strip():
                    yield number, _parsed(line)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigurationError(
            f"cannot read {os.fspath(path)}: {one_line(error, limit=MESSAGE_CHARS)}"
        ) from error
