"""Wire shapes of the HTTP API (camelCase on the wire), decoded and encoded by msgspec."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

MAX_USER_ID = 255
UserId = Annotated[str, Meta(min_length=1, max_length=MAX_USER_ID, description="Opaque user id")]
DeploymentId = Annotated[str, Meta(min_length=1, max_length=255)]
Title = Annotated[str, Meta(max_length=500)]
RequiredTitle = Annotated[str, Meta(min_length=1, max_length=500)]
FileName = Annotated[str, Meta(max_length=1024)]
DataSourceFiles = Annotated[
    dict[Annotated[str, Meta(max_length=255)], Annotated[list[FileName], Meta(max_length=1000)]],
    Meta(max_length=100, description="Data source name to its file names"),
]
ExecutionStatus = Literal["InProgress", "Completed", "Failed", "NotApplicable"]
Timestamp = Annotated[
    str, Meta(description="ISO 8601 UTC", examples=["2026-11-26T06:01:34.123456Z"])
]


class CreateConversationRequest(Struct, rename="camel", kw_only=True):
    user_id: UserId
    title: Title | None = None
    deployment_id: DeploymentId | None = None
    data_source_files: DataSourceFiles | None = None
    is_bookmarked: bool | None = None


class UpdateConversationRequest(Struct, rename="camel", kw_only=True):
    title: RequiredTitle
    data_source_files: DataSourceFiles | None = None
    is_bookmarked: bool | None = None
    last_execution_status: ExecutionStatus | None = None
    last_execution_id: Annotated[str, Meta(max_length=255)] | None = None


MessageRole = Literal["user", "assistant", "system"]
ParticipantRole = Literal["Owner", "Collaborator", "Viewer"]
ImageRef = Annotated[str, Meta(min_length=1, max_length=4096)]
AttachmentId = Annotated[str, Meta(max_length=64)]


class AddMessageRequest(Struct, rename="camel", kw_only=True):
    message: Annotated[str, Meta(max_length=100_000)] | None = None
    role: MessageRole | None = "user"
    """`null` is the default, as an absent field is (so for each such field below)."""
    images: Annotated[list[ImageRef], Meta(max_length=20)] | None = None
    image_attachment_ids: Annotated[list[AttachmentId], Meta(max_length=20)] | None = None
    user_id: UserId | None = None
    """Extension: with an API key, the user the message is from."""

    def __post_init__(self) -> None:
        if self.role is None:
            self.role = "user"


class AddMessageResponse(Struct, rename="camel", kw_only=True):
    message_id: str
    conversation_id: str
    created_at: Timestamp


class ConversationMessage(Struct, rename="camel", kw_only=True):
    id: str
    conversation_id: str
    message: str | None
    role: str
    images: list[str] | None
    image_attachment_ids: list[str] | None = None
    created_at: Timestamp
    updated_at: Timestamp
    user_id: str | None


class MessagePage(Struct, rename="camel", kw_only=True):
    items: list[ConversationMessage]
    next_cursor: str | None


class TruncateMessagesResponse(Struct, rename="camel", kw_only=True):
    conversation_id: str
    from_message_id: str
    deleted_count: int
    remaining_count: int


class MarkAsReadResponse(Struct, rename="camel", kw_only=True):
    conversation_id: str
    user_id: str
    last_read_message_id: str | None
    read_at: Timestamp


class ShareRequest(Struct, rename="camel", kw_only=True):
    user_id: UserId
    role: ParticipantRole | None = "Viewer"

    def __post_init__(self) -> None:
        if self.role is None:
            self.role = "Viewer"


class RoleRequest(Struct, rename="camel", kw_only=True):
    role: ParticipantRole


class Participant(Struct, rename="camel", kw_only=True):
    id: str
    conversation_id: str
    user_id: str
    username: str | None
    role: str
    shared_at: Timestamp
    shared_by_user_id: str | None
    shared_by_username: str | None


class TypingRequest(Struct, rename="camel", kw_only=True):
    is_typing: bool | None = True
    user_id: UserId | None = None

    def __post_init__(self) -> None:
        if self.is_typing is None:
            self.is_typing = True


class TypingResponse(Struct, rename="camel", kw_only=True):
    conversation_id: str
    user_id: str | None
    is_typing: bool


class PresenceRequest(Struct, rename="camel", kw_only=True):
    action: Literal["joined", "left"]
    user_id: UserId | None = None


class PresenceResponse(Struct, rename="camel", kw_only=True):
    conversation_id: str
    user_id: str | None
    action: str


class WebSocketUrlResponse(Struct, rename="camel", kw_only=True):
    websocket_url: str
    expires_at: Timestamp
    last_sequence: int
    """Extension: the conversation's last stored event when the URL was minted; open
    the URL with `after=` it and nothing stored since is missed."""


class CreateConversationResponse(Struct, rename="camel", kw_only=True):
    conversation_id: str
    user_id: str
    websocket_url: str
    deployment_id: str
    title: str | None
    icon_id: str | None = None
    icon_url: str | None = None
    description: str | None = None
    space_name: str | None = None
    created_at: Timestamp
    updated_at: Timestamp
    is_bookmarked: bool
    data_source_files: dict[str, list[str]]


class GetConversationResponse(Struct, rename="camel", kw_only=True):
    conversation_id: str
    user_id: str
    title: str | None
    created_at: Timestamp
    updated_at: Timestamp
    is_bookmarked: bool
    deployment_id: str
    data_source_files: dict[str, list[str]]
    websocket_url: str
    messages: list[ConversationMessage]
    policy_redactions: dict[str, Any] | None = None
    last_execution_status: str | None = None
    last_execution_id: str | None = None
    message_count: int = 0
    """Extension: how many messages the conversation has; `messages` shows the newest
    AIRIA_CONVERSATION_MESSAGES_LIMIT of them."""
    last_sequence: int = 0
    """Extension: the conversation's last stored event, read before `messages`, so it
    is never newer than they are: a socket opened with `after=` it misses nothing
    (a message already shown may come again as an event)."""


class ConversationFeedItem(Struct, rename="camel", kw_only=True):
    conversation_id: str
    user_id: str
    title: str | None
    message_count: int
    unread_count: int
    created_at: Timestamp
    updated_at: Timestamp
    is_bookmarked: bool
    deployment_id: str


class ConversationFeedResponse(Struct, rename="camel", kw_only=True, omit_defaults=True):
    items: list[ConversationFeedItem]
    total_count: int
    next_cursor: str | None = None
    """Extension: pass as `cursor` for the page after this one, which then costs the
    same however deep it is. Absent on the last page and when sorting by title, so
    such answers are exactly the platform's."""


# `(?!\n)` because the pattern is searched with Python's `re`, whose `$` also matches
# before a final newline: "Slack\n" would pass without it.
ExternalSystem = Annotated[
    str, Meta(min_length=2, max_length=50, pattern=r"^[A-Za-z][A-Za-z0-9]*(?!\n)$")
]
ExternalKey = Annotated[str, Meta(min_length=1, max_length=255)]


class ExternalIdentityRequest(Struct, rename="camel", kw_only=True):
    external_system: ExternalSystem
    external_channel_id: ExternalKey
    external_thread_id: ExternalKey


class ExternalIdentity(Struct, rename="camel", kw_only=True):
    id: str
    conversation_id: str
    external_system: str
    external_channel_id: str
    external_thread_id: str
    created_at: Timestamp


AttachmentSource = Literal["user", "agent"]


class Base64UploadRequest(Struct, rename="camel", kw_only=True):
    base64_content: str
    file_name: Annotated[str, Meta(min_length=1, max_length=255)]
    content_type: Annotated[str, Meta(max_length=255)] | None = None
    source: AttachmentSource | None = "agent"

    def __post_init__(self) -> None:
        if self.source is None:
            self.source = "agent"


class Attachment(Struct, rename="camel", kw_only=True):
    blob_id: str
    """The attachment's id: what messages reference in `imageAttachmentIds`."""
    url: str
    """A signed link that downloads the bytes without credentials, until it expires."""
    conversation_id: str
    file_name: str
    content_type: str
    size: int
    source: str
    sha256: str
    created_at: Timestamp


class Problem(Struct, rename="camel", kw_only=True, omit_defaults=True):
    """An RFC 9457 problem, with `message` for clients that show one line. `type` has no
    default, so that it is always written (`omit_defaults` leaves out only the empty
    optional members)."""

    type: str
    title: str
    status: int
    detail: str
    message: str
    instance: str | None = None
    correlation_id: str | None = None
    errors: list[dict[str, Any]] | None = None


class Health(Struct):
    status: str


encode = msgspec.json.encode
