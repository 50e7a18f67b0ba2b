"""Response models of the Airia API, grouped by resource."""

from . import conversations as conversations
from .conversations import (
    ConversationFeedItem,
    ConversationFeedResponse,
    ConversationMessage,
    CreateConversationResponse,
    GetConversationResponse,
    PolicyRedaction,
)

__all__ = [
    "ConversationFeedItem",
    "ConversationFeedResponse",
    "ConversationMessage",
    "CreateConversationResponse",
    "GetConversationResponse",
    "PolicyRedaction",
    "conversations",
]
