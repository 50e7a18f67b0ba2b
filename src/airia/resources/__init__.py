from .conversations import AsyncConversations, Conversations

__all__ = ["AsyncConversations", "Conversations"]
