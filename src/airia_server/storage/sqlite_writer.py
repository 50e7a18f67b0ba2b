"""Group commit for SQLite: many requests' writes, one transaction, one fsync.

SQLite has one writer at a time, and with `synchronous=FULL` each commit costs
an fsync. Requests hand their write to `submit` as a function of the
connection. While a commit is in flight, new writes queue up; when it lands,
everything queued runs in the next transaction (one failing write does not
spoil the others: see `_run`), and one COMMIT makes the batch durable. A
request's future resolves only after its COMMIT.

The statements run on the event loop's thread (they touch the page cache and
take microseconds); only BEGIN, which may wait for another process's lock,
and COMMIT, which waits for the disk, run on a dedicated thread. So the loop
never blocks on the disk, and the GIL changes hands twice per batch instead
of several times per statement.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from airia_server.storage.base import WriterStats

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

log = logging.getLogger("airia_server.storage")


class GroupCommitWriter:
    def __init__(
        self,
        conn: sqlite3.Connection,
        max_batch: int = 256,
        between_batches: Callable[[], Op | None] | None = None,
    ) -> None:
        self._conn = conn
        # Asked after each commit for work to do on the connection outside any
        # transaction (a WAL restart), run on the disk thread before the next batch.
        self._between_batches = between_batches
        self._max_batch = max_batch
        self._pending: list[tuple[Op, asyncio.Future[Any]]] = []
        self._draining: asyncio.Task[None] | None = None
        self._disk = ThreadPoolExecutor(1, thread_name_prefix="sqlite-commit")
        self._closed = False
        self.stats = WriterStats()

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._closed:
            future.set_exception(RuntimeError("the database writer is closed"))
            return future
        self._pending.append((op, future))
        if self._draining is None:
            self._draining = loop.create_task(self._drain())
        return future

    async def close(self) -> None:
        """Finish every write already submitted, then refuse new ones."""
        self._closed = True
        if self._draining is not None:
            await asyncio.shield(self._draining)
        self._disk.shutdown(wait=True)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                job = self._between_batches() if self._between_batches is not None else None
                if job is not None:
                    try:
                        await loop.run_in_executor(self._disk, job, self._conn)
                    except sqlite3.Error:
                        log.warning("work between write batches failed", exc_info=True)
                await loop.run_in_executor(self._disk, self._conn.execute, "BEGIN IMMEDIATE")
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                started = time.perf_counter()
                try:
                    outcomes = await self._commit(batch)
                except Exception as exc:  # nothing of this batch is durable
                    log.exception("commit of a batch of %d writes failed", len(batch))
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    outcomes = [(future, None, exc) for _, future in batch]
                self.stats.batches += 1
                self.stats.ops += len(batch)
                self.stats.commit_seconds += time.perf_counter() - started
                for future, result, exc in outcomes:
                    if future.done():
                        continue
                    if exc is not None:
                        future.set_exception(exc)
                    else:
                        future.set_result(result)
        except BaseException as exc:
            for _, future in self._pending:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RuntimeError())
            self._pending.clear()
            raise
        finally:
            self._draining = None

    async def _commit(
        self, batch: list[tuple[Op, asyncio.Future[Any]]]
    ) -> list[tuple[Any, Any, Any]]:
        """Run the batch in the open transaction and commit it; the outcome per write."""
        loop = asyncio.get_running_loop()
        outcomes = self._run(batch)
        if outcomes is None:
            # A write failed part-way: start the transaction over and run each write
            # under its own savepoint, so that only the failing one fails.
            self._conn.execute("ROLLBACK")
            await loop.run_in_executor(self._disk, self._conn.execute, "BEGIN IMMEDIATE")
            outcomes = self._run_each(batch)
        await loop.run_in_executor(self._disk, self._conn.execute, "COMMIT")
        return outcomes

    def _run(
        self, batch: list[tuple[Op, asyncio.Future[Any]]]
    ) -> list[tuple[Any, Any, Any]] | None:
        """Run every write of the batch in the open transaction; None if one raised.

        Writes rarely fail, so the batch runs with no savepoint at all: a savepoint
        makes SQLite copy every page it changes into a sub-journal, which cost about
        a tenth of an append. If a write raises, the caller rolls the transaction back
        and replays the batch with `_run_each` (a write is a function of the
        connection alone, so running it again gives the same outcome).
        """
        conn = self._conn
        try:
            return [(future, op(conn), None) for op, future in batch]
        except Exception:
            return None

    def _run_each(self, batch: list[tuple[Op, asyncio.Future[Any]]]) -> list[tuple[Any, Any, Any]]:
        conn = self._conn
        outcomes = []
        for op, future in batch:
            conn.execute("SAVEPOINT op")
            try:
                result = op(conn)
            except Exception as exc:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                outcomes.append((future, None, exc))
            else:
                conn.execute("RELEASE op")
                outcomes.append((future, result, None))
        return outcomes
