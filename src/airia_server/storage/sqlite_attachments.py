"""SQLite: external identities and attachment records (mixed into `SqliteStore`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

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


def _conversation_exists(conn: sqlite3.Connection, tenant_id: str, conversation_id: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM conversations WHERE id = ? AND tenant_id = ?",
            (conversation_id, tenant_id),
        ).fetchone()
        is not None
    )


class AttachmentsMixin:
    # `_read()` and `_write(op)` come from SqliteStore.

    async def list_identities(self, tenant_id: str, conversation_id: str) -> list[IdentityRecord]:
        rows = (
            self._read()
            .execute(
                f"SELECT {IDENTITY_COLUMNS} FROM external_identities "
                "WHERE conversation_id = ? AND tenant_id = ? ORDER BY created_at, id",
                (conversation_id, tenant_id),
            )
            .fetchall()
        )
        return [identity_row(row) for row in rows]

    async def add_identity(self, record: IdentityRecord) -> IdentityRecord | None:
        def op(conn: sqlite3.Connection) -> IdentityRecord | None:
            if not _conversation_exists(conn, record.tenant_id, record.conversation_id):
                return None
            existing = conn.execute(
                f"SELECT {IDENTITY_COLUMNS} FROM external_identities WHERE tenant_id = ? AND "
                "external_system = ? AND external_channel_id = ? AND external_thread_id = ?",
                (
                    record.tenant_id,
                    record.external_system,
                    record.external_channel_id,
                    record.external_thread_id,
                ),
            ).fetchone()
            if existing is not None:
                raise DuplicateIdentity(identity_row(existing))
            conn.execute(
                f"INSERT INTO external_identities ({IDENTITY_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.tenant_id,
                    record.conversation_id,
                    record.external_system,
                    record.external_channel_id,
                    record.external_thread_id,
                    record.created_at,
                ),
            )
            return record

        return await self._write(op)

    async def remove_identity(self, tenant_id: str, conversation_id: str, identity_id: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM external_identities WHERE id = ? AND conversation_id = ? "
                "AND tenant_id = ?",
                (identity_id, conversation_id, tenant_id),
            )
            return cur.rowcount == 1

        return await self._write(op)

    async def find_identity(
        self, tenant_id: str, system: str, channel: str, thread: str
    ) -> IdentityRecord | None:
        row = (
            self._read()
            .execute(
                f"SELECT {IDENTITY_COLUMNS} FROM external_identities WHERE tenant_id = ? AND "
                "external_system = ? AND external_channel_id = ? AND external_thread_id = ?",
                (tenant_id, system, channel, thread),
            )
            .fetchone()
        )
        return identity_row(row) if row else None

    async def touch_blob(
        self, tenant_id: str, sha256: str, size: int, now: str, hold_until: str
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO blobs (tenant_id, sha256, size, created_at, last_used_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, sha256) "
                "DO UPDATE SET last_used_at = max(last_used_at, excluded.last_used_at)",
                (tenant_id, sha256, size, now, hold_until),
            )

        await self._write(op)

    async def add_attachment(self, record: AttachmentRecord) -> AttachmentRecord | None:
        def op(conn: sqlite3.Connection) -> AttachmentRecord | None:
            if not _conversation_exists(conn, record.tenant_id, record.conversation_id):
                return None
            conn.execute(
                f"INSERT INTO attachments ({ATTACHMENT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.tenant_id,
                    record.conversation_id,
                    record.sha256,
                    record.file_name,
                    record.content_type,
                    record.size,
                    record.source,
                    record.created_at,
                ),
            )
            conn.execute(
                "UPDATE blobs SET last_used_at = ? WHERE tenant_id = ? AND sha256 = ?",
                (record.created_at, record.tenant_id, record.sha256),
            )
            return record

        return await self._write(op)

    async def list_attachments(
        self, tenant_id: str, conversation_id: str
    ) -> list[AttachmentRecord]:
        rows = (
            self._read()
            .execute(
                f"SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE conversation_id = ? "
                "AND tenant_id = ? ORDER BY created_at, id",
                (conversation_id, tenant_id),
            )
            .fetchall()
        )
        return [attachment_row(row) for row in rows]

    async def get_attachment(self, attachment_id: str) -> AttachmentRecord | None:
        row = (
            self._read()
            .execute(f"SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE id = ?", (attachment_id,))
            .fetchone()
        )
        return attachment_row(row) if row else None

    async def existing_attachments(self, conversation_id: str, ids: list[str]) -> set[str]:
        marks = ", ".join("?" for _ in ids)
        rows = (
            self._read()
            .execute(
                f"SELECT id FROM attachments WHERE conversation_id = ? AND id IN ({marks})",
                (conversation_id, *ids),
            )
            .fetchall()
        )
        return {row[0] for row in rows}

    async def sweep_blobs(
        self, unused_before: str, forget: Callable[[str, str], None] | None
    ) -> list[tuple[str, str]]:
        if forget is None:
            raise ValueError("SQLite keeps blob bytes in files: the sweep needs `forget`")

        def op(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = conn.execute(
                "DELETE FROM blobs WHERE last_used_at < ? AND NOT EXISTS (SELECT 1 FROM "
                "attachments a WHERE a.tenant_id = blobs.tenant_id AND a.sha256 = blobs.sha256) "
                "RETURNING tenant_id, sha256",
                (unused_before,),
            ).fetchall()
            # In the writer, before the commit: the next write (an upload's touch of the
            # same content) comes after the files are gone, and stores them again.
            for tenant_id, sha256 in rows:
                forget(tenant_id, sha256)
            return [(row[0], row[1]) for row in rows]

        return await self._write(op)
