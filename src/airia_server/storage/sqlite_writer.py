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
from airia_server.storage.batching import BatchQueue
from airia_server.threadnames import set_native_name

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

log = logging.getLogger("airia_server.storage")

COMMIT_THREAD = "sqlite-commit"
"""The name the OS shows for the thread that runs BEGIN and COMMIT (`top -H`)."""


class GroupCommitWriter(BatchQueue[Op, Any]):
    closed_message = "the database writer is closed"

    def __init__(
        self,
        conn: sqlite3.Connection,
        max_batch: int = 256,
        between_batches: Callable[[], Op | None] | None = None,
    ) -> None:
        super().__init__(max_batch)
        self._conn = conn
        # Asked after each commit for work to do on the connection outside any
        # transaction (a WAL restart), run on the disk thread before the next batch.
        self._between_batches = between_batches
        self._disk = ThreadPoolExecutor(
            1,
            thread_name_prefix="sqlite-commit",
            initializer=set_native_name,
            initargs=(COMMIT_THREAD,),
        )
        self.stats = WriterStats()

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue a write (a function of the connection); it resolves once committed."""
        return super().submit(op)

    async def close(self) -> None:
        """Finish every write already submitted, then refuse new ones."""
        await super().close()
        self._disk.shutdown(wait=True)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            # Timed from here: a WAL restart due, and BEGIN waiting for another
            # process's write lock, hold up the batch's writes as much as its COMMIT.
            started = time.perf_counter()
            job = self._between_batches() if self._between_batches is not None else None
            if job is not None:
                try:
                    await loop.run_in_executor(self._disk, job, self._conn)
                except sqlite3.Error:
                    log.warning("work between write batches failed", exc_info=True)
            await loop.run_in_executor(self._disk, self._conn.execute, "BEGIN IMMEDIATE")
            batch = self._next_batch()
            try:
                outcomes = await self._commit(batch)
            except Exception as exc:  # nothing of this batch is durable
                log.exception("commit of a batch of %d writes failed", len(batch))
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                outcomes = [(future, None, exc) for _, future in batch]
            self.stats.record(len(batch), time.perf_counter() - started)
            self._settle(outcomes)

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
