"""GroupCommitWriter: a batch commits together, and one failing write fails alone."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from pathlib import Path

import pytest

from airia_server.metrics import BUCKETS
from airia_server.storage.base import WriterStats
from airia_server.storage.sqlite_writer import GroupCommitWriter


@pytest.fixture
def connect() -> Iterator[Callable[[Path], sqlite3.Connection]]:
    """Opens connections as the store does; the writer leaves its connection to its
    owner, so they are closed when the test ends."""

    def open_one(path: Path) -> sqlite3.Connection:
        conn = opened.enter_context(
            closing(sqlite3.connect(path, isolation_level=None, check_same_thread=False))
        )
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER)")
        return conn

    with ExitStack() as opened:
        yield open_one


def _insert(k: str, v: int):
    def op(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (k, v) VALUES (?, ?)", (k, v))
        return v

    return op


def test_concurrent_writes_share_commits_and_all_land(tmp_path, connect):
    conn = connect(tmp_path / "w.db")

    async def main() -> list[int]:
        writer = GroupCommitWriter(conn)
        results = await asyncio.gather(*(writer.submit(_insert(f"k{i}", i)) for i in range(100)))
        stats = writer.stats
        await writer.close()
        assert stats.ops == 100 and stats.batches < 100
        return list(results)

    assert asyncio.run(main()) == list(range(100))
    assert connect(tmp_path / "w.db").execute("SELECT count(*) FROM t").fetchone() == (100,)


def test_a_failing_write_fails_alone_and_leaves_nothing_behind(tmp_path, connect):
    conn = connect(tmp_path / "w.db")
    conn.execute("INSERT INTO t (k, v) VALUES ('taken', 0)")

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (k, v) VALUES ('half', 1)")
        conn.execute("INSERT INTO t (k, v) VALUES ('taken', 1)")  # violates the key

    async def main():
        writer = GroupCommitWriter(conn)
        futures = [
            writer.submit(_insert("a", 1)),
            writer.submit(half_then_fail),
            writer.submit(_insert("b", 2)),
        ]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        await writer.close()
        return outcomes

    first, failed, last = asyncio.run(main())
    assert (first, last) == (1, 2)
    assert isinstance(failed, sqlite3.IntegrityError)
    rows = connect(tmp_path / "w.db").execute("SELECT k, v FROM t ORDER BY k").fetchall()
    assert rows == [("a", 1), ("b", 2), ("taken", 0)]  # no 'half': its write was undone


def test_a_batch_that_cannot_be_replayed_fails_its_requests_and_the_writer_goes_on(
    tmp_path, connect
):
    conn = connect(tmp_path / "w.db")

    def ends_the_transaction_then_fails(conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")  # the writer then has no transaction to roll back
        raise ValueError("and fails")

    async def main():
        writer = GroupCommitWriter(conn)
        first = await asyncio.wait_for(
            asyncio.gather(
                writer.submit(_insert("a", 1)),
                writer.submit(ends_the_transaction_then_fails),
                return_exceptions=True,
            ),
            timeout=10,
        )
        after = await asyncio.wait_for(writer.submit(_insert("b", 2)), timeout=10)
        await writer.close()
        return first, after

    (a, broken), after = asyncio.run(main())
    assert isinstance(a, sqlite3.OperationalError) and a is broken
    assert after == 2
    rows = connect(tmp_path / "w.db").execute("SELECT k FROM t ORDER BY k").fetchall()
    assert ("b",) in rows


def test_writes_after_close_are_refused(tmp_path, connect):
    conn = connect(tmp_path / "w.db")

    async def main():
        writer = GroupCommitWriter(conn)
        await writer.close()
        with pytest.raises(RuntimeError, match="closed"):
            await writer.submit(_insert("late", 1))

    asyncio.run(main())


def test_the_wal_stays_bounded_under_a_steady_stream_of_commits(tmp_path, connect):
    """Passive checkpoints alone never catch a steady writer; asked by the
    checkpointer, the writer restarts the WAL between batches and the size limit
    trims the file."""
    import os
    import time

    from airia_server.storage.sqlite import _Checkpointer

    path = tmp_path / "w.db"
    conn = connect(path)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("PRAGMA journal_size_limit = 262144")
    checkpointer = _Checkpointer(path, interval=0.01, restart_frames=64)
    checkpointer.start()

    async def main() -> tuple[int, int]:
        writer = GroupCommitWriter(conn, 256, checkpointer.restart_job)
        largest, i = 0, 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            batch = [writer.submit(_insert(f"{i + j:08d}" + "x" * 2000, i + j)) for j in range(8)]
            await asyncio.gather(*batch)
            i += len(batch)
            largest = max(largest, os.path.getsize(f"{path}-wal"))
        await writer.close()
        return largest, i

    try:
        largest, count = asyncio.run(main())
    finally:
        checkpointer.stop()
    written = count * 2000
    assert written > 8 * 1024 * 1024, "too few commits to tell"
    assert largest < 4 * 1024 * 1024, f"WAL reached {largest} bytes for {written} written"


def test_a_batch_is_timed_until_its_commit(tmp_path, connect):
    conn = connect(tmp_path / "w.db")

    def slow(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (k, v) VALUES ('slow', 1)")
        time.sleep(0.03)

    async def main() -> WriterStats:
        writer = GroupCommitWriter(conn)
        await writer.submit(slow)
        await writer.close()
        return writer.stats

    stats = asyncio.run(main())
    assert (stats.batches, stats.ops) == (1, 1)
    assert stats.commit_seconds >= 0.03
    # Counted once, in a bucket past 30 ms (the first bound above it is 50 ms).
    assert sum(stats.durations) == 1
    assert sum(stats.durations[bisect_left(BUCKETS, 0.03) :]) == 1


TASKS = Path("/proc/self/task")


def _native_thread_names() -> list[str]:
    return [(task / "comm").read_text().strip() for task in TASKS.iterdir()]


def _this_thread_s_name() -> str:
    return (TASKS / str(threading.get_native_id()) / "comm").read_text().strip()


needs_proc = pytest.mark.skipif(
    not TASKS.is_dir(), reason="SKIPPED: no /proc (thread names are Linux's)"
)


@needs_proc
def test_the_store_s_threads_carry_their_names_for_the_os(tmp_path):
    """`top -H` and perf show the kernel's name of a thread, which Python does not set:
    the commit and checkpoint threads name themselves, and the event loop's thread
    keeps the program's name."""
    from airia_server.storage.sqlite import CHECKPOINT_THREAD, SqliteStore
    from airia_server.storage.sqlite_writer import COMMIT_THREAD

    own_name = _this_thread_s_name()

    async def main() -> list[str]:
        store = SqliteStore(tmp_path / "names.db")
        await store.start()
        try:
            await store.server_secret("probe", b"x")  # a write: the commit thread starts
            deadline = time.monotonic() + 5
            while CHECKPOINT_THREAD not in _native_thread_names() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return _native_thread_names()
        finally:
            await store.close()

    names = asyncio.run(main())
    assert COMMIT_THREAD in names and CHECKPOINT_THREAD in names
    assert _this_thread_s_name() == own_name


@needs_proc
def test_a_thread_name_is_cut_to_what_linux_keeps():
    from airia_server.threadnames import NATIVE_NAME_MAX, set_native_name

    seen: list[str] = []

    def body() -> None:
        set_native_name("x" * 40)
        seen.append(_this_thread_s_name())

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == ["x" * NATIVE_NAME_MAX]
