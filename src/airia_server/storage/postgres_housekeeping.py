"""PostgreSQL: idempotency keys and the data lifecycle (mixed into `PostgresStore`)."""

from __future__ import annotations

from airia_server.storage.base import IdempotencyClaim


class IdempotencyMixin:
    # `pool` comes from PostgresStore.

    async def claim_idempotency_key(
        self,
        tenant_id: str,
        key: str,
        request_hash: str,
        now: str,
        expired_before: str,
        abandoned_before: str,
        resource_id: str | None = None,
    ) -> IdempotencyClaim:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 "
                "AND (created_at < $3 OR (status IS NULL AND created_at < $4 "
                "AND request_hash <> $5))",
                tenant_id,
                key,
                expired_before,
                abandoned_before,
                request_hash,
            )
            inserted = await conn.fetchval(
                "INSERT INTO idempotency_keys (tenant_id, key, request_hash, created_at, "
                "resource_id) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING 1",
                tenant_id,
                key,
                request_hash,
                now,
                resource_id,
            )
            if inserted:
                return IdempotencyClaim(state="new", resource_id=resource_id)
            # The row is locked, so two retries cannot both take an abandoned claim over.
            row = await conn.fetchrow(
                "SELECT request_hash, status, response, created_at, resource_id "
                "FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 FOR UPDATE",
                tenant_id,
                key,
            )
            if row is None:  # released in between: the caller may simply retry
                return IdempotencyClaim(state="pending")
            hash_, status, response, claimed_at, kept_id = row
            if hash_ != request_hash:
                return IdempotencyClaim(state="mismatch")
            if status is not None:
                return IdempotencyClaim(state="replay", status=status, response=bytes(response))
            if claimed_at >= abandoned_before:
                return IdempotencyClaim(state="pending", resource_id=kept_id, claimed_at=claimed_at)
            # Abandoned by the same request: taken over, with the same resource id.
            kept_id = kept_id or resource_id
            await conn.execute(
                "UPDATE idempotency_keys SET created_at = $1, resource_id = $2 "
                "WHERE tenant_id = $3 AND key = $4",
                now,
                kept_id,
                tenant_id,
                key,
            )
            return IdempotencyClaim(state="new", resource_id=kept_id, taken_over=True)

    async def finish_idempotency_key(
        self, tenant_id: str, key: str, claimed_at: str, status: int, response: bytes
    ) -> None:
        await self.pool.execute(
            "UPDATE idempotency_keys SET status = $1, response = $2 "
            # Still unfinished: a delete of what it made may have turned it into a
            # 410 meanwhile, which stands.
            "WHERE tenant_id = $3 AND key = $4 AND created_at = $5 AND status IS NULL",
            status,
            response,
            tenant_id,
            key,
            claimed_at,
        )

    async def earlier_idempotency_response(
        self, tenant_id: str, spellings: list[tuple[str, str]], expired_before: str
    ) -> tuple[int, bytes] | None:
        if not spellings:
            return None
        row = await self.pool.fetchrow(
            "SELECT status, response FROM idempotency_keys WHERE tenant_id = $1 "
            "AND (key, request_hash) IN (SELECT * FROM unnest($2::text[], $3::text[])) "
            "AND status IS NOT NULL AND created_at >= $4 LIMIT 1",
            tenant_id,
            [key for key, _ in spellings],
            [hash_ for _, hash_ in spellings],
            expired_before,
        )
        return (row[0], bytes(row[1])) if row else None

    async def idempotency_key_held(self, tenant_id: str, key: str, expired_before: str) -> bool:
        row = await self.pool.fetchrow(
            "SELECT 1 FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND created_at >= $3",
            tenant_id,
            key,
            expired_before,
        )
        return row is not None

    async def release_idempotency_key(self, tenant_id: str, key: str, claimed_at: str) -> None:
        await self.pool.execute(
            "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 "
            "AND created_at = $3 AND status IS NULL",
            tenant_id,
            key,
            claimed_at,
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
            "SELECT p.conversation_id FROM conversation_participants p "
            "WHERE p.tenant_id = $1 AND p.user_id = $2 AND p.role = 'Owner' "
            "AND NOT EXISTS (SELECT 1 FROM conversation_participants o "
            "WHERE o.conversation_id = p.conversation_id AND o.role = 'Owner' "
            "AND o.user_id <> p.user_id) LIMIT $3",
            tenant_id,
            user_id,
            limit,
        )
        return [row[0] for row in rows]

    async def participations(self, tenant_id: str, user_id: str, limit: int) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT conversation_id FROM conversation_participants "
            "WHERE tenant_id = $1 AND user_id = $2 ORDER BY conversation_id LIMIT $3",
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
