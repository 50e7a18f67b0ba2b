"""One writer thread for SQLite that commits concurrent requests in groups.

SQLite allows one writer at a time, and with `synchronous=FULL` every commit
costs an fsync. Requests hand their write to this thread as a function of the
connection; the thread takes everything queued, runs each function inside its
own savepoint (so one failing write does not spoil the others), commits once,
and only then resolves the requests' futures. One fsync serves the whole batch,
and a future resolves only after its write is durable.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

log = logging.getLogger("airia_server.storage")

_STOP = object()


class WriterStats:
    __slots__ = ("batches", "commit_seconds", "ops")

    def __init__(self) -> None:
        self.batches = 0
        self.ops = 0
        self.commit_seconds = 0.0


class GroupCommitWriter:
    def __init__(self, conn: sqlite3.Connection, max_batch: int = 256) -> None:
        self._conn = conn
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.stats = WriterStats()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join()
        self._thread = None

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            future.set_exception(RuntimeError("the database writer is not running"))
            return future
        self._queue.put((op, future, loop))
        return future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._commit(batch)

    def _commit(
        self, batch: list[tuple[Op, asyncio.Future[Any], asyncio.AbstractEventLoop]]
    ) -> None:
        conn = self._conn
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, future, _ in batch:
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
            conn.execute("COMMIT")
        except Exception as exc:  # the batch as a whole failed: nothing of it is durable
            log.exception("write batch of %d failed", len(batch))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(future, None, exc) for _, future, _ in batch]
        self.stats.batches += 1
        self.stats.ops += len(batch)
        self.stats.commit_seconds += time.perf_counter() - started
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for (_, _, loop), outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append(outcome)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop closed while we committed; nobody is waiting
                pass


def _deliver(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, exc in items:
        if future.done():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
