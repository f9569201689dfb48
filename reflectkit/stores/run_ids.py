"""Run ids: lower-case ULIDs, which sort by start time and can be shortened like git hashes.

An id is 26 characters of Crockford's base 32: 48 bits of milliseconds since 1970, then 80
random bits, so ids sort by the time their run started. The run log takes any unique prefix of
at least :data:`MIN_PREFIX` characters, case-insensitively (:func:`lookup_key`), and shows ids
cut to the shortest prefix that names no other run (:func:`common_prefix` measures it).
"""

from __future__ import annotations

import secrets
import threading
import time

from reflectkit.errors import ConfigurationError

__all__ = ["MIN_PREFIX", "common_prefix", "lookup_key", "new_run_id"]

MIN_PREFIX = 4
"""The fewest characters of a run id that :meth:`RunLog.get` and :meth:`RunLog.delete` take."""
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_RANDOM_BITS = 80
_id_lock = threading.Lock()
_last_id = (0, 0)


def new_run_id() -> str:
    """A new run id: a lower-case ULID, sortable by creation time and, within one process,
    strictly increasing. When the millisecond repeats (or the clock went back) the random part
    steps up by a random amount rather than by one, so ids made in one burst still differ within
    their first 14 characters and short prefixes stay usable."""
    global _last_id
    with _id_lock:
        ms, rand = time.time_ns() // 1_000_000, secrets.randbits(_RANDOM_BITS)
        last_ms, last_rand = _last_id
        if ms <= last_ms:
            # A step of at least 2**60 changes the first 14 characters (they hold the bits from
            # 60 up: 48 of time, the top 20 of randomness); hundreds of thousands of ids fit in one
            # millisecond before the random part would overflow, far more than one process makes.
            step = (1 << (_RANDOM_BITS - 20)) + secrets.randbits(_RANDOM_BITS - 19)
            ms, rand = last_ms, last_rand + step
            if rand >> _RANDOM_BITS:  # the random part overflowed: carry into the next ms
                ms, rand = last_ms + 1, secrets.randbits(_RANDOM_BITS - 1)
        _last_id = (ms, rand)
    value = (ms << _RANDOM_BITS) | rand
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def lookup_key(run_id: str) -> str:
    """``run_id`` (a whole id or a prefix) as the log looks it up: stripped and lower-cased.
    Raises :class:`ConfigurationError` when it is shorter than :data:`MIN_PREFIX`."""
    key = run_id.strip().lower()
    if len(key) < MIN_PREFIX:
        raise ConfigurationError(f"give at least {MIN_PREFIX} characters of a run id")
    return key


def common_prefix(a: str, b: str) -> int:
    """How many leading characters ``a`` and ``b`` share."""
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
