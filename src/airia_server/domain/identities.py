"""External identities: a chat system's channel and thread mapped to a conversation."""

from __future__ import annotations

from airia_server.domain import access
from airia_server.domain.auth import Principal
from airia_server.errors import Conflict, NotFound, conversation_not_found
from airia_server.ids import new_id, parse_id
from airia_server.storage.base import (
    ConversationRecord,
    DuplicateIdentity,
    IdentityRecord,
    Store,
)
from airia_server.timeutil import utcnow_iso


def _identity_not_found(detail: str) -> NotFound:
    return NotFound("External identity not found", detail)


class IdentityService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def list(self, principal: Principal, conversation_id: str) -> list[IdentityRecord]:
        record, _ = await access.load(self.store, principal, conversation_id)
        return await self.store.list_identities(principal.tenant_id, record.id)

    async def add(
        self, principal: Principal, conversation_id: str, system: str, channel: str, thread: str
    ) -> IdentityRecord:
        record, _ = await access.load(self.store, principal, conversation_id, access.MANAGE)
        identity = IdentityRecord(
            id=new_id(),
            tenant_id=principal.tenant_id,
            conversation_id=record.id,
            external_system=system,
            external_channel_id=channel,
            external_thread_id=thread,
            created_at=utcnow_iso(),
        )
        try:
            stored = await self.store.add_identity(identity)
        except DuplicateIdentity as exc:
            where = f"{system}/{channel[:100]}/{thread[:100]}"
            try:
                await access.load(self.store, principal, exc.existing.conversation_id)
            except NotFound:
                # Mapped to a conversation this caller may not see: say no more than
                # that, as the look-up (404) says nothing at all.
                raise Conflict(
                    "This external thread is already mapped",
                    f"{where} is already mapped to another conversation",
                ) from None
            raise Conflict(
                "This external thread is already mapped",
                f"{where} already points to conversation {exc.existing.conversation_id}",
                conversationId=exc.existing.conversation_id,
                identityId=exc.existing.id,
            ) from None
        if stored is None:
            raise conversation_not_found(conversation_id)
        return stored

    async def remove(self, principal: Principal, conversation_id: str, identity_id: str) -> None:
        record, _ = await access.load(self.store, principal, conversation_id, access.MANAGE)
        canonical = parse_id(identity_id)
        if canonical is None or not await self.store.remove_identity(
            principal.tenant_id, record.id, canonical
        ):
            raise _identity_not_found(f"No identity {identity_id[:100]} on this conversation")

    async def find(
        self, principal: Principal, system: str, channel: str, thread: str
    ) -> ConversationRecord:
        """The mapped conversation, if the caller may see it (404 otherwise)."""
        identity = await self.store.find_identity(principal.tenant_id, system, channel, thread)
        if identity is None:
            raise _identity_not_found("No conversation is mapped to this external thread")
        try:
            record, _ = await access.load(self.store, principal, identity.conversation_id)
        except NotFound:
            raise _identity_not_found("No conversation is mapped to this external thread") from None
        return record
