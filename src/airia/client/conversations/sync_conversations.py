"""`airia.client.conversations.sync_conversations`, as in the official package."""

from ...resources.conversations import Conversations

__all__ = ["Conversations"]
