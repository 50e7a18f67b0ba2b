"""SQLite: messages, read positions and participants (mixed into `SqliteStore`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

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
    WIRE_MESSAGE_JSON,
    message_row,
    messages_json,
    participant_row,
)

_encode = msgspec.json.encode


def _json_or_none(value: list[str] | None) -> str | None:
    return _encode(value).decode() if value is not None else None


def _bump(
    conn: sqlite3.Connection, tenant_id: str, conversation_id: str, now: str, messages: int = 0
) -> tuple[int, int, int, str, str] | None:
    """Take the conversation's next event sequence (and message position when
    `messages` is 1). Writes run in the writer's BEGIN IMMEDIATE transaction,
    which holds the database's write lock (against other processes on the file
    too), so reading the counters and then writing them back cannot interleave
    with another writer (one SELECT and an UPDATE by rowid cost less than one
    UPDATE ... RETURNING).

    Returns (sequence, message position, message count, created_at, user_id), or
    None when the tenant has no such conversation."""
    row = conn.execute(
        "SELECT rowid, last_sequence, message_seq, message_count, created_at, user_id "
        "FROM conversations WHERE id = ? AND tenant_id = ?",
        (conversation_id, tenant_id),
    ).fetchone()
    if row is None:
        return None
    rowid, sequence, position, count, created_at, user_id = row
    sequence += 1
    position += max(messages, 0)
    count += messages
    conn.execute(
        "UPDATE conversations SET last_sequence = ?, updated_at = ?, message_seq = ?, "
        "message_count = ? WHERE rowid = ?",
        (sequence, now, position, count, rowid),
    )
    touch_participants(conn, conversation_id, now)
    return sequence, position, count, created_at, user_id


def touch_participants(conn: sqlite3.Connection, conversation_id: str, updated_at: str) -> None:
    """Keep the feed's copy of the conversation's `updated_at` current."""
    conn.execute(
        "UPDATE conversation_participants SET conv_updated_at = ? WHERE conversation_id = ?",
        (updated_at, conversation_id),
    )


def append_event(conn: sqlite3.Connection, event: EventRecord) -> None:
    conn.execute(
        "INSERT INTO conversation_events (conversation_id, sequence, type, data, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (
            event.conversation_id,
            event.sequence,
            event.type,
            _encode(event.data).decode(),
            event.created_at,
        ),
    )


FORGET_CONTENTS_SQL = (
    "json_set(data, '$.message', NULL, '$.images', NULL, '$.imageAttachmentIds', NULL)"
)
"""A `message.created` event's data without the message's content (SQL NULL is
JSON null in `json_set`)."""


def forget_contents(
    conn: sqlite3.Connection, conversation_id: str, message_id: str, position: int
) -> None:
    """Truncation deletes messages, and their text, images and attachment references
    leave the event log too: the `message.created` events of that message and every
    later one keep their ids, authors and times (a replay stays gap-free, and the
    `messages.truncated` after them says what went) but no longer their content.

    A message's event has a sequence no lower than its position (each message took
    one of each), and messages are numbered in the order their events were, so the
    events from that message's on are exactly those of the messages deleted."""
    start = conn.execute(
        "SELECT sequence FROM conversation_events WHERE conversation_id = ? "
        "AND sequence >= ? AND type = 'message.created' AND json_extract(data, '$.id') = ?",
        (conversation_id, position, message_id),
    ).fetchone()
    if start is not None:
        conn.execute(
            f"UPDATE conversation_events SET data = {FORGET_CONTENTS_SQL} "
            "WHERE conversation_id = ? AND sequence >= ? AND type = 'message.created'",
            (conversation_id, start[0]),
        )


# The newest first, each with its size (`MESSAGE_SIZE`) last, for
# `recent_messages_json` to keep those that fit. (A window summing the sizes in SQL,
# as PostgreSQL's query does, took SQLite three times as long for fifty messages.)
_RECENT_MESSAGES_JSON = (
    f"SELECT {WIRE_MESSAGE_JSON}, {MESSAGE_SIZE} FROM messages WHERE conversation_id = ? "
    "ORDER BY position DESC LIMIT ?"
)
_RECENT_MESSAGES = (
    f"SELECT {WIRE_MESSAGE_COLUMNS}, {MESSAGE_SIZE} FROM messages WHERE conversation_id = ? "
    "ORDER BY position DESC LIMIT ?"
)


class MessagesMixin:
    # `_read()` and `_write(op)` come from SqliteStore.

    async def add_message(
        self, tenant_id: str, record: MessageRecord, *, author_from_conversation: bool = False
    ) -> tuple[MessageRecord, EventRecord] | None:
        def op(conn: sqlite3.Connection) -> tuple[MessageRecord, EventRecord] | None:
            bumped = _bump(conn, tenant_id, record.conversation_id, record.created_at, 1)
            if bumped is None:
                return None
            sequence, position, _, _, conversation_user = bumped
            author = record.user_id
            if author_from_conversation and author is None:
                author = conversation_user
            stored = msgspec.structs.replace(record, position=position, user_id=author)
            conn.execute(
                f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    stored.id,
                    stored.conversation_id,
                    position,
                    stored.user_id,
                    stored.role,
                    stored.message,
                    _json_or_none(stored.images),
                    _json_or_none(stored.image_attachment_ids),
                    stored.created_at,
                    stored.updated_at,
                ),
            )
            event = EventRecord(
                conversation_id=stored.conversation_id,
                sequence=sequence,
                type="message.created",
                created_at=stored.created_at,
                data=message_snapshot(stored),
            )
            append_event(conn, event)
            return stored, event

        return await self._write(op)

    async def list_messages(
        self, conversation_id: str, *, cursor: int | None, limit: int, descending: bool
    ) -> list[MessageRecord]:
        if descending:
            bound, order = "position < ?", "DESC"
            cursor = cursor if cursor is not None else 2**62
        else:
            bound, order = "position > ?", "ASC"
            cursor = cursor if cursor is not None else 0
        rows = (
            self._read()
            .execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND {bound} "
                f"ORDER BY position {order} LIMIT ?",
                (conversation_id, cursor, limit),
            )
            .fetchall()
        )
        return [message_row(row) for row in rows]

    async def recent_messages_json(
        self, conversation_id: str, limit: int, max_size: int = 2**62
    ) -> bytes:
        reader = self._read()
        params = (conversation_id, limit)
        try:
            # SQLite builds each message's JSON: one string per row for Python to take
            # instead of nine values (fifty messages: about 95 us against 110-160 us).
            kept = _newest_within(reader.execute(_RECENT_MESSAGES_JSON, params), max_size)
        except sqlite3.OperationalError:
            # An SQLite without its JSON functions (or a stored list it cannot parse):
            # the rows are encoded here instead.
            rows = reader.execute(_RECENT_MESSAGES, params)
            return messages_json(_newest_within(((r[:-1], r[-1]) for r in rows), max_size))
        kept.reverse()
        return ("[" + ",".join(kept) + "]").encode()

    async def find_message(self, conversation_id: str, message_id: str) -> MessageRecord | None:
        row = (
            self._read()
            .execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ? AND conversation_id = ?",
                (message_id, conversation_id),
            )
            .fetchone()
        )
        return message_row(row) if row else None

    async def truncate_messages(
        self, tenant_id: str, conversation_id: str, message_id: str, now: str
    ) -> TruncateResult | None:
        def op(conn: sqlite3.Connection) -> TruncateResult | None:
            found = conn.execute(
                "SELECT position FROM messages WHERE id = ? AND conversation_id = ?",
                (message_id, conversation_id),
            ).fetchone()
            if found is None:
                return None
            # Unfinished keys that named a message going now: done, not to be redone.
            conn.execute(
                "UPDATE idempotency_keys SET status = ?, response = ? WHERE tenant_id = ? "
                "AND status IS NULL AND EXISTS (SELECT 1 FROM messages m WHERE "
                "m.id = idempotency_keys.resource_id AND m.conversation_id = ? "
                "AND m.position >= ?)",
                (GONE_STATUS, GONE_RESPONSE, tenant_id, conversation_id, found[0]),
            )
            deleted = conn.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND position >= ?",
                (conversation_id, found[0]),
            ).rowcount
            bumped = _bump(conn, tenant_id, conversation_id, now, -deleted)
            if bumped is None:
                return None
            forget_contents(conn, conversation_id, message_id, found[0])
            sequence, _, remaining, _, _ = bumped
            data = {
                "conversationId": conversation_id,
                "fromMessageId": message_id,
                "deletedCount": deleted,
                "remainingCount": remaining,
            }
            event = EventRecord(
                conversation_id=conversation_id,
                sequence=sequence,
                type="messages.truncated",
                created_at=now,
                data=data,
            )
            append_event(conn, event)
            return TruncateResult(deleted_count=deleted, remaining_count=remaining, event=event)

        return await self._write(op)

    async def mark_read(self, conversation_id: str, user_id: str, now: str) -> ReadPosition:
        def op(conn: sqlite3.Connection) -> ReadPosition:
            last = conn.execute(
                "SELECT position, id FROM messages WHERE conversation_id = ? "
                "ORDER BY position DESC LIMIT 1",
                (conversation_id,),
            ).fetchone()
            position, message_id = last if last else (0, None)
            conn.execute(
                "INSERT INTO conversation_reads (conversation_id, user_id, position, read_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (conversation_id, user_id) DO UPDATE SET "
                "position = max(position, excluded.position), read_at = excluded.read_at",
                (conversation_id, user_id, position, now),
            )
            return ReadPosition(position=position, last_read_message_id=message_id, read_at=now)

        return await self._write(op)

    # participants

    async def list_participants(self, conversation_id: str) -> list[ParticipantRecord]:
        rows = (
            self._read()
            .execute(
                f"SELECT {PARTICIPANT_COLUMNS} FROM conversation_participants "
                "WHERE conversation_id = ? ORDER BY shared_at, user_id",
                (conversation_id,),
            )
            .fetchall()
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
        def op(conn: sqlite3.Connection) -> tuple[ParticipantRecord, EventRecord | None] | None:
            current = conn.execute(
                f"SELECT {PARTICIPANT_COLUMNS} FROM conversation_participants "
                "WHERE conversation_id = ? AND user_id = ? AND tenant_id = ?",
                (conversation_id, user_id, tenant_id),
            ).fetchone()
            if current is None and only_existing:
                return None
            if current is not None and current[4] == role:
                return participant_row(current), None  # nothing to change, nor to tell
            if current is not None and current[4] == "Owner" and role != "Owner":
                _require_another_owner(conn, conversation_id, user_id)
            bumped = _bump(conn, tenant_id, conversation_id, now)
            if bumped is None:
                return None
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
                conn.execute(
                    f"INSERT INTO conversation_participants ({PARTICIPANT_COLUMNS}, "
                    "conv_updated_at, conv_created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.id,
                        conversation_id,
                        tenant_id,
                        user_id,
                        role,
                        now,
                        shared_by,
                        now,
                        bumped[3],
                    ),
                )

                kind = "participant.added"
            else:
                record = msgspec.structs.replace(participant_row(current), role=role)
                conn.execute(
                    "UPDATE conversation_participants SET role = ? "
                    "WHERE conversation_id = ? AND user_id = ?",
                    (role, conversation_id, user_id),
                )
                kind = "participant.updated"
            event = EventRecord(
                conversation_id=conversation_id,
                sequence=bumped[0],
                type=kind,
                created_at=now,
                data=participant_snapshot(record),
            )
            append_event(conn, event)
            return record, event

        return await self._write(op)

    async def remove_participant(
        self, tenant_id: str, conversation_id: str, user_id: str, now: str
    ) -> tuple[ParticipantRecord, EventRecord] | None:
        def op(conn: sqlite3.Connection) -> tuple[ParticipantRecord, EventRecord] | None:
            current = conn.execute(
                f"SELECT {PARTICIPANT_COLUMNS} FROM conversation_participants "
                "WHERE conversation_id = ? AND user_id = ? AND tenant_id = ?",
                (conversation_id, user_id, tenant_id),
            ).fetchone()
            if current is None:
                return None
            if current[4] == "Owner":
                _require_another_owner(conn, conversation_id, user_id)
            bumped = _bump(conn, tenant_id, conversation_id, now)
            if bumped is None:
                return None
            conn.execute(
                "DELETE FROM conversation_participants WHERE conversation_id = ? AND user_id = ?",
                (conversation_id, user_id),
            )
            record = participant_row(current)
            event = EventRecord(
                conversation_id=conversation_id,
                sequence=bumped[0],
                type="participant.removed",
                created_at=now,
                data=participant_snapshot(record),
            )
            append_event(conn, event)
            return record, event

        return await self._write(op)


def _require_another_owner(conn: sqlite3.Connection, conversation_id: str, user_id: str) -> None:
    others = conn.execute(
        "SELECT count(*) FROM conversation_participants "
        "WHERE conversation_id = ? AND role = 'Owner' AND user_id != ?",
        (conversation_id, user_id),
    ).fetchone()[0]
    if not others:
        raise LastOwner(conversation_id)


def _newest_within(rows: Iterable[tuple[Any, int]], max_size: int) -> list[Any]:
    """What the rows (newest first, each with its MESSAGE_SIZE) hold, while their sizes
    add up to `max_size`, and at least the first. Read one at a time, so SQLite builds
    no JSON for the rows past the size."""
    kept: list[Any] = []
    total = 0
    for item, size in rows:
        total += size
        if total > max_size and kept:
            break
        kept.append(item)
    return kept
