"""The storage protocol: what the service needs from a database, and nothing more.

Records are plain structs; timestamps are fixed-width ISO 8601 UTC strings.
Every write that changes a conversation's state also appends its event to the
conversation's log in the same transaction, with the next gap-free `sequence`.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import msgspec

SortField = Literal["createdAt", "updatedAt", "title"]


class ConversationRecord(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    user_id: str
    title: str | None
    deployment_id: str
    data_source_files: dict[str, list[str]]
    is_bookmarked: bool
    last_execution_status: str | None
    last_execution_id: str | None
    message_count: int
    last_sequence: int
    created_at: str
    updated_at: str


class EventRecord(msgspec.Struct, kw_only=True):
    conversation_id: str
    sequence: int | None
    """None for ephemeral events (typing, presence) that are never stored."""
    type: str
    created_at: str
    data: dict[str, Any]


class ApiKeyRecord(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    name: str | None
    prefix: str
    created_at: str
    revoked_at: str | None


class FeedQuery(msgspec.Struct, kw_only=True):
    tenant_id: str
    user_id: str | None
    page_number: int
    page_size: int
    sort_by: SortField = "updatedAt"
    descending: bool = True
    title_filter: str | None = None


class FeedPage(msgspec.Struct, kw_only=True):
    items: list[ConversationRecord]
    total_count: int


def conversation_snapshot(record: ConversationRecord) -> dict[str, Any]:
    """The `data` of a `conversation.updated` event: the conversation's public fields."""
    return {
        "conversationId": record.id,
        "userId": record.user_id,
        "title": record.title,
        "deploymentId": record.deployment_id,
        "dataSourceFiles": record.data_source_files,
        "isBookmarked": record.is_bookmarked,
        "lastExecutionStatus": record.last_execution_status,
        "lastExecutionId": record.last_execution_id,
        "createdAt": record.created_at,
        "updatedAt": record.updated_at,
    }


class Store(Protocol):
    """A database behind the service. Implementations: `SqliteStore`."""

    async def start(self) -> None:
        """Open connections and apply pending migrations."""

    async def close(self) -> None: ...

    async def schema_version(self) -> int: ...

    async def server_secret(self, name: str, generate: bytes) -> bytes:
        """The secret stored under `name`, storing `generate` first if there is none."""

    # API keys
    async def create_api_key(self, record: ApiKeyRecord, key_hash: str) -> None: ...

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash, revoked or not."""

    async def list_api_keys(self, tenant_id: str | None) -> list[ApiKeyRecord]: ...

    async def revoke_api_key(self, key_id: str, revoked_at: str) -> bool: ...

    # Conversations
    async def create_conversation(self, record: ConversationRecord) -> None: ...

    async def get_conversation(
        self, tenant_id: str, conversation_id: str
    ) -> ConversationRecord | None: ...

    async def update_conversation(
        self, tenant_id: str, conversation_id: str, changes: dict[str, Any], updated_at: str
    ) -> tuple[ConversationRecord, EventRecord] | None:
        """Apply `changes` (record field names), append `conversation.updated`."""

    async def delete_conversation(
        self, tenant_id: str, conversation_id: str, deleted_at: str
    ) -> EventRecord | None:
        """Delete the conversation and all that belongs to it; the event is not stored."""

    async def feed(self, query: FeedQuery) -> FeedPage: ...

    async def events_after(
        self, conversation_id: str, after: int, limit: int
    ) -> list[EventRecord]: ...
