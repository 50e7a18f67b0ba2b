from .conversations import AsyncConversations, Conversations
from .messages import AsyncMessages, Messages
from .participants import AsyncParticipants, Participants
from .realtime import AsyncRealtime, Realtime

__all__ = [
    "AsyncConversations",
    "AsyncMessages",
    "AsyncParticipants",
    "AsyncRealtime",
    "Conversations",
    "Messages",
    "Participants",
    "Realtime",
]
