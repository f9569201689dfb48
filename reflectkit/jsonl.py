"""JSON-lines files that grow as work finishes and are resumed after a crash (batch outputs,
recycled data): the key a record is matched by, and repairing a line a crash cut short."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["canonical_sha256", "cut_partial_line"]


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
