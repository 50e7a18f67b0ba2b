"""Pydantic models for the Conversations API.

Attributes are snake_case, the wire is camelCase. Unknown fields are kept
(``extra="allow"``) so a newer server never breaks an older client. Fields
the official package requires stay required; fields we added are optional so
an older server that does not send them still parses.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Model(BaseModel):
    """Base of every response model: snake_case attributes over a camelCase wire."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class PolicyRedaction(_Model):
    """Content redacted because it violated a policy."""

    violating_text: str
    violating_message_index: int


class ConversationMessage(_Model):
    """One message of a conversation (user, assistant or system)."""

    id: str
    conversation_id: str
    message: str | None = None
    created_at: datetime
    updated_at: datetime
    role: str
    images: list[str] | None = None
    image_attachment_ids: list[str] | None = None
    user_id: str | None = None


class GetConversationResponse(_Model):
    """A conversation with its metadata and its messages, oldest first."""

    user_id: str
    conversation_id: str
    messages: list[ConversationMessage]
    title: str | None = None
    websocket_url: str | None = None
    deployment_id: str | None = None
    data_source_files: dict[str, list[str]]
    is_bookmarked: bool
    policy_redactions: dict[str, PolicyRedaction] | None = None
    last_execution_status: str | None = None
    last_execution_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    message_count: int | None = None
    """How many messages the conversation has (this server's extension); ``messages``
    holds the newest of them, up to the server's limit (1,000 by default)."""
    last_sequence: int | None = None
    """The conversation's last stored event (this server's extension), never newer
    than ``messages``: ``events(..., after=last_sequence)`` misses nothing they lack
    (a message in them may come again as an event)."""


class CreateConversationResponse(_Model):
    """A newly created conversation and where to follow it in real time."""

    user_id: str
    conversation_id: str
    websocket_url: str
    deployment_id: str
    icon_id: str | None = None
    icon_url: str | None = None
    description: str | None = None
    space_name: str | None = None
    title: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    is_bookmarked: bool | None = None
    data_source_files: dict[str, Any] | None = None


class ConversationFeedItem(_Model):
    """One row of the conversations feed."""

    conversation_id: str
    user_id: str | None = None
    title: str | None = None
    message_count: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    is_bookmarked: bool = False
    deployment_id: str | None = None
    unread_count: int | None = None


class ConversationFeedResponse(_Model):
    """One page of the conversations feed and the total across all pages."""

    items: list[ConversationFeedItem] = Field(default_factory=list)
    total_count: int = 0
    next_cursor: str | None = None
    """Pass as ``cursor`` for the next page (an extension of this server; None on
    the last page and when sorting by title)."""
