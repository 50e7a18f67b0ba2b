"""SQLite storage through the stdlib `sqlite3`: WAL, fsync on every commit, one writer.

Reads run on the caller's thread over their own connection: in WAL mode they
see the last commit and never wait for the writer. Writes go through
`GroupCommitWriter`, so a returned write is committed and fsynced.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from airia_server.storage.base import (
    GONE_RESPONSE,
    GONE_STATUS,
    ApiKeyRecord,
    ConversationRecord,
    EventRecord,
    FeedPage,
    FeedQuery,
    SchemaNotCurrent,
    conversation_snapshot,
)
from airia_server.storage.feed_sql import CONTAINS_IGNORING_CASE, FeedSql, contains_ignoring_case
from airia_server.storage.outages import DatabaseUnavailable, Outage, outage_of
from airia_server.storage.rows import (
    API_KEY_COLUMNS,
    CONVERSATION_COLUMNS,
    api_key_row,
    conversation_row,
    feed_items,
)
from airia_server.storage.sqlite_attachments import AttachmentsMixin
from airia_server.storage.sqlite_housekeeping import IdempotencyMixin, LifecycleMixin
from airia_server.storage.sqlite_messages import MessagesMixin, append_event, touch_participants
from airia_server.storage.sqlite_writer import GroupCommitWriter
from airia_server.threadnames import set_native_name

_json_encode = msgspec.json.encode
_decode_data = msgspec.json.Decoder(dict[str, Any]).decode

_UPDATABLE = {
    "title": "title",
    "data_source_files": "data_source_files",
    "is_bookmarked": "is_bookmarked",
    "last_execution_status": "last_execution_status",
    "last_execution_id": "last_execution_id",
}
# Everything that belongs to a conversation, deleted with it in one transaction.
_OWNED_TABLES = (
    "messages",
    "conversation_participants",
    "conversation_reads",
    "conversation_events",
    "external_identities",
    "attachments",
)
WAL_SIZE_LIMIT = 128 * 1024 * 1024
"""Bytes the WAL file is trimmed to when SQLite starts it over. Above what it
reaches between two restarts under a steady write load (about 60 MB here, see
`_Checkpointer`), so that it is reused in place rather than trimmed and grown
again each time."""

PAGE_CACHE_KIB = 16 * 1024
"""The page cache of each of the store's two connections (SQLite's default is 2 MiB).
The pages one GET walks through (about four) are scattered over a large database:
with 1,000,000 conversations, GETs of 1,000 of them ran at 0.90x of the same on
10,000 with the default, and 0.95x with this (`docs/performance.md`). A commit by
the writer does not empty the reader's cache: a one-row commit and a lookup right
after it made 2 read calls to the kernel with it, against 4 with the default (the
commit's own reads included). The writer's statements run on the event loop
(`GroupCommitWriter`): with the default, appends to 200 conversations read pages
back from the kernel at 8 µs of the loop's time per append (`make profile
ROW=append`, 19:14 UTC on 2026-11-27); with this, none."""

CHECKPOINT_THREAD = "sqlite-ckpt"
"""The name the OS shows for the checkpoint thread (`top -H`)."""

BUSY_TIMEOUT_S = 10.0
"""How long a statement waits for another connection's lock before it fails."""

_SORT_COLUMNS = {"createdAt": "created_at", "updatedAt": "updated_at", "title": "title"}


def _free_bytes(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.create_function(CONTAINS_IGNORING_CASE, 2, contains_ignoring_case, deterministic=True)
    return conn


def _use_wal(conn: sqlite3.Connection, timeout_s: float = BUSY_TIMEOUT_S) -> None:
    """Put the database in WAL mode, waiting up to `timeout_s` for other processes.

    On a new file, every process that starts at once asks for the switch, which needs
    the file to itself. SQLite answers "database is locked" at once there instead of
    waiting (its busy handler stands aside where waiting could deadlock): 86 of
    1,200 processes opening the store three at a time on new files failed, and a
    server exits on that. So the switch is tried again until the others are done.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if not str(exc).startswith("database is locked") or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every SQLite migration, in order."""
    folder = resources.files("airia_server.storage.migrations") / "sqlite"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def _statements(sql: str) -> list[str]:
    """The statements of a migration, whole: a trigger's body has semicolons of its own."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    statements, buffer = [], ""
    for piece in "\n".join(lines).split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n;"):
                statements.append(buffer.strip())
            buffer = ""
    return statements


class SqliteStore(MessagesMixin, AttachmentsMixin, IdempotencyMixin, LifecycleMixin):
    backend = "sqlite"

    def __init__(self, path: Path, *, write_batch_max: int = 256) -> None:
        self.path = path
        self._write_batch_max = write_batch_max
        self._reader: sqlite3.Connection | None = None
        self._writer: GroupCommitWriter | None = None
        self._writer_conn: sqlite3.Connection | None = None
        self._checkpointer: _Checkpointer | None = None
        self._full_with: int | None = None

    # lifecycle

    async def start(self, *, migrate: bool = True) -> None:
        if migrate:
            self._migrate()
        elif pending := self._pending():
            applied = [v for v, _, _ in migrations() if v not in pending]
            raise SchemaNotCurrent(max(applied, default=0), migrations()[-1][0])
        self._writer_conn = _connect(self.path)
        self._writer_conn.execute("PRAGMA synchronous = FULL")
        # Checkpoints copy the WAL back into the database and fsync it; done on the
        # commit path they stall every request of that batch, so a thread does them.
        self._writer_conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._writer_conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        # The sub-journal of a savepoint (see GroupCommitWriter._run_each) stays in
        # memory rather than spilling to a temporary file.
        self._writer_conn.execute("PRAGMA temp_store = MEMORY")
        self._writer_conn.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
        self._checkpointer = _Checkpointer(self.path)
        self._writer = GroupCommitWriter(
            self._writer_conn, self._write_batch_max, self._checkpointer.restart_job
        )
        self._checkpointer.start()
        self._reader = _connect(self.path)
        self._reader.execute("PRAGMA query_only = ON")
        self._reader.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        for conn in (self._writer_conn, self._reader):
            if conn is not None:
                conn.close()
        self._writer_conn = self._reader = None

    @property
    def writer_stats(self):
        return self._writer.stats if self._writer else None

    async def migrate(self) -> list[int]:
        """Apply pending migrations; safe when several processes start at once."""
        return self._migrate()

    async def pending_migrations(self) -> list[int]:
        return self._pending()

    def _pending(self) -> list[int]:
        known = [version for version, _, _ in migrations()]
        if not self.path.exists():  # not created here: a read creates nothing
            return known
        conn = _connect(self.path)
        try:
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            ).fetchone():
                return known
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        finally:
            conn.close()
        return [version for version in known if version not in done]

    def _journal_mode(self) -> str:
        conn = _connect(self.path)
        try:
            return conn.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            conn.close()

    def _migrate(self) -> list[int]:
        # Reads first: `BEGIN IMMEDIATE` below takes the write lock even when there is
        # nothing to apply, which a read-only file (or directory) refuses. A current
        # file may still need WAL mode: a copy made with `VACUUM INTO` has none.
        if not self._pending() and self._journal_mode() == "wal":
            return []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path)
        try:
            _use_wal(conn)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            applied: list[int] = []
            for version, name, sql in migrations():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    done = conn.execute(
                        "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
                    ).fetchone()
                    if not done:
                        for statement in _statements(sql):
                            conn.execute(statement)
                        conn.execute(
                            "INSERT INTO schema_migrations VALUES (?, ?, "
                            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                            (version, name),
                        )
                        applied.append(version)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            return applied
        finally:
            conn.close()

    async def ping(self) -> None:
        self._read().execute("SELECT 1").fetchone()
        # Full since a write was refused for it, until a write commits or space is
        # freed (a statvfs: no write needed to find out, which a server out of its
        # balancer's rotation would never get).
        if self._full_with is not None:
            if _free_bytes(self.path.parent) <= self._full_with:
                raise DatabaseUnavailable(
                    Outage.DISK_FULL, "disk full: writes are refused until space is freed"
                )
            self._full_with = None

    async def schema_version(self) -> int:
        row = self._read().execute("SELECT max(version) FROM schema_migrations").fetchone()
        return row[0] or 0

    def _read(self) -> sqlite3.Connection:
        if self._reader is None:
            raise RuntimeError("the store is not started")
        return self._reader

    def _write(self, op):
        if self._writer is None:
            raise RuntimeError("the store is not started")
        future = self._writer.submit(op)
        future.add_done_callback(self._note_disk)
        return future

    def _note_disk(self, future: asyncio.Future) -> None:
        """Remember a write refused for a full disk, and the space free then, for
        `ping`; a write that commits forgets it."""
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            self._full_with = None
        elif outage_of(exc) is Outage.DISK_FULL:
            self._full_with = _free_bytes(self.path.parent)

    async def server_secret(self, name: str, generate: bytes) -> bytes:
        # Read first: once there is one, starting needs no write (a read-only file).
        row = (
            self._read()
            .execute("SELECT value FROM server_secrets WHERE name = ?", (name,))
            .fetchone()
        )
        if row is not None:
            return row[0]

        def op(conn: sqlite3.Connection) -> bytes:
            conn.execute(
                "INSERT OR IGNORE INTO server_secrets (name, value) VALUES (?, ?)", (name, generate)
            )
            return conn.execute(
                "SELECT value FROM server_secrets WHERE name = ?", (name,)
            ).fetchone()[0]

        return await self._write(op)

    # API keys

    async def create_api_key(self, record: ApiKeyRecord, key_hash: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO api_keys (id, tenant_id, name, key_hash, prefix, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.tenant_id,
                    record.name,
                    key_hash,
                    record.prefix,
                    record.created_at,
                ),
            )

        await self._write(op)

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        row = (
            self._read()
            .execute(
                f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = ?",
                (key_hash,),
            )
            .fetchone()
        )
        return api_key_row(row) if row else None

    async def api_key_active(self, key_id: str) -> bool:
        row = (
            self._read()
            .execute("SELECT 1 FROM api_keys WHERE id = ? AND revoked_at IS NULL", (key_id,))
            .fetchone()
        )
        return row is not None

    async def list_api_keys(self, tenant_id: str | None) -> list[ApiKeyRecord]:
        sql = f"SELECT {API_KEY_COLUMNS} FROM api_keys"
        params: tuple[Any, ...] = ()
        if tenant_id is not None:
            sql += " WHERE tenant_id = ?"
            params = (tenant_id,)
        rows = self._read().execute(sql + " ORDER BY created_at, id", params).fetchall()
        return [api_key_row(row) for row in rows]

    async def revoke_api_key(self, key_id: str, revoked_at: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (revoked_at, key_id),
            )
            return cur.rowcount == 1

        return await self._write(op)

    # conversations

    async def create_conversation(self, record: ConversationRecord, owner_id: str) -> None:
        params = (
            record.id,
            record.tenant_id,
            record.user_id,
            record.title,
            record.deployment_id,
            _json_encode(record.data_source_files).decode(),
            int(record.is_bookmarked),
            record.last_execution_status,
            record.last_execution_id,
            record.message_count,
            record.last_sequence,
            record.created_at,
            record.updated_at,
        )

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO conversations ({CONVERSATION_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                params,
            )
            conn.execute(
                "INSERT INTO conversation_participants (conversation_id, user_id, id, tenant_id, "
                "role, shared_at, shared_by_user_id, conv_updated_at, conv_created_at) "
                "VALUES (?, ?, ?, ?, 'Owner', ?, ?, ?, ?)",
                (
                    record.id,
                    record.user_id,
                    owner_id,
                    record.tenant_id,
                    record.created_at,
                    record.user_id,
                    record.updated_at,
                    record.created_at,
                ),
            )

        await self._write(op)

    async def get_conversation(
        self, tenant_id: str, conversation_id: str
    ) -> ConversationRecord | None:
        row = (
            self._read()
            .execute(
                f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ? AND tenant_id = ?",
                (conversation_id, tenant_id),
            )
            .fetchone()
        )
        return conversation_row(row) if row else None

    async def get_conversation_for(
        self, tenant_id: str, conversation_id: str, user_id: str
    ) -> tuple[ConversationRecord, str | None] | None:
        row = (
            self._read()
            .execute(
                f"SELECT {CONVERSATION_COLUMNS}, (SELECT role FROM conversation_participants "
                "WHERE conversation_id = conversations.id AND user_id = ?) "
                "FROM conversations WHERE id = ? AND tenant_id = ?",
                (user_id, conversation_id, tenant_id),
            )
            .fetchone()
        )
        return (conversation_row(row), row[13]) if row else None

    async def update_conversation(
        self, tenant_id: str, conversation_id: str, changes: dict[str, Any], updated_at: str
    ) -> tuple[ConversationRecord, EventRecord] | None:
        assignments = ["updated_at = ?", "last_sequence = last_sequence + 1"]
        params: list[Any] = [updated_at]
        for field, value in changes.items():
            column = _UPDATABLE[field]
            if field == "data_source_files":
                value = _json_encode(value).decode()
            elif field == "is_bookmarked":
                value = int(value)
            assignments.append(f"{column} = ?")
            params.append(value)
        sql = (
            f"UPDATE conversations SET {', '.join(assignments)} "
            f"WHERE id = ? AND tenant_id = ? RETURNING {CONVERSATION_COLUMNS}"
        )
        params += [conversation_id, tenant_id]

        def op(conn: sqlite3.Connection) -> tuple[ConversationRecord, EventRecord] | None:
            row = conn.execute(sql, params).fetchone()
            if row is None:
                return None
            record = conversation_row(row)
            touch_participants(conn, record.id, updated_at)
            event = EventRecord(
                conversation_id=record.id,
                sequence=record.last_sequence,
                type="conversation.updated",
                created_at=updated_at,
                data=conversation_snapshot(record),
            )
            append_event(conn, event)
            return record, event

        return await self._write(op)

    async def delete_conversation(
        self, tenant_id: str, conversation_id: str, deleted_at: str
    ) -> tuple[EventRecord, int] | None:
        def op(conn: sqlite3.Connection) -> tuple[EventRecord, int] | None:
            row = conn.execute(
                "DELETE FROM conversations WHERE id = ? AND tenant_id = ? RETURNING last_sequence",
                (conversation_id, tenant_id),
            ).fetchone()
            if row is None:
                return None
            # Unfinished keys that named the conversation, or one of its messages or
            # attachments: their requests were done, and must not be done again.
            conn.execute(
                "UPDATE idempotency_keys SET status = :status, response = :response "
                "WHERE tenant_id = :tenant AND status IS NULL AND (resource_id = :id "
                "OR EXISTS (SELECT 1 FROM messages m WHERE m.id = idempotency_keys.resource_id "
                "AND m.conversation_id = :id) OR EXISTS (SELECT 1 FROM attachments a "
                "WHERE a.id = idempotency_keys.resource_id AND a.conversation_id = :id))",
                {
                    "status": GONE_STATUS,
                    "response": GONE_RESPONSE,
                    "tenant": tenant_id,
                    "id": conversation_id,
                },
            )
            # Finished keys of its create and uploads: their kept answers hold what the
            # delete takes away (a title, the files named, a file's name). A retry is
            # told the work was done and deleted since.
            conn.execute(
                "UPDATE idempotency_keys SET status = ?, response = ? WHERE resource_id IN "
                "(SELECT ? UNION ALL SELECT id FROM attachments WHERE conversation_id = ?) "
                "AND tenant_id = ?",
                (GONE_STATUS, GONE_RESPONSE, conversation_id, conversation_id, tenant_id),
            )
            removed = 0
            for table in _OWNED_TABLES:
                removed = conn.execute(
                    f"DELETE FROM {table} WHERE conversation_id = ?", (conversation_id,)
                ).rowcount  # the last table is attachments
            event = EventRecord(
                conversation_id=conversation_id,
                sequence=row[0] + 1,
                type="conversation.deleted",
                created_at=deleted_at,
                data={"conversationId": conversation_id},
            )
            return event, removed

        return await self._write(op)

    async def feed(self, query: FeedQuery) -> FeedPage:
        sql = FeedSql(query, lambda n: f"?{n}", postgres=False)
        conn = self._read()
        total = conn.execute(sql.count, sql.count_params).fetchone()[0]
        rows = conn.execute(*sql.page(total)).fetchall()
        return FeedPage(items=feed_items(rows), total_count=total)

    async def events_after(self, conversation_id: str, after: int, limit: int) -> list[EventRecord]:
        rows = (
            self._read()
            .execute(
                "SELECT sequence, type, data, created_at FROM conversation_events "
                "WHERE conversation_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
                (conversation_id, after, limit),
            )
            .fetchall()
        )
        return [
            EventRecord(
                conversation_id=conversation_id,
                sequence=seq,
                type=kind,
                data=_decode_data(data),
                created_at=created,
            )
            for seq, kind, data, created in rows
        ]


class _Checkpointer:
    """Runs passive WAL checkpoints off the commit path, twice a second.

    Under a steady stream of commits a passive checkpoint never catches the writer,
    so SQLite never gets to start the WAL over and it grows for as long as the load
    lasts (a gigabyte in a minute of message appends). Once it holds more than
    `restart_frames`, the writer is asked (`restart_job`) to run a RESTART
    checkpoint between two batches, where no other writer can be in its way; the
    next commit then starts the WAL from the beginning, and `journal_size_limit`
    (set on the writer) trims the file when it grew past `WAL_SIZE_LIMIT`.

    The WAL is kept small: with 16,384 frames (64 MiB) before a restart and a
    64 MiB limit, the file passed the limit every time, and the first commit after
    each restart truncated it (3 ms, on the commit path) and then grew it block by
    block again. Restarting past 4,096 frames under the larger limit, message
    appends had a p99 of 12-14 ms instead of 14-20 ms in four A/B pairs, and 3%
    more throughput. Under a steady load the restart then comes at every check,
    the WAL peaking near 60 MB here. Before asking, it runs up to
    `_catch_up_passes` more passive checkpoints, until one finds fewer than
    `_catch_up_frames` new frames: the writer waits for the restart's copy and
    fsync, and those then cover about one batch of writes.
    """

    _catch_up_passes = 4
    _catch_up_frames = 256

    def __init__(self, path: Path, interval: float = 0.5, restart_frames: int = 4096) -> None:
        self._path = path
        self._interval = interval
        self._restart_frames = restart_frames
        self._restart_wanted = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def restart_job(self) -> Callable[[sqlite3.Connection], object] | None:
        """What the writer should run between batches, if anything."""
        if not self._restart_wanted:
            return None
        self._restart_wanted = False
        return _restart_wal

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        set_native_name(CHECKPOINT_THREAD)
        conn = _connect(self._path)
        try:
            while not self._stopping.wait(self._interval):
                frames = _passive(conn)
                if frames > self._restart_frames:
                    # Catch up first: each pass copies what was written during the one
                    # before (a restart right after one long pass took 10-16 ms).
                    for _ in range(self._catch_up_passes):
                        before, frames = frames, _passive(conn)
                        if frames - before < self._catch_up_frames:
                            break
                    self._restart_wanted = True
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()


def _passive(conn: sqlite3.Connection) -> int:
    """One passive checkpoint; the number of frames in the WAL."""
    return conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]


def _restart_wal(conn: sqlite3.Connection) -> object:
    return conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
