"""SQLite: idempotency keys and the data lifecycle (mixed into `SqliteStore`)."""

from __future__ import annotations

import sqlite3

from airia_server.storage.base import IdempotencyClaim


class IdempotencyMixin:
    # `_write(op)` comes from SqliteStore.

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
        def op(conn: sqlite3.Connection) -> IdempotencyClaim:
            conn.execute(
                "DELETE FROM idempotency_keys WHERE tenant_id = ? AND key = ? AND "
                "(created_at < ? OR (status IS NULL AND created_at < ? AND request_hash <> ?))",
                (tenant_id, key, expired_before, abandoned_before, request_hash),
            )
            row = conn.execute(
                "SELECT request_hash, status, response, created_at, resource_id "
                "FROM idempotency_keys WHERE tenant_id = ? AND key = ?",
                (tenant_id, key),
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO idempotency_keys (tenant_id, key, request_hash, created_at, "
                    "resource_id) VALUES (?, ?, ?, ?, ?)",
                    (tenant_id, key, request_hash, now, resource_id),
                )
                return IdempotencyClaim(state="new", resource_id=resource_id)
            hash_, status, response, claimed_at, kept_id = row
            if hash_ != request_hash:
                return IdempotencyClaim(state="mismatch")
            if status is not None:
                return IdempotencyClaim(state="replay", status=status, response=response)
            if claimed_at >= abandoned_before:
                return IdempotencyClaim(state="pending", resource_id=kept_id, claimed_at=claimed_at)
            # Abandoned by the same request: taken over, with the same resource id.
            kept_id = kept_id or resource_id
            conn.execute(
                "UPDATE idempotency_keys SET created_at = ?, resource_id = ? "
                "WHERE tenant_id = ? AND key = ?",
                (now, kept_id, tenant_id, key),
            )
            return IdempotencyClaim(state="new", resource_id=kept_id, taken_over=True)

        return await self._write(op)

    async def finish_idempotency_key(
        self, tenant_id: str, key: str, claimed_at: str, status: int, response: bytes
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE idempotency_keys SET status = ?, response = ? "
                # Still unfinished: a delete of what it made may have turned it into
                # a 410 meanwhile, which stands.
                "WHERE tenant_id = ? AND key = ? AND created_at = ? AND status IS NULL",
                (status, response, tenant_id, key, claimed_at),
            )

        await self._write(op)

    async def earlier_idempotency_response(
        self, tenant_id: str, spellings: list[tuple[str, str]], expired_before: str
    ) -> tuple[int, bytes] | None:
        if not spellings:
            return None
        either = " OR ".join(["(key = ? AND request_hash = ?)"] * len(spellings))
        row = (
            self._read()
            .execute(
                "SELECT status, response FROM idempotency_keys WHERE tenant_id = ? "
                f"AND ({either}) AND status IS NOT NULL AND created_at >= ? LIMIT 1",
                (tenant_id, *[part for pair in spellings for part in pair], expired_before),
            )
            .fetchone()
        )
        return (row[0], row[1]) if row else None

    async def idempotency_key_held(self, tenant_id: str, key: str, expired_before: str) -> bool:
        row = (
            self._read()
            .execute(
                "SELECT 1 FROM idempotency_keys WHERE tenant_id = ? AND key = ? "
                "AND created_at >= ?",
                (tenant_id, key, expired_before),
            )
            .fetchone()
        )
        return row is not None

    async def release_idempotency_key(self, tenant_id: str, key: str, claimed_at: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM idempotency_keys WHERE tenant_id = ? AND key = ? "
                "AND created_at = ? AND status IS NULL",
                (tenant_id, key, claimed_at),
            )

        await self._write(op)

    async def purge_idempotency_keys(self, before: str) -> int:
        def op(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM idempotency_keys WHERE created_at < ?", (before,)
            ).rowcount

        return await self._write(op)


class LifecycleMixin:
    # `_read()` and `_write(op)` come from SqliteStore.

    async def set_retention(self, tenant_id: str, days: int | None) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO tenant_settings (tenant_id, retention_days) VALUES (?, ?) "
                "ON CONFLICT (tenant_id) DO UPDATE SET retention_days = excluded.retention_days",
                (tenant_id, days),
            )

        await self._write(op)

    async def retention_policies(self) -> dict[str, int | None]:
        rows = self._read().execute("SELECT tenant_id, retention_days FROM tenant_settings")
        return {row[0]: row[1] for row in rows.fetchall()}

    async def tenants(self) -> list[str]:
        rows = self._read().execute("SELECT DISTINCT tenant_id FROM conversations").fetchall()
        return [row[0] for row in rows]

    async def stale_conversations(
        self, tenant_id: str, updated_before: str, limit: int
    ) -> list[str]:
        rows = (
            self._read()
            .execute(
                "SELECT id FROM conversations WHERE tenant_id = ? AND updated_at < ? "
                "ORDER BY updated_at LIMIT ?",
                (tenant_id, updated_before, limit),
            )
            .fetchall()
        )
        return [row[0] for row in rows]

    async def owned_conversations(self, tenant_id: str, user_id: str, limit: int) -> list[str]:
        rows = (
            self._read()
            .execute(
                "SELECT p.conversation_id FROM conversation_participants p "
                "WHERE p.tenant_id = ? AND p.user_id = ? AND p.role = 'Owner' "
                "AND NOT EXISTS (SELECT 1 FROM conversation_participants o "
                "WHERE o.conversation_id = p.conversation_id AND o.role = 'Owner' "
                "AND o.user_id <> p.user_id) LIMIT ?",
                (tenant_id, user_id, limit),
            )
            .fetchall()
        )
        return [row[0] for row in rows]

    async def participations(self, tenant_id: str, user_id: str, limit: int) -> list[str]:
        rows = (
            self._read()
            .execute(
                "SELECT conversation_id FROM conversation_participants "
                "WHERE tenant_id = ? AND user_id = ? ORDER BY conversation_id LIMIT ?",
                (tenant_id, user_id, limit),
            )
            .fetchall()
        )
        return [row[0] for row in rows]

    async def forget_user(self, tenant_id: str, user_id: str) -> int:
        def op(conn: sqlite3.Connection) -> int:
            removed = conn.execute(
                "DELETE FROM conversation_participants WHERE tenant_id = ? AND user_id = ?",
                (tenant_id, user_id),
            ).rowcount
            conn.execute(
                "DELETE FROM conversation_reads WHERE user_id = ? AND conversation_id IN "
                "(SELECT id FROM conversations WHERE tenant_id = ?)",
                (user_id, tenant_id),
            )
            return removed

        return await self._write(op)
