"""Rows (tuples or asyncpg records, in the column order each backend selects) to records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from airia_server.storage.base import (
    ApiKeyRecord,
    AttachmentRecord,
    ConversationRecord,
    FeedItem,
    IdentityRecord,
    MessageRecord,
    ParticipantRecord,
)

_decode_files = msgspec.json.Decoder(dict[str, list[str]]).decode
_decode_list = msgspec.json.Decoder(list[str] | None).decode

CONVERSATION_COLUMNS = (
    "id, tenant_id, user_id, title, deployment_id, data_source_files, is_bookmarked, "
    "last_execution_status, last_execution_id, message_count, last_sequence, created_at, updated_at"
)
MESSAGE_COLUMNS = (
    "id, conversation_id, position, user_id, role, message, images, image_attachment_ids, "
    "created_at, updated_at"
)
PARTICIPANT_COLUMNS = "id, conversation_id, tenant_id, user_id, role, shared_at, shared_by_user_id"
API_KEY_COLUMNS = "id, tenant_id, name, prefix, created_at, revoked_at"
IDENTITY_COLUMNS = (
    "id, tenant_id, conversation_id, external_system, external_channel_id, external_thread_id, "
    "created_at"
)
ATTACHMENT_COLUMNS = (
    "id, tenant_id, conversation_id, sha256, file_name, content_type, size, source, created_at"
)


def identity_row(row: Any) -> IdentityRecord:
    return IdentityRecord(
        id=row[0],
        tenant_id=row[1],
        conversation_id=row[2],
        external_system=row[3],
        external_channel_id=row[4],
        external_thread_id=row[5],
        created_at=row[6],
    )


def attachment_row(row: Any) -> AttachmentRecord:
    return AttachmentRecord(
        id=row[0],
        tenant_id=row[1],
        conversation_id=row[2],
        sha256=row[3],
        file_name=row[4],
        content_type=row[5],
        size=row[6],
        source=row[7],
        created_at=row[8],
    )


def conversation_row(row: tuple[Any, ...]) -> ConversationRecord:
    return ConversationRecord(
        id=row[0],
        tenant_id=row[1],
        user_id=row[2],
        title=row[3],
        deployment_id=row[4],
        data_source_files=_decode_files(row[5]),
        is_bookmarked=bool(row[6]),
        last_execution_status=row[7],
        last_execution_id=row[8],
        message_count=row[9],
        last_sequence=row[10],
        created_at=row[11],
        updated_at=row[12],
    )


def api_key_row(row: tuple[Any, ...]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row[0],
        tenant_id=row[1],
        name=row[2],
        prefix=row[3],
        created_at=row[4],
        revoked_at=row[5],
    )


def message_row(row: tuple[Any, ...]) -> MessageRecord:
    return MessageRecord(
        id=row[0],
        conversation_id=row[1],
        position=row[2],
        user_id=row[3],
        role=row[4],
        message=row[5],
        images=_decode_list(row[6]) if row[6] else None,
        image_attachment_ids=_decode_list(row[7]) if row[7] else None,
        created_at=row[8],
        updated_at=row[9],
    )


def participant_row(row: tuple[Any, ...]) -> ParticipantRecord:
    return ParticipantRecord(
        id=row[0],
        conversation_id=row[1],
        tenant_id=row[2],
        user_id=row[3],
        role=row[4],
        shared_at=row[5],
        shared_by_user_id=row[6],
    )


def feed_items(rows: Sequence[Sequence[Any]]) -> list[FeedItem]:
    """Rows of the feed's page query (FEED_ITEM_COLUMNS order) as FeedItems."""
    items = [FeedItem(*row) for row in rows]
    for item in items:
        item.is_bookmarked = bool(item.is_bookmarked)  # SQLite stores 0 and 1
    return items


# The JSON of the messages a conversation's GET carries, straight from rows (see
# Store.recent_messages_json), in the shape of the API's ConversationMessage. One
# struct says it all: the columns come in its field order, each row becomes one
# positionally, and for SQLite the same fields make the `json_object` that builds
# each message's JSON in the database (byte for byte the encoder's; a test holds
# them together).
class _WireMessage(msgspec.Struct, rename="camel"):
    id: str
    conversation_id: str
    message: Any
    role: str
    images: Any  # stored as JSON text: passed through as msgspec.Raw
    image_attachment_ids: Any
    created_at: str
    updated_at: str
    user_id: Any


_STORED_AS_JSON = ("images", "image_attachment_ids")

WIRE_MESSAGE_COLUMNS = ", ".join(f.name for f in msgspec.structs.fields(_WireMessage))

WIRE_MESSAGE_JSON = "json_object({})".format(
    ", ".join(
        f"'{f.encode_name}', " + (f"json({f.name})" if f.name in _STORED_AS_JSON else f.name)
        for f in msgspec.structs.fields(_WireMessage)
    )
)


MESSAGE_SIZE = "coalesce(length(message), 0) + coalesce(length(images), 0)"
"""SQL (both backends): what a message's text and images weigh, in characters, for the
byte budget of a conversation's GET."""


_encode_wire = msgspec.json.Encoder().encode


def messages_json(rows_newest_first: Sequence[Sequence[Any]]) -> bytes:
    """Rows of WIRE_MESSAGE_COLUMNS, newest first, as a JSON array oldest first."""
    items = []
    for row in reversed(rows_newest_first):
        item = _WireMessage(*row)
        if row[4] is not None:
            item.images = msgspec.Raw(row[4].encode())
        if row[5] is not None:
            item.image_attachment_ids = msgspec.Raw(row[5].encode())
        items.append(item)
    return _encode_wire(items)
