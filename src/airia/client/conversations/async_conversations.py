"""`airia.client.conversations.async_conversations`, as in the official package."""

from ...resources.conversations import AsyncConversations

__all__ = ["AsyncConversations"]
