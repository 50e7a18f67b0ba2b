"""Real-time features of a conversation, sync and async side by side.

``Conversations`` inherits these methods. ``events`` opens the WebSocket
channel; the stream classes live in ``_streaming`` and are imported on first
use, so importing ``airia`` does not import ``websockets``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..types.api.conversations import PresenceResponse, TypingResponse, WebSocketUrlResponse
from ._resource import AsyncAPIResource, SyncAPIResource, conversation_path

if TYPE_CHECKING:
    from .._streaming import AsyncEventStream, EventStream


class Realtime(SyncAPIResource):
    """Typing and presence signals, the WebSocket URL and the event stream."""

    def send_typing(
        self,
        conversation_id: str,
        is_typing: bool = True,
        user_id: str | None = None,
        correlation_id: str | None = None,
    ) -> TypingResponse:
        """Tell everyone watching that ``user_id`` is (or stopped) typing.

        ``user_id`` is needed with an API key; a bearer token's user is implied.

        Example:
            ```python
            client.conversations.send_typing("your_conversation_id", user_id="user_123")
            ```
        """
        return self._client._request(
            "POST",
            conversation_path(conversation_id, "typing"),
            json={"isTyping": is_typing, "userId": user_id},
            correlation_id=correlation_id,
            cast_to=TypingResponse,
        )

    def send_presence(
        self,
        conversation_id: str,
        action: str,
        user_id: str | None = None,
        correlation_id: str | None = None,
    ) -> PresenceResponse:
        """Tell everyone watching that ``user_id`` ``joined`` or ``left``.

        Example:
            ```python
            client.conversations.send_presence("your_conversation_id", "joined", user_id="u1")
            ```
        """
        return self._client._request(
            "POST",
            conversation_path(conversation_id, "presence"),
            json={"action": action, "userId": user_id},
            correlation_id=correlation_id,
            cast_to=PresenceResponse,
        )

    def websocket_url(
        self, conversation_id: str, correlation_id: str | None = None
    ) -> WebSocketUrlResponse:
        """A freshly signed URL of the conversation's real-time channel.

        The ticket in it expires (``expires_at``); ``events`` fetches a new
        one on every connect, so prefer it unless you bring your own client.

        Example:
            ```python
            url = client.conversations.websocket_url("your_conversation_id").websocket_url
            ```
        """
        return self._client._request(
            "GET",
            conversation_path(conversation_id, "websocket-url"),
            correlation_id=correlation_id,
            cast_to=WebSocketUrlResponse,
        )

    def events(
        self,
        conversation_id: str,
        after: int | None = None,
        reconnect: bool = True,
        max_reconnect_attempts: int | None = None,
    ) -> EventStream:
        """Watch a conversation: an iterator of its events, as they happen.

        Each event is a ``ConversationEvent`` (``MessageCreatedEvent``,
        ``ParticipantAddedEvent``, ... by ``type``). Stored events carry a
        ``sequence``; each is delivered once and in order. The channel
        reconnects by itself with a fresh ticket, resuming after the last
        sequence delivered; it stops after ``conversation.deleted`` and raises
        ``WebSocketClosedError`` when access is refused or removed.

        Args:
            conversation_id: The conversation to watch.
            after: Start with the stored events after this sequence (replayed);
                by default the events from the moment the stream is entered
                (``with`` opens it) or first iterated.
            reconnect: Reconnect after a drop or a server restart.
            max_reconnect_attempts: Consecutive failed reconnects before giving
                up with ``WebSocketClosedError``; None for no limit.

        Example:
            ```python
            with client.conversations.events("your_conversation_id") as events:
                for event in events:
                    if event.type == "message.created":
                        print(event.data.role, event.data.message)
            ```
        """
        from .._streaming import EventStream

        return EventStream(
            self,
            conversation_id,
            after=after,
            reconnect=reconnect,
            max_reconnect_attempts=max_reconnect_attempts,
        )


class AsyncRealtime(AsyncAPIResource):
    """Async twin of ``Realtime``: same methods, awaited (``events`` is ``async for``-ed)."""

    async def send_typing(
        self,
        conversation_id: str,
        is_typing: bool = True,
        user_id: str | None = None,
        correlation_id: str | None = None,
    ) -> TypingResponse:
        """Tell everyone watching that ``user_id`` is typing (see ``Realtime.send_typing``).

        Example:
            ```python
            await client.conversations.send_typing("your_conversation_id", user_id="user_123")
            ```
        """
        return await self._client._request(
            "POST",
            conversation_path(conversation_id, "typing"),
            json={"isTyping": is_typing, "userId": user_id},
            correlation_id=correlation_id,
            cast_to=TypingResponse,
        )

    async def send_presence(
        self,
        conversation_id: str,
        action: str,
        user_id: str | None = None,
        correlation_id: str | None = None,
    ) -> PresenceResponse:
        """Tell everyone watching that ``user_id`` joined or left (see ``Realtime.send_presence``).

        Example:
            ```python
            await client.conversations.send_presence("conversation_id", "left", user_id="u1")
            ```
        """
        return await self._client._request(
            "POST",
            conversation_path(conversation_id, "presence"),
            json={"action": action, "userId": user_id},
            correlation_id=correlation_id,
            cast_to=PresenceResponse,
        )

    async def websocket_url(
        self, conversation_id: str, correlation_id: str | None = None
    ) -> WebSocketUrlResponse:
        """A freshly signed real-time URL (see ``Realtime.websocket_url``).

        Example:
            ```python
            url = (await client.conversations.websocket_url("conversation_id")).websocket_url
            ```
        """
        return await self._client._request(
            "GET",
            conversation_path(conversation_id, "websocket-url"),
            correlation_id=correlation_id,
            cast_to=WebSocketUrlResponse,
        )

    def events(
        self,
        conversation_id: str,
        after: int | None = None,
        reconnect: bool = True,
        max_reconnect_attempts: int | None = None,
    ) -> AsyncEventStream:
        """Watch a conversation: an async iterator of its events (see ``Realtime.events``).

        Not awaited itself: ``async for`` (or ``async with``) the stream it returns.

        Example:
            ```python
            async with client.conversations.events("your_conversation_id") as events:
                async for event in events:
                    print(event.sequence, event.type)
            ```
        """
        from .._streaming import AsyncEventStream

        return AsyncEventStream(
            self,
            conversation_id,
            after=after,
            reconnect=reconnect,
            max_reconnect_attempts=max_reconnect_attempts,
        )
