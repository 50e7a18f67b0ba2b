"""`/readyz`'s database checks against a database that stops answering."""

from __future__ import annotations

import asyncio

from airia_server.api import system


class Frozen:
    """A database that stopped answering (a network partition, a frozen host): its
    queries never end, and, as asyncpg's do, finish their cancellation only when it
    answers again."""

    backend = "postgresql"

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def ping(self) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            await asyncio.sleep(30)  # the database answers again, after the outage
            raise


async def test_a_database_that_stops_answering_is_not_ready_without_waiting_for_it() -> None:
    """Within the check's 2 s, however long the cancelled query takes to end: with
    `asyncio.wait_for`, `/readyz` hung for the whole outage (90 s in a test)."""
    database = Frozen()
    checks = await asyncio.wait_for(system._database_checks(database), 10)
    assert checks == {"database": "unreachable: TimeoutError"}
    # The query is not left running: its cancellation has begun (delivered at the
    # loop's next turn, on Python 3.13 after the answer).
    await asyncio.wait_for(database.cancelled.wait(), 5)
