"""PostgreSQL batching (`BatchedRows`): concurrent calls of one statement share a
round trip (and, for a write, a commit), and each still gets its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

import backends
from airia_server.storage.base import WriterStats
from airia_server.storage.pg_batch import BatchedRows
from airia_server.storage.pg_pool import FairPool

INSERT = "INSERT INTO items (id, note) VALUES ($1, $2)"


@pytest.fixture
async def pool() -> AsyncIterator[FairPool]:
    backends.require(backends.postgres_problem())
    url = await backends.create_database()
    raw = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        await raw.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, note TEXT NOT NULL)")
        yield FairPool(raw, 4)
    finally:
        await raw.close()
        await backends.drop_database(url)


async def stored(pool: FairPool) -> dict[int, str]:
    return dict(await pool.fetch("SELECT id, note FROM items ORDER BY id"))


class BrokenPool:
    """A pool whose connection breaks during every batch: PostgreSQL may or may not
    have committed it. It counts the calls run alone."""

    def __init__(self) -> None:
        self.alone = 0

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        self.alone += 1


# --- reads --------------------------------------------------------------------------

LOOKUP = (
    "SELECT k.i, items.note FROM unnest($1::int[], $2::text[]) WITH ORDINALITY AS k(id, tag, i) "
    "JOIN items ON items.id = k.id AND items.note LIKE k.tag || '%'"
)
LOOKUP_ONE = "SELECT note FROM items WHERE id = $1 AND note LIKE $2 || '%'"


class CountingPool(FairPool):
    """The real pool; it counts the queries and can hold them back."""

    def __init__(self, pool: FairPool) -> None:
        super().__init__(pool._pool, 4)
        self.batches = self.singles = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[Any]:
        self.batches += 1
        await self.gate.wait()
        return await super().fetch(query, *args, timeout=timeout)

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        self.singles += 1
        await self.gate.wait()
        return await super().fetchrow(query, *args, timeout=timeout)


def lookup_on(pool: FairPool, sql: str = LOOKUP, single: str = LOOKUP_ONE) -> BatchedRows:
    return BatchedRows(pool, sql, single=single, single_pool=pool)


async def test_concurrent_lookups_share_one_query_and_each_gets_its_own_row(
    pool: FairPool,
) -> None:
    for i, note in enumerate(["a1", "a2", "b3"], 1):
        await pool.execute(INSERT, i, note)
    counting = CountingPool(pool)
    lookup = lookup_on(counting)
    keys = [(1, "a"), (2, "a"), (3, "a"), (3, "b"), (9, "a"), (1, "a"), (2, "b")]
    rows = await asyncio.gather(*(lookup.get(*key) for key in keys))
    # The same id asked for under two tags gets the row only under the one it matches.
    assert [tuple(r) if r else None for r in rows] == [
        ("a1",),
        ("a2",),
        None,
        ("b3",),
        None,
        ("a1",),
        None,
    ]
    assert (counting.batches, counting.singles) == (1, 0)
    await lookup.close()


async def test_a_lookup_alone_runs_the_single_statement(pool: FairPool) -> None:
    await pool.execute(INSERT, 1, "a1")
    counting = CountingPool(pool)
    lookup = lookup_on(counting)
    assert tuple(await lookup.get(1, "a")) == ("a1",)
    assert await lookup.get(1, "b") is None
    assert (counting.batches, counting.singles) == (0, 2)
    await lookup.close()


@pytest.mark.parametrize("lanes", [1, 2])
async def test_a_lookup_never_joins_a_query_already_made(pool: FairPool, lanes: int) -> None:
    """A lookup made after a write committed sees it, even with an older query still
    in flight: it goes in the next query (at once, with a lane free; else after it)."""
    counting = CountingPool(pool)
    lookup = BatchedRows(counting, LOOKUP, single=LOOKUP_ONE, single_pool=counting, lanes=lanes)
    counting.gate.clear()
    early = lookup.get(7, "")
    await asyncio.sleep(0.01)  # the first query is on its way
    await pool.execute(INSERT, 7, "written")
    late = lookup.get(7, "")
    counting.gate.set()
    assert await early in (None, ("written",))  # raced the write; either is right
    assert tuple(await late) == ("written",)
    assert counting.batches + counting.singles == 2
    await lookup.close()


@pytest.mark.parametrize(("lanes", "queries"), [(1, (1, 1, 1, 2)), (2, (1, 2, 2, 3))])
async def test_a_read_with_a_free_lane_does_not_wait_for_a_batch_in_flight(
    pool: FairPool, lanes: int, queries: tuple[int, ...]
) -> None:
    """With two lanes, reads made while a batch is in flight go at once as another;
    with both in flight the next wait, together, for the first to come back. One lane
    (the writes) runs one batch at a time. `close` waits for every lane."""
    for i, note in enumerate(["a1", "a2"], 1):
        await pool.execute(INSERT, i, note)
    counting = CountingPool(pool)
    lookup = BatchedRows(counting, LOOKUP, single=LOOKUP_ONE, single_pool=counting, lanes=lanes)
    counting.gate.clear()  # every query is held until the gate opens
    made = []
    first = [lookup.get(1, "a")]
    await asyncio.sleep(0.01)
    made.append(counting.batches + counting.singles)
    second = [lookup.get(2, "a"), lookup.get(9, "a")]
    await asyncio.sleep(0.01)
    made.append(counting.batches + counting.singles)
    third = [lookup.get(1, "a"), lookup.get(2, "b")]
    await asyncio.sleep(0.01)
    made.append(counting.batches + counting.singles)
    closing = asyncio.ensure_future(lookup.close())
    await asyncio.sleep(0.01)
    assert not closing.done()
    counting.gate.set()
    await closing
    made.append(counting.batches + counting.singles)
    assert tuple(made) == queries
    rows = [await f for f in (*first, *second, *third)]
    assert [tuple(r) if r else None for r in rows] == [("a1",), ("a2",), None, ("a1",), None]
    assert not lookup.busy


async def test_a_failing_lookup_fails_alone(pool: FairPool) -> None:
    await pool.execute(INSERT, 1, "a1")
    # Key 0 makes the statements divide by zero.
    lookup = lookup_on(pool, LOOKUP + " AND 1 / k.id > 0", LOOKUP_ONE + " AND 1 / $1 > 0")
    outcomes = await asyncio.gather(lookup.get(1, "a"), lookup.get(0, "a"), return_exceptions=True)
    assert tuple(outcomes[0]) == ("a1",)
    assert isinstance(outcomes[1], asyncpg.DivisionByZeroError)
    assert tuple(await lookup.get(1, "a")) == ("a1",)
    await lookup.close()


# --- writes that answer with rows ---------------------------------------------------

ADD = (
    "WITH k AS (SELECT * FROM unnest($1::int[], $2::text[]) WITH ORDINALITY AS k(id, note, i)), "
    "w AS (INSERT INTO items (id, note) SELECT id, note FROM k ORDER BY i RETURNING id) "
    "SELECT k.i, length(k.note) FROM k JOIN w ON w.id = k.id"
)
ADD_ONE = (
    "WITH w AS (INSERT INTO items (id, note) VALUES ($1, $2) RETURNING id) SELECT length($2) FROM w"
)


async def test_a_write_batch_answers_each_call_with_its_row(pool: FairPool) -> None:
    stats = WriterStats()
    add = BatchedRows(pool, ADD, single=ADD_ONE, single_pool=pool, stats=stats)
    rows = await asyncio.gather(*(add.get(i, "x" * i) for i in range(1, 21)))
    assert [tuple(r) for r in rows] == [(i,) for i in range(1, 21)]
    assert (stats.ops, stats.batches) == (20, 1)
    assert len(await stored(pool)) == 20
    await add.close()


async def test_a_refused_write_batch_runs_each_call_alone(pool: FairPool) -> None:
    await pool.execute(INSERT, 2, "taken")
    add = BatchedRows(pool, ADD, single=ADD_ONE, single_pool=pool, stats=WriterStats())
    rows = await asyncio.gather(*(add.get(i, "ab") for i in range(1, 4)), return_exceptions=True)
    assert tuple(rows[0]) == (2,) and tuple(rows[2]) == (2,)
    assert isinstance(rows[1], asyncpg.UniqueViolationError)
    assert await stored(pool) == {1: "ab", 2: "taken", 3: "ab"}
    await add.close()


def adder(pool: FairPool, stats: WriterStats | None = None, *, max_batch: int = 256) -> BatchedRows:
    return BatchedRows(
        pool,
        ADD,
        single=ADD_ONE,
        single_pool=pool,
        stats=stats or WriterStats(),
        max_batch=max_batch,
    )


async def test_concurrent_writes_share_commits_and_all_land(pool: FairPool) -> None:
    stats = WriterStats()
    add = adder(pool, stats)
    await asyncio.gather(*(add.get(i, f"note {i}") for i in range(200)))
    assert await stored(pool) == {i: f"note {i}" for i in range(200)}
    assert stats.ops == 200
    assert stats.batches < 200 // 2  # queued together, committed together
    await add.close()


async def test_a_batch_is_limited_in_size(pool: FairPool) -> None:
    stats = WriterStats()
    add = adder(pool, stats, max_batch=16)
    await asyncio.gather(*(add.get(i, "x") for i in range(1, 65)))
    assert (stats.ops, stats.batches) == (64, 4)
    await add.close()


async def test_a_call_sees_the_calls_before_it_in_its_batch(pool: FairPool) -> None:
    """Two calls for one key in one batch: the second is the duplicate, not the first."""
    add = adder(pool)
    blocker = add.get(9, "in flight")
    await asyncio.sleep(0)  # it goes alone; the next calls queue behind it, together
    first, second = await asyncio.gather(
        add.get(1, "first"), add.get(1, "second"), return_exceptions=True
    )
    await blocker
    assert tuple(first) == (5,)
    assert isinstance(second, asyncpg.UniqueViolationError)
    assert await stored(pool) == {1: "first", 9: "in flight"}
    await add.close()


async def test_a_write_batch_of_unknown_outcome_is_not_replayed() -> None:
    """Running the calls again could write twice what was committed: each fails."""
    broken = BrokenPool()
    add = adder(broken)  # type: ignore[arg-type]
    blocker = add.get(0, "x")
    await asyncio.sleep(0)  # it goes alone, as the single statement
    rows = await asyncio.gather(*(add.get(i, "x") for i in range(1, 4)), return_exceptions=True)
    await blocker
    assert all(isinstance(r, asyncpg.ConnectionDoesNotExistError) for r in rows)
    assert broken.alone == 1  # the first call only, none of the batch
    await add.close()


async def test_a_caller_that_goes_away_does_not_undo_its_write(pool: FairPool) -> None:
    add = adder(pool)
    blocker = add.get(1, "first batch")  # in flight while the next call queues
    waiting = asyncio.ensure_future(add.get(2, "queued"))
    await asyncio.sleep(0)
    waiting.cancel()
    await blocker
    await add.close()
    assert await stored(pool) == {1: "first batch", 2: "queued"}


async def test_close_finishes_what_is_queued_then_refuses(pool: FairPool) -> None:
    add = adder(pool)
    queued = [add.get(i, "x") for i in range(5)]
    await add.close()
    assert all(f.done() and f.exception() is None for f in queued)
    assert len(await stored(pool)) == 5
    with pytest.raises(RuntimeError, match="closed"):
        await add.get(9, "late")


async def test_a_drain_cut_short_fails_its_calls_instead_of_leaving_them_waiting() -> None:
    """Cancelled mid-batch (an event loop shutting down), the batcher fails the calls
    of the batch it was running and those queued behind it."""

    class Stuck(BrokenPool):
        async def fetch(self, sql: str, *args: Any) -> list[Any]:
            await asyncio.Event().wait()
            return []

    stuck = Stuck()
    add = BatchedRows(stuck, ADD, single=ADD_ONE, single_pool=stuck)  # type: ignore[arg-type]
    running = [add.get(i, "x") for i in range(2)]
    await asyncio.sleep(0.01)  # the batch of two is in flight
    queued = add.get(9, "x")
    assert len(add._flights) == 1
    for task in add._flights:
        task.cancel()
    await asyncio.sleep(0.01)
    for future in (*running, queued):
        assert future.done()
        assert isinstance(future.exception(), RuntimeError)
