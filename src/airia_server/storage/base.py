"""The storage protocol: what the service needs from a database, and nothing more.

Records are plain structs; timestamps are fixed-width ISO 8601 UTC strings.
Every write that changes a conversation's state also appends its event to the
conversation's log in the same transaction, with the next gap-free `sequence`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any, Literal, Protocol

import msgspec

from airia_server.metrics import BUCKETS

SortField = Literal["createdAt", "updatedAt", "title"]


class WriterStats:
    """What a backend's group commit has done (for the metrics)."""

    __slots__ = ("batches", "commit_seconds", "durations", "ops")

    def __init__(self) -> None:
        self.batches = 0
        self.ops = 0
        self.commit_seconds = 0.0
        self.durations = [0] * (len(BUCKETS) + 1)
        """Batches per duration bucket (`metrics.BUCKETS`, then one for longer ones)."""

    def record(self, ops: int, seconds: float) -> None:
        """One batch of `ops` writes, `seconds` from the writer taking it up to its commit."""
        self.batches += 1
        self.ops += ops
        self.commit_seconds += seconds
        self.durations[bisect_left(BUCKETS, seconds)] += 1


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


class MessageRecord(msgspec.Struct, kw_only=True):
    id: str
    conversation_id: str
    position: int
    """Order within the conversation; grows by one per message and is never reused."""
    user_id: str | None
    role: str
    message: str | None
    images: list[str] | None
    image_attachment_ids: list[str] | None
    created_at: str
    updated_at: str


class ParticipantRecord(msgspec.Struct, kw_only=True):
    id: str
    conversation_id: str
    tenant_id: str
    user_id: str
    role: str
    shared_at: str
    shared_by_user_id: str | None


class ReadPosition(msgspec.Struct, kw_only=True):
    position: int
    last_read_message_id: str | None
    read_at: str


class EventRecord(msgspec.Struct, kw_only=True):
    conversation_id: str
    sequence: int | None
    """None for ephemeral events (typing, presence) that are never stored."""
    type: str
    created_at: str
    data: dict[str, Any]


class TruncateResult(msgspec.Struct, kw_only=True):
    deleted_count: int
    remaining_count: int
    event: EventRecord


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
    after: tuple[str, str] | None = None
    """Keyset paging (not for `title`): the page starts after this (sort key, id) in
    the sort order, and `page_number` is ignored. However deep, a page costs the same."""


class FeedItem(msgspec.Struct, rename="camel"):
    """One conversation as the feed shows it, in the order and under the names of the
    API's ConversationFeedItem, so a page's rows become structs positionally and are
    encoded as they are (see FEED_ITEM_COLUMNS)."""

    conversation_id: str
    user_id: str
    title: str | None
    message_count: int
    unread_count: int
    """Messages after the feed user's read position (the owner's for a tenant feed)."""
    created_at: str
    updated_at: str
    is_bookmarked: bool
    deployment_id: str


class FeedPage(msgspec.Struct, kw_only=True):
    items: list[FeedItem]
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


def message_snapshot(record: MessageRecord) -> dict[str, Any]:
    """A message's public fields: the `data` of `message.created`."""
    return {
        "id": record.id,
        "conversationId": record.conversation_id,
        "message": record.message,
        "role": record.role,
        "images": record.images,
        "imageAttachmentIds": record.image_attachment_ids,
        "createdAt": record.created_at,
        "updatedAt": record.updated_at,
        "userId": record.user_id,
    }


def participant_snapshot(record: ParticipantRecord) -> dict[str, Any]:
    """A participant's public fields: the `data` of `participant.*` events."""
    return {
        "id": record.id,
        "conversationId": record.conversation_id,
        "userId": record.user_id,
        # No user directory here: the user id is the only name there is.
        "username": record.user_id,
        "role": record.role,
        "sharedAt": record.shared_at,
        "sharedByUserId": record.shared_by_user_id,
        "sharedByUsername": record.shared_by_user_id,
    }


class IdentityRecord(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    conversation_id: str
    external_system: str
    external_channel_id: str
    external_thread_id: str
    created_at: str


class AttachmentRecord(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    conversation_id: str
    sha256: str
    file_name: str
    content_type: str
    size: int
    source: str
    created_at: str


class DuplicateIdentity(Exception):
    """The triple is already mapped in this tenant."""

    def __init__(self, existing: IdentityRecord) -> None:
        super().__init__(existing.conversation_id)
        self.existing = existing


class IdempotencyClaim(msgspec.Struct, kw_only=True):
    state: Literal["new", "replay", "mismatch", "pending"]
    status: int | None = None
    response: bytes | None = None
    resource_id: str | None = None
    """"new" and "pending": the id of the resource the request creates, kept with the key
    from its first claim (None for a key claimed before there were such ids)."""
    claimed_at: str | None = None
    """"pending": the claim's token (its `now`), to finish it for a request that died."""
    taken_over: bool = False
    """"new": the key was claimed before, by a request that never finished (abandoned);
    its resource may exist already."""


GONE_STATUS = 410
GONE_RESPONSE = msgspec.json.encode(
    {
        "type": "about:blank",
        "title": "Gone",
        "status": GONE_STATUS,
        "detail": "This request was done once; what it created has been deleted since, "
        "and it is not done again",
        "message": "Already done, and deleted since",
    }
)
"""What an unfinished Idempotency-Key is finished with when the resource its request
created is deleted (its server died between the write and the finish): a retry is
told the work was done, where it would otherwise do it again."""


class LastOwner(Exception):
    """The change would leave the conversation without an Owner."""


class SchemaNotCurrent(Exception):
    """The database lacks migrations this version has, and the command only reads:
    migrating would write (a standby refuses that, and an export promises to leave its
    source alone), so it stops and says what to run."""

    def __init__(self, applied: int, latest: int) -> None:
        if applied:
            what = f"the database's schema is at version {applied}, older than this version's"
        else:
            what = "the database has no schema yet (none of this server's tables)"
        super().__init__(f"{what} ({latest}): run `airia-server migrate` first")


class Store(Protocol):
    """A database behind the service. Implementations: `SqliteStore`."""

    async def start(self, *, migrate: bool = True) -> None:
        """Open connections and apply pending migrations; with `migrate` False, write
        nothing and raise `SchemaNotCurrent` if any is pending."""

    async def close(self) -> None: ...

    async def migrate(self) -> list[int]:
        """Apply pending migrations (safe with many instances); the versions applied.
        Writes nothing when there are none, so a read-only database starts."""

    async def pending_migrations(self) -> list[int]:
        """The versions not applied yet, found by reads alone."""

    async def schema_version(self) -> int: ...

    async def ping(self) -> None:
        """Raise if the database cannot be reached, or cannot take writes
        (`DatabaseUnavailable`, naming why)."""

    async def server_secret(self, name: str, generate: bytes) -> bytes:
        """The secret stored under `name`, storing `generate` first if there is none."""

    # API keys
    async def create_api_key(self, record: ApiKeyRecord, key_hash: str) -> None: ...

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash, revoked or not."""

    async def list_api_keys(self, tenant_id: str | None) -> list[ApiKeyRecord]: ...

    async def api_key_active(self, key_id: str) -> bool:
        """Whether the key with this id exists and is not revoked."""

    async def revoke_api_key(self, key_id: str, revoked_at: str) -> bool: ...

    # Conversations
    async def create_conversation(self, record: ConversationRecord, owner_id: str) -> None:
        """Store the conversation and its creator as its Owner (participant `owner_id`)."""

    async def get_conversation(
        self, tenant_id: str, conversation_id: str
    ) -> ConversationRecord | None: ...

    async def get_conversation_for(
        self, tenant_id: str, conversation_id: str, user_id: str
    ) -> tuple[ConversationRecord, str | None] | None:
        """The conversation and `user_id`'s role in it (None if not a participant)."""

    async def update_conversation(
        self, tenant_id: str, conversation_id: str, changes: dict[str, Any], updated_at: str
    ) -> tuple[ConversationRecord, EventRecord] | None:
        """Apply `changes` (record field names), append `conversation.updated`."""

    async def delete_conversation(
        self, tenant_id: str, conversation_id: str, deleted_at: str
    ) -> tuple[EventRecord, int] | None:
        """Delete the conversation and all that belongs to it: its event (not stored)
        and how many attachments went with it (their blobs may now be unused)."""

    async def feed(self, query: FeedQuery) -> FeedPage:
        """With `user_id`: the conversations that user takes part in; else the tenant's."""

    # messages

    async def add_message(
        self, tenant_id: str, record: MessageRecord, *, author_from_conversation: bool = False
    ) -> tuple[MessageRecord, EventRecord] | None:
        """Append (the store assigns `position`); None if the tenant has no such
        conversation. With `author_from_conversation` and no `user_id` on the record,
        the message is by the conversation's user (found in the same write, so the
        caller need not read the conversation first)."""

    async def list_messages(
        self, conversation_id: str, *, cursor: int | None, limit: int, descending: bool
    ) -> list[MessageRecord]:
        """A page of messages, strictly after (or before, descending) position `cursor`."""

    async def recent_messages_json(
        self, conversation_id: str, limit: int, max_size: int = 2**62
    ) -> bytes:
        """The newest `limit` messages, oldest first, as the JSON array a conversation's
        GET carries (`ConversationMessage` objects): SQLite builds each message's
        JSON, PostgreSQL's rows are encoded straight from the rows (`messages_json`).
        Only the newest whose text and images (`MESSAGE_SIZE`) add up to `max_size`
        characters, and at least one: a thousand messages of 100,000 characters each
        would make a GET of hundreds of MB.

        The one place the storage layer writes the wire shape: turning fifty rows into
        Python objects only to encode them again was most of the cost of that GET."""

    async def find_message(self, conversation_id: str, message_id: str) -> MessageRecord | None: ...

    async def truncate_messages(
        self, tenant_id: str, conversation_id: str, message_id: str, now: str
    ) -> TruncateResult | None:
        """Delete that message and every later one; None if either is gone."""

    async def mark_read(self, conversation_id: str, user_id: str, now: str) -> ReadPosition: ...

    # participants

    async def list_participants(self, conversation_id: str) -> list[ParticipantRecord]: ...

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
        """Add or change a participant (`participant.added` / `.updated`). None if the
        conversation is gone, or with `only_existing` if the user is no participant.
        A participant who has the role already is left as is: no event (None), and
        the conversation's `updatedAt` stays. Raises LastOwner when it would demote
        the last Owner."""

    async def remove_participant(
        self, tenant_id: str, conversation_id: str, user_id: str, now: str
    ) -> tuple[ParticipantRecord, EventRecord] | None:
        """Raises LastOwner when removing the last Owner."""

    # external identities

    async def list_identities(
        self, tenant_id: str, conversation_id: str
    ) -> list[IdentityRecord]: ...

    async def add_identity(self, record: IdentityRecord) -> IdentityRecord | None:
        """None if the conversation is gone; raises DuplicateIdentity."""

    async def remove_identity(
        self, tenant_id: str, conversation_id: str, identity_id: str
    ) -> bool: ...

    async def find_identity(
        self, tenant_id: str, system: str, channel: str, thread: str
    ) -> IdentityRecord | None: ...

    # attachments

    async def touch_blob(
        self, tenant_id: str, sha256: str, size: int, now: str, hold_until: str
    ) -> None:
        """Record that content exists (or is about to): the sweep leaves it alone
        until `hold_until` at least, however short its grace period."""

    async def add_attachment(self, record: AttachmentRecord) -> AttachmentRecord | None:
        """None if the conversation is gone. The blob's hold ends: it is dated to the
        attachment, so once nothing refers to it the sweep's grace period counts from
        there."""

    async def list_attachments(
        self, tenant_id: str, conversation_id: str
    ) -> list[AttachmentRecord]: ...

    async def get_attachment(self, attachment_id: str) -> AttachmentRecord | None: ...

    async def existing_attachments(self, conversation_id: str, ids: list[str]) -> set[str]:
        """Which of `ids` are attachments of this conversation."""

    # idempotency keys

    async def claim_idempotency_key(
        self,
        tenant_id: str,
        key: str,
        request_hash: str,
        now: str,
        expired_before: str,
        abandoned_before: str,
        resource_id: str | None = None,
    ) -> IdempotencyClaim:
        """Claim `key` for this request (the claim is known by `now`), or say what it
        already holds: the response of the same request (replay), another request
        (mismatch), or one still running. A key expired before `expired_before` is
        claimed anew, with `resource_id` as the id of what its request creates. One
        claimed before `abandoned_before` and never finished (its server died with
        the request) is taken over by the same request, and keeps its resource id;
        by another, it is claimed anew."""

    async def finish_idempotency_key(
        self, tenant_id: str, key: str, claimed_at: str, status: int, response: bytes
    ) -> None:
        """Keep the response of the claim made at `claimed_at` (a claim taken over
        since is not touched, nor one a delete of its resource finished already with
        a 410)."""

    async def idempotency_key_held(self, tenant_id: str, key: str, expired_before: str) -> bool:
        """Whether the key is claimed (finished or not) since `expired_before`."""

    async def release_idempotency_key(self, tenant_id: str, key: str, claimed_at: str) -> None:
        """Forget the claim made at `claimed_at`, whose request failed, so a retry may
        run it again."""

    async def earlier_idempotency_response(
        self, tenant_id: str, spellings: list[tuple[str, str]], expired_before: str
    ) -> tuple[int, bytes] | None:
        """The finished response kept under one of `spellings` (key and request hash, as
        an earlier version took them) since `expired_before`; None if there is none."""

    async def purge_idempotency_keys(self, before: str) -> int: ...

    # data lifecycle

    async def set_retention(self, tenant_id: str, days: int | None) -> None: ...

    async def retention_policies(self) -> dict[str, int | None]:
        """Tenants with an explicit policy: days, or None for "keep for ever"."""

    async def tenants(self) -> list[str]:
        """Every tenant that has conversations."""

    async def stale_conversations(
        self, tenant_id: str, updated_before: str, limit: int
    ) -> list[str]: ...

    async def owned_conversations(self, tenant_id: str, user_id: str, limit: int) -> list[str]:
        """Conversations in which the user is an Owner and no one else is."""

    async def participations(self, tenant_id: str, user_id: str, limit: int) -> list[str]:
        """Conversations the user takes part in, in any role."""

    async def forget_user(self, tenant_id: str, user_id: str) -> int:
        """Remove the user's participation and read positions in others' conversations."""

    async def sweep_blobs(
        self, unused_before: str, forget: Callable[[str, str], None] | None
    ) -> list[tuple[str, str]]:
        """Delete the blobs no attachment references and nobody touched since
        `unused_before`, bytes and all; their (tenant, sha256). The bytes go before the
        rows' deletion commits: an upload of the same content meanwhile waits for it
        (its `touch_blob` needs the row) and stores them again, and a crash half-way
        leaves the rows for the next sweep. `forget(tenant, sha256)` deletes a blob's
        file; with None, the bytes are the database's (`blob_chunks`), deleted with the
        rows in one statement."""

    async def events_after(
        self, conversation_id: str, after: int, limit: int
    ) -> list[EventRecord]: ...
