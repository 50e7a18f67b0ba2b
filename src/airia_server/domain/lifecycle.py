"""Data lifecycle: retention per tenant, and erasing a user's conversations.

Both delete through the store's ordinary conversation delete, so messages,
participants, events, identities and attachments go in the same transaction,
sockets hear `conversation.deleted`, and the blob sweep removes the bytes.
Many instances may run retention at once: a delete of a conversation another
instance already deleted is simply a no-op.
"""

from __future__ import annotations

import logging

import msgspec

from airia_server.realtime.hub import LocalHub
from airia_server.storage.base import LastOwner, Store
from airia_server.timeutil import format_us, now_us, utcnow_iso

log = logging.getLogger("airia_server.lifecycle")
_BATCH = 200
_DAY_US = 86_400 * 1_000_000
_EARLIEST_STAMP_US = -62_135_596_800 * 1_000_000
"""0001-01-01T00:00:00Z: no stored time is older. A cut-off before it would be written
with a minus sign, which a database's collation may sort after every year (ICU's
and glibc's language collations skip punctuation), so that everything looked stale."""


class ErasureReport(msgspec.Struct):
    tenant_id: str
    user_id: str
    conversations_deleted: int
    messages_deleted: int
    attachments_deleted: int
    participations_removed: int


async def _delete(store: Store, hub: LocalHub, tenant_id: str, conversation_id: str) -> bool:
    deleted = await store.delete_conversation(tenant_id, conversation_id, utcnow_iso())
    if deleted is None:
        return False
    await hub.publish(deleted[0])
    return True


async def apply_retention(store: Store, hub: LocalHub, default_days: int) -> int:
    """Delete conversations untouched longer than their tenant keeps them; how many."""
    policies = await store.retention_policies()
    tenants = set(await store.tenants()) | set(policies)
    deleted = 0
    for tenant_id in sorted(tenants):
        days = policies.get(tenant_id, default_days) if tenant_id in policies else default_days
        if not days:
            continue
        cutoff_us = now_us() - days * _DAY_US
        if cutoff_us < _EARLIEST_STAMP_US:
            continue  # further back than any time can be: nothing is that old
        cutoff = format_us(cutoff_us)
        while ids := await store.stale_conversations(tenant_id, cutoff, _BATCH):
            for conversation_id in ids:
                deleted += await _delete(store, hub, tenant_id, conversation_id)
    if deleted:
        log.info("retention deleted %d conversations", deleted)
    return deleted


async def erase_user(store: Store, hub: LocalHub, tenant_id: str, user_id: str) -> ErasureReport:
    """Delete every conversation the user alone owns, and remove them from the others.

    Owning is the role, not having created it: a conversation the user created and
    handed to another Owner stays theirs, and one handed to the user is deleted with
    them unless another Owner remains. They are removed from the others as an Owner
    removes a participant, with a stored `participant.removed`, so their open
    sockets close however the instances are connected."""
    conversations = messages = attachments = removed = 0

    async def delete(conversation_id: str) -> None:
        nonlocal conversations, messages, attachments
        record = await store.get_conversation(tenant_id, conversation_id)
        files = await store.list_attachments(tenant_id, conversation_id)
        if await _delete(store, hub, tenant_id, conversation_id):
            conversations += 1
            messages += record.message_count if record else 0
            attachments += len(files)

    while ids := await store.owned_conversations(tenant_id, user_id, _BATCH):
        for conversation_id in ids:
            await delete(conversation_id)
    seen: set[str] = set()  # one try each: a removal that fails is left to forget_user

    async def not_tried() -> list[str]:
        found = await store.participations(tenant_id, user_id, _BATCH)
        return [c for c in found if c not in seen]

    while ids := await not_tried():
        for conversation_id in ids:
            seen.add(conversation_id)
            try:
                result = await store.remove_participant(
                    tenant_id, conversation_id, user_id, utcnow_iso()
                )
            except LastOwner:  # the other Owners left meanwhile: it is the user's alone
                await delete(conversation_id)
                continue
            if result is not None:
                removed += 1
                await hub.publish(result[1])
    removed += await store.forget_user(tenant_id, user_id)  # read positions, and any left
    return ErasureReport(
        tenant_id=tenant_id,
        user_id=user_id,
        conversations_deleted=conversations,
        messages_deleted=messages,
        attachments_deleted=attachments,
        participations_removed=removed,
    )
