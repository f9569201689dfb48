"""JSON-lines files that grow as work finishes and are resumed after a crash (batch outputs,
recycled data): the key a record is matched by, writing a line whatever text it holds, and
repairing a line a crash cut short, and the writer that appends a flushed line at a time.

Lone surrogates (half of an emoji's UTF-16 pair, ``"\\ud83d"``) are legal in a Python string and
in JSON's ``\\u`` escapes, but cannot be encoded as UTF-8. They arrive from JSON that a client or
a model wrote (a JavaScript string cut in the middle of an emoji), and fail whatever writes them
out: a file, an HTTP body, a model call. :func:`dumps_line` keeps them, escaped, so a record reads
back exactly as it was (a prompt's hash still matches on resume); :func:`repair_text` and
:func:`repair_surrogates` replace them with U+FFFD (joining a split pair back into its
character) where the text must be valid Unicode: what goes to a model, or to a client.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import IO, Any, Literal

__all__ = [
    "REPLACEMENT",
    "JsonlWriter",
    "TextRepair",
    "canonical_sha256",
    "cut_partial_line",
    "dumps_line",
    "repair_surrogates",
    "repair_text",
]

REPLACEMENT = "\ufffd"
"""What a lone surrogate becomes when text is repaired: U+FFFD REPLACEMENT CHARACTER."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_HIGH = re.compile("[\ud800-\udbff]\\Z")


def dumps_line(value: Any) -> str:
    """``value`` as one line of JSON (no newline), readable UTF-8 text whatever it holds: lone
    surrogates are written as ``\\uXXXX`` escapes, so ``json.loads`` gives the same string back,
    and what JSON cannot hold is written as its ``repr``."""
    text = json.dumps(value, ensure_ascii=False, default=repr)
    if text.isascii() or not _SURROGATE.search(text):
        return text
    # A raw surrogate can only stand inside a JSON string, where its escape means the same.
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def repair_text(text: str) -> str:
    """``text`` as valid Unicode: a high and a low surrogate side by side become the character
    they encode, any other surrogate U+FFFD. Text without surrogates is returned as it is."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def repair_surrogates(value: Any) -> Any:
    """``value`` with :func:`repair_text` applied to every string in it, keys too, through
    dicts, lists and tuples; anything else is left as it is. Returns ``value`` itself when
    nothing needed repair, else a repaired copy (the original is never changed)."""
    if isinstance(value, str):
        return repair_text(value)
    if isinstance(value, dict):
        items = [(repair_surrogates(k), repair_surrogates(v)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, value.items(), strict=True)):
            return value
        return dict(items)
    if isinstance(value, (list, tuple)):
        repaired = [repair_surrogates(item) for item in value]
        if all(new is old for new, old in zip(repaired, value, strict=True)):
            return value
        return type(value)(repaired) if isinstance(value, tuple) else repaired
    return value


class TextRepair:
    """:func:`repair_text` for text that arrives in pieces (a stream): a piece that ends with a
    high surrogate keeps it back until the next piece, which may start with its pair."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, piece: str) -> str:
        """The repaired text that can be handed on now."""
        text = self._held + piece
        self._held = ""
        if _HIGH.search(text):
            text, self._held = text[:-1], text[-1]
        return repair_text(text)

    def flush(self) -> str:
        """What was kept back, repaired (U+FFFD: its pair never came)."""
        held, self._held = self._held, ""
        return repair_text(held)


def canonical_sha256(value: Any) -> str:
    """SHA-256 of ``value`` as canonical JSON (sorted keys, unescaped text): equal data gives
    equal keys whatever the key order it was written in."""
    canonical = json.dumps(value, ensure_ascii=False, sort_keys=True, default=repr)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def cut_partial_line(path: str | os.PathLike[str]) -> None:
    """Drop a last line without its newline (a write interrupted by a crash), so lines appended
    next start on a line of their own. Reads the file backwards a block at a time, so a large
    file is not read whole."""
    with open(Path(path), "rb+") as file:
        size = file.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - 65536)
            file.seek(start)
            block = file.read(end - start)
            if end == size and block.endswith(b"\n"):
                return
            newline = block.rfind(b"\n")
            if newline >= 0:
                file.truncate(start + newline + 1)
                return
            end = start
        file.truncate(0)


class JsonlWriter:
    """A JSON-lines file that grows a line at a time, each flushed as it is written, so a crash
    loses at most the line being written (:func:`cut_partial_line` drops it on resume).

    ``mode`` is ``"a"`` to append or ``"w"`` to replace; ``lazy`` opens the file on the first
    write only, so a file nothing is written to is never made (a run's failures). The parent
    folder must exist.
    """

    def __init__(
        self, path: str | os.PathLike[str], mode: Literal["a", "w"] = "a", *, lazy: bool = False
    ) -> None:
        self.path = Path(path)
        self._mode = mode
        self._file: IO[str] | None = None
        if not lazy:
            self._open()

    def _open(self) -> IO[str]:
        if self._file is None:
            self._file = open(self.path, self._mode, encoding="utf-8")  # noqa: SIM115
        return self._file

    def write(self, value: Any) -> None:
        """Append ``value`` as one line (:func:`dumps_line`); if it cannot be made one, the
        error is raised and nothing is written."""
        self.write_line(dumps_line(value))

    def write_line(self, line: str) -> None:
        """Append ``line``, one line of JSON without its newline."""
        file = self._open()
        file.write(line + "\n")
        file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
