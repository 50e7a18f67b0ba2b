"""Message rules: append, page through, truncate, and per-user read positions."""

from __future__ import annotations

from airia_server.domain import access
from airia_server.domain.attachments import AttachmentService
from airia_server.domain.auth import Principal
from airia_server.errors import NotFound, ValidationFailed, conversation_not_found
from airia_server.ids import new_id, parse_id
from airia_server.realtime.hub import LocalHub
from airia_server.storage.base import MessageRecord, ReadPosition, Store, TruncateResult
from airia_server.timeutil import utcnow_iso


def _message_not_found(message_id: str) -> NotFound:
    return NotFound("Message not found", f"Message {message_id[:100]} was not found")


class MessageService:
    def __init__(self, store: Store, hub: LocalHub, attachments: AttachmentService) -> None:
        self.store = store
        self.hub = hub
        self.attachments = attachments

    async def add(
        self,
        principal: Principal,
        conversation_id: str,
        *,
        message: str | None,
        role: str,
        images: list[str] | None,
        image_attachment_ids: list[str] | None,
        user_id: str | None,
        message_id: str | None = None,
    ) -> MessageRecord:
        """`message_id`: the id to take (an Idempotency-Key's), else a new one."""
        if message is None and not images and not image_attachment_ids:
            raise ValidationFailed(
                "A message needs text or images",
                errors=[{"field": "message", "message": "give message, images or both"}],
            )
        canonical = parse_id(conversation_id)
        if canonical is None:
            raise conversation_not_found(conversation_id)
        if principal.is_api_key and not image_attachment_ids:
            # An API key may write to every conversation of its tenant, and the write
            # itself is scoped to the tenant (and finds the conversation's user when
            # the message is by them): nothing to read first.
            author, from_conversation = user_id, role == "user" and user_id is None
        else:
            record, _ = await access.load(self.store, principal, conversation_id, access.WRITE)
            if image_attachment_ids:
                # Only this conversation's own attachments: never another's, or another
                # tenant's.
                image_attachment_ids = await self.attachments.check_references(
                    record.id, image_attachment_ids
                )
            author = access.acting_user(
                principal, user_id, record.user_id if role == "user" else None
            )
            from_conversation = False
        now = utcnow_iso()
        draft = MessageRecord(
            id=message_id or new_id(),
            conversation_id=canonical,
            position=0,
            user_id=author,
            role=role,
            message=message,
            images=images,
            image_attachment_ids=image_attachment_ids,
            created_at=now,
            updated_at=now,
        )
        result = await self.store.add_message(
            principal.tenant_id, draft, author_from_conversation=from_conversation
        )
        if result is None:
            raise conversation_not_found(conversation_id)
        stored, event = result
        await self.hub.publish(event)
        return stored

    async def page(
        self,
        principal: Principal,
        conversation_id: str,
        *,
        cursor: int | None,
        limit: int,
        descending: bool,
    ) -> tuple[list[MessageRecord], int | None]:
        """One page and the cursor of the next (None on the last page)."""
        record, _ = await access.load(self.store, principal, conversation_id)
        items = await self.store.list_messages(
            record.id, cursor=cursor, limit=limit + 1, descending=descending
        )
        if len(items) > limit:
            items = items[:limit]
            return items, items[-1].position
        return items, None

    async def truncate(
        self, principal: Principal, conversation_id: str, message_id: str
    ) -> tuple[str, TruncateResult]:
        record, _ = await access.load(self.store, principal, conversation_id, access.MANAGE)
        canonical = parse_id(message_id)
        if canonical is None:
            raise _message_not_found(message_id)
        result = await self.store.truncate_messages(
            principal.tenant_id, record.id, canonical, utcnow_iso()
        )
        if result is None:
            raise _message_not_found(message_id)
        await self.hub.publish(result.event)
        return canonical, result

    async def mark_read(
        self, principal: Principal, conversation_id: str, user_id: str | None
    ) -> tuple[str, str, ReadPosition]:
        record, _ = await access.load(self.store, principal, conversation_id)
        reader = access.acting_user(principal, user_id, record.user_id)
        assert reader is not None
        position = await self.store.mark_read(record.id, reader, utcnow_iso())
        return record.id, reader, position
