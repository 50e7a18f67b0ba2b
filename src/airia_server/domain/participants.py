"""Sharing: who takes part in a conversation, with which role."""

from __future__ import annotations

from airia_server.domain import access
from airia_server.domain.auth import Principal
from airia_server.errors import Conflict, NotFound, conversation_not_found
from airia_server.realtime.hub import LocalHub
from airia_server.storage.base import LastOwner, ParticipantRecord, Store
from airia_server.timeutil import utcnow_iso


def _last_owner() -> Conflict:
    return Conflict(
        "A conversation needs an Owner",
        "Make another participant Owner before removing or demoting the last one",
    )


class ParticipantService:
    def __init__(self, store: Store, hub: LocalHub) -> None:
        self.store = store
        self.hub = hub

    async def list(self, principal: Principal, conversation_id: str) -> list[ParticipantRecord]:
        record, _ = await access.load(self.store, principal, conversation_id)
        return await self.store.list_participants(record.id)

    async def share(
        self,
        principal: Principal,
        conversation_id: str,
        user_id: str,
        role: str,
        *,
        only_existing: bool = False,
    ) -> ParticipantRecord:
        record, _ = await access.load(self.store, principal, conversation_id, access.MANAGE)
        sharer = principal.user_id  # None for an API key: no user did it
        try:
            result = await self.store.put_participant(
                principal.tenant_id,
                record.id,
                user_id,
                role,
                sharer,
                utcnow_iso(),
                only_existing=only_existing,
            )
        except LastOwner:
            raise _last_owner() from None
        if result is None:
            if only_existing:
                raise NotFound(
                    "Participant not found",
                    f"{user_id[:100]} does not take part in this conversation",
                )
            raise conversation_not_found(conversation_id)
        participant, event = result
        if event is not None:  # None: the user had that role already
            await self.hub.publish(event)
        return participant

    async def remove(
        self, principal: Principal, conversation_id: str, user_id: str
    ) -> ParticipantRecord:
        # Anyone may leave; removing someone else takes an Owner.
        leaving = not principal.is_api_key and user_id == principal.user_id
        needed = access.VIEW if leaving else access.MANAGE
        record, _ = await access.load(self.store, principal, conversation_id, needed)
        try:
            result = await self.store.remove_participant(
                principal.tenant_id, record.id, user_id, utcnow_iso()
            )
        except LastOwner:
            raise _last_owner() from None
        if result is None:
            raise NotFound(
                "Participant not found", f"{user_id[:100]} does not take part in this conversation"
            )
        participant, event = result
        await self.hub.publish(event)
        return participant
