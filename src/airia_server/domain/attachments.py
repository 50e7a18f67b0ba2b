"""Attachments: files uploaded to a conversation, stored once per tenant per content."""

from __future__ import annotations

import asyncio
import logging
import time

from airia_server.domain import access
from airia_server.domain.auth import Principal
from airia_server.domain.tickets import InvalidTicket, UrlSigner
from airia_server.errors import (
    AppError,
    Forbidden,
    NotFound,
    ValidationFailed,
    conversation_not_found,
)
from airia_server.ids import new_id, parse_id
from airia_server.storage.base import AttachmentRecord, Store
from airia_server.storage.blobs import (
    STAGING_ABANDONED_SECONDS,
    BlobStore,
    MissingBlob,
    StagedUpload,
    sweep_staging,
)
from airia_server.timeutil import format_us, now_us, utcnow_iso

log = logging.getLogger("airia_server.attachments")

UPLOAD_HOLD_SECONDS = 600.0
"""How long the sweep leaves new content alone while its upload is being stored (the
attachment that refers to it ends the hold). With a grace period shorter than an
upload's store, even 0, the sweep cannot take content from under an upload; content
of an upload that failed half-way goes with the sweep after this."""


class ContentMissing(AppError):
    """An attachment whose bytes the blob store lacks. A 500, not a 404: the attachment
    exists, and it is the server that lost what it stored."""

    status = 500
    title = "Internal Server Error"


def download_purpose(attachment_id: str) -> str:
    return f"attachment:{attachment_id}"


class AttachmentService:
    def __init__(self, store: Store, blobs: BlobStore, signer: UrlSigner, sweep_grace: float):
        self.store = store
        self.blobs = blobs
        self.signer = signer
        self.sweep_grace = sweep_grace

    async def check_upload(self, principal: Principal, conversation_id: str) -> str:
        """Fail fast, before reading a body: the conversation's id if the caller may upload."""
        record, _ = await access.load(self.store, principal, conversation_id, access.WRITE)
        return record.id

    async def store_upload(
        self,
        principal: Principal,
        conversation_id: str,
        staged: StagedUpload,
        *,
        file_name: str,
        content_type: str,
        source: str,
        attachment_id: str | None = None,
    ) -> AttachmentRecord:
        """Keep a fully received upload. The staged file is consumed either way.
        `attachment_id`: the id to take (an Idempotency-Key's), else a new one."""
        try:
            sha256 = await asyncio.to_thread(staged.finish)
            # Touch first: from here the sweep leaves this content alone, until the
            # attachment refers to it or the hold runs out (an upload that failed
            # half-way), whatever the sweep's grace period.
            now = now_us()
            await self.store.touch_blob(
                principal.tenant_id,
                sha256,
                staged.size,
                format_us(now),
                format_us(now + int(UPLOAD_HOLD_SECONDS * 1e6)),
            )
            await self.blobs.put(principal.tenant_id, sha256, staged.path)
        finally:
            staged.discard()
        record = AttachmentRecord(
            id=attachment_id or new_id(),
            tenant_id=principal.tenant_id,
            conversation_id=conversation_id,
            sha256=sha256,
            file_name=file_name,
            content_type=content_type,
            size=staged.size,
            source=source,
            created_at=utcnow_iso(),
        )
        if await self.store.add_attachment(record) is None:
            raise conversation_not_found(conversation_id)  # deleted while we received it
        return record

    async def list(self, principal: Principal, conversation_id: str) -> list[AttachmentRecord]:
        record, _ = await access.load(self.store, principal, conversation_id)
        return await self.store.list_attachments(principal.tenant_id, record.id)

    def signed_query(self, attachment_id: str) -> str:
        expires, signature = self.signer.sign(download_purpose(attachment_id))
        return f"expires={expires}&signature={signature}"

    async def for_download(self, attachment_id: str, expires: str, signature: str):
        canonical = parse_id(attachment_id)
        try:
            if canonical is None:
                raise InvalidTicket("unknown attachment")
            self.signer.verify(download_purpose(canonical), expires, signature)
        except InvalidTicket as exc:
            raise Forbidden(
                "Invalid or expired download link", f"This link cannot be used: {exc}"
            ) from None
        record = await self.store.get_attachment(canonical)
        if record is None:
            raise NotFound("Attachment not found", "The attachment no longer exists")
        return record

    async def check_content(self, record: AttachmentRecord) -> None:
        """ContentMissing unless the store holds the attachment's bytes. Checked before a
        download's response starts: found missing while streaming, they could only cut
        off a response that had begun as 200 (with its length), which access log and
        metrics count as served."""
        try:
            await self.blobs.check(record.tenant_id, record.sha256, record.size)
        except MissingBlob as exc:
            log.error("attachment %s: its content is missing: %s", record.id, exc.where)
            raise ContentMissing(
                "Attachment content is missing",
                f"The stored bytes of attachment {record.id} are missing from the blob "
                "store, or cannot be read: an operator's matter (a blob directory or "
                "backup not restored, files deleted, or not readable by the server)",
            ) from None

    async def check_references(self, conversation_id: str, ids: list[str]) -> list[str]:
        """Canonical ids, if every one is an attachment of this conversation; else 422."""
        canonical = [parse_id(i) for i in ids]
        found = await self.store.existing_attachments(
            conversation_id, [c for c in canonical if c is not None]
        )
        missing = [raw for raw, c in zip(ids, canonical, strict=True) if c not in found]
        if missing:
            raise ValidationFailed(
                "Unknown image attachment",
                f"No attachment {missing[0][:100]} in this conversation",
                errors=[{"field": "imageAttachmentIds", "message": "unknown attachment"}],
            )
        return [c for c in canonical if c is not None]

    async def sweep(self, grace: float | None = None) -> int:
        """Delete the bytes of blobs nothing references any longer."""
        cutoff = format_us(now_us() - int((self.sweep_grace if grace is None else grace) * 1e6))
        gone = await self.store.sweep_blobs(cutoff, self.blobs.forget)
        if gone:
            log.info("deleted %d unreferenced blobs", len(gone))
        staged = await asyncio.to_thread(
            sweep_staging, self.blobs.staging_dir, time.time() - STAGING_ABANDONED_SECONDS
        )
        if staged:
            log.info("deleted %d staging files of uploads cut off by a crash", staged)
        return len(gone)
