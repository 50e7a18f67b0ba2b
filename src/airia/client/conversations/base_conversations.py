"""`airia.client.conversations.base_conversations`, as in the official package: the
common base of `Conversations` and `AsyncConversations`."""

from ...resources.conversations import BaseConversations

__all__ = ["BaseConversations"]
