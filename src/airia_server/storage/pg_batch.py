"""Batching for PostgreSQL: many requests' calls of one statement, one round trip.

Each query on its own is a round trip, and asyncpg's and PostgreSQL's work per
query (the pool, the protocol, parse and bind, a write's commit and its WAL
flush) is most of what a simple request costs. The batcher here queues the
calls made while a batch is in flight, and runs the queue as the next batch when
it lands (a read, with a second lane free, at once as another batch: see
`BatchQueue`). Nothing is held back waiting for company: a call made while
nothing is in flight goes at once, alone. And nothing is answered from an
earlier query: a call only ever joins a batch that has not started yet, so it
sees every write committed before it was made.

`BatchedRows` runs a batch as one statement that joins the calls' arguments, as
arrays, with the tables (`unnest(...) WITH ORDINALITY`): each row comes back with
the position of the call it answers, so every caller gets the row for exactly its
arguments, tenant and all, or None. A batch of writes is one statement, so one
implicit transaction and one commit: it is committed whole or not at all, and a
caller's future resolves only after the COMMIT, with `synchronous_commit` on: a
returned write is as durable as one made alone. One failing call does not spoil
the others: when PostgreSQL refuses a batch (and so rolled it back), each call of
it runs again alone and gets its own outcome. When the outcome is not known (the
connection broke), every call fails with that error and nothing is replayed. So
a statement belongs here only if, over a batch, it gives each call the outcome it
would have had alone, in the order the calls came (or is refused).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from airia_server.storage.base import WriterStats
from airia_server.storage.batching import BatchQueue
from airia_server.storage.outages import outage_of
from airia_server.storage.pg_pool import FairPool

log = logging.getLogger("airia_server.storage")

REFUSED = (
    asyncpg.DataError,  # 22: a value the column cannot take
    asyncpg.IntegrityConstraintViolationError,  # 23: a duplicate key, a missing row
    asyncpg.TransactionRollbackError,  # 40: a deadlock or serialization failure
    asyncpg.SyntaxOrAccessError,  # 42
    asyncpg.ProgramLimitExceededError,  # 54: e.g. a value too large for its index
    asyncpg.PLPGSQLError,  # P0: raised by a trigger
)
"""Errors with which PostgreSQL refuses a statement for what it was asked to do, and
rolls its transaction back. Any other error (a broken connection, a shutdown, a
timeout) leaves it unknown whether the batch was committed."""


def _log_failed(size: int, exc: Exception) -> None:
    """One line for an outage (the database away, a statement timed out), which every
    batch of it would repeat; a traceback for anything else, which may be a bug."""
    log.warning(
        "a batch of %d calls failed: %s: %s",
        size,
        type(exc).__name__,
        str(exc)[:300],
        exc_info=outage_of(exc) is None,
    )


class BatchedRows(BatchQueue[Sequence[Any], Any]):
    """A statement over arrays: `get(*args)` resolves to the row for those arguments,
    or None.

    `sql` takes one array per argument, as `$1`, `$2`..., and joins them as rows
    (`unnest(...) WITH ORDINALITY`); it selects each call's position as its first
    column, and at most one row per call. The row handed back is the rest of the
    columns. `single` is the same statement for one call, with plain parameters.

    A call that has its batch to itself runs `single` on `single_pool`, which
    keeps its plan: under a light load nothing is planned per call. A batch runs
    `sql` on `pool`, whose connections plan each statement for its arrays (see
    `PostgresStore.start`). A write's statement is one transaction of its own, so
    a batch is committed whole, durably, before any of its calls resolves, or not
    at all; when PostgreSQL refuses a batch, each call runs again alone, and when
    the outcome is not known, every call fails with that error (see the module's
    docstring). `stats` counts a writer's batches. A read may have `lanes` batches
    in flight at once (see `BatchQueue`); a write keeps to one, so that its batches
    commit in the order their calls came.
    """

    def __init__(
        self,
        pool: FairPool,
        sql: str,
        *,
        single: str,
        single_pool: FairPool,
        stats: WriterStats | None = None,
        max_batch: int = 256,
        lanes: int = 1,
    ) -> None:
        super().__init__(max_batch, lanes=lanes)
        self._pool = pool
        self._sql = sql
        self._single = single
        self._single_pool = single_pool
        self._stats = stats

    def get(self, *args: Any) -> asyncio.Future[Any]:
        return self.submit(args)

    async def _drain(self) -> None:
        while self._pending:
            batch = self._next_batch()
            started = time.perf_counter()
            try:
                outcomes = await self._run([args for args, _ in batch])
            finally:
                if self._stats is not None:
                    self._stats.record(len(batch), time.perf_counter() - started)
            self._settle(
                [
                    (future, None, outcome)
                    if isinstance(outcome, Exception)
                    else (future, outcome, None)
                    for (_, future), outcome in zip(batch, outcomes, strict=True)
                ]
            )

    async def _run(self, batch: list[Sequence[Any]]) -> list[Any]:
        """The outcome of each call of the batch: its row (or None), or its exception."""
        if len(batch) == 1:
            return [await self._one(batch[0])]
        columns = [list(part) for part in zip(*batch, strict=True)]
        try:
            rows = await self._pool.fetch(self._sql, *columns)
        except REFUSED:
            return [await self._one(args) for args in batch]
        except Exception as exc:
            _log_failed(len(batch), exc)
            return [exc] * len(batch)
        found: list[Any] = [None] * len(batch)
        for row in rows:
            found[row[0] - 1] = row[1:]
        return found

    async def _one(self, args: Sequence[Any]) -> Any:
        try:
            row = await self._single_pool.fetchrow(self._single, *args)
        except Exception as exc:
            return exc
        return tuple(row) if row is not None else None
