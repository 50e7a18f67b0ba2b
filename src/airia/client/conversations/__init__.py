"""`airia.client.conversations`, as in the official package: `client.conversations`."""

from ...resources.conversations import AsyncConversations, Conversations

__all__ = ["AsyncConversations", "Conversations"]
