"""PostgreSQL: external identities and attachment records (mixed into `PostgresStore`)."""

from __future__ import annotations

import asyncpg

from airia_server.storage.base import (
    AttachmentRecord,
    DuplicateIdentity,
    IdempotencyClaim,
    IdentityRecord,
)
from airia_server.storage.rows import (
    ATTACHMENT_COLUMNS,
    IDENTITY_COLUMNS,
    attachment_row,
    identity_row,
)

_FIND_IDENTITY = (
    f"SELECT {IDENTITY_COLUMNS} FROM external_identities WHERE tenant_id = $1 AND "
    "external_system = $2 AND external_channel_id = $3 AND external_thread_id = $4"
)


class AttachmentsMixin:
    # `pool` comes from PostgresStore.

    async def list_identities(self, tenant_id: str, conversation_id: str) -> list[IdentityRecord]:
        rows = await self.pool.fetch(
            f"SELECT {IDENTITY_COLUMNS} FROM external_identities "
            "WHERE conversation_id = $1 AND tenant_id = $2 ORDER BY created_at, id",
            conversation_id,
            tenant_id,
        )
        return [identity_row(row) for row in rows]

    async def add_identity(self, record: IdentityRecord) -> IdentityRecord | None:
        try:
            inserted = await self.pool.fetchval(
                f"INSERT INTO external_identities ({IDENTITY_COLUMNS}) "
                "SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM conversations "
                "WHERE id = $3 AND tenant_id = $2) RETURNING id",
                record.id,
                record.tenant_id,
                record.conversation_id,
                record.external_system,
                record.external_channel_id,
                record.external_thread_id,
                record.created_at,
            )
        except asyncpg.UniqueViolationError:
            existing = await self.pool.fetchrow(
                _FIND_IDENTITY,
                record.tenant_id,
                record.external_system,
                record.external_channel_id,
                record.external_thread_id,
            )
            if existing is None:  # removed again meanwhile: the caller may retry
                raise
            raise DuplicateIdentity(identity_row(existing)) from None
        return record if inserted else None

    async def remove_identity(self, tenant_id: str, conversation_id: str, identity_id: str) -> bool:
        status = await self.pool.execute(
            "DELETE FROM external_identities WHERE id = $1 AND conversation_id = $2 "
            "AND tenant_id = $3",
            identity_id,
            conversation_id,
            tenant_id,
        )
        return status.endswith(" 1")

    async def find_identity(
        self, tenant_id: str, system: str, channel: str, thread: str
    ) -> IdentityRecord | None:
        row = await self.pool.fetchrow(_FIND_IDENTITY, tenant_id, system, channel, thread)
        return identity_row(row) if row else None

    async def touch_blob(self, tenant_id: str, sha256: str, size: int, now: str) -> None:
        await self.pool.execute(
            "INSERT INTO blobs (tenant_id, sha256, size, created_at, last_used_at) "
            "VALUES ($1, $2, $3, $4, $4) ON CONFLICT (tenant_id, sha256) "
            "DO UPDATE SET last_used_at = excluded.last_used_at",
            tenant_id,
            sha256,
            size,
            now,
        )

    async def add_attachment(self, record: AttachmentRecord) -> AttachmentRecord | None:
        inserted = await self.pool.fetchval(
            f"INSERT INTO attachments ({ATTACHMENT_COLUMNS}) "
            "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE EXISTS (SELECT 1 FROM conversations "
            "WHERE id = $3 AND tenant_id = $2) RETURNING id",
            record.id,
            record.tenant_id,
            record.conversation_id,
            record.sha256,
            record.file_name,
            record.content_type,
            record.size,
            record.source,
            record.created_at,
        )
        return record if inserted else None

    async def list_attachments(
        self, tenant_id: str, conversation_id: str
    ) -> list[AttachmentRecord]:
        rows = await self.pool.fetch(
            f"SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE conversation_id = $1 "
            "AND tenant_id = $2 ORDER BY created_at, id",
            conversation_id,
            tenant_id,
        )
        return [attachment_row(row) for row in rows]

    async def get_attachment(self, attachment_id: str) -> AttachmentRecord | None:
        row = await self.pool.fetchrow(
            f"SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE id = $1", attachment_id
        )
        return attachment_row(row) if row else None

    async def existing_attachments(self, conversation_id: str, ids: list[str]) -> set[str]:
        rows = await self.pool.fetch(
            "SELECT id FROM attachments WHERE conversation_id = $1 AND id = ANY($2::text[])",
            conversation_id,
            ids,
        )
        return {row[0] for row in rows}

    async def sweep_blobs(self, unused_before: str) -> list[tuple[str, str]]:
        rows = await self.pool.fetch(
            "DELETE FROM blobs WHERE last_used_at < $1 AND NOT EXISTS (SELECT 1 FROM "
            "attachments a WHERE a.tenant_id = blobs.tenant_id AND a.sha256 = blobs.sha256) "
            "RETURNING tenant_id, sha256",
            unused_before,
        )
        return [(row[0], row[1]) for row in rows]


class IdempotencyMixin:
    # `pool` comes from PostgresStore.

    async def claim_idempotency_key(
        self, tenant_id: str, key: str, request_hash: str, now: str, expired_before: str
    ) -> IdempotencyClaim:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 "
                "AND created_at < $3",
                tenant_id,
                key,
                expired_before,
            )
            inserted = await conn.fetchval(
                "INSERT INTO idempotency_keys (tenant_id, key, request_hash, created_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1",
                tenant_id,
                key,
                request_hash,
                now,
            )
            if inserted:
                return IdempotencyClaim(state="new")
            row = await conn.fetchrow(
                "SELECT request_hash, status, response FROM idempotency_keys "
                "WHERE tenant_id = $1 AND key = $2",
                tenant_id,
                key,
            )
        if row is None:  # released in between: the caller may simply retry
            return IdempotencyClaim(state="pending")
        if row[0] != request_hash:
            return IdempotencyClaim(state="mismatch")
        if row[1] is None:
            return IdempotencyClaim(state="pending")
        return IdempotencyClaim(state="replay", status=row[1], response=bytes(row[2]))

    async def finish_idempotency_key(
        self, tenant_id: str, key: str, status: int, response: bytes
    ) -> None:
        await self.pool.execute(
            "UPDATE idempotency_keys SET status = $1, response = $2 "
            "WHERE tenant_id = $3 AND key = $4",
            status,
            response,
            tenant_id,
            key,
        )

    async def release_idempotency_key(self, tenant_id: str, key: str) -> None:
        await self.pool.execute(
            "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND status IS NULL",
            tenant_id,
            key,
        )

    async def purge_idempotency_keys(self, before: str) -> int:
        status = await self.pool.execute(
            "DELETE FROM idempotency_keys WHERE created_at < $1", before
        )
        return int(status.split()[-1])


class LifecycleMixin:
    # `pool` comes from PostgresStore.

    async def set_retention(self, tenant_id: str, days: int | None) -> None:
        await self.pool.execute(
            "INSERT INTO tenant_settings (tenant_id, retention_days) VALUES ($1, $2) "
            "ON CONFLICT (tenant_id) DO UPDATE SET retention_days = excluded.retention_days",
            tenant_id,
            days,
        )

    async def retention_policies(self) -> dict[str, int | None]:
        rows = await self.pool.fetch("SELECT tenant_id, retention_days FROM tenant_settings")
        return {row[0]: row[1] for row in rows}

    async def tenants(self) -> list[str]:
        rows = await self.pool.fetch("SELECT DISTINCT tenant_id FROM conversations")
        return [row[0] for row in rows]

    async def stale_conversations(
        self, tenant_id: str, updated_before: str, limit: int
    ) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT id FROM conversations WHERE tenant_id = $1 AND updated_at < $2 "
            "ORDER BY updated_at LIMIT $3",
            tenant_id,
            updated_before,
            limit,
        )
        return [row[0] for row in rows]

    async def owned_conversations(self, tenant_id: str, user_id: str, limit: int) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT id FROM conversations WHERE tenant_id = $1 AND user_id = $2 LIMIT $3",
            tenant_id,
            user_id,
            limit,
        )
        return [row[0] for row in rows]

    async def forget_user(self, tenant_id: str, user_id: str) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "DELETE FROM conversation_participants WHERE tenant_id = $1 AND user_id = $2",
                tenant_id,
                user_id,
            )
            await conn.execute(
                "DELETE FROM conversation_reads WHERE user_id = $1 AND conversation_id IN "
                "(SELECT id FROM conversations WHERE tenant_id = $2)",
                user_id,
                tenant_id,
            )
        return int(status.split()[-1])
