"""Events of the real-time channel, one model per ``type``.

Every event is a ``ConversationEvent``; the known types are subclasses whose
``data`` is typed. ``parse_event`` picks the class by ``type`` and falls back
to ``ConversationEvent`` (``data`` a plain dict) for a type this client does
not know, or a payload it cannot read, so a newer server never breaks an
older client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pydantic
from pydantic import Field

from ._conversations import ConversationMessage, _Model
from ._messages import Participant, PresenceData, TruncateMessagesResponse, TypingData


class ConversationEvent(_Model):
    """One event of a conversation's real-time channel.

    ``sequence`` orders the stored events of a conversation; it is None for
    ephemeral ones (``typing``, ``presence``), which are never replayed.
    """

    type: str
    sequence: int | None = None
    conversation_id: str | None = None
    created_at: datetime | None = None
    data: Any = Field(default_factory=dict)


class MessageCreatedEvent(ConversationEvent):
    """``message.created``: a message was added."""

    data: ConversationMessage


class MessagesTruncatedEvent(ConversationEvent):
    """``messages.truncated``: a message and everything after it were deleted."""

    data: TruncateMessagesResponse


class ConversationUpdatedEvent(ConversationEvent):
    """``conversation.updated``: ``data`` holds the conversation's (changed) fields."""

    data: dict[str, Any] = Field(default_factory=dict)


class ConversationDeletedEvent(ConversationEvent):
    """``conversation.deleted``: the last event; the server then closes the channel."""

    data: dict[str, Any] = Field(default_factory=dict)


class ParticipantAddedEvent(ConversationEvent):
    """``participant.added``: the conversation was shared with someone."""

    data: Participant


class ParticipantUpdatedEvent(ConversationEvent):
    """``participant.updated``: a participant's role changed."""

    data: Participant


class ParticipantRemovedEvent(ConversationEvent):
    """``participant.removed``: someone lost access."""

    data: Participant


class TypingEvent(ConversationEvent):
    """``typing``: ephemeral, no sequence."""

    data: TypingData


class PresenceEvent(ConversationEvent):
    """``presence``: someone joined or left; ephemeral, no sequence."""

    data: PresenceData


EVENT_TYPES: dict[str, type[ConversationEvent]] = {
    "message.created": MessageCreatedEvent,
    "messages.truncated": MessagesTruncatedEvent,
    "conversation.updated": ConversationUpdatedEvent,
    "conversation.deleted": ConversationDeletedEvent,
    "participant.added": ParticipantAddedEvent,
    "participant.updated": ParticipantUpdatedEvent,
    "participant.removed": ParticipantRemovedEvent,
    "typing": TypingEvent,
    "presence": PresenceEvent,
}


def parse_event(payload: dict[str, Any]) -> ConversationEvent:
    """The typed event for a decoded frame; ``ConversationEvent`` when the type is unknown.

    Raises:
        pydantic.ValidationError: the frame lacks even a ``type``.

    Example:
        ```python
        event = parse_event({"type": "typing", "sequence": None, "data": {"isTyping": True}})
        assert isinstance(event, TypingEvent) and event.data.is_typing
        ```
    """
    cls = EVENT_TYPES.get(payload.get("type", ""), ConversationEvent)
    try:
        return cls.model_validate(payload)
    except pydantic.ValidationError:
        if cls is ConversationEvent:
            raise
        return ConversationEvent.model_validate(payload)
