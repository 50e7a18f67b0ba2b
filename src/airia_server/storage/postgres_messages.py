"""PostgreSQL: messages, read positions and participants (mixed into `PostgresStore`)."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from airia_server.ids import new_id
from airia_server.storage.base import (
    GONE_RESPONSE,
    GONE_STATUS,
    EventRecord,
    LastOwner,
    MessageRecord,
    ParticipantRecord,
    ReadPosition,
    TruncateResult,
    message_snapshot,
    participant_snapshot,
)
from airia_server.storage.rows import (
    MESSAGE_COLUMNS,
    MESSAGE_SIZE,
    PARTICIPANT_COLUMNS,
    WIRE_MESSAGE_COLUMNS,
    message_row,
    messages_json,
    participant_row,
)

_encode = msgspec.json.encode


def as_text(value: Any) -> str:
    return _encode(value).decode()


def _list_or_none(value: list[str] | None) -> str | None:
    return as_text(value) if value is not None else None


RECENT_MESSAGES = (
    # The newest $2 by the index, then those of them whose sizes, newest first, add up
    # to $3, and at least the newest: the window sums no more than $2 rows.
    f"SELECT {WIRE_MESSAGE_COLUMNS} FROM (SELECT *, sum(size) OVER (ORDER BY position DESC) "
    f"- size AS earlier FROM (SELECT *, {MESSAGE_SIZE} AS size FROM messages "
    "WHERE conversation_id = $1 ORDER BY position DESC LIMIT $2) newest) counted "
    "WHERE earlier = 0 OR earlier + size <= $3 ORDER BY position DESC"
)
"""The messages a conversation's GET carries (`Store.recent_messages_json`)."""

_APPEND_EVENT = (
    "INSERT INTO conversation_events (conversation_id, sequence, type, data, created_at) "
    "VALUES ($1, $2, $3, $4, $5)"
)


# A message and its event, one statement: take the next sequence and position (row
# lock), store the message and its event, keep the feed's copies of updated_at. The
# event's data does not depend on either number. Parameters: created_at,
# conversation_id, tenant_id, then the message's id, user_id, role, message, images,
# image_attachment_ids, then the event's data; it returns (sequence, position).
ADD_MESSAGE = (
    "WITH b AS (UPDATE conversations SET last_sequence = last_sequence + 1, "
    "message_seq = message_seq + 1, message_count = message_count + 1, updated_at = $1 "
    "WHERE id = $2 AND tenant_id = $3 RETURNING last_sequence, message_seq), "
    f"m AS (INSERT INTO messages ({MESSAGE_COLUMNS}) SELECT $4, $2, b.message_seq, $5, "
    "$6, $7, $8, $9, $1, $1 FROM b), "
    "e AS (INSERT INTO conversation_events (conversation_id, sequence, type, data, "
    "created_at) SELECT $2, b.last_sequence, 'message.created', $10, $1 FROM b), "
    "p AS (UPDATE conversation_participants SET conv_updated_at = $1 "
    "WHERE conversation_id = $2 AND EXISTS (SELECT 1 FROM b)) "
    "SELECT last_sequence, message_seq FROM b"
)
# The same for a batch of messages (`BatchedRows`), each parameter an array with one
# element per message. A conversation with n messages in the batch is updated once,
# by n, and its messages take its next n numbers in the batch's order. Conversations
# are locked in id order, so that batches of several instances never deadlock.
ADD_MESSAGES = (
    "WITH k AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
    "$5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[]) "
    "WITH ORDINALITY AS k(created_at, conversation_id, tenant_id, id, user_id, role, "
    "message, images, image_attachment_ids, data, i)), "
    "r AS (SELECT k.*, row_number() OVER (PARTITION BY conversation_id, tenant_id "
    "ORDER BY i) AS rank FROM k), "
    "n AS (SELECT conversation_id, tenant_id, count(*) AS n, max(created_at) AS now "
    "FROM k GROUP BY conversation_id, tenant_id), "
    "locked AS MATERIALIZED (SELECT c.id, c.tenant_id FROM conversations c "
    "JOIN n ON c.id = n.conversation_id AND c.tenant_id = n.tenant_id "
    "ORDER BY c.id FOR UPDATE OF c), "
    "b AS (UPDATE conversations c SET last_sequence = c.last_sequence + n.n, "
    "message_seq = c.message_seq + n.n, message_count = c.message_count + n.n, "
    "updated_at = n.now FROM n JOIN locked l ON l.id = n.conversation_id "
    "AND l.tenant_id = n.tenant_id WHERE c.id = l.id "
    "RETURNING c.id, c.tenant_id, c.last_sequence - n.n AS sequence_before, "
    "c.message_seq - n.n AS position_before, n.now), "
    "mine AS (SELECT r.*, b.sequence_before + r.rank AS sequence, "
    "b.position_before + r.rank AS position FROM r "
    "JOIN b ON b.id = r.conversation_id AND b.tenant_id = r.tenant_id), "
    f"m AS (INSERT INTO messages ({MESSAGE_COLUMNS}) SELECT id, conversation_id, position, "
    "user_id, role, message, images, image_attachment_ids, created_at, created_at "
    "FROM mine ORDER BY i), "
    "e AS (INSERT INTO conversation_events (conversation_id, sequence, type, data, "
    "created_at) SELECT conversation_id, sequence, 'message.created', data, created_at "
    "FROM mine ORDER BY i), "
    "p AS (UPDATE conversation_participants p SET conv_updated_at = b.now FROM b "
    "WHERE p.conversation_id = b.id) "
    "SELECT i, sequence, position FROM mine"
)


async def append(conn: asyncpg.Connection, event: EventRecord) -> None:
    await conn.execute(
        _APPEND_EVENT,
        event.conversation_id,
        event.sequence,
        event.type,
        as_text(event.data),
        event.created_at,
    )


async def _bump(conn, tenant_id: str, conversation_id: str, now: str, messages: int = 0):
    row = await conn.fetchrow(
        "UPDATE conversations SET last_sequence = last_sequence + 1, updated_at = $1, "
        "message_seq = message_seq + greatest($2::bigint, 0), message_count = message_count + $2 "
        "WHERE id = $3 AND tenant_id = $4 "
        "RETURNING last_sequence, message_seq, message_count, created_at",
        now,
        messages,
        conversation_id,
        tenant_id,
    )
    if row is not None:
        await touch_participants(conn, conversation_id, now)
    return row


async def touch_participants(conn, conversation_id: str, updated_at: str) -> None:
    """Keep the feed's copy of the conversation's `updated_at` current."""
    await conn.execute(
        "UPDATE conversation_participants SET conv_updated_at = $1 WHERE conversation_id = $2",
        updated_at,
        conversation_id,
    )


FORGET_CONTENTS_SQL = (
    '(data::jsonb || \'{"message": null, "images": null, '
    '"imageAttachmentIds": null}\'::jsonb)::text'
)
"""A `message.created` event's data without the message's content."""


async def forget_contents(
    conn: asyncpg.Connection, conversation_id: str, message_id: str, position: int
) -> None:
    """The rule of `sqlite_messages.forget_contents`, in PostgreSQL's SQL: the deleted
    messages' events keep ids, authors and times, not content. (Positions and
    sequences are both taken under the conversation's row lock, so they keep one
    order here too.)"""
    start = await conn.fetchval(
        "SELECT sequence FROM conversation_events WHERE conversation_id = $1 "
        "AND sequence >= $2 AND type = 'message.created' AND data::json ->> 'id' = $3",
        conversation_id,
        position,
        message_id,
    )
    if start is not None:
        await conn.execute(
            f"UPDATE conversation_events SET data = {FORGET_CONTENTS_SQL} "
            "WHERE conversation_id = $1 AND sequence >= $2 AND type = 'message.created'",
            conversation_id,
            start,
        )


class MessagesMixin:
    # `pool`, `get_conversation` and `_add_messages` (ADD_MESSAGES, batched) come from
    # PostgresStore.

    # messages

    async def add_message(
        self, tenant_id: str, record: MessageRecord, *, author_from_conversation: bool = False
    ) -> tuple[MessageRecord, EventRecord] | None:
        if author_from_conversation and record.user_id is None:
            # The event's data carries the author, so it is read first (the user a
            # conversation is for never changes), through the batched read by id.
            conversation = await self.get_conversation(tenant_id, record.conversation_id)
            if conversation is None:
                return None
            record = msgspec.structs.replace(record, user_id=conversation.user_id)
        # Concurrent appends share one statement (ADD_MESSAGES) and one commit.
        row = await self._add_messages.get(
            record.created_at,
            record.conversation_id,
            tenant_id,
            record.id,
            record.user_id,
            record.role,
            record.message,
            _list_or_none(record.images),
            _list_or_none(record.image_attachment_ids),
            as_text(message_snapshot(record)),
        )
        if row is None:
            return None
        stored = msgspec.structs.replace(record, position=row[1])
        event = EventRecord(
            conversation_id=record.conversation_id,
            sequence=row[0],
            type="message.created",
            created_at=record.created_at,
            data=message_snapshot(stored),
        )
        return stored, event

    async def list_messages(
        self, conversation_id: str, *, cursor: int | None, limit: int, descending: bool
    ) -> list[MessageRecord]:
        if descending:
            bound, order, start = "position < $2", "DESC", 2**62 if cursor is None else cursor
        else:
            bound, order, start = "position > $2", "ASC", 0 if cursor is None else cursor
        rows = await self.pool.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND {bound} "
            f"ORDER BY position {order} LIMIT $3",
            conversation_id,
            start,
            limit,
        )
        return [message_row(row) for row in rows]

    async def recent_messages_json(
        self, conversation_id: str, limit: int, max_size: int = 2**62
    ) -> bytes:
        rows = await self.pool.fetch(RECENT_MESSAGES, conversation_id, limit, max_size)
        return messages_json(rows)

    async def find_message(self, conversation_id: str, message_id: str) -> MessageRecord | None:
        row = await self.pool.fetchrow(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1 AND conversation_id = $2",
            message_id,
            conversation_id,
        )
        return message_row(row) if row else None

    async def truncate_messages(
        self, tenant_id: str, conversation_id: str, message_id: str, now: str
    ) -> TruncateResult | None:
        try:
            return await self._truncate(tenant_id, conversation_id, message_id, now)
        except _Rollback:
            return None

    async def _truncate(
        self, tenant_id: str, conversation_id: str, message_id: str, now: str
    ) -> TruncateResult | None:
        async with self.pool.acquire() as conn, conn.transaction():
            # Lock the conversation first, so truncations and appends take turns.
            if await _bump(conn, tenant_id, conversation_id, now) is None:
                return None
            position = await conn.fetchval(
                "SELECT position FROM messages WHERE id = $1 AND conversation_id = $2",
                message_id,
                conversation_id,
            )
            if position is None:
                raise _Rollback
            # Unfinished keys that named a message going now: done, not to be redone.
            await conn.execute(
                "UPDATE idempotency_keys i SET status = $1, response = $2 WHERE "
                "i.tenant_id = $3 AND i.status IS NULL AND EXISTS (SELECT 1 FROM messages m "
                "WHERE m.id = i.resource_id AND m.conversation_id = $4 AND m.position >= $5)",
                GONE_STATUS,
                GONE_RESPONSE,
                tenant_id,
                conversation_id,
                position,
            )
            status = await conn.execute(
                "DELETE FROM messages WHERE conversation_id = $1 AND position >= $2",
                conversation_id,
                position,
            )
            deleted = int(status.split()[-1])
            await forget_contents(conn, conversation_id, message_id, position)
            row = await conn.fetchrow(
                "UPDATE conversations SET message_count = message_count - $1 WHERE id = $2 "
                "RETURNING last_sequence, message_count",
                deleted,
                conversation_id,
            )
            event = EventRecord(
                conversation_id=conversation_id,
                sequence=row[0],
                type="messages.truncated",
                created_at=now,
                data={
                    "conversationId": conversation_id,
                    "fromMessageId": message_id,
                    "deletedCount": deleted,
                    "remainingCount": row[1],
                },
            )
            await append(conn, event)
        return TruncateResult(deleted_count=deleted, remaining_count=row[1], event=event)

    async def mark_read(self, conversation_id: str, user_id: str, now: str) -> ReadPosition:
        row = await self.pool.fetchrow(
            "WITH last AS (SELECT position, id FROM messages WHERE conversation_id = $1 "
            "ORDER BY position DESC LIMIT 1), "
            # Held while the position goes in, as for an identity (see add_identity).
            "c AS (SELECT 1 FROM conversations WHERE id = $1 FOR KEY SHARE), "
            "up AS (INSERT INTO conversation_reads (conversation_id, user_id, position, read_at) "
            "SELECT $1, $2, coalesce((SELECT position FROM last), 0), $3 FROM c "
            "ON CONFLICT (conversation_id, user_id) DO UPDATE SET position = "
            "greatest(conversation_reads.position, excluded.position), read_at = excluded.read_at)"
            " SELECT (SELECT position FROM last), (SELECT id FROM last)",
            conversation_id,
            user_id,
            now,
        )
        return ReadPosition(position=row[0] or 0, last_read_message_id=row[1], read_at=now)

    # participants

    async def list_participants(self, conversation_id: str) -> list[ParticipantRecord]:
        rows = await self.pool.fetch(
            f"SELECT {PARTICIPANT_COLUMNS} FROM conversation_participants "
            "WHERE conversation_id = $1 ORDER BY shared_at, user_id",
            conversation_id,
        )
        return [participant_row(row) for row in rows]

    async def put_participant(
        self,
        tenant_id: str,
        conversation_id: str,
        user_id: str,
        role: str,
        shared_by: str | None,
        now: str,
        *,
        only_existing: bool,
    ) -> tuple[ParticipantRecord, EventRecord | None] | None:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                bumped = await _bump(conn, tenant_id, conversation_id, now)
                if bumped is None:
                    return None
                current = await conn.fetchrow(
                    f"SELECT {PARTICIPANT_COLUMNS} FROM conversation_participants "
                    "WHERE conversation_id = $1 AND user_id = $2",
                    conversation_id,
                    user_id,
                )
                if current is None and only_existing:
                    raise _Rollback
                if current is not None and current[4] == role:
                    raise _Unchanged(participant_row(current))
                if current is not None and current[4] == "Owner" and role != "Owner":
                    await _require_another_owner(conn, conversation_id, user_id)
                if current is None:
                    record = ParticipantRecord(
                        id=new_id(),
                        conversation_id=conversation_id,
                        tenant_id=tenant_id,
                        user_id=user_id,
                        role=role,
                        shared_at=now,
                        shared_by_user_id=shared_by,
                    )
                    await conn.execute(
                        f"INSERT INTO conversation_participants ({PARTICIPANT_COLUMNS}, "
                        "conv_updated_at, conv_created_at) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $6, $8)",
                        record.id,
                        conversation_id,
                        tenant_id,
                        user_id,
                        role,
                        now,
                        shared_by,
                        bumped[3],
                    )
                    kind = "participant.added"
                else:
                    record = msgspec.structs.replace(participant_row(current), role=role)
                    await conn.execute(
                        "UPDATE conversation_participants SET role = $1 "
                        "WHERE conversation_id = $2 AND user_id = $3",
                        role,
                        conversation_id,
                        user_id,
                    )
                    kind = "participant.updated"
                event = EventRecord(
                    conversation_id=conversation_id,
                    sequence=bumped[0],
                    type=kind,
                    created_at=now,
                    data=participant_snapshot(record),
                )
                await append(conn, event)
        except _Rollback:
            return None
        except _Unchanged as unchanged:  # the conversation's time and sequence undone
            return unchanged.participant, None
        return record, event

    async def remove_participant(
        self, tenant_id: str, conversation_id: str, user_id: str, now: str
    ) -> tuple[ParticipantRecord, EventRecord] | None:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                bumped = await _bump(conn, tenant_id, conversation_id, now)
                if bumped is None:
                    return None
                current = await conn.fetchrow(
                    f"DELETE FROM conversation_participants WHERE conversation_id = $1 "
                    f"AND user_id = $2 RETURNING {PARTICIPANT_COLUMNS}",
                    conversation_id,
                    user_id,
                )
                if current is None:
                    raise _Rollback
                if current[4] == "Owner":
                    await _require_another_owner(conn, conversation_id, user_id)
                record = participant_row(current)
                event = EventRecord(
                    conversation_id=conversation_id,
                    sequence=bumped[0],
                    type="participant.removed",
                    created_at=now,
                    data=participant_snapshot(record),
                )
                await append(conn, event)
        except _Rollback:
            return None
        return record, event


class _Rollback(Exception):
    """Undo the transaction (and the sequence it took) and answer 'not found'."""


class _Unchanged(Exception):
    """Undo the transaction: the participant has the role asked for already."""

    def __init__(self, participant: ParticipantRecord) -> None:
        self.participant = participant


async def _require_another_owner(conn, conversation_id: str, user_id: str) -> None:
    others = await conn.fetchval(
        "SELECT count(*) FROM conversation_participants "
        "WHERE conversation_id = $1 AND role = 'Owner' AND user_id != $2",
        conversation_id,
        user_id,
    )
    if not others:
        raise LastOwner(conversation_id)
