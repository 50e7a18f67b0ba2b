"""Pydantic models for messages, sharing and the real-time helpers of a conversation.

Same conventions as ``_conversations``: snake_case attributes over a camelCase
wire, unknown fields kept. Identifiers are required; everything else is
optional so a leaner server still parses.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from ._conversations import ConversationMessage, _Model


class AddMessageResponse(_Model):
    """The id and time of a message just added."""

    message_id: str
    conversation_id: str
    created_at: datetime | None = None


class MessagePage(_Model):
    """One page of a conversation's messages; ``next_cursor`` is None on the last page."""

    items: list[ConversationMessage] = Field(default_factory=list)
    next_cursor: str | None = None


class TruncateMessagesResponse(_Model):
    """What truncating from ``from_message_id`` (inclusive) removed and left."""

    conversation_id: str
    from_message_id: str
    deleted_count: int = 0
    remaining_count: int = 0


class MarkAsReadResponse(_Model):
    """A user's read position after marking the conversation as read."""

    conversation_id: str
    user_id: str | None = None
    last_read_message_id: str | None = None
    read_at: datetime | None = None


class Participant(_Model):
    """A user the conversation is shared with, and their role.

    ``role`` is ``Owner``, ``Collaborator`` or ``Viewer``.
    """

    id: str | None = None
    conversation_id: str
    user_id: str
    username: str | None = None
    role: str
    shared_at: datetime | None = None
    shared_by_user_id: str | None = None
    shared_by_username: str | None = None


class TypingData(_Model):
    """Who is (or stopped) typing."""

    user_id: str | None = None
    is_typing: bool


class TypingResponse(TypingData):
    """The typing signal as the server broadcast it."""

    conversation_id: str


class PresenceData(_Model):
    """Who joined or left; ``action`` is ``joined`` or ``left``."""

    user_id: str | None = None
    action: str


class PresenceResponse(PresenceData):
    """The presence signal as the server broadcast it."""

    conversation_id: str


class WebSocketUrlResponse(_Model):
    """A freshly signed real-time URL; the ticket in it expires at ``expires_at``."""

    websocket_url: str
    expires_at: datetime | None = None
    last_sequence: int | None = None
    """The conversation's last stored event when the URL was minted (this server's
    extension): open the URL with ``after=`` it and nothing stored since is missed."""
