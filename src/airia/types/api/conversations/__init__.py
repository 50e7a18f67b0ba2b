from ._conversations import (
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
]
