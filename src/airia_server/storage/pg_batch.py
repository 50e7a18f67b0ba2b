"""Group commit for PostgreSQL: one write statement, run for many requests at once.

Each write on its own is a round trip and a commit, and a commit waits for its
WAL flush. `BatchedStatement` queues the arguments of concurrent calls to one
statement and runs them as a batch with asyncpg's `executemany`: one round trip,
one implicit transaction, one commit. asyncpg makes `executemany` atomic, so a
batch is committed whole or not at all, and a caller's future resolves only
after the COMMIT, with `synchronous_commit` on: a returned write is as durable
as one made alone.

While a batch is in flight, new calls queue up for the next one, as in
`GroupCommitWriter` (SQLite). One failing call does not spoil the others: when
PostgreSQL refuses a batch (which it then rolled back), each call of it runs
again alone and gets its own outcome. When the batch's outcome is not known (the
connection broke), every call of it fails with that error, as a single write
would.

Only statements whose calls are independent of each other belong here: the
calls of one batch run in the order they came, in one transaction, and a call
sees what the calls before it in the batch wrote.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from airia_server.storage.base import WriterStats
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


class BatchedStatement:
    def __init__(
        self, pool: FairPool, sql: str, stats: WriterStats, *, max_batch: int = 128
    ) -> None:
        self._pool = pool
        self._sql = sql
        self._stats = stats
        self._max_batch = max_batch
        self._pending: list[tuple[Sequence[Any], asyncio.Future[None]]] = []
        self._draining: asyncio.Task[None] | None = None
        self._closed = False

    def run(self, *args: Any) -> asyncio.Future[None]:
        """Queue one call; the future resolves once it is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if self._closed:
            future.set_exception(RuntimeError("the database writer is closed"))
            return future
        self._pending.append((args, future))
        if self._draining is None:
            self._draining = loop.create_task(self._drain())
        return future

    async def close(self) -> None:
        """Finish every call already queued, then refuse new ones."""
        self._closed = True
        if self._draining is not None:
            await asyncio.shield(self._draining)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                started = time.perf_counter()
                outcomes = await self._commit(batch)
                self._stats.batches += 1
                self._stats.ops += len(batch)
                self._stats.commit_seconds += time.perf_counter() - started
                for (_, future), exc in zip(batch, outcomes, strict=True):
                    if future.done():  # its caller has gone; the write stands
                        continue
                    if exc is None:
                        future.set_result(None)
                    else:
                        future.set_exception(exc)
        except BaseException as exc:
            for _, future in self._pending:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RuntimeError())
            self._pending.clear()
            raise
        finally:
            self._draining = None

    async def _commit(
        self, batch: list[tuple[Sequence[Any], asyncio.Future[None]]]
    ) -> list[Exception | None]:
        """Run the batch; the error of each call, None for those committed."""
        try:
            await self._pool.executemany(self._sql, [args for args, _ in batch])
        except REFUSED as exc:
            # PostgreSQL refused the batch and rolled it back: nothing of it is
            # written. Alone, each call gets the outcome it would have had.
            if len(batch) == 1:
                return [exc]
            return [await self._alone(args) for args, _ in batch]
        except Exception as exc:  # the outcome is not known: fail every call with it
            log.warning("a batch of %d writes failed", len(batch), exc_info=True)
            return [exc] * len(batch)
        return [None] * len(batch)

    async def _alone(self, args: Sequence[Any]) -> Exception | None:
        try:
            await self._pool.execute(self._sql, *args)
        except Exception as exc:
            return exc
        return None
