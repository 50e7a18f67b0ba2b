"""PostgreSQL storage through asyncpg: the deployment for many stateless instances.

Every write is one transaction on a pooled connection, and `synchronous_commit`
stays on, so a returned write is durable. The hottest writes are single
statements (CTEs), one round trip each. Creates, message appends and reads of a
conversation by id are batched besides (`storage/pg_batch.py`): concurrent ones
share one statement, one round trip and, for writes, one commit.

Per-conversation event sequences stay gap-free under concurrent writers on
any number of instances because every state change starts with
`UPDATE conversations SET last_sequence = last_sequence + 1 ... RETURNING`:
that row lock orders the writers of one conversation, and the event row is
written in the same transaction, so a sequence is either used and stored or
rolled back with the change.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

import asyncpg
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
    WriterStats,
    conversation_snapshot,
)
from airia_server.storage.feed_sql import FeedSql
from airia_server.storage.outages import DatabaseUnavailable, Outage
from airia_server.storage.pg_batch import BatchedRows
from airia_server.storage.pg_pool import FairPool
from airia_server.storage.postgres_attachments import AttachmentsMixin
from airia_server.storage.postgres_housekeeping import IdempotencyMixin, LifecycleMixin
from airia_server.storage.postgres_messages import (
    ADD_MESSAGE,
    ADD_MESSAGES,
    MessagesMixin,
    append,
    as_text,
    touch_participants,
)
from airia_server.storage.rows import (
    API_KEY_COLUMNS,
    CONVERSATION_COLUMNS,
    api_key_row,
    conversation_row,
    feed_items,
)

_encode = msgspec.json.encode
_decode_data = msgspec.json.Decoder(dict[str, Any]).decode
_MIGRATION_LOCK = 7_301_734_118  # pg_advisory_lock key: one migrator at a time

_UPDATABLE = {
    "title",
    "data_source_files",
    "is_bookmarked",
    "last_execution_status",
    "last_execution_id",
}
_SORT_COLUMNS = {"createdAt": "created_at", "updatedAt": "updated_at", "title": "title"}
_OWNED_TABLES = (
    "messages",
    "conversation_participants",
    "conversation_reads",
    "conversation_events",
    "external_identities",
    "attachments",
)
# The conversation, then (only if it was there) everything that belongs to it; the
# last sequence and how many attachments went. Run after `_LOCK_CONVERSATION`, in its
# transaction (see `delete_conversation`).
_DELETE_CONVERSATION = (
    "WITH gone AS (DELETE FROM conversations WHERE id = $1 AND tenant_id = $2 "
    "RETURNING id, last_sequence), "
    # Unfinished keys that named the conversation, or one of its messages or
    # attachments: their requests were done, and must not be done again. (Every part
    # of the statement reads the rows as they were before it.)
    "k AS (UPDATE idempotency_keys i SET status = $3, response = $4 "
    "WHERE i.tenant_id = $2 AND i.status IS NULL AND EXISTS (SELECT 1 FROM gone) "
    "AND (i.resource_id = $1 OR EXISTS (SELECT 1 FROM messages m WHERE m.id = i.resource_id "
    "AND m.conversation_id = $1) OR EXISTS (SELECT 1 FROM attachments a "
    "WHERE a.id = i.resource_id AND a.conversation_id = $1)) RETURNING 1), "
    # Finished keys of its create and uploads: their kept answers hold what the delete
    # takes away (a title, the files named, a file's name). A retry is told the work
    # was done and deleted since.
    "f AS (UPDATE idempotency_keys i SET status = $3, response = $4 "
    "WHERE i.resource_id IN (SELECT id FROM gone UNION ALL SELECT a.id FROM attachments a "
    "WHERE a.conversation_id IN (SELECT id FROM gone)) AND i.tenant_id = $2 "
    "AND i.status IS NOT NULL RETURNING 1), "
    + ", ".join(
        f"d_{table} AS (DELETE FROM {table} WHERE conversation_id IN (SELECT id FROM gone) "
        "RETURNING 1)"
        for table in _OWNED_TABLES
    )
    + " SELECT last_sequence, (SELECT count(*) FROM d_attachments) FROM gone"
)


# The conversation and its Owner together, one statement. Parameters: the
# conversation's columns, then the Owner's participant id.
_CREATE_CONVERSATION = (
    f"WITH c AS (INSERT INTO conversations ({CONVERSATION_COLUMNS}) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id) "
    "INSERT INTO conversation_participants (conversation_id, user_id, id, tenant_id, "
    "role, shared_at, shared_by_user_id, conv_updated_at, conv_created_at) "
    "SELECT c.id, $3, $14, $2, 'Owner', $12, $3, $13, $12 FROM c"
)
# The same for a batch of creates (`BatchedRows`), each parameter an array with one
# element per conversation: concurrent creates share a round trip, a commit, and the
# feed counters' triggers, which run once per statement (migration 0013).
_CREATE_CONVERSATIONS = (
    "WITH k AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
    "$5::text[], $6::text[], $7::boolean[], $8::text[], $9::text[], $10::bigint[], "
    "$11::bigint[], $12::text[], $13::text[], $14::text[]) WITH ORDINALITY AS k(id, "
    "tenant_id, user_id, title, deployment_id, data_source_files, is_bookmarked, "
    "last_execution_status, last_execution_id, message_count, last_sequence, created_at, "
    "updated_at, owner_id, i)), "
    f"c AS (INSERT INTO conversations ({CONVERSATION_COLUMNS}) "
    f"SELECT {CONVERSATION_COLUMNS} FROM k ORDER BY i RETURNING id), "
    "o AS (INSERT INTO conversation_participants (conversation_id, user_id, id, tenant_id, "
    "role, shared_at, shared_by_user_id, conv_updated_at, conv_created_at) "
    "SELECT k.id, k.user_id, k.owner_id, k.tenant_id, 'Owner', k.created_at, k.user_id, "
    "k.updated_at, k.created_at FROM k JOIN c ON c.id = k.id ORDER BY k.i) "
    "SELECT k.i FROM k JOIN c ON c.id = k.id"
)

# A conversation by id within a tenant, and with it the role of a user in it: reads
# are batched (`BatchedRows`), concurrent ones answered by one query.
_GET_CONVERSATION = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND tenant_id = $2"
)
_GET_CONVERSATION_FOR = (
    f"SELECT {CONVERSATION_COLUMNS}, (SELECT role FROM conversation_participants p "
    "WHERE p.conversation_id = conversations.id AND p.user_id = $3) "
    "FROM conversations WHERE id = $1 AND tenant_id = $2"
)
_KEYED_COLUMNS = ", ".join("c." + column.strip() for column in CONVERSATION_COLUMNS.split(","))
_GET_CONVERSATIONS = (
    f"SELECT k.i, {_KEYED_COLUMNS} "
    "FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(id, tenant_id, i) "
    "JOIN conversations c ON c.id = k.id AND c.tenant_id = k.tenant_id"
)
_GET_CONVERSATIONS_FOR = (
    f"SELECT k.i, {_KEYED_COLUMNS}, (SELECT p.role FROM conversation_participants p "
    "WHERE p.conversation_id = c.id AND p.user_id = k.user_id) "
    "FROM unnest($1::text[], $2::text[], $3::text[]) "
    "WITH ORDINALITY AS k(id, tenant_id, user_id, i) "
    "JOIN conversations c ON c.id = k.id AND c.tenant_id = k.tenant_id"
)


READ_LANES = 2
"""Batches of each read by id in flight at once. With one, every read that came
while a batch was out waited for its round trip, and so did the server: under 32
clients' GETs it sat idle a fifth of the time."""

BATCHERS = 2 + 2 * READ_LANES
"""Connections each instance opens for its batched statements over arrays (one
for creates, one for appends, `READ_LANES` for each of the two reads by id),
besides its pool."""


def migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("airia_server.storage.migrations") / "postgres"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text()))
    return sorted(found)


async def _pending(conn: asyncpg.Connection) -> list[int]:
    """The migrations `conn`'s database lacks, found by reads alone."""
    known = [version for version, _, _ in migrations()]
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return known
    done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [version for version in known if version not in done]


def _has_statements(sql: str) -> bool:
    return any(line.strip() and not line.lstrip().startswith("--") for line in sql.splitlines())


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What the pool runs on a connection it takes back, after asyncpg itself has
    rolled back any transaction left open: nothing.

    asyncpg's default resets the session with one more statement (closing cursors,
    UNLISTEN, RESET ALL, releasing advisory locks): a second round trip for every
    query made through the pool, about a quarter of the server's time on a GET. The
    store leaves nothing of the kind on a pooled connection: settings are fixed at
    connect, no SET or LISTEN runs, cursors live inside transactions, and the
    migration lock is taken on a connection of its own (`migrate`)."""


async def _connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """A new connection for a pool; failing to make one means the database is away.

    Whatever PostgreSQL or the network answers to a connection attempt (refused, a
    database not accepting connections, starting up or gone, a timeout) says nothing
    of the request that needed the connection, so it becomes `DatabaseUnavailable`
    (503) whatever its SQLSTATE."""
    try:
        return await asyncpg.connect(*args, **kwargs)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnavailable(Outage.AWAY, f"unreachable: {type(exc).__name__}") from exc


class PostgresStore(MessagesMixin, AttachmentsMixin, IdempotencyMixin, LifecycleMixin):
    backend = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        min_pool: int = 2,
        max_pool: int = 10,
        connect_timeout: float = 5.0,
        statement_timeout: float | None = None,
    ) -> None:
        self.dsn = dsn
        # asyncpg's default is 60 s: a host that accepts TCP and never answers held
        # every request that needed a new connection that long.
        self._connect_timeout = connect_timeout
        # PostgreSQL's own `statement_timeout`, not the client's: a statement it gives
        # up is rolled back before the error comes, so a 503 means "not done", and a
        # retry with the same Idempotency-Key does it once. (A client-side timeout
        # left the statement running: waiting on a lock, it committed after the 503,
        # and the retry wrote a second copy.) None: no limit (the commands, and
        # migrations' own connection).
        self._timeouts = (
            {"statement_timeout": str(max(1, round(statement_timeout * 1000)))}
            if statement_timeout is not None
            else {}
        )
        self._min_pool = min_pool
        self._max_pool = max_pool
        self._pool: FairPool | None = None
        self._batch_pool: FairPool | None = None
        self._write_stats = WriterStats()
        self._create: BatchedRows | None = None
        self._get: BatchedRows | None = None
        self._get_for: BatchedRows | None = None
        self._add_messages_batch: BatchedRows | None = None

    async def start(self, *, migrate: bool = True) -> None:
        if migrate:
            await self.migrate()
        elif pending := await self.pending_migrations():
            applied = [v for v, _, _ in migrations() if v not in pending]
            raise SchemaNotCurrent(max(applied, default=0), migrations()[-1][0])
        pool = await asyncpg.create_pool(
            self.dsn,
            min_size=self._min_pool,
            max_size=self._max_pool,
            server_settings={
                "application_name": "airia-server",
                **self._timeouts,
            },
            reset=_keep_session,
            connect=_connect,
            timeout=self._connect_timeout,
        )
        self._pool = FairPool(pool, self._max_pool)
        # The statements over arrays get connections of their own, one per batch that
        # can be in flight (`BATCHERS`), which plan every statement for the
        # arrays it is given. A plan cached on a connection is otherwise reused as
        # long as the table's statistics stand: one made while `conversations` was
        # small joins a batch's keys by scanning the whole table, and goes on doing
        # so after it has grown, until autovacuum's next ANALYZE. Here that took an
        # append batch from 1 ms to 48 ms after 85,000 creates. Planning a batch's
        # statement costs 0.1-0.4 ms of PostgreSQL's time, once per batch.
        batch_pool = await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=BATCHERS,
            server_settings={
                "application_name": "airia-server-batch",
                "plan_cache_mode": "force_custom_plan",
                **self._timeouts,
            },
            reset=_keep_session,
            connect=_connect,
            timeout=self._connect_timeout,
        )
        self._batch_pool = FairPool(batch_pool, BATCHERS)
        batched, single = self._batch_pool, self._pool
        self._create = BatchedRows(
            batched,
            _CREATE_CONVERSATIONS,
            single=_CREATE_CONVERSATION,
            single_pool=single,
            stats=self._write_stats,
        )
        self._get = BatchedRows(
            batched,
            _GET_CONVERSATIONS,
            single=_GET_CONVERSATION,
            single_pool=single,
            lanes=READ_LANES,
        )
        self._get_for = BatchedRows(
            batched,
            _GET_CONVERSATIONS_FOR,
            single=_GET_CONVERSATION_FOR,
            single_pool=single,
            lanes=READ_LANES,
        )
        self._add_messages_batch = BatchedRows(
            batched, ADD_MESSAGES, single=ADD_MESSAGE, single_pool=single, stats=self._write_stats
        )

    async def close(self) -> None:
        batchers = (self._create, self._add_messages_batch, self._get, self._get_for)
        for batcher in batchers:
            if batcher is not None:
                await batcher.close()
        self._create = self._add_messages_batch = self._get = self._get_for = None
        for pool in (self._batch_pool, self._pool):
            if pool is not None:
                await pool.close()
        self._pool = self._batch_pool = None

    @property
    def pool(self) -> FairPool:
        if self._pool is None:
            raise RuntimeError("the store is not started")
        return self._pool

    @property
    def _add_messages(self) -> BatchedRows:
        if self._add_messages_batch is None:
            raise RuntimeError("the store is not started")
        return self._add_messages_batch

    @property
    def writer_stats(self) -> WriterStats:
        """The batched writes' (creates and appends) batches, writes and time."""
        return self._write_stats

    async def pending_migrations(self) -> list[int]:
        conn = await asyncpg.connect(self.dsn, timeout=self._connect_timeout)
        try:
            return await _pending(conn)
        finally:
            await conn.close()

    async def migrate(self) -> list[int]:
        """Apply pending migrations, under an advisory lock so instances take turns.

        Reads first, without the lock: with nothing to apply it writes nothing, so an
        instance comes up on a standby (or a database set read-only) while reads are
        served there. Every write below is refused on one."""
        conn = await asyncpg.connect(self.dsn, timeout=self._connect_timeout)
        try:
            if not await _pending(conn):
                return []
            await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL, applied_at TEXT NOT NULL)"
                )
                done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                applied = []
                for version, name, sql in migrations():
                    if version in done:
                        continue
                    async with conn.transaction():
                        if _has_statements(sql):  # a version can have nothing to do here
                            await conn.execute(sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations VALUES ($1, $2, to_char(now() AT TIME "
                            "ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))",
                            version,
                            name,
                        )
                    applied.append(version)
                return applied
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        finally:
            await conn.close()

    async def schema_version(self) -> int:
        return await self.pool.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")

    async def ping(self) -> None:
        # One round trip either way; a standby (or default_transaction_read_only)
        # answers reads but refuses every write.
        if await self.pool.fetchval("SHOW transaction_read_only") == "on":
            raise DatabaseUnavailable(
                Outage.READ_ONLY, "read-only: writes are refused (a standby, or failing over)"
            )

    async def server_secret(self, name: str, generate: bytes) -> bytes:
        # Read first: once there is one, starting needs no write (a standby).
        stored = await self.pool.fetchval("SELECT value FROM server_secrets WHERE name = $1", name)
        if stored is not None:
            return stored
        await self.pool.execute(
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            name,
            generate,
        )
        return await self.pool.fetchval("SELECT value FROM server_secrets WHERE name = $1", name)

    # API keys

    async def create_api_key(self, record: ApiKeyRecord, key_hash: str) -> None:
        await self.pool.execute(
            "INSERT INTO api_keys (id, tenant_id, name, key_hash, prefix, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            record.id,
            record.tenant_id,
            record.name,
            key_hash,
            record.prefix,
            record.created_at,
        )

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        row = await self.pool.fetchrow(
            f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1", key_hash
        )
        return api_key_row(row) if row else None

    async def api_key_active(self, key_id: str) -> bool:
        row = await self.pool.fetchrow(
            "SELECT 1 FROM api_keys WHERE id = $1 AND revoked_at IS NULL", key_id
        )
        return row is not None

    async def list_api_keys(self, tenant_id: str | None) -> list[ApiKeyRecord]:
        if tenant_id is None:
            rows = await self.pool.fetch(
                f"SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
            )
        else:
            rows = await self.pool.fetch(
                f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 "
                "ORDER BY created_at, id",
                tenant_id,
            )
        return [api_key_row(row) for row in rows]

    async def revoke_api_key(self, key_id: str, revoked_at: str) -> bool:
        status = await self.pool.execute(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            revoked_at,
            key_id,
        )
        return status.endswith(" 1")

    # conversations

    async def create_conversation(self, record: ConversationRecord, owner_id: str) -> None:
        if self._create is None:
            raise RuntimeError("the store is not started")
        await self._create.get(
            record.id,
            record.tenant_id,
            record.user_id,
            record.title,
            record.deployment_id,
            as_text(record.data_source_files),
            record.is_bookmarked,
            record.last_execution_status,
            record.last_execution_id,
            record.message_count,
            record.last_sequence,
            record.created_at,
            record.updated_at,
            owner_id,
        )

    async def get_conversation(
        self, tenant_id: str, conversation_id: str
    ) -> ConversationRecord | None:
        if self._get is None:
            raise RuntimeError("the store is not started")
        row = await self._get.get(conversation_id, tenant_id)
        return conversation_row(row) if row else None

    async def get_conversation_for(
        self, tenant_id: str, conversation_id: str, user_id: str
    ) -> tuple[ConversationRecord, str | None] | None:
        if self._get_for is None:
            raise RuntimeError("the store is not started")
        row = await self._get_for.get(conversation_id, tenant_id, user_id)
        return (conversation_row(row), row[13]) if row else None

    async def update_conversation(
        self, tenant_id: str, conversation_id: str, changes: dict[str, Any], updated_at: str
    ) -> tuple[ConversationRecord, EventRecord] | None:
        assignments = ["updated_at = $1", "last_sequence = last_sequence + 1"]
        params: list[Any] = [updated_at]
        for field, value in changes.items():
            if field not in _UPDATABLE:
                raise ValueError(field)
            if field == "data_source_files":
                value = as_text(value)
            params.append(value)
            assignments.append(f"{field} = ${len(params)}")
        params += [conversation_id, tenant_id]
        sql = (
            f"UPDATE conversations SET {', '.join(assignments)} WHERE id = ${len(params) - 1} "
            f"AND tenant_id = ${len(params)} RETURNING {CONVERSATION_COLUMNS}"
        )
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(sql, *params)
            if row is None:
                return None
            record = conversation_row(row)
            await touch_participants(conn, record.id, updated_at)
            event = EventRecord(
                conversation_id=record.id,
                sequence=record.last_sequence,
                type="conversation.updated",
                created_at=updated_at,
                data=conversation_snapshot(record),
            )
            await append(conn, event)
        return record, event

    async def delete_conversation(
        self, tenant_id: str, conversation_id: str, deleted_at: str
    ) -> tuple[EventRecord, int] | None:
        async with self.pool.acquire() as conn, conn.transaction():
            # Every write that adds rows of a conversation holds its row while it does
            # (appends and shares update it; identities, attachments and read positions
            # lock it FOR KEY SHARE). Taking the row first waits for those writes; the
            # next statement then reads what they committed. Alone, the delete read
            # each table as it was when the statement began, and left behind what the
            # writes it waited for had added (messages, events, an identity whose
            # thread then could never be mapped again).
            locked = await conn.fetchval(
                "SELECT 1 FROM conversations WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
                conversation_id,
                tenant_id,
            )
            row = (
                await conn.fetchrow(
                    _DELETE_CONVERSATION, conversation_id, tenant_id, GONE_STATUS, GONE_RESPONSE
                )
                if locked
                else None
            )
        if row is None:
            return None
        event = EventRecord(
            conversation_id=conversation_id,
            sequence=row[0] + 1,
            type="conversation.deleted",
            created_at=deleted_at,
            data={"conversationId": conversation_id},
        )
        return event, row[1]

    async def feed(self, query: FeedQuery) -> FeedPage:
        sql = FeedSql(query, lambda n: f"${n}", postgres=True)
        async with self.pool.acquire() as conn:
            total = await conn.fetchval(sql.count, *sql.count_params)
            statement, params = sql.page(total)
            rows = await conn.fetch(statement, *params)
        return FeedPage(items=feed_items(rows), total_count=total)

    async def events_after(self, conversation_id: str, after: int, limit: int) -> list[EventRecord]:
        rows = await self.pool.fetch(
            "SELECT sequence, type, data, created_at FROM conversation_events "
            "WHERE conversation_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
            conversation_id,
            after,
            limit,
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
