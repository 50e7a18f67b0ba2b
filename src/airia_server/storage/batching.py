"""The queue behind both backends' group commits, the PostgreSQL reads by id and
the Redis fan-out's outbox: calls wait while a batch is in flight, and a task
drains them, a batch at a time.

`BatchQueue.submit` queues an item and starts a draining task if fewer than
`lanes` run; a subclass's `_drain` takes batches with `_next_batch` until the
queue is empty, and settles each item's future. With one lane (the writers and
the outbox) batches run one after another, in the order their items came. With
more (reads, whose order among themselves does not matter), an item queued while
every running lane has its batch in flight starts another lane, so the queue is
not left waiting for one round trip while the next could be on its way. If a
task dies half-way (cancelled at shutdown), every call still waiting, in the
batch it held or in the queue, fails rather than hanging (unless the subclass's
`_drain` has settled it otherwise on its way out, as the outbox does).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
R = TypeVar("R")


class BatchQueue(ABC, Generic[Item, R]):
    closed_message = "the store is closed"

    def __init__(self, max_batch: int, *, lanes: int = 1) -> None:
        if lanes < 1:
            raise ValueError("a batch queue needs at least one lane")
        self._max_batch = max_batch
        self._lanes = lanes
        self._pending: list[tuple[Item, asyncio.Future[R]]] = []
        # The batch each draining task has in flight (empty while it takes the next).
        self._flights: dict[asyncio.Task[None], list[tuple[Item, asyncio.Future[R]]]] = {}
        self._closed = False

    def submit(self, item: Item) -> asyncio.Future[R]:
        """Queue one item; its future resolves once its batch has run."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if self._closed:
            future.set_exception(RuntimeError(self.closed_message))
            return future
        self._pending.append((item, future))
        # A lane that has not taken its batch yet takes this item with it; only when
        # every lane has its batch in flight does another start.
        if len(self._flights) < self._lanes and all(self._flights.values()):
            task = loop.create_task(self._drain_all())
            self._flights[task] = []
        return future

    @property
    def busy(self) -> bool:
        """A batch is in flight or queued."""
        return bool(self._flights)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def _in_flight(self) -> list[tuple[Item, asyncio.Future[R]]]:
        """The items of every batch in flight."""
        return [entry for flight in self._flights.values() for entry in flight]

    async def close(self) -> None:
        """Finish every item already queued, then refuse new ones."""
        self._closed = True
        while self._flights:
            await asyncio.shield(asyncio.gather(*self._flights, return_exceptions=True))

    def _next_batch(self) -> list[tuple[Item, asyncio.Future[R]]]:
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        task = asyncio.current_task()
        assert task is not None
        self._flights[task] = batch
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
        task = asyncio.current_task()
        assert task is not None
        try:
            await self._drain()
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else RuntimeError(self.closed_message)
            for _, future in self._flights.get(task, []) + self._pending:
                if not future.done():
                    future.set_exception(failure)
            self._pending.clear()
            raise
        finally:
            self._flights.pop(task, None)

    @abstractmethod
    async def _drain(self) -> None:
        """Run batches (`_next_batch`) until the queue is empty."""
