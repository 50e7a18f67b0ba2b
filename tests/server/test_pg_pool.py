"""The PostgreSQL store's pool: connections go to requests in the order they asked,
and a connection comes back from a request with nothing of that request left on it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

import backends
from airia_server.storage.pg_pool import FairPool
from airia_server.storage.postgres import PostgresStore


class QueuePool:
    """A pool of `size` tokens handed out the way asyncpg hands out connections:
    through an `asyncio.Queue`, where a newcomer can take a token a waiter was
    woken for."""

    def __init__(self, size: int) -> None:
        self._free: asyncio.Queue[int] = asyncio.Queue()
        for token in range(size):
            self._free.put_nowait(token)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[int]:
        token = await self._free.get()
        try:
            yield token
        finally:
            self._free.put_nowait(token)


async def served_order(pool) -> list[str]:
    """`holder` has the only connection; `waiter` asks for it; then, in the turn
    where `holder` gives it back, `newcomer` asks too. The order they got it in."""
    order: list[str] = []
    release = asyncio.Event()

    async def use(name: str, hold: asyncio.Event | None = None) -> None:
        async with pool.acquire():
            order.append(name)
            if hold is not None:
                await hold.wait()

    holder = asyncio.create_task(use("holder", release))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(use("waiter"))
    await asyncio.sleep(0)

    async def give_back_then_arrive() -> None:
        release.set()
        await asyncio.sleep(0)  # holder's `finally` runs: the connection is free
        await use("newcomer")

    await asyncio.gather(holder, waiter, give_back_then_arrive())
    return order


async def test_a_plain_queue_lets_a_newcomer_past_a_waiter() -> None:
    # Why the gate exists: asyncpg's own queue behaves like this.
    assert await served_order(QueuePool(1)) == ["holder", "newcomer", "waiter"]


async def test_the_gate_serves_requests_in_the_order_they_asked() -> None:
    assert await served_order(FairPool(QueuePool(1), 1)) == ["holder", "waiter", "newcomer"]


async def test_a_turn_is_waited_for_within_a_bound() -> None:
    """With every connection held by a query that does not come back, a request gives
    up (TimeoutError, a 503) instead of queueing for ever."""
    pool = FairPool(QueuePool(1), 1, wait=0.05)
    release = asyncio.Event()

    async def hold() -> None:
        async with pool.acquire():
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(pool.fetchval("SELECT 1"))
    done, _ = await asyncio.wait({waiting}, timeout=30)  # a pool without a bound: never
    assert waiting in done
    assert isinstance(waiting.exception(), asyncio.TimeoutError)  # TimeoutError from 3.11
    release.set()
    await holder
    async with pool.acquire() as token:  # the turn given up was not lost
        assert token == 0


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
    # What /metrics reports.
    assert (pg_store.pool.get_size(), pg_store.pool.get_idle_size()) == (1, 1)
    async with pg_store.pool.acquire():
        assert pg_store.pool.get_idle_size() == 0


async def test_statements_over_arrays_are_planned_for_the_table_as_it_is_now() -> None:
    """A connection caches a statement's plan while the table's statistics stand. The
    batched reads and appends join their keys with `conversations`; a plan made while
    the table was small scans all of it, and a cached one goes on doing so after it
    has grown. The batchers' connections plan each time: after the table grows, the
    same statement finds its rows by index there, and still scans on a pool one."""
    from airia_server.storage.postgres import _GET_CONVERSATIONS

    backends.require(backends.postgres_problem())
    url = await backends.create_database()
    store = PostgresStore(url)
    await store.start()
    try:

        async def plan_after_growth(pool: FairPool) -> str:
            async with pool.acquire() as conn:
                await conn.execute("TRUNCATE conversations")  # small again
                await conn.execute(f"PREPARE lookup AS {_GET_CONVERSATIONS}")
                for _ in range(6):  # enough runs for PostgreSQL to settle on a plan
                    await conn.fetch("EXECUTE lookup(ARRAY['x1'], ARRAY['t1'])")
                await conn.execute(
                    "INSERT INTO conversations (id, tenant_id, user_id, title, deployment_id,"
                    " data_source_files, is_bookmarked, message_count, last_sequence,"
                    " created_at, updated_at) SELECT 'x' || g, 't1', 'u1', 't', 'd', '{}',"
                    " false, 0, 0, 'c', 'u' FROM generate_series(1, 10000) g"
                )
                rows = await conn.fetch("EXPLAIN EXECUTE lookup(ARRAY['x7'], ARRAY['t1'])")
                await conn.execute("DEALLOCATE lookup")
            return "\n".join(row[0] for row in rows)

        assert "Seq Scan on conversations" in await plan_after_growth(store.pool)
        batch_plan = await plan_after_growth(store._batch_pool)
        assert "conversations_pkey" in batch_plan
        assert "Seq Scan on conversations" not in batch_plan
    finally:
        await store.close()
        await backends.drop_database(url)
