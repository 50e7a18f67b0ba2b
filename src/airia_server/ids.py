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
# Random bytes from the OS, drawn 4 KiB at a time rather than with a system call per
# id; a forked child starts with an empty pool so it never repeats its parent's.
_POOL_SIZE = 4096
_pool = b""
_pool_at = 0


def _forget_pool() -> None:
    global _pool, _pool_at
    _pool, _pool_at = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


def _random(n: int) -> int:
    """`n` random bytes as an integer (call with `_lock` held)."""
    global _pool, _pool_at
    if _pool_at + n > len(_pool):
        _pool, _pool_at = os.urandom(_POOL_SIZE), 0
    start = _pool_at
    _pool_at += n
    return int.from_bytes(_pool[start : start + n], "big")


def uuid7() -> uuid.UUID:
    """A UUIDv7: 48-bit Unix milliseconds, then a 12-bit counter, then 62 random bits.

    The counter keeps ids minted within the same millisecond in order, so ids
    from one process sort by creation even under load.
    """
    return uuid.UUID(int=_uuid7_int())


def _uuid7_int() -> int:
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = _random(2) & 0x3FF  # leave room to count up
        else:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        counter = _counter
        rand_b = _random(8) & 0x3FFF_FFFF_FFFF_FFFF
    return (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand_b


def new_id() -> str:
    """A new UUIDv7 in its canonical text form."""
    h = f"{_uuid7_int():032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


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
