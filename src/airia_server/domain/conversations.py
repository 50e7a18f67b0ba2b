"""Conversation rules: create, read, change, delete, the feed, and live signals."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from airia_server.domain import access
from airia_server.domain.auth import Principal
from airia_server.errors import Forbidden, ValidationFailed, conversation_not_found
from airia_server.ids import new_id, parse_id
from airia_server.realtime.hub import LocalHub
from airia_server.storage.base import (
    ConversationRecord,
    EventRecord,
    FeedPage,
    FeedQuery,
    Store,
)
from airia_server.storage.outages import outage_of
from airia_server.text import is_blank
from airia_server.timeutil import utcnow_iso

log = logging.getLogger("airia_server.conversations")


class ConversationService:
    def __init__(self, store: Store, hub: LocalHub, default_deployment_id: str) -> None:
        self.store = store
        self.hub = hub
        self.default_deployment_id = default_deployment_id
        self.after_delete: Callable[[], Awaitable[object]] | None = None
        """Run after a delete that took attachments with it commits (the blob sweep)."""

    async def create(
        self,
        principal: Principal,
        *,
        user_id: str,
        title: str | None,
        deployment_id: str | None,
        data_source_files: dict[str, list[str]] | None,
        is_bookmarked: bool,
        conversation_id: str | None = None,
    ) -> ConversationRecord:
        """`conversation_id`: the id to take (an Idempotency-Key's), else a new one."""
        if not principal.is_api_key and user_id != principal.user_id:
            raise Forbidden(
                "Cannot create a conversation for another user",
                f"A bearer token for '{principal.user_id}' can only create conversations "
                "for that user",
            )
        now = utcnow_iso()
        record = ConversationRecord(
            id=conversation_id or new_id(),
            tenant_id=principal.tenant_id,
            user_id=user_id,
            title=title,
            deployment_id=deployment_id or self.default_deployment_id,
            data_source_files=data_source_files or {},
            is_bookmarked=is_bookmarked,
            last_execution_status=None,
            last_execution_id=None,
            message_count=0,
            last_sequence=0,
            created_at=now,
            updated_at=now,
        )
        await self.store.create_conversation(record, owner_id=new_id())
        return record

    async def get(self, principal: Principal, conversation_id: str) -> ConversationRecord:
        """The conversation if the caller may see it; 404 for every other case, whatever
        the id's shape, so nothing reveals whether another tenant's conversation exists."""
        record, _ = await access.load(self.store, principal, conversation_id)
        return record

    async def update(
        self, principal: Principal, conversation_id: str, changes: dict[str, Any]
    ) -> ConversationRecord:
        if "title" in changes and is_blank(changes["title"]):
            raise ValidationFailed(
                "Invalid value for 'title': must not be blank",
                errors=[{"field": "title", "message": "must not be blank"}],
            )
        current, _ = await access.load(self.store, principal, conversation_id, access.MANAGE)
        result = await self.store.update_conversation(
            principal.tenant_id, current.id, changes, utcnow_iso()
        )
        if result is None:  # deleted between our read and the write
            raise conversation_not_found(conversation_id)
        record, event = result
        await self.hub.publish(event)
        return record

    async def delete(self, principal: Principal, conversation_id: str) -> None:
        if principal.is_api_key:
            # An API key is Owner of every conversation of its tenant, and the delete
            # itself is scoped to the tenant: no read first (404 all the same).
            target = parse_id(conversation_id)
            if target is None:
                raise conversation_not_found(conversation_id)
        else:
            current, _ = await access.load(self.store, principal, conversation_id, access.MANAGE)
            target = current.id
        deleted = await self.store.delete_conversation(principal.tenant_id, target, utcnow_iso())
        if deleted is None:
            raise conversation_not_found(conversation_id)
        event, attachments = deleted
        await self.hub.publish(event)
        if attachments and self.after_delete is not None:
            try:
                await self.after_delete()
            except Exception as exc:  # the periodic sweep will finish the job
                if not isinstance(exc, OSError) and outage_of(exc) is None:
                    log.exception("cleanup after deleting %s failed", target)
                    return
                # The blob disk, or the database, away: an outage, not a bug.
                log.warning(
                    "cleanup after deleting %s failed (the sweep will retry): %s: %s",
                    target,
                    type(exc).__name__,
                    exc,
                )

    async def feed(self, principal: Principal, query: FeedQuery) -> FeedPage:
        if not principal.is_api_key:
            if query.user_id not in (None, principal.user_id):
                raise Forbidden(
                    "Cannot read another user's feed",
                    "A bearer token reads only its own user's feed",
                )
            query.user_id = principal.user_id
        return await self.store.feed(query)

    async def signal(
        self,
        principal: Principal,
        conversation_id: str,
        kind: str,
        user_id: str | None,
        data: dict[str, Any],
    ) -> tuple[str, str | None]:
        """Broadcast a typing or presence signal (never stored): (conversation id, user)."""
        record, _ = await access.load(self.store, principal, conversation_id, access.WRITE)
        actor = access.acting_user(principal, user_id, record.user_id)
        payload = {"userId": actor, **data}
        await self.hub.publish(
            EventRecord(
                conversation_id=record.id,
                sequence=None,
                type=kind,
                created_at=utcnow_iso(),
                data=payload,
            )
        )
        return record.id, actor
