"""The storage suite. Every backend runs the same tests through the `store` fixture."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import inspect
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

import backends
import sqlite_files
from airia_server.domain.lifecycle import apply_retention
from airia_server.ids import new_id
from airia_server.realtime.hub import LocalHub
from airia_server.storage import LATEST_MIGRATION
from airia_server.storage.base import (
    ApiKeyRecord,
    AttachmentRecord,
    ConversationRecord,
    FeedQuery,
    MessageRecord,
)
from airia_server.storage.feed_sql import FeedSql
from airia_server.storage.outages import DatabaseUnavailable, Outage, outage_of
from airia_server.storage.postgres import PostgresStore
from airia_server.storage.postgres import migrations as postgres_migrations
from airia_server.storage.sqlite import PAGE_CACHE_KIB, SqliteStore, migrations
from airia_server.timeutil import format_us

BASE_US = 1_795_672_894_000_000


def make_record(
    tenant: str = "t1",
    user: str = "u1",
    *,
    title: str | None = "a title",
    at_us: int = BASE_US,
    **overrides: Any,
) -> ConversationRecord:
    stamp = format_us(at_us)
    fields: dict[str, Any] = dict(
        id=new_id(),
        tenant_id=tenant,
        user_id=user,
        title=title,
        deployment_id="deployment_456",
        data_source_files={"documents": ["doc1.pdf", "doc2.txt"]},
        is_bookmarked=False,
        last_execution_status=None,
        last_execution_id=None,
        message_count=0,
        last_sequence=0,
        created_at=stamp,
        updated_at=stamp,
    )
    fields.update(overrides)
    return ConversationRecord(**fields)


async def create(store, record: ConversationRecord) -> None:
    # Newer stores also record the creator as the Owner participant.
    if "owner_id" in inspect.signature(store.create_conversation).parameters:
        await store.create_conversation(record, owner_id=new_id())
    else:
        await store.create_conversation(record)


def open_sqlite(path: Path) -> SqliteStore:
    return SqliteStore(path / "store.db")


INTEGRITY_ERRORS = (sqlite3.IntegrityError, asyncpg.UniqueViolationError)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Every storage test runs on every backend; PostgreSQL gets a database of its own."""
    url = None
    if request.param == "postgres":
        backends.require(backends.postgres_problem())
        url = await backends.create_database()
        instance: Any = PostgresStore(url)
    else:
        instance = open_sqlite(tmp_path)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()
        if url is not None:
            await backends.drop_database(url)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """For what only SQLite has: its group-commit writer."""
    instance = open_sqlite(tmp_path)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


async def row_count(store: Any, table: str) -> int:
    if store.backend == "postgres":
        return await store.pool.fetchval(f"SELECT count(*) FROM {table}")
    with sqlite_files.connect(store.path) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# --- migrations ---------------------------------------------------------------------


async def test_migrations_apply_once_then_are_idempotent(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "nested" / "m.db")
    expected = [version for version, _, _ in migrations()]
    assert expected and expected == sorted(set(expected))
    assert await store.migrate() == expected
    assert await store.migrate() == []
    assert await SqliteStore(store.path).migrate() == []
    with sqlite_files.connect(store.path) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert versions == expected
    assert mode == "wal"


async def test_a_migrate_with_nothing_to_apply_writes_nothing(store: Any) -> None:
    """Every instance migrates as it starts; with the schema current that must need no
    write: on PostgreSQL a standby (or a database set read-only during a failover)
    refused the unconditional CREATE TABLE IF NOT EXISTS, and the instance did not
    come up; on SQLite it waited for (and, past the busy timeout, failed on) another
    process's write lock."""
    if store.backend == "postgres":
        await backends.alter_database(
            store.dsn, "ALTER DATABASE {name} SET default_transaction_read_only = on"
        )
        assert await PostgresStore(store.dsn).migrate() == []
        await backends.alter_database(store.dsn, "ALTER DATABASE {name} RESET ALL")
    else:
        with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # a writer holding the lock
            assert await SqliteStore(store.path).migrate() == []
            other.execute("ROLLBACK")


async def test_a_current_copy_without_wal_is_put_in_wal_mode(sqlite_store: SqliteStore) -> None:
    """A backup made with `VACUUM INTO` (docs/operations.md) has every migration but a
    rollback journal: migrating it finds nothing to apply and must still switch it."""
    copy = sqlite_store.path.with_name("copy.db")
    with contextlib.closing(sqlite3.connect(sqlite_store.path)) as conn:
        conn.execute("VACUUM INTO ?", (str(copy),))
    restored = SqliteStore(copy)
    assert await restored.migrate() == []
    with sqlite_files.connect(copy) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_servers_starting_at_once_on_a_new_file_all_migrate_it(tmp_path: Path) -> None:
    # Three at once on a new file ask SQLite to switch it to WAL together; it answered
    # "database is locked" without waiting to about one in twenty of them (13 of 300
    # here), and that server did not start.
    def start(path: Path, ready: threading.Barrier, outcomes: list[object]) -> None:
        ready.wait()
        try:
            outcomes.append(SqliteStore(path)._migrate())
        except sqlite3.Error as exc:
            outcomes.append(exc)

    for trial in range(40):
        ready = threading.Barrier(3)
        outcomes: list[object] = []
        args = (tmp_path / f"shared-{trial}.db", ready, outcomes)
        threads = [threading.Thread(target=start, args=args) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        errors = [o for o in outcomes if isinstance(o, Exception)]
        assert errors == [], f"trial {trial}"
        # Each migration was applied once, by one of them (they take turns).
        applied = sorted(version for versions in outcomes for version in versions)
        assert applied == [version for version, _, _ in migrations()]


async def test_schema_version_is_the_latest_migration(store) -> None:
    assert await store.schema_version() == LATEST_MIGRATION[store.backend]


def test_every_backend_has_the_same_migrations() -> None:
    assert [v for v, _, _ in migrations()] == [v for v, _, _ in postgres_migrations()]
    assert [n for _, n, _ in migrations()] == [n for _, n, _ in postgres_migrations()]


async def test_the_event_log_keeps_every_event_when_it_moves_to_arrival_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 8 rebuilds the SQLite event log; what was there before is still there,
    found by sequence, and a sequence still cannot be taken twice."""
    from airia_server.storage import sqlite as sqlite_storage

    every = migrations()
    monkeypatch.setattr(sqlite_storage, "migrations", lambda: [m for m in every if m[0] < 8])
    store = SqliteStore(tmp_path / "old.db")
    await store.migrate()
    old = [("c1", 2, "b", '{"n": 2}', "t2"), ("c2", 1, "c", "{}", "t3"), ("c1", 1, "a", "{}", "t1")]
    with sqlite_files.connect(store.path) as conn:
        conn.executemany("INSERT INTO conversation_events VALUES (?, ?, ?, ?, ?)", old)

    # Up to 11: these events belong to no conversation, which migration 12 removes.
    monkeypatch.setattr(sqlite_storage, "migrations", lambda: [m for m in every if m[0] < 12])
    assert 8 in await store.migrate()
    await store.start()
    try:
        events = await store.events_after("c1", 0, 10)
        assert [(e.sequence, e.type, e.data) for e in events] == [(1, "a", {}), (2, "b", {"n": 2})]
        assert [e.sequence for e in await store.events_after("c1", 1, 10)] == [2]
        assert [e.type for e in await store.events_after("c2", 0, 10)] == ["c"]
    finally:
        await store.close()
    with sqlite_files.connect(store.path) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO conversation_events (conversation_id, sequence, type, data, created_at)"
            " VALUES ('c1', 2, 'again', '{}', 't9')"
        )


@contextlib.asynccontextmanager
async def pg_upgraded_at(
    version: int, monkeypatch: pytest.MonkeyPatch, before: Callable[[PostgresStore], Awaitable[Any]]
) -> AsyncIterator[PostgresStore]:
    """A new PostgreSQL database, migrated short of `version`, written to by `before`,
    then opened by a store with every migration (the database dropped on the way out)."""
    from airia_server.storage import postgres as postgres_storage

    backends.require(backends.postgres_problem())
    url = await backends.create_database()
    every = postgres_migrations()
    monkeypatch.setattr(
        postgres_storage, "migrations", lambda: [m for m in every if m[0] < version]
    )
    old = PostgresStore(url)
    try:
        await old.start()
        await before(old)
        await old.close()
        monkeypatch.setattr(postgres_storage, "migrations", lambda: every)
        store = PostgresStore(url)
        await store.start()
        try:
            yield store
        finally:
            await store.close()
    finally:
        await backends.drop_database(url)


async def test_feed_counts_keep_their_totals_when_they_move_to_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL's migration 9 spreads each counter over slots: the counts made before
    it still stand, and creates and deletes after it keep them exact."""
    before = [make_record(user=f"u{i % 2}") for i in range(5)]

    async def write(old: PostgresStore) -> None:
        for record in before:
            await create(old, record)

    async with pg_upgraded_at(9, monkeypatch, write) as store:
        assert (await store.feed(query(user_id=None))).total_count == 5
        assert (await store.feed(query(user_id="u0"))).total_count == 3
        await create(store, make_record(user="u0"))
        await store.delete_conversation("t1", before[0].id, "now")  # made before
        await store.delete_conversation("t1", before[1].id, "now")
        assert (await store.feed(query(user_id=None))).total_count == 4
        assert (await store.feed(query(user_id="u0"))).total_count == 3
        assert (await store.feed(query(user_id="u1"))).total_count == 1


async def test_feed_counts_keep_their_totals_when_their_triggers_run_per_statement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL's migration 13 counts per statement: the counts the row triggers
    made still stand, and batched creates (several tenants and users in one
    statement), shares, unshares and deletes after it keep them exact."""
    before = [make_record(user=f"u{i % 2}") for i in range(4)]

    async def write(old: PostgresStore) -> None:
        await asyncio.gather(*(create(old, record) for record in before))

    async with pg_upgraded_at(13, monkeypatch, write) as store:

        async def totals(tenant: str = "t1") -> list[int]:
            whole = await store.feed(query(user_id=None, tenant_id=tenant))
            users = [await store.feed(query(user_id=u, tenant_id=tenant)) for u in USERS]
            return [whole.total_count] + [page.total_count for page in users]

        USERS = ("u0", "u1", "u2")
        assert await totals() == [4, 2, 2, 0]
        after = [make_record(tenant=f"t{1 + i % 2}", user=f"u{i % 3}") for i in range(12)]
        await asyncio.gather(*(create(store, record) for record in after))
        assert await totals() == [4 + 6, 2 + 2, 2 + 2, 2]
        assert await totals("t2") == [6, 2, 2, 2]
        shared = before[0]
        await store.put_participant(
            "t1", shared.id, "u2", "Viewer", "u0", "now", only_existing=False
        )
        assert await totals() == [10, 4, 4, 3]
        await store.remove_participant("t1", shared.id, "u2", "now")
        assert await totals() == [10, 4, 4, 2]
        await store.put_participant(
            "t1", shared.id, "u2", "Viewer", "u0", "now", only_existing=False
        )
        results = await asyncio.gather(
            *(store.delete_conversation("t1", r.id, "now") for r in (shared, before[1]))
        )
        assert all(result is not None for result in results)
        assert await totals() == [8, 3, 3, 2]
        assert await totals("t2") == [6, 2, 2, 2]


@contextlib.asynccontextmanager
async def pg_instances(count: int) -> AsyncIterator[list[PostgresStore]]:
    """`count` started PostgresStores (as many server instances) over one new database,
    closed and the database dropped on the way out."""
    backends.require(backends.postgres_problem())
    url = await backends.create_database()
    stores = [PostgresStore(url) for _ in range(count)]
    try:
        for store in stores:
            await store.start()
        yield stores
    finally:
        for store in stores:
            await store.close()
        await backends.drop_database(url)


async def test_feed_counts_are_exact_with_many_instances_writing_at_once() -> None:
    """Instances (each with its own connections, so its own counter slots) create and
    delete concurrently; every instance reads the same, exact totals."""
    async with pg_instances(3) as stores:
        records = [make_record(user=f"u{i % 3}") for i in range(90)]
        await asyncio.gather(*(create(stores[i % 3], record) for i, record in enumerate(records)))
        gone = records[::4]
        results = await asyncio.gather(
            *(
                stores[(i + 1) % 3].delete_conversation("t1", record.id, "now")
                for i, record in enumerate(gone)
            )
        )
        assert all(result is not None for result in results)
        left = [r for r in records if r not in gone]
        for store in stores:
            assert (await store.feed(query(user_id=None))).total_count == len(left)
            for user in ("u0", "u1", "u2"):
                page = await store.feed(query(user_id=user))
                assert page.total_count == sum(1 for r in left if r.user_id == user)


async def test_appends_from_many_instances_stay_gap_free() -> None:
    """Two instances append to the same conversations at once, each in batches that
    lock several conversations: every message gets its own position and event."""
    async with pg_instances(2) as stores:
        records = [make_record() for _ in range(4)]
        for record in records:
            await create(stores[0], record)
        calls = [(stores[i % 2], records[(i * 7 + i // 3) % 4].id) for i in range(240)]
        results = await asyncio.gather(
            *(store.add_message("t1", make_message(cid, "u1")) for store, cid in calls)
        )
        assert all(result is not None for result in results)
        for record in records:
            mine = [r for r in results if r[0].conversation_id == record.id]
            assert sorted(m.position for m, _ in mine) == list(range(1, len(mine) + 1))
            assert sorted(e.sequence for _, e in mine) == list(range(1, len(mine) + 1))
            events = await stores[1].events_after(record.id, 0, 1000)
            assert [e.sequence for e in events] == list(range(1, len(mine) + 1))


def test_migration_files_are_numbered_without_gaps() -> None:
    versions = [version for version, _, _ in migrations()]
    assert versions == list(range(1, len(versions) + 1))


# --- conversations ------------------------------------------------------------------


async def test_create_get_round_trip(store) -> None:
    record = make_record(title="hello", is_bookmarked=True)
    await create(store, record)
    assert await store.get_conversation("t1", record.id) == record


async def test_get_is_scoped_to_the_tenant(store) -> None:
    record = make_record()
    await create(store, record)
    assert await store.get_conversation("t2", record.id) is None
    assert await store.get_conversation("t1", new_id()) is None


async def test_sharing_with_the_role_held_already_changes_nothing(store) -> None:
    """Sharing again, or setting the role a participant has, stored and broadcast a
    `participant.updated` saying what was already so, and moved the conversation up
    its users' feeds. Now it answers the participant as is."""
    record = make_record(tenant="t1")
    await create(store, record)
    added = await store.put_participant(
        "t1", record.id, "u2", "Viewer", "u1", "2030-01-01T00:00:00.000000Z", only_existing=False
    )
    assert added is not None and added[1] is not None
    before = await store.get_conversation("t1", record.id)
    for only_existing in (False, True):
        again = await store.put_participant(
            "t1",
            record.id,
            "u2",
            "Viewer",
            "u3",
            "2031-01-01T00:00:00.000000Z",
            only_existing=only_existing,
        )
        assert again == (added[0], None)
    assert await store.get_conversation("t1", record.id) == before
    events = await store.events_after(record.id, 0, 10)
    assert [e.type for e in events] == ["participant.added"]
    changed = await store.put_participant(
        "t1",
        record.id,
        "u2",
        "Collaborator",
        "u1",
        "2032-01-01T00:00:00.000000Z",
        only_existing=True,
    )
    assert changed is not None and changed[1].type == "participant.updated"
    assert changed[1].sequence == before.last_sequence + 1


async def test_reads_made_together_each_get_their_own_answer(store) -> None:
    """However a backend answers concurrent reads (PostgreSQL batches them into one
    query), each gets the answer for its own tenant and user."""
    mine, theirs = make_record(tenant="t1"), make_record(tenant="t2", user="v1")
    await create(store, mine)
    await create(store, theirs)
    await store.put_participant("t1", mine.id, "u2", "Viewer", "u1", "now", only_existing=False)
    plain = await asyncio.gather(
        store.get_conversation("t1", mine.id),
        store.get_conversation("t2", mine.id),
        store.get_conversation("t2", theirs.id),
        store.get_conversation("t1", theirs.id),
        store.get_conversation("t1", new_id()),
    )
    assert [r.id if r else None for r in plain] == [mine.id, None, theirs.id, None, None]
    assert plain[2] == theirs  # every column, from the row of its own key
    roles = await asyncio.gather(
        store.get_conversation_for("t1", mine.id, "u1"),
        store.get_conversation_for("t1", mine.id, "u2"),
        store.get_conversation_for("t1", mine.id, "u3"),
        store.get_conversation_for("t2", mine.id, "u1"),
        store.get_conversation_for("t2", theirs.id, "v1"),
    )
    assert [(r[0].id, r[1]) if r else None for r in roles] == [
        (mine.id, "Owner"),
        (mine.id, "Viewer"),
        (mine.id, None),
        None,
        (theirs.id, "Owner"),
    ]


async def test_duplicate_id_fails_and_keeps_the_original(store) -> None:
    record = make_record(title="original")
    await create(store, record)
    with pytest.raises(INTEGRITY_ERRORS):
        await create(store, make_record(id=record.id, title="copy"))
    assert (await store.get_conversation("t1", record.id)).title == "original"


async def test_update_changes_fields_and_appends_an_event(store) -> None:
    record = make_record()
    await create(store, record)
    later = format_us(BASE_US + 5_000_000)

    result = await store.update_conversation(
        "t1",
        record.id,
        {
            "title": "renamed",
            "is_bookmarked": True,
            "data_source_files": {"d": ["x.txt"]},
            "last_execution_status": "Completed",
            "last_execution_id": "exec-1",
        },
        later,
    )

    assert result is not None
    updated, event = result
    assert updated.title == "renamed"
    assert updated.is_bookmarked is True
    assert updated.data_source_files == {"d": ["x.txt"]}
    assert (updated.last_execution_status, updated.last_execution_id) == ("Completed", "exec-1")
    assert updated.updated_at == later
    assert updated.created_at == record.created_at
    assert updated.last_sequence == 1
    assert (event.type, event.sequence, event.created_at) == ("conversation.updated", 1, later)
    assert event.data["title"] == "renamed"
    assert await store.get_conversation("t1", record.id) == updated
    stored = await store.events_after(record.id, 0, 100)
    assert [(e.sequence, e.type, e.data["title"]) for e in stored] == [
        (1, "conversation.updated", "renamed")
    ]


async def test_update_of_missing_or_foreign_conversation_is_none(store) -> None:
    record = make_record()
    await create(store, record)
    stamp = format_us(BASE_US + 1)
    assert await store.update_conversation("t2", record.id, {"title": "x"}, stamp) is None
    assert await store.update_conversation("t1", new_id(), {"title": "x"}, stamp) is None
    assert (await store.get_conversation("t1", record.id)).title == record.title
    assert await store.events_after(record.id, 0, 100) == []


async def test_sequences_are_gap_free_under_concurrent_updates(store) -> None:
    record = make_record()
    await create(store, record)
    stamp = format_us(BASE_US + 1)

    results = await asyncio.gather(
        *(store.update_conversation("t1", record.id, {"title": f"t{i}"}, stamp) for i in range(60))
    )

    sequences = sorted(event.sequence for _, event in results)
    assert sequences == list(range(1, 61))
    events = await store.events_after(record.id, 0, 1000)
    assert [e.sequence for e in events] == list(range(1, 61))
    assert (await store.get_conversation("t1", record.id)).last_sequence == 60
    assert [e.sequence for e in await store.events_after(record.id, 57, 1000)] == [58, 59, 60]
    assert [e.sequence for e in await store.events_after(record.id, 10, 3)] == [11, 12, 13]


async def test_delete_removes_the_conversation_and_its_events(store) -> None:
    record = make_record()
    keep = make_record()
    await create(store, record)
    await create(store, keep)
    for i in range(3):
        await store.update_conversation("t1", record.id, {"title": f"t{i}"}, format_us(BASE_US))
    await store.update_conversation("t1", keep.id, {"title": "kept"}, format_us(BASE_US))

    deleted = await store.delete_conversation("t1", record.id, format_us(BASE_US + 9))

    assert deleted is not None
    event, attachments = deleted
    assert attachments == 0
    assert (event.type, event.sequence, event.conversation_id) == (
        "conversation.deleted",
        4,
        record.id,
    )
    assert await store.get_conversation("t1", record.id) is None
    assert await store.events_after(record.id, 0, 100) == []
    assert await store.delete_conversation("t1", record.id, format_us(BASE_US)) is None
    assert len(await store.events_after(keep.id, 0, 100)) == 1
    assert await store.get_conversation("t1", keep.id) is not None


def make_message(
    conversation_id: str, user_id: str | None, role: str = "user", *, at_us: int = BASE_US + 5
) -> MessageRecord:
    stamp = format_us(at_us)
    return MessageRecord(
        id=new_id(),
        conversation_id=conversation_id,
        position=0,
        user_id=user_id,
        role=role,
        message="hello",
        images=None,
        image_attachment_ids=None,
        created_at=stamp,
        updated_at=stamp,
    )


async def test_a_conversations_get_carries_its_newest_messages_within_a_size(store) -> None:
    """`recent_messages_json`: the newest messages whose text and images add up to
    `max_size` characters, oldest first; at least the newest one, however large."""
    record = make_record()
    await create(store, record)
    ids = []
    for i in range(5):
        message = msgspec.structs.replace(
            make_message(record.id, "u1"),
            message=str(i) * 100,
            images=["x" * 18] if i == 3 else None,  # '["xxx…"]': 22 more characters
        )
        added = await store.add_message("t1", message)
        assert added is not None
        ids.append(added[0].id)

    def shown(raw: bytes) -> list[str]:
        return [m["id"] for m in json.loads(raw)]

    assert shown(await store.recent_messages_json(record.id, 100)) == ids
    assert shown(await store.recent_messages_json(record.id, 100, 222)) == ids[3:]
    assert shown(await store.recent_messages_json(record.id, 100, 221)) == ids[4:]
    assert shown(await store.recent_messages_json(record.id, 100, 1)) == ids[4:]
    assert shown(await store.recent_messages_json(record.id, 2, 10_000)) == ids[3:]


async def test_a_message_can_be_by_the_conversations_user_without_a_read_first(store) -> None:
    record = make_record(user="alice")
    await create(store, record)

    by_default = await store.add_message(
        "t1", make_message(record.id, None), author_from_conversation=True
    )
    named = await store.add_message(
        "t1", make_message(record.id, "bob"), author_from_conversation=True
    )
    nobody = await store.add_message("t1", make_message(record.id, None, role="assistant"))

    assert by_default is not None and named is not None and nobody is not None
    (first, first_event), (second, second_event), (third, _) = by_default, named, nobody
    assert (first.user_id, first_event.data["userId"], first.position) == ("alice", "alice", 1)
    assert (second.user_id, second_event.data["userId"], second.position) == ("bob", "bob", 2)
    assert third.user_id is None
    stored = await store.list_messages(record.id, cursor=None, limit=10, descending=False)
    assert [m.user_id for m in stored] == ["alice", "bob", None]
    # Another tenant's key finds nothing to write to, and learns nothing.
    assert (
        await store.add_message("t2", make_message(record.id, None), author_from_conversation=True)
        is None
    )
    assert len(await store.list_messages(record.id, cursor=None, limit=10, descending=False)) == 3


async def test_truncated_messages_keep_no_content_in_the_event_log(store) -> None:
    """A replay after a truncation shows the deleted messages' events (their ids, authors
    and times, so the sequence has no gap) but not their text, images or references;
    the messages kept, and other conversations, keep theirs."""
    record, other = make_record(user="alice"), make_record(user="bob")
    await create(store, record)
    await create(store, other)
    kept, secret, later = (
        msgspec.structs.replace(
            make_message(record.id, "alice"),
            message=text,
            images=["data:image/png;base64,AAAA"],
            image_attachment_ids=[new_id()],
        )
        for text in ("public hello", "password=hunter2", "after it")
    )
    for message in (kept, secret):
        assert await store.add_message("t1", message) is not None
    assert await store.update_conversation("t1", record.id, {"title": "renamed"}, "t9")
    assert await store.add_message("t1", later) is not None
    elsewhere = make_message(other.id, "bob")
    assert await store.add_message("t1", elsewhere) is not None

    result = await store.truncate_messages("t1", record.id, secret.id, format_us(BASE_US + 9))
    assert result is not None and result.deleted_count == 2

    events = await store.events_after(record.id, 0, 100)
    created = {e.data["id"]: e.data for e in events if e.type == "message.created"}
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert created[kept.id]["message"] == "public hello"
    assert created[kept.id]["imageAttachmentIds"] == kept.image_attachment_ids
    for gone in (secret, later):
        data = created[gone.id]
        assert (data["message"], data["images"], data["imageAttachmentIds"]) == (None,) * 3
        assert (data["userId"], data["role"], data["createdAt"]) == (
            "alice",
            "user",
            gone.created_at,
        )
    assert [e.type for e in events][-1] == "messages.truncated"
    assert "hunter2" not in repr(events)
    assert [e.data["message"] for e in await store.events_after(other.id, 0, 100)] == ["hello"]


async def hello_and_secret(store) -> tuple[ConversationRecord, MessageRecord]:
    """A conversation with two messages, "hello" and a secret: the conversation and the
    secret's record."""
    record = make_record(user="alice")
    await create(store, record)
    secret = msgspec.structs.replace(make_message(record.id, "alice"), message="hunter2")
    for message in (make_message(record.id, "alice"), secret):
        assert await store.add_message("t1", message) is not None
    return record, secret


async def test_messages_truncated_before_the_upgrade_leave_the_log_at_migration_10(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Truncations made before migration 10 left the deleted messages' content in the
    event log; the migration takes it out, and leaves the messages that stand alone."""
    from airia_server.storage import sqlite as sqlite_storage

    every = migrations()
    monkeypatch.setattr(sqlite_storage, "migrations", lambda: [m for m in every if m[0] < 10])
    store = SqliteStore(tmp_path / "old.db")
    await store.start()
    try:
        record, secret = await hello_and_secret(store)
    finally:
        await store.close()
    with sqlite_files.connect(store.path) as conn:  # a truncation as it was done before
        conn.execute("DELETE FROM messages WHERE id = ?", (secret.id,))

    monkeypatch.setattr(sqlite_storage, "migrations", lambda: every)
    store = SqliteStore(tmp_path / "old.db")
    await store.start()
    try:
        events = await store.events_after(record.id, 0, 10)
    finally:
        await store.close()
    assert [e.data["message"] for e in events] == ["hello", None]
    assert events[1].data["id"] == secret.id


async def test_messages_truncated_before_the_upgrade_leave_the_log_on_postgresql(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Migration 10 on PostgreSQL, as on SQLite."""
    from airia_server.storage import postgres as postgres_storage

    backends.require(backends.postgres_problem())
    url = await backends.create_database()
    every = postgres_migrations()
    try:
        monkeypatch.setattr(postgres_storage, "migrations", lambda: [m for m in every if m[0] < 10])
        old = PostgresStore(url)
        await old.start()
        try:
            record, secret = await hello_and_secret(old)
        finally:
            await old.close()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("DELETE FROM messages WHERE id = $1", secret.id)
        finally:
            await conn.close()

        monkeypatch.setattr(postgres_storage, "migrations", lambda: every)
        store = PostgresStore(url)
        await store.start()
        try:
            events = await store.events_after(record.id, 0, 10)
        finally:
            await store.close()
        assert [e.data["message"] for e in events] == ["hello", None]
        assert events[1].data["id"] == secret.id
    finally:
        await backends.drop_database(url)


async def test_rows_a_racing_delete_left_behind_go_at_migration_12(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before migration 12, a delete on PostgreSQL racing other writes could leave rows
    of its conversation behind (docs/reliability.md, defect 10): made here as such a
    delete left them, they go at the upgrade, the feed counts with them, and another
    conversation's rows stay."""
    from airia_server.storage import postgres as postgres_storage

    backends.require(backends.postgres_problem())
    url = await backends.create_database()
    every = postgres_migrations()
    try:
        monkeypatch.setattr(postgres_storage, "migrations", lambda: [m for m in every if m[0] < 12])
        old = PostgresStore(url)
        await old.start()
        try:
            gone, kept = make_record(user="u1"), make_record(user="u1")
            for record in (gone, kept):
                await create(old, record)
                assert await old.add_message("t1", make_message(record.id, "u1")) is not None
                await old.put_participant(
                    "t1", record.id, "u2", "Viewer", "u1", "now", only_existing=False
                )
                await old.mark_read(record.id, "u2", "now")
            assert (await old.feed(query(user_id="u2"))).total_count == 2
        finally:
            await old.close()
        conn = await asyncpg.connect(url)
        try:  # the conversation's row alone, as the racing delete removed it
            await conn.execute("DELETE FROM conversations WHERE id = $1", gone.id)
        finally:
            await conn.close()

        monkeypatch.setattr(postgres_storage, "migrations", lambda: every)
        store = PostgresStore(url)
        await store.start()
        try:
            page = await store.feed(query(user_id="u2"))
            assert (page.total_count, [i.conversation_id for i in page.items]) == (1, [kept.id])
            assert len(await store.list_participants(kept.id)) == 2
        finally:
            await store.close()
        conn = await asyncpg.connect(url)
        try:
            for table in ("messages", "conversation_events", "conversation_participants"):
                counts = await conn.fetch(
                    f"SELECT conversation_id, count(*) FROM {table} GROUP BY 1"
                )
                assert {row[0] for row in counts} == {kept.id}, table
            reads = await conn.fetch("SELECT conversation_id FROM conversation_reads")
            assert [row[0] for row in reads] == [kept.id]
        finally:
            await conn.close()
    finally:
        await backends.drop_database(url)


async def test_appends_made_together_each_get_their_own_numbers(store) -> None:
    """Concurrent appends (one statement and one commit on PostgreSQL): several to one
    conversation take its next numbers in the order they were made; one for another
    tenant's conversation, or one that does not exist, writes nothing."""
    a, b, theirs = make_record(), make_record(user="u2"), make_record(tenant="t2")
    for record in (a, b, theirs):
        await create(store, record)
    await store.put_participant("t1", a.id, "u3", "Viewer", "u1", "now", only_existing=False)
    shared_seq = (await store.get_conversation("t1", a.id)).last_sequence

    calls = [
        ("t1", a.id, 1),
        ("t1", b.id, 2),
        ("t1", a.id, 3),
        ("t1", theirs.id, 4),
        ("t1", new_id(), 5),
        ("t1", a.id, 6),
        ("t2", theirs.id, 7),
    ]
    messages = []
    for tenant, conversation_id, n in calls:
        message = make_message(conversation_id, "u1")
        stamp = format_us(BASE_US + n)
        message = msgspec.structs.replace(
            message, message=f"m{n}", created_at=stamp, updated_at=stamp
        )
        messages.append((tenant, message))
    results = await asyncio.gather(*(store.add_message(t, m) for t, m in messages))

    numbers = [(r[0].position, r[1].sequence) if r else None for r in results]
    assert numbers == [
        (1, shared_seq + 1),
        (1, 1),
        (2, shared_seq + 2),
        None,
        None,
        (3, shared_seq + 3),
        (1, 1),
    ]
    stored = await store.list_messages(a.id, cursor=None, limit=10, descending=False)
    assert [(m.message, m.position) for m in stored] == [("m1", 1), ("m3", 2), ("m6", 3)]
    events = await store.events_after(a.id, shared_seq, 10)
    assert [(e.sequence, e.data["message"]) for e in events] == [
        (shared_seq + 1, "m1"),
        (shared_seq + 2, "m3"),
        (shared_seq + 3, "m6"),
    ]
    after = await store.get_conversation("t1", a.id)
    assert (after.message_count, after.last_sequence) == (3, shared_seq + 3)
    assert after.updated_at == format_us(BASE_US + 6)
    # Both participants' feeds put it at its latest message's time.
    for user in ("u1", "u3"):
        page = await store.feed(query(user_id=user, sort_by="updatedAt"))
        assert [(i.conversation_id, i.updated_at) for i in page.items][:1] == [
            (a.id, format_us(BASE_US + 6))
        ]
    assert (await store.get_conversation("t2", theirs.id)).message_count == 1


async def test_an_append_that_fails_fails_alone(store) -> None:
    record = make_record()
    await create(store, record)
    first = make_message(record.id, "u1")
    await store.add_message("t1", first)
    again = msgspec.structs.replace(make_message(record.id, "u1"), id=first.id)
    results = await asyncio.gather(
        store.add_message("t1", make_message(record.id, "u1")),
        store.add_message("t1", again),
        store.add_message("t1", make_message(record.id, "u1")),
        return_exceptions=True,
    )
    assert isinstance(results[1], INTEGRITY_ERRORS)
    assert [r[0].position for r in (results[0], results[2])] == [2, 3]
    stored = await store.list_messages(record.id, cursor=None, limit=10, descending=False)
    assert [m.position for m in stored] == [1, 2, 3]
    assert (await store.get_conversation("t1", record.id)).message_count == 3


async def test_delete_is_scoped_to_the_tenant(store) -> None:
    record = make_record()
    await create(store, record)
    assert await store.delete_conversation("t2", record.id, format_us(BASE_US)) is None
    assert await store.get_conversation("t1", record.id) is not None


async def test_data_survives_a_restart(tmp_path: Path) -> None:
    first = open_sqlite(tmp_path)
    await first.start()
    record = make_record()
    await create(first, record)
    await first.update_conversation("t1", record.id, {"title": "durable"}, format_us(BASE_US))
    await first.close()

    second = open_sqlite(tmp_path)
    await second.start()
    try:
        assert (await second.get_conversation("t1", record.id)).title == "durable"
        assert [e.sequence for e in await second.events_after(record.id, 0, 10)] == [1]
    finally:
        await second.close()


# --- feed ---------------------------------------------------------------------------


@pytest.fixture
async def feed_records(store) -> list[ConversationRecord]:
    titles = ["delta", "alpha", "echo", "charlie", "bravo", "100% sure", "under_score"]
    records = [
        make_record(title=title, at_us=BASE_US + i * 1_000_000) for i, title in enumerate(titles)
    ]
    records.append(make_record(user="u2", title="alpha of u2", at_us=BASE_US + 50_000_000))
    records.append(make_record(tenant="t2", title="alpha of t2", at_us=BASE_US + 60_000_000))
    for record in records:
        await create(store, record)
    return records


def query(**overrides: Any) -> FeedQuery:
    fields: dict[str, Any] = dict(tenant_id="t1", user_id="u1", page_number=1, page_size=100)
    fields.update(overrides)
    return FeedQuery(**fields)


async def test_feed_pages_and_counts(store, feed_records: list[ConversationRecord]) -> None:
    expected = [r.id for r in feed_records[:7]]
    seen: list[str] = []
    for page_number in (1, 2, 3, 4):
        page = await store.feed(
            query(page_number=page_number, page_size=2, sort_by="createdAt", descending=False)
        )
        assert page.total_count == 7
        seen += [r.conversation_id for r in page.items]
    assert seen == expected
    empty = await store.feed(query(page_number=5, page_size=2))
    assert (empty.items, empty.total_count) == ([], 7)


async def test_feed_sorts_by_title(store, feed_records: list[ConversationRecord]) -> None:
    asc = await store.feed(query(sort_by="title", descending=False))
    titles = [r.title for r in asc.items]
    assert titles == sorted(titles)
    desc = await store.feed(query(sort_by="title", descending=True))
    assert [r.title for r in desc.items] == titles[::-1]


@pytest.mark.parametrize("page_size", [100, 1])  # one page; and pages read from either end
async def test_feed_sorts_untitled_conversations_first_by_title_ascending(
    store, page_size: int
) -> None:
    """A conversation without a title sorts before every title, and last descending, on
    both backends (PostgreSQL's default puts NULL last ascending, SQLite's first)."""
    titles = ["beta", None, "alpha", None, "gamma"]
    for i, title in enumerate(titles):
        await create(store, make_record(title=title, at_us=BASE_US + i * 1_000_000))

    async def titles_in(descending: bool) -> list[str | None]:
        seen: list[str | None] = []
        for number in range(1, -(-len(titles) // page_size) + 1):
            page = await store.feed(
                query(
                    sort_by="title", descending=descending, page_size=page_size, page_number=number
                )
            )
            seen += [r.title for r in page.items]
        return seen

    assert await titles_in(False) == [None, None, "alpha", "beta", "gamma"]
    assert await titles_in(True) == ["gamma", "beta", "alpha", None, None]


CODE_POINT_TITLES = ["Banana", "Zebra", "_x", "a b", "apple", "cherry", "Éclair", "éclair", "Ωmega"]


async def titles_by_title(store) -> tuple[list[str | None], list[str | None]]:
    for i, title in enumerate(CODE_POINT_TITLES):
        await create(store, make_record(title=title, at_us=BASE_US + i * 1_000_000))
    ascending, descending = [], []
    for number in (1, 2, 3):  # pages of 4, so the last one is read from the end
        for into, desc in ((ascending, False), (descending, True)):
            page = await store.feed(
                query(sort_by="title", descending=desc, page_size=4, page_number=number)
            )
            into += [r.title for r in page.items]
    return ascending, descending


async def test_feed_sorts_titles_by_code_point(store) -> None:
    ascending, descending = await titles_by_title(store)
    assert ascending == sorted(CODE_POINT_TITLES)
    assert descending == sorted(CODE_POINT_TITLES, reverse=True)


@contextlib.asynccontextmanager
async def icu_store(locale: str) -> AsyncIterator[PostgresStore]:
    """A started store on a new PostgreSQL database whose collation is ICU's `locale`."""
    backends.require(backends.postgres_problem())
    try:
        url = await backends.create_database(
            f"TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '{locale}' LOCALE 'C.UTF-8'"
        )
    except asyncpg.PostgresError as exc:
        pytest.skip(f"SKIPPED BACKEND: this PostgreSQL makes no ICU database ({exc})")
    store = PostgresStore(url)
    try:
        await store.start()
        yield store
    finally:
        await store.close()
        await backends.drop_database(url)


async def test_feed_sorts_titles_by_code_point_whatever_the_databases_collation() -> None:
    """A PostgreSQL database made with a language's collation sorts 'apple' before
    'Banana'; the feed still sorts as SQLite does, so both backends agree."""
    async with icu_store("en-US") as store:
        collation = await store.pool.fetchval(
            "SELECT daticulocale FROM pg_database WHERE datname = current_database()"
        )
        assert collation == "en-US"
        ascending, descending = await titles_by_title(store)
        assert ascending == sorted(CODE_POINT_TITLES)
        assert descending == sorted(CODE_POINT_TITLES, reverse=True)


def _epoch_us(year: int) -> int:
    moment = datetime.datetime(year, 6, 1, tzinfo=datetime.timezone.utc)
    return (moment - datetime.datetime.fromtimestamp(0, datetime.timezone.utc)) // (
        datetime.timedelta(microseconds=1)
    )


async def retention_reaches_back_only_as_far_as_it_says(store) -> None:
    """A retention of up to 1,000,000 days (allowed) reaches before year 1: nothing is
    that old, and nothing goes. Short of it, what is older than the cut-off goes."""
    recent, ancient = make_record(), make_record(at_us=_epoch_us(500))
    for record in (recent, ancient):
        await create(store, record)
    hub = LocalHub()
    assert await apply_retention(store, hub, 1_000_000) == 0
    await store.set_retention("t1", 900_000)
    assert await apply_retention(store, hub, 0) == 0
    await store.set_retention("t1", 600_000)  # back to about year 383
    assert await apply_retention(store, hub, 0) == 0
    await store.set_retention("t1", 500_000)  # back to about year 657
    assert await apply_retention(store, hub, 0) == 1
    assert await store.get_conversation("t1", ancient.id) is None
    assert await store.get_conversation("t1", recent.id) is not None


async def test_a_retention_reaching_before_year_one_deletes_nothing(store) -> None:
    await retention_reaches_back_only_as_far_as_it_says(store)


async def test_a_retention_reaching_before_year_one_deletes_nothing_whatever_the_collation() -> (
    None
):
    """Such a cut-off was written with a minus sign ('-712-12-30T...'), which a collation
    that skips punctuation sorts after '2026-...': every conversation of the tenant was
    deleted."""
    async with icu_store("en-US-u-ka-shifted") as store:
        assert await store.pool.fetchval("SELECT '-712-01-01' > '2026-01-01'")  # the trap
        await retention_reaches_back_only_as_far_as_it_says(store)


async def test_feed_sorts_by_time(store, feed_records: list[ConversationRecord]) -> None:
    newest_first = await store.feed(query())  # the default: updatedAt, descending
    assert [r.conversation_id for r in newest_first.items] == [r.id for r in feed_records[:7]][::-1]
    await store.update_conversation(
        "t1", feed_records[0].id, {"title": "delta 2"}, format_us(BASE_US + 99_000_000)
    )
    by_update = await store.feed(query())
    assert by_update.items[0].conversation_id == feed_records[0].id
    by_creation = await store.feed(query(sort_by="createdAt"))
    assert by_creation.items[-1].conversation_id == feed_records[0].id


async def test_feed_ties_break_by_id(store) -> None:
    same_time = [make_record(title="same") for _ in range(5)]
    for record in same_time:
        await create(store, record)
    page = await store.feed(query(sort_by="title", descending=False))
    assert [r.conversation_id for r in page.items] == sorted(r.id for r in same_time)


@pytest.mark.parametrize(
    ("text", "titles"),
    [
        ("alpha", ["alpha"]),
        ("ALPHA", ["alpha"]),
        ("ar", ["charlie"]),
        ("%", ["100% sure"]),
        ("_", ["under_score"]),
        ("\\", []),
        ("zzz", []),
    ],
)
async def test_feed_filters_titles_literally(
    store, feed_records: list[ConversationRecord], text: str, titles: list[str]
) -> None:
    page = await store.feed(query(title_filter=text))
    assert sorted(r.title for r in page.items) == titles
    assert page.total_count == len(titles)


@pytest.mark.parametrize(
    ("text", "titles"),
    [
        ("über", ["Über uns"]),
        ("ÜBER", ["Über uns"]),
        ("uns", ["Über uns"]),  # an ASCII needle in a title that is not
        ("äö", ["ÄÖ 100%"]),
        ("äö 100%", ["ÄÖ 100%"]),  # % stays literal past ASCII too
        ("ä_", []),
        ("ωmega", ["Ωmega"]),
        ("é", []),
        # ILIKE lowers a character at a time: 'İ' is 'i', the Kelvin sign 'k', and a
        # capital sigma is a small sigma, never the final form. An ASCII needle finds
        # the first two, too.
        ("istanbul", ["İSTANBUL"]),
        ("İstanbul", ["İSTANBUL"]),
        ("i", ["plain", "İSTANBUL", "\u212aelvin"]),
        ("kelvin", ["\u212aelvin"]),
        ("k", ["\u212aelvin"]),
        ("σίσυφοσ", ["ΣΊΣΥΦΟΣ"]),
        ("σίσυφος", []),
    ],
)
async def test_feed_filters_ignore_case_beyond_ascii(store, text: str, titles: list[str]) -> None:
    """Both backends alike: PostgreSQL's ILIKE folds every letter, SQLite's LIKE only
    ASCII ones."""
    samples = ["Über uns", "ÄÖ 100%", "Ωmega", "plain", "İSTANBUL", "\u212aelvin", "ΣΊΣΥΦΟΣ"]
    for i, title in enumerate(samples):
        await create(store, make_record(title=title, at_us=BASE_US + i * 1_000_000))
    page = await store.feed(query(title_filter=text))
    assert sorted(r.title for r in page.items) == titles
    assert page.total_count == len(titles)


async def test_feed_scopes(store, feed_records: list[ConversationRecord]) -> None:
    tenant_wide = await store.feed(query(user_id=None))
    assert tenant_wide.total_count == 8
    t1_ids = {r.id for r in feed_records if r.tenant_id == "t1"}
    assert {r.conversation_id for r in tenant_wide.items} == t1_ids
    other_user = await store.feed(query(user_id="u2"))
    assert [r.title for r in other_user.items] == ["alpha of u2"]
    other_tenant = await store.feed(query(tenant_id="t2", user_id=None))
    assert [r.title for r in other_tenant.items] == ["alpha of t2"]
    nobody = await store.feed(query(tenant_id="t3", user_id=None))
    assert (nobody.items, nobody.total_count) == ([], 0)


async def deep_feed(store) -> None:
    """23 conversations of u1 in t1, among others', some created in the same
    microsecond (ties break by id), every tenth one touched later."""
    mine = []
    for i in range(23):
        record = make_record(title=f"title {i % 5}", at_us=BASE_US + (i // 3) * 1_000_000)
        await create(store, record)
        mine.append(record)
    await create(store, make_record(user="u2", at_us=BASE_US + 5))
    await create(store, make_record(tenant="t2", at_us=BASE_US + 5))
    for record in mine[::10]:
        await store.add_message("t1", make_message(record.id, "u1", at_us=BASE_US + 90_000_000))


@pytest.mark.parametrize("scope", ["user", "tenant"])
async def test_feed_every_page_by_number_is_its_slice_of_the_whole(store, scope: str) -> None:
    # Pages in the back half are read from the end of the index: each must still be
    # exactly its slice of the feed, in order, and past the end a page is empty.
    await deep_feed(store)
    user = "u1" if scope == "user" else None
    for sort_by in ("updatedAt", "createdAt", "title"):
        for descending in (True, False):
            order = dict(user_id=user, sort_by=sort_by, descending=descending)
            whole = [r.conversation_id for r in (await store.feed(query(**order))).items]
            assert len(whole) == (23 if scope == "user" else 24)
            for size in (1, 4, 7, 23, 30):
                pages = []
                for number in range(1, len(whole) // size + 3):
                    page = await store.feed(query(page_number=number, page_size=size, **order))
                    assert page.total_count == len(whole)
                    pages.append([r.conversation_id for r in page.items])
                assert [i for p in pages for i in p] == whole, (sort_by, descending, size)
                assert pages[-1] == []


@pytest.mark.parametrize("misread", [-30, -5, -1, 1, 5, 1000])
async def test_feed_page_holds_its_rows_whatever_total_the_count_read(
    store, monkeypatch: pytest.MonkeyPatch, misread: int
) -> None:
    # A write between the count and the page changes the total the page is planned
    # with; a page read from the end must count its rows again in its own snapshot.
    await deep_feed(store)
    order = dict(sort_by="createdAt", descending=False)
    whole = [r.conversation_id for r in (await store.feed(query(**order))).items]
    planned = FeedSql.page
    monkeypatch.setattr(FeedSql, "page", lambda sql, total: planned(sql, max(total + misread, 0)))
    for number in range(1, 8):
        page = await store.feed(query(page_number=number, page_size=4, **order))
        assert [r.conversation_id for r in page.items] == whole[(number - 1) * 4 : number * 4]


async def test_feed_unread_counts_follow_reads_appends_and_truncation(store) -> None:
    # Each unread count is worked out from whichever side of the read position is
    # shorter; at every step it must equal the messages after that position, counted
    # here from the messages themselves.
    record = make_record()
    await create(store, record)
    read_at = 0

    async def add(count: int) -> None:
        for _ in range(count):
            await store.add_message("t1", make_message(record.id, "u1"))

    async def messages() -> list[MessageRecord]:
        return await store.list_messages(record.id, cursor=None, limit=1000, descending=False)

    async def read() -> None:
        nonlocal read_at
        read_at = (await store.mark_read(record.id, "u1", format_us(BASE_US))).position

    async def truncate_from(position: int) -> None:
        message = next(m for m in await messages() if m.position == position)
        await store.truncate_messages("t1", record.id, message.id, format_us(BASE_US))

    steps = [
        (add, 10),  # never read: every message
        (read, None),  # up to date
        (add, 1),  # one after the read position
        (add, 15),  # most of them after it
        (truncate_from, 5),  # the read position now lies past the last message
        (add, 3),  # positions go on from the highest ever given, past a gap
        (read, None),
        (add, 2),
        (truncate_from, 2),
        (add, 4),
    ]
    for step, (action, argument) in enumerate(steps):
        await (action(argument) if argument is not None else action())
        present = await messages()
        expected = sum(1 for m in present if m.position > read_at)
        for user_id in ("u1", None):  # the user's feed, and the tenant's (the owner reads)
            item = (await store.feed(query(user_id=user_id))).items[0]
            assert (item.unread_count, item.message_count) == (expected, len(present)), step


async def test_the_larger_page_caches_never_serve_a_row_older_than_the_last_commit(
    sqlite_store,
) -> None:
    store = sqlite_store
    assert store._read().execute("PRAGMA cache_size").fetchone()[0] == -PAGE_CACHE_KIB
    assert store._writer_conn.execute("PRAGMA cache_size").fetchone()[0] == -PAGE_CACHE_KIB
    records = [make_record(title="v0") for _ in range(50)]
    for record in records:
        await create(store, record)
    for version in range(1, 4):
        # Every row's pages are in the reader's cache when the writer commits over them.
        for record in records:
            assert (await store.get_conversation("t1", record.id)).title == f"v{version - 1}"
        stamp = format_us(BASE_US + version)
        await asyncio.gather(
            *(
                store.update_conversation("t1", r.id, {"title": f"v{version}"}, stamp)
                for r in records
            )
        )
        for record in records:
            assert (await store.get_conversation("t1", record.id)).title == f"v{version}"


async def test_ping_says_the_disk_is_full_until_space_is_freed(
    sqlite_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads go on with a full disk, so only a write finds out; /readyz learns it from
    `ping`, and learns that space was freed without waiting for a write."""
    import airia_server.storage.sqlite as sqlite_module

    store = sqlite_store
    free = [4096]
    monkeypatch.setattr(sqlite_module, "_free_bytes", lambda folder: free[0])
    await create(store, make_record())
    await store.ping()
    pages = store._writer_conn.execute("PRAGMA page_count").fetchone()[0]
    store._writer_conn.execute(f"PRAGMA max_page_count = {pages}")  # as full as a disk
    with pytest.raises(sqlite3.OperationalError) as refused:
        for _ in range(1000):  # until the pages' free room is used up
            await create(store, make_record())
    assert outage_of(refused.value) is Outage.DISK_FULL
    with pytest.raises(DatabaseUnavailable, match="disk full") as full:
        await store.ping()
    assert full.value.outage is Outage.DISK_FULL
    free[0] = 1 << 30
    await store.ping()


# --- group commit -------------------------------------------------------------------


async def test_concurrent_creates_all_land_in_fewer_commits(sqlite_store) -> None:
    store = sqlite_store
    before_batches, before_ops = store.writer_stats.batches, store.writer_stats.ops
    records = [make_record(user=f"user{i % 7}") for i in range(200)]

    await asyncio.gather(*(create(store, r) for r in records))

    assert await row_count(store, "conversations") == 200
    page = await store.feed(query(user_id=None, page_size=1000))
    assert page.total_count == 200
    assert {r.conversation_id for r in page.items} == {r.id for r in records}
    stats = store.writer_stats
    ops, batches = stats.ops - before_ops, stats.batches - before_batches
    assert ops >= 200
    assert 1 <= batches < ops, "group commit never grouped"


async def test_one_failing_write_does_not_spoil_its_batch(store) -> None:
    existing = make_record()
    await create(store, existing)
    fresh = [make_record() for _ in range(20)]
    duplicate = make_record(id=existing.id)

    outcomes = await asyncio.gather(
        *(create(store, r) for r in [*fresh[:10], duplicate, *fresh[10:]]),
        return_exceptions=True,
    )

    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failures) == 1 and isinstance(failures[0], INTEGRITY_ERRORS)
    for record in fresh:
        assert await store.get_conversation("t1", record.id) == record
    assert await row_count(store, "conversations") == 21


async def test_closed_store_refuses_writes(tmp_path: Path) -> None:
    instance = open_sqlite(tmp_path)
    await instance.start()
    await instance.close()
    with pytest.raises(RuntimeError):
        await create(instance, make_record())


# --- API keys and secrets -----------------------------------------------------------


def make_key(tenant: str = "t1", name: str | None = "ci") -> ApiKeyRecord:
    return ApiKeyRecord(
        id=new_id(),
        tenant_id=tenant,
        name=name,
        prefix="ak_abcdefg",
        created_at=format_us(BASE_US),
        revoked_at=None,
    )


async def test_api_keys_are_found_by_hash_listed_and_revoked(store) -> None:
    key, other = make_key(), make_key(tenant="t2", name=None)
    await store.create_api_key(key, "hash-1")
    await store.create_api_key(other, "hash-2")

    assert await store.find_api_key("hash-1") == key
    assert await store.find_api_key("nope") is None
    assert [k.id for k in await store.list_api_keys("t1")] == [key.id]
    assert {k.id for k in await store.list_api_keys(None)} == {key.id, other.id}

    assert await store.revoke_api_key(key.id, format_us(BASE_US + 1)) is True
    assert await store.revoke_api_key(key.id, format_us(BASE_US + 2)) is False
    assert await store.revoke_api_key(new_id(), format_us(BASE_US)) is False
    found = await store.find_api_key("hash-1")
    assert found is not None and found.revoked_at == format_us(BASE_US + 1)


async def test_api_key_hashes_are_unique(store) -> None:
    await store.create_api_key(make_key(), "same-hash")
    with pytest.raises(INTEGRITY_ERRORS):
        await store.create_api_key(make_key(), "same-hash")


async def test_server_secret_is_kept_once(store) -> None:
    first = await store.server_secret("ws_ticket_key", b"first")
    second = await store.server_secret("ws_ticket_key", b"second")
    assert first == second == b"first"
    assert await store.server_secret("other", b"x") == b"x"


# --- blobs and the sweep ------------------------------------------------------------


async def test_the_sweep_leaves_held_content_alone_until_an_attachment_dates_it(store) -> None:
    # An upload touches its content with a hold, stores the bytes, then records the
    # attachment. A sweep in between, even with no grace at all, must not take it.
    record = make_record()
    await create(store, record)
    sha = "ab" * 32
    now_us = BASE_US + 10_000_000
    now = format_us(now_us)
    await store.touch_blob(record.tenant_id, sha, 10, now, format_us(now_us + 600_000_000))
    no_grace = format_us(now_us + 1_000_000)  # everything last used before "now + 1 s"
    forgotten: list[tuple[str, str]] = []

    def forget(tenant_id: str, sha256: str) -> None:
        forgotten.append((tenant_id, sha256))

    assert await store.sweep_blobs(no_grace, forget) == []
    # A second upload of the same content does not shorten the first one's hold.
    await store.touch_blob(record.tenant_id, sha, 10, now, format_us(now_us + 1))
    assert await store.sweep_blobs(no_grace, forget) == []

    attachment = AttachmentRecord(
        id=new_id(),
        tenant_id=record.tenant_id,
        conversation_id=record.id,
        sha256=sha,
        file_name="f.bin",
        content_type="application/octet-stream",
        size=10,
        source="upload",
        created_at=now,
    )
    assert await store.add_attachment(attachment) == attachment
    assert await store.sweep_blobs(no_grace, forget) == []  # referenced
    # Once nothing refers to it, the grace period counts from the attachment, not
    # from the end of the hold.
    assert await store.delete_conversation(record.tenant_id, record.id, now) is not None
    assert forgotten == []
    assert await store.sweep_blobs(no_grace, forget) == [(record.tenant_id, sha)]
    assert forgotten == [(record.tenant_id, sha)]


def _blob_rows_seen_from_outside(store, tenant_id: str, sha256: str) -> int:
    """The blob's rows, as another connection sees them (what is committed)."""
    if isinstance(store, PostgresStore):
        sql = f"SELECT count(*) FROM blobs WHERE tenant_id = '{tenant_id}' AND sha256 = '{sha256}'"
        return backends.fetch_sync(store.dsn, sql)[0]
    with sqlite_files.connect(store.path) as conn:
        return conn.execute(
            "SELECT count(*) FROM blobs WHERE tenant_id = ? AND sha256 = ?", (tenant_id, sha256)
        ).fetchone()[0]


async def test_the_sweep_deletes_a_blobs_bytes_before_its_rows_deletion_commits(store) -> None:
    """Deleted after the commit, the bytes could go from under an upload of the same
    content made in between: its touch made the row again, it found the bytes still
    there and kept them, then they went (an answered upload whose download was 500).
    Before it, that upload waits for the commit, finds no bytes, and stores them."""
    sha = "cd" * 32
    then = format_us(BASE_US)
    await store.touch_blob("t1", sha, 10, then, then)
    seen: list[int] = []

    def forget(tenant_id: str, sha256: str) -> None:
        seen.append(_blob_rows_seen_from_outside(store, tenant_id, sha256))

    assert await store.sweep_blobs(format_us(BASE_US + 1), forget) == [("t1", sha)]
    assert seen == [1]  # the row's deletion was not committed yet
    assert _blob_rows_seen_from_outside(store, "t1", sha) == 0


async def test_the_sweep_deletes_chunks_with_their_rows_in_one_statement() -> None:
    """PostgreSQL's database blob store: no `forget`; rows and chunks go together."""
    async with pg_instances(1) as (store,):
        then = format_us(BASE_US)
        for sha in ("ef" * 32, "01" * 32):
            await store.touch_blob("t1", sha, 1, then, then)
            await store.pool.execute(
                "INSERT INTO blob_chunks (tenant_id, sha256, seq, data) VALUES ('t1', $1, 0, 'x')",
                sha,
            )
        await store.touch_blob("t1", "01" * 32, 1, then, format_us(BASE_US + 10**9))  # held
        assert await store.sweep_blobs(format_us(BASE_US + 1), None) == [("t1", "ef" * 32)]
        chunks = await store.pool.fetch("SELECT sha256 FROM blob_chunks ORDER BY sha256")
        assert [row[0] for row in chunks] == ["01" * 32]


async def test_the_sweep_deletes_the_staging_files_uploads_cut_off_by_a_crash_left(
    store, tmp_path: Path
) -> None:
    """A server killed mid-upload leaves its staging file, which no blob references:
    the sweep deletes such files once nothing has written them for 10 minutes, and
    leaves a live upload's file (and anything that is not a staging file) alone."""
    import os
    import time

    from airia_server.domain.attachments import AttachmentService
    from airia_server.domain.tickets import UrlSigner
    from airia_server.storage.blobs import FilesystemBlobStore, StagedUpload

    blobs = FilesystemBlobStore(tmp_path / "blobs")
    service = AttachmentService(store, blobs, UrlSigner(b"k" * 32, 60), sweep_grace=60)
    cut_off, live = StagedUpload(blobs.staging_dir, 100), StagedUpload(blobs.staging_dir, 100)
    for staged in (cut_off, live):
        staged.write(b"partial")
        staged.finish()
    other = blobs.staging_dir / "keep-me"
    other.write_bytes(b"x")
    an_hour_ago = time.time() - 3600
    for path in (cut_off.path, other):
        os.utime(path, (an_hour_ago, an_hour_ago))

    await service.sweep()
    assert sorted(p.name for p in blobs.staging_dir.iterdir()) == sorted(
        [live.path.name, "keep-me"]
    )


# --- idempotency keys -----------------------------------------------------------------


async def test_an_abandoned_idempotency_claim_is_taken_over_and_its_late_finish_ignored(
    store,
) -> None:
    """A claim never finished (its server was killed mid-request) blocks retries with
    'still running' only until `abandoned_before` passes it; then a retry claims the
    key anew, and the first request, should it finish after all, cannot overwrite it."""
    t0, t1, t2 = (format_us(BASE_US + s * 1_000_000) for s in (0, 5, 700))
    long_ago = format_us(BASE_US - 86_400_000_000)
    claim = await store.claim_idempotency_key("t1", "k", "h", t0, long_ago, long_ago)
    assert claim.state == "new"
    retry = await store.claim_idempotency_key("t1", "k", "h", t1, long_ago, long_ago)
    assert retry.state == "pending"  # within the window: still running, as far as we know
    other = await store.claim_idempotency_key("t1", "k", "other", t1, long_ago, long_ago)
    assert other.state == "mismatch"
    later = await store.claim_idempotency_key("t1", "k", "h", t2, long_ago, t1)
    assert later.state == "new"  # claimed at t0 < t1 and never finished: abandoned
    await store.finish_idempotency_key("t1", "k", t0, 201, b'{"late": true}')
    await store.release_idempotency_key("t1", "k", t0)
    assert (await store.claim_idempotency_key("t1", "k", "h", t2, long_ago, t1)).state == "pending"
    await store.finish_idempotency_key("t1", "k", t2, 201, b'{"second": true}')
    replay = await store.claim_idempotency_key("t1", "k", "h", t2, long_ago, t2)
    assert (replay.state, replay.status, replay.response) == ("replay", 201, b'{"second": true}')
    # A finished key is never abandoned, only expired.
    assert (await store.claim_idempotency_key("t1", "k", "h", t2, t0, t2)).state == "replay"


async def test_a_delete_between_a_write_and_its_keys_finish_keeps_the_410(store) -> None:
    """The create commits, the conversation is deleted (its unfinished key becomes the
    410 of a thing done and deleted since), and then the create's finish arrives: it
    wrote its answer, title and all, over the 410, and a retry got it back."""
    record = make_record(tenant="t1")
    now = format_us(BASE_US)
    long_ago = format_us(BASE_US - 86_400_000_000)
    claim = await store.claim_idempotency_key("t1", "k", "h", now, long_ago, long_ago, record.id)
    assert (claim.state, claim.resource_id) == ("new", record.id)
    await create(store, record)
    assert await store.delete_conversation("t1", record.id, now) is not None
    await store.finish_idempotency_key("t1", "k", now, 201, b'{"title": "secret"}')
    replay = await store.claim_idempotency_key("t1", "k", "h", now, long_ago, long_ago, "r2")
    assert (replay.state, replay.status) == ("replay", 410)
    assert b"secret" not in (replay.response or b"")


async def test_an_idempotency_key_names_its_resource_from_first_claim_to_takeover(
    store,
) -> None:
    """The id of what the request creates is kept with the key: a retry while the claim
    is open learns it (and the claim's token, to finish it), and the request that takes
    an abandoned claim over works under it; another request's takeover does not."""
    t0, t1, t2 = (format_us(BASE_US + s * 1_000_000) for s in (0, 5, 700))
    long_ago = format_us(BASE_US - 86_400_000_000)
    first = await store.claim_idempotency_key("t1", "k", "h", t0, long_ago, long_ago, "r1")
    assert (first.state, first.resource_id, first.taken_over) == ("new", "r1", False)
    retry = await store.claim_idempotency_key("t1", "k", "h", t1, long_ago, long_ago, "r2")
    assert (retry.state, retry.resource_id, retry.claimed_at) == ("pending", "r1", t0)
    later = await store.claim_idempotency_key("t1", "k", "h", t2, long_ago, t1, "r3")
    assert (later.state, later.resource_id, later.taken_over) == ("new", "r1", True)
    # The takeover holds the claim now: its finish counts, the first request's not.
    await store.finish_idempotency_key("t1", "k", t0, 201, b"late")
    await store.finish_idempotency_key("t1", "k", t2, 201, b"taken over")
    replay = await store.claim_idempotency_key("t1", "k", "h", t2, long_ago, t2, "r4")
    assert (replay.state, replay.response) == ("replay", b"taken over")

    # An abandoned claim of another request is forgotten, not taken over.
    await store.claim_idempotency_key("t1", "j", "h", t0, long_ago, long_ago, "s1")
    other = await store.claim_idempotency_key("t1", "j", "other", t2, long_ago, t1, "s2")
    assert (other.state, other.resource_id, other.taken_over) == ("new", "s2", False)
