"""Fixed-width ISO 8601 UTC timestamps."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from airia_server import timeutil

SHAPE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


@pytest.mark.parametrize(
    ("epoch_us", "expected"),
    [
        (0, "1970-01-01T00:00:00.000000Z"),
        (1, "1970-01-01T00:00:00.000001Z"),
        (999_999, "1970-01-01T00:00:00.999999Z"),
        (1_000_000, "1970-01-01T00:00:01.000000Z"),
        (1_795_672_894_123_456, "2026-11-26T06:01:34.123456Z"),
        (951_782_400_000_000, "2000-02-29T00:00:00.000000Z"),
        (253_402_300_799_999_999, "9999-12-31T23:59:59.999999Z"),
    ],
)
def test_format_us(epoch_us: int, expected: str) -> None:
    assert timeutil.format_us(epoch_us) == expected


def test_format_us_agrees_with_datetime() -> None:
    for epoch_us in (1_234_567_890_123_456, 1_700_000_000_000_001, 86_399_999_999):
        text = timeutil.format_us(epoch_us)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        assert parsed.tzinfo == timezone.utc
        assert round(parsed.timestamp() * 1_000_000) == epoch_us


def test_timestamps_sort_as_text_in_time_order() -> None:
    values = [0, 9, 10, 999_999, 1_000_000, 59_999_999, 60_000_000, 1_795_672_894_123_456]
    texts = [timeutil.format_us(v) for v in values]
    assert texts == sorted(texts)
    assert all(SHAPE.match(t) for t in texts)


def test_utcnow_iso_is_now() -> None:
    before = datetime.now(timezone.utc)
    text = timeutil.utcnow_iso()
    after = datetime.now(timezone.utc)
    assert SHAPE.match(text)
    assert before <= datetime.fromisoformat(text.replace("Z", "+00:00")) <= after
