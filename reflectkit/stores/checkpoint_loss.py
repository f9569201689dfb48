"""Checkpoint files that look as if they lost data.

A durable run resumes from the state its checkpoint file holds; a file that lost data (emptied,
its write-ahead log cut off from it or damaged) silently makes a run start over, and pay for
its steps again. :func:`lost_data` looks at a file before SQLite opens it (opening would tidy
the evidence away) and says why it looks so, or None; a thread that then finds no saved state
there is warned about (:class:`reflectkit.stores.durability.CheckpointLossWarning`).
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

__all__ = ["NEW_FILE_SECONDS", "lost_data"]

NEW_FILE_SECONDS = 60.0
"""An empty checkpoint file younger than this may be one another process is creating; an older
one has lost its data (a SQLite file reflectkit has opened is never empty)."""
_WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums of little-endian / big-endian 32-bit words
_WAL_VERSION = 3007000


def lost_data(path: str, now: float) -> str | None:
    """Why the SQLite file at ``path`` looks as if it lost data, or None. Read-only: called
    before SQLite opens the file (which would tidy the evidence away).

    * an empty file older than :data:`NEW_FILE_SECONDS` (a file SQLite has opened in WAL mode
      is never empty: a young one may be another process's, being created);
    * a write-ahead log (``-wal``) with frames, next to a database that is missing or empty;
    * a write-ahead log whose header is not one SQLite wrote, or in whose first
      :data:`_WAL_CHECKED` bytes a frame fails its checksum while a committed frame follows it
      (SQLite ignores a log from its first bad frame on: the steps saved there are gone).
    """
    wal = f"{path}-wal"
    try:
        found = os.stat(path)
        size: int | None = found.st_size
        age = now - found.st_mtime
    except FileNotFoundError:
        size, age = None, 0.0
    try:
        wal_size = os.stat(wal).st_size
    except FileNotFoundError:
        wal_size = 0
    if wal_size and not size:
        state = "missing" if size is None else "empty"
        return f"its write-ahead log {wal} holds data but the database file is {state}"
    if size == 0 and age > NEW_FILE_SECONDS:
        return f"it is empty, and {age:.0f} s old (a checkpoint file in use is never empty)"
    if wal_size:
        try:
            with open(wal, "rb") as log:
                damage = _wal_damage(log)
        except OSError:
            damage = None  # unreadable here: SQLite will say what it thinks on open
        if damage is not None:
            return f"its write-ahead log {wal} is damaged ({damage})"
    return None


_WAL_CHECKED = 128 << 10
"""How much of a write-ahead log :func:`lost_data` checksums (5 to 15 ms of Python); the
frames' headers are read to its end."""


def _wal_sums(data: bytes, big_endian: bool, sums: tuple[int, int]) -> tuple[int, int]:
    """SQLite's WAL checksum of ``data`` (a multiple of 8 bytes), continuing from ``sums``."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    s0, s1 = sums
    for first, second in zip(words[::2], words[1::2], strict=True):
        s0 = (s0 + first + s1) & 0xFFFFFFFF
        s1 = (s1 + second + s0) & 0xFFFFFFFF
    return s0, s1


def _wal_damage(log: BinaryIO) -> str | None:
    """What is wrong with the write-ahead log ``log``, or None when it looks as SQLite left it.

    Its header must be SQLite's (magic number, format, page size, checksum). Then frames are
    checked in order while they belong to this log (their salt is the header's; older frames
    after them are left over from before the log was restarted, as SQLite leaves them): a
    frame that fails its checksum ends the log for SQLite, which is damage if a committed frame
    of this log comes after it. A torn last transaction (a crash mid-write) has no commit after
    it, and is what SQLite is meant to roll back."""
    header = log.read(32)
    if len(header) < 32:
        return "its header is cut short"
    magic, version, page_size = struct.unpack(">III", header[:12])
    if magic not in _WAL_MAGIC or version != _WAL_VERSION:
        return "its header is not SQLite's"
    page_size = 65536 if page_size == 1 else page_size
    big_endian = bool(magic & 1)
    if not 512 <= page_size <= 65536 or page_size & (page_size - 1):
        return "its header is not SQLite's"
    sums = _wal_sums(header[:24], big_endian, (0, 0))
    if sums != struct.unpack(">II", header[24:32]):
        return "its header fails its checksum"
    salt, frame_size, checked = header[16:24], 24 + page_size, 0
    while checked < _WAL_CHECKED and len(frame := log.read(frame_size)) == frame_size:
        checked += frame_size
        if frame[8:16] != salt:
            return None  # the end of this log: what follows is older
        sums = _wal_sums(frame[:8] + frame[24:], big_endian, sums)
        if sums != struct.unpack(">II", frame[16:24]):
            while len(later := log.read(frame_size)) >= 24:
                if later[8:16] == salt and later[4:8] != bytes(4):  # a commit of this log
                    return "a frame fails its checksum and committed frames follow it"
            return None
    return None
