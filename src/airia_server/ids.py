"""Time-ordered identifiers (UUIDv7, RFC 9562) so new rows land at the end of indexes."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid

_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> uuid.UUID:
    """A UUIDv7: 48-bit Unix milliseconds, then a 12-bit counter, then 62 random bits.

    The counter keeps ids minted within the same millisecond in order, so ids
    from one process sort by creation even under load.
    """
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF  # leave room to count up
        else:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        counter = _counter
    rand_b = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand_b
    return uuid.UUID(int=value)


def new_id() -> str:
    return str(uuid7())


def parse_id(value: str) -> str | None:
    """The canonical lower-case form of a UUID, or None when `value` is not one.

    Any path id that is not a UUID cannot name a stored row, so callers answer 404
    without touching the database.
    """
    if len(value) > 45:
        return None
    if _CANONICAL.match(value):  # the form every id we hand out has: nothing to do
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None
