"""UTC timestamps as fixed-width ISO 8601 strings (they sort as text, in every backend)."""

from __future__ import annotations

import time

_second: tuple[int, str] = (-1, "")
"""The last second formatted, and its text up to the fraction (one tuple, so that
threads always see a matching pair)."""


def format_us(epoch_us: int) -> str:
    global _second
    seconds, micro = divmod(epoch_us, 1_000_000)
    cached_seconds, prefix = _second
    if seconds != cached_seconds:
        t = time.gmtime(seconds)
        prefix = (
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        )
        _second = (seconds, prefix)
    return f"{prefix}.{micro:06d}Z"


def now_us() -> int:
    return time.time_ns() // 1000


def utcnow_iso() -> str:
    """Now, as `2026-11-26T06:01:34.123456Z`."""
    return format_us(now_us())
