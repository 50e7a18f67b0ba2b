"""The feed's title filter ignores case on SQLite exactly as PostgreSQL's ILIKE does."""

from __future__ import annotations

import unicodedata

import asyncpg

import backends
from airia_server.storage import feed_sql

# Every code point of the planes in use (the surrogates are no characters).
CODE_POINTS = [c for c in range(1, 0x30000) if not 0xD800 <= c <= 0xDFFF]


async def test_fold_case_lowers_every_character_as_postgresql_does() -> None:
    """ILIKE lower-cases with the database's `lower()`: compared for every character,
    in a database with the cluster's default locale, as the tests' databases have."""
    backends.require(backends.postgres_problem())
    conn = await asyncpg.connect(backends.POSTGRES_ADMIN_URL)
    try:
        lowered = await conn.fetchval(
            "SELECT array_agg(lower(chr(c)) ORDER BY c) FROM unnest($1::int[]) AS c", CODE_POINTS
        )
    finally:
        await conn.close()
    # Characters newer than this Python's Unicode database (Python 3.10 has Unicode
    # 13) are not letters to it yet, and stay as they are.
    differ = [
        (hex(c), pg, feed_sql.fold_case(chr(c)))
        for c, pg in zip(CODE_POINTS, lowered, strict=True)
        if feed_sql.fold_case(chr(c)) != pg and unicodedata.category(chr(c)) != "Cn"
    ]
    assert differ == []


def test_the_characters_that_fold_into_ascii_are_all_known() -> None:
    """An ASCII filter goes through SQLite's LIKE, but for titles holding one of
    these; a character missing here would be missed by such a filter."""
    into_ascii = set()
    for c in range(0x80, 0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        folded = feed_sql.fold_case(chr(c))
        if folded.isascii():
            into_ascii.add((folded, chr(c)))
    assert into_ascii == set(feed_sql._FOLDS_INTO_ASCII.items())
