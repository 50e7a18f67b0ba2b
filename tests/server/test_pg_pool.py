"""The PostgreSQL store's pool: a connection comes back from a request with nothing of
that request left on it, and without a reset statement."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

import backends
from airia_server.storage.postgres import PostgresStore


@pytest.fixture
async def pg_store() -> AsyncIterator[PostgresStore]:
    backends.require(backends.postgres_problem())
    url = await backends.create_database()
    store = PostgresStore(url, min_pool=1, max_pool=1)
    await store.start()
    try:
        yield store
    finally:
        await store.close()
        await backends.drop_database(url)


async def test_a_transaction_left_open_is_rolled_back_on_release(pg_store) -> None:
    # The pool runs no reset statement on release (see `_keep_session`); asyncpg
    # still rolls back what a request left open.
    async with pg_store.pool.acquire() as conn:
        await conn.execute("BEGIN")
        await conn.execute("CREATE TABLE left_behind (x int)")
    async with pg_store.pool.acquire() as conn:  # the same, only connection
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT to_regclass('left_behind')") is None


async def test_release_sends_no_reset_statement(pg_store) -> None:
    seen: list[str] = []

    def log(record) -> None:
        seen.append(record.query)

    async with pg_store.pool.acquire() as conn:
        conn.add_query_logger(log)
        await conn.fetchval("SELECT 1")
    async with pg_store.pool.acquire() as conn:  # the same, only connection
        await conn.fetchval("SELECT 2")
        conn.remove_query_logger(log)
    assert seen == ["SELECT 1", "SELECT 2"]


async def test_pool_queries_work_through_the_gate(pg_store) -> None:
    assert await pg_store.pool.fetchval("SELECT $1::int + 1", 41) == 42
    assert dict(await pg_store.pool.fetchrow("SELECT 1 AS a")) == {"a": 1}
    assert [r["n"] for r in await pg_store.pool.fetch("SELECT generate_series(1, 3) n")] == [
        1,
        2,
        3,
    ]
    assert await pg_store.pool.execute("SELECT 1") == "SELECT 1"
    with pytest.raises(asyncpg.PostgresSyntaxError):
        await pg_store.pool.fetchval("SELEC 1")
    # A failed query gives its turn back: the one connection is still there.
    assert await asyncio.wait_for(pg_store.pool.fetchval("SELECT 7"), 5) == 7
