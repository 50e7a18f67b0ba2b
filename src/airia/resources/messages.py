"""Messages of a conversation, sync and async side by side.

``Conversations`` inherits these methods, so they are called as
``client.conversations.add_message(...)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..types.api.conversations import (
    AddMessageResponse,
    ConversationMessage,
    MarkAsReadResponse,
    MessagePage,
    TruncateMessagesResponse,
)
from ._resource import (
    AsyncAPIResource,
    SyncAPIResource,
    conversation_path,
    key_or_new,
    without_none,
)


def _add_body(
    message: str | None,
    role: str,
    images: list[str] | None,
    image_attachment_ids: list[str] | None,
    user_id: str | None,
) -> dict[str, Any]:
    return {
        "message": message,
        "role": role,
        "images": images,
        "imageAttachmentIds": image_attachment_ids,
        "userId": user_id,
    }


def _list_params(limit: int | None, order: str | None, cursor: str | None) -> dict[str, Any]:
    return without_none({"limit": limit, "order": order, "cursor": cursor})


class Messages(SyncAPIResource):
    """Add, list and truncate messages; mark a conversation as read."""

    def add_message(
        self,
        conversation_id: str,
        message: str | None,
        role: str = "user",
        images: list[str] | None = None,
        image_attachment_ids: list[str] | None = None,
        user_id: str | None = None,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> AddMessageResponse:
        """Add a message to a conversation; everyone watching it gets ``message.created``.

        Args:
            conversation_id: The conversation.
            message: The text (may be None for an image-only message).
            role: ``user``, ``assistant`` or ``system``.
            images: Image URLs or data URIs.
            image_attachment_ids: Ids of uploaded image attachments.
            user_id: With an API key, the user the message is from; a bearer
                token's user is implied.
            correlation_id: Trace id sent as ``X-Correlation-ID``.
            idempotency_key: Sent as ``Idempotency-Key``; a fresh UUID4 per call if
                omitted. Pass your own to make a call safe to repeat yourself (after a
                crash, say): within 24 h the server answers the same key and request
                with the first response instead of acting again.

        Retried on transient failures: the idempotency key makes the server
        answer a retry with the first message instead of adding it twice.

        Example:
            ```python
            added = client.conversations.add_message("your_conversation_id", "Hello!")
            print(added.message_id, added.created_at)
            ```
        """
        body = _add_body(message, role, images, image_attachment_ids, user_id)
        return self._client._request(
            "POST",
            conversation_path(conversation_id, "messages"),
            json=body,
            correlation_id=correlation_id,
            idempotency_key=key_or_new(idempotency_key),
            cast_to=AddMessageResponse,
        )

    def list_messages(
        self,
        conversation_id: str,
        limit: int | None = None,
        order: str | None = None,
        cursor: str | None = None,
        correlation_id: str | None = None,
    ) -> MessagePage:
        """One page of a conversation's messages.

        Args:
            limit: Messages per page (the server's default is 50).
            order: ``asc`` (oldest first, the default) or ``desc``.
            cursor: ``next_cursor`` of the previous page, to get the next one.

        Example:
            ```python
            page = client.conversations.list_messages("your_conversation_id", limit=20)
            while True:
                for message in page.items:
                    print(message.role, message.message)
                if page.next_cursor is None:
                    break
                page = client.conversations.list_messages(
                    "your_conversation_id", limit=20, cursor=page.next_cursor
                )
            ```
        """
        return self._client._request(
            "GET",
            conversation_path(conversation_id, "messages"),
            params=_list_params(limit, order, cursor),
            correlation_id=correlation_id,
            cast_to=MessagePage,
        )

    def iter_messages(
        self, conversation_id: str, order: str = "asc", page_size: int = 100
    ) -> Iterator[ConversationMessage]:
        """Every message of a conversation, fetching pages as the loop needs them.

        Example:
            ```python
            for message in client.conversations.iter_messages("your_conversation_id"):
                print(message.created_at, message.message)
            ```
        """
        cursor = None
        while True:
            page = self.list_messages(conversation_id, limit=page_size, order=order, cursor=cursor)
            yield from page.items
            if not page.next_cursor or not page.items:
                return
            cursor = page.next_cursor

    def truncate_messages(
        self,
        conversation_id: str,
        message_id: str,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> TruncateMessagesResponse:
        """Delete a message and every message after it, permanently.

        Sent with an ``Idempotency-Key`` (``idempotency_key``, else a fresh UUID4), the same
        on every retry. A retry after a lost answer gets that answer, not a 404 for the
        message it deleted.

        Example:
            ```python
            result = client.conversations.truncate_messages("your_conversation_id", "message_id")
            print(result.deleted_count, result.remaining_count)
            ```
        """
        return self._client._request(
            "DELETE",
            conversation_path(conversation_id, "messages", message_id, "truncate"),
            correlation_id=correlation_id,
            idempotency_key=key_or_new(idempotency_key),
            cast_to=TruncateMessagesResponse,
        )

    def mark_as_read(
        self, conversation_id: str, user_id: str | None = None, correlation_id: str | None = None
    ) -> MarkAsReadResponse:
        """Mark every message so far as read, which resets the feed's ``unread_count``.

        Args:
            user_id: With an API key, whose read position to move; a bearer
                token's user is implied.

        Example:
            ```python
            read = client.conversations.mark_as_read("your_conversation_id", user_id="user_123")
            print(read.last_read_message_id)
            ```
        """
        return self._client._request(
            "PATCH",
            conversation_path(conversation_id, "mark-as-read"),
            params=without_none({"userId": user_id}),
            correlation_id=correlation_id,
            cast_to=MarkAsReadResponse,
        )


class AsyncMessages(AsyncAPIResource):
    """Async twin of ``Messages``: same methods, awaited."""

    async def add_message(
        self,
        conversation_id: str,
        message: str | None,
        role: str = "user",
        images: list[str] | None = None,
        image_attachment_ids: list[str] | None = None,
        user_id: str | None = None,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> AddMessageResponse:
        """Add a message to a conversation (see ``Messages.add_message``).

        Example:
            ```python
            added = await client.conversations.add_message("your_conversation_id", "Hello!")
            ```
        """
        body = _add_body(message, role, images, image_attachment_ids, user_id)
        return await self._client._request(
            "POST",
            conversation_path(conversation_id, "messages"),
            json=body,
            correlation_id=correlation_id,
            idempotency_key=key_or_new(idempotency_key),
            cast_to=AddMessageResponse,
        )

    async def list_messages(
        self,
        conversation_id: str,
        limit: int | None = None,
        order: str | None = None,
        cursor: str | None = None,
        correlation_id: str | None = None,
    ) -> MessagePage:
        """One page of a conversation's messages (see ``Messages.list_messages``).

        Example:
            ```python
            page = await client.conversations.list_messages("your_conversation_id", limit=20)
            ```
        """
        return await self._client._request(
            "GET",
            conversation_path(conversation_id, "messages"),
            params=_list_params(limit, order, cursor),
            correlation_id=correlation_id,
            cast_to=MessagePage,
        )

    async def iter_messages(
        self, conversation_id: str, order: str = "asc", page_size: int = 100
    ) -> AsyncIterator[ConversationMessage]:
        """Every message of a conversation, page by page (see ``Messages.iter_messages``).

        Example:
            ```python
            async for message in client.conversations.iter_messages("your_conversation_id"):
                print(message.message)
            ```
        """
        cursor = None
        while True:
            page = await self.list_messages(
                conversation_id, limit=page_size, order=order, cursor=cursor
            )
            for message in page.items:
                yield message
            if not page.next_cursor or not page.items:
                return
            cursor = page.next_cursor

    async def truncate_messages(
        self,
        conversation_id: str,
        message_id: str,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> TruncateMessagesResponse:
        """Delete a message and everything after it (see ``Messages.truncate_messages``).

        Example:
            ```python
            result = await client.conversations.truncate_messages("conversation_id", "message_id")
            ```
        """
        return await self._client._request(
            "DELETE",
            conversation_path(conversation_id, "messages", message_id, "truncate"),
            correlation_id=correlation_id,
            idempotency_key=key_or_new(idempotency_key),
            cast_to=TruncateMessagesResponse,
        )

    async def mark_as_read(
        self, conversation_id: str, user_id: str | None = None, correlation_id: str | None = None
    ) -> MarkAsReadResponse:
        """Mark every message so far as read (see ``Messages.mark_as_read``).

        Example:
            ```python
            await client.conversations.mark_as_read("your_conversation_id")
            ```
        """
        return await self._client._request(
            "PATCH",
            conversation_path(conversation_id, "mark-as-read"),
            params=without_none({"userId": user_id}),
            correlation_id=correlation_id,
            cast_to=MarkAsReadResponse,
        )
