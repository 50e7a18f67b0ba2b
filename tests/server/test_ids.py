"""UUIDv7 minting and path id parsing."""

from __future__ import annotations

import itertools
import time
import uuid
from types import SimpleNamespace

import pytest

from airia_server import ids


def test_uuid7_has_version_7_and_rfc_variant() -> None:
    value = ids.uuid7()
    assert value.version == 7
    assert value.variant == uuid.RFC_4122


def test_uuid7_embeds_the_current_unix_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    value = ids.uuid7()
    after = time.time_ns() // 1_000_000
    # The counter may borrow a millisecond or two when exhausted, never more here.
    assert before <= value.int >> 80 <= after + 2


def test_ten_thousand_consecutive_ids_are_strictly_increasing() -> None:
    values = [ids.uuid7() for _ in range(10_000)]
    assert all(v.version == 7 for v in values)
    assert all(a < b for a, b in itertools.pairwise(values))
    as_text = [str(v) for v in values]
    assert as_text == sorted(as_text)  # they sort as text too, as stored
    assert len(set(as_text)) == len(as_text)


def test_ids_stay_ordered_when_the_clock_stands_still(monkeypatch: pytest.MonkeyPatch) -> None:
    # The generator's state is restored afterwards, so later ids are not skewed.
    monkeypatch.setattr(ids, "_last_ms", ids._last_ms)
    monkeypatch.setattr(ids, "_counter", ids._counter)
    frozen = (max(ids._last_ms, time.time_ns() // 1_000_000) + 1) * 1_000_000
    monkeypatch.setattr(ids, "time", SimpleNamespace(time_ns=lambda: frozen))
    values = [ids.uuid7() for _ in range(5_000)]  # more than the 12-bit counter holds
    assert all(a < b for a, b in itertools.pairwise(values))


def test_new_id_is_canonical_text() -> None:
    value = ids.new_id()
    assert value == str(uuid.UUID(value))
    assert uuid.UUID(value).version == 7


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0190f5a2-7c3e-7b1a-9d4e-2f6a8b0c1d2e", "0190f5a2-7c3e-7b1a-9d4e-2f6a8b0c1d2e"),
        ("0190F5A2-7C3E-7B1A-9D4E-2F6A8B0C1D2E", "0190f5a2-7c3e-7b1a-9d4e-2f6a8b0c1d2e"),
        ("0190f5a27c3e7b1a9d4e2f6a8b0c1d2e", "0190f5a2-7c3e-7b1a-9d4e-2f6a8b0c1d2e"),
        ("your_conversation_id", None),
        ("", None),
        ("../x", None),
        ("x" * 300, None),
        ("été", None),
        ("0190f5a2-7c3e-7b1a-9d4e-2f6a8b0c1d2", None),
        ("0190f5a2-7c3e-7b1a-9d4e-2f6a8b0c1d2e" + " " * 20, None),
    ],
)
def test_parse_id(raw: str, expected: str | None) -> None:
    assert ids.parse_id(raw) == expected
