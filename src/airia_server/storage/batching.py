"""The queue behind both backends' group commits and the Redis fan-out's outbox:
calls wait while a batch is in flight, and one task drains them, a batch at a
time.

`BatchQueue.submit` queues an item and starts the draining task if none runs;
a subclass's `_drain` takes batches with `_next_batch` until the queue is empty,
and settles each item's future. If the task dies half-way (cancelled at
shutdown), every call still waiting, in the batch it held or in the queue,
fails rather than hanging (unless the subclass's `_drain` has settled it
otherwise on its way out, as the outbox does).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
R = TypeVar("R")


class BatchQueue(ABC, Generic[Item, R]):
    closed_message = "the store is closed"

    def __init__(self, max_batch: int) -> None:
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[R]]] = []
        self._in_flight: list[tuple[Item, asyncio.Future[R]]] = []
        self._draining: asyncio.Task[None] | None = None
        self._closed = False

    def submit(self, item: Item) -> asyncio.Future[R]:
        """Queue one item; its future resolves once its batch has run."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if self._closed:
            future.set_exception(RuntimeError(self.closed_message))
            return future
        self._pending.append((item, future))
        if self._draining is None:
            self._draining = loop.create_task(self._drain_all())
        return future

    @property
    def busy(self) -> bool:
        """A batch is in flight or queued."""
        return self._draining is not None

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Finish every item already queued, then refuse new ones."""
        self._closed = True
        if self._draining is not None:
            await asyncio.shield(self._draining)

    def _next_batch(self) -> list[tuple[Item, asyncio.Future[R]]]:
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        self._in_flight = batch
        return batch

    @staticmethod
    def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
        """Resolve each future with its result, or fail it with its exception."""
        for future, result, exc in outcomes:
            if future.done():  # its caller has gone (a write stands all the same)
                continue
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)

    async def _drain_all(self) -> None:
        try:
            await self._drain()
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else RuntimeError(self.closed_message)
            for _, future in self._in_flight + self._pending:
                if not future.done():
                    future.set_exception(failure)
            self._pending.clear()
            raise
        finally:
            self._in_flight = []
            self._draining = None

    @abstractmethod
    async def _drain(self) -> None:
        """Run batches (`_next_batch`) until the queue is empty."""
