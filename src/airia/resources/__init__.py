from .attachments import AsyncAttachments, Attachments
from .conversations import AsyncConversations, Conversations
from .external_identities import AsyncExternalIdentities, ExternalIdentities
from .messages import AsyncMessages, Messages
from .participants import AsyncParticipants, Participants
from .realtime import AsyncRealtime, Realtime

__all__ = [
    "AsyncAttachments",
    "AsyncConversations",
    "AsyncExternalIdentities",
    "AsyncMessages",
    "AsyncParticipants",
    "AsyncRealtime",
    "Attachments",
    "Conversations",
    "ExternalIdentities",
    "Messages",
    "Participants",
    "Realtime",
]
