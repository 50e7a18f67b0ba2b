"""UTC timestamps as fixed-width ISO 8601 strings (they sort as text, in every backend)."""

from __future__ import annotations

import time


def format_us(epoch_us: int) -> str:
    seconds, micro = divmod(epoch_us, 1_000_000)
    t = time.gmtime(seconds)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{micro:06d}Z"
    )


def now_us() -> int:
    return time.time_ns() // 1000


def utcnow_iso() -> str:
    """Now, as `2026-11-26T06:01:34.123456Z`."""
    return format_us(now_us())
