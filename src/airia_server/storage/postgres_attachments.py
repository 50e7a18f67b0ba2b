"""PostgreSQL: external identities and attachment records (mixed into `PostgresStore`)."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from airia_server.storage.base import (
    AttachmentRecord,
    DuplicateIdentity,
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


_SWEEP = (
    "DELETE FROM blobs WHERE last_used_at < $1 AND NOT EXISTS (SELECT 1 FROM "
    "attachments a WHERE a.tenant_id = blobs.tenant_id AND a.sha256 = blobs.sha256) "
    "RETURNING tenant_id, sha256"
)
# With the bytes in `blob_chunks`: rows and chunks in one statement, so one commit.
_SWEEP_WITH_CHUNKS = (
    f"WITH gone AS ({_SWEEP}), c AS (DELETE FROM blob_chunks USING gone "
    "WHERE blob_chunks.tenant_id = gone.tenant_id AND blob_chunks.sha256 = gone.sha256) "
    "SELECT tenant_id, sha256 FROM gone"
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
                # The conversation held while the row goes in: a delete waits for it,
                # then removes it (see PostgresStore.delete_conversation).
                "WITH c AS (SELECT 1 FROM conversations WHERE id = $3 AND tenant_id = $2 "
                f"FOR KEY SHARE) INSERT INTO external_identities ({IDENTITY_COLUMNS}) "
                "SELECT $1, $2, $3, $4, $5, $6, $7 FROM c RETURNING id",
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

    async def touch_blob(
        self, tenant_id: str, sha256: str, size: int, now: str, hold_until: str
    ) -> None:
        await self.pool.execute(
            "INSERT INTO blobs (tenant_id, sha256, size, created_at, last_used_at) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, sha256) "
            "DO UPDATE SET last_used_at = greatest(blobs.last_used_at, excluded.last_used_at)",
            tenant_id,
            sha256,
            size,
            now,
            hold_until,
        )

    async def add_attachment(self, record: AttachmentRecord) -> AttachmentRecord | None:
        # One round trip: the attachment, and (only when it was inserted) the end of
        # its blob's upload hold. PostgreSQL runs a data-modifying WITH part even
        # though the final SELECT does not read it.
        inserted = await self.pool.fetchval(
            "WITH c AS (SELECT 1 FROM conversations WHERE id = $3 AND tenant_id = $2 "
            "FOR KEY SHARE), "  # held, as for an identity (see add_identity)
            f"a AS (INSERT INTO attachments ({ATTACHMENT_COLUMNS}) "
            "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM c RETURNING id), "
            "dated AS (UPDATE blobs SET last_used_at = $9 WHERE tenant_id = $2 AND sha256 = $4 "
            "AND EXISTS (SELECT 1 FROM a)) "
            "SELECT id FROM a",
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

    async def sweep_blobs(
        self, unused_before: str, forget: Callable[[str, str], None] | None
    ) -> list[tuple[str, str]]:
        # The rows stay locked until the commit, after their bytes are gone: an upload
        # of the same content waits in `touch_blob`, then finds no bytes and stores them.
        async with self.pool.acquire() as conn, conn.transaction():
            if forget is None:
                rows = await conn.fetch(_SWEEP_WITH_CHUNKS, unused_before)
            else:
                rows = await conn.fetch(_SWEEP, unused_before)
                for tenant_id, sha256 in rows:
                    forget(tenant_id, sha256)
        return [(row[0], row[1]) for row in rows]
