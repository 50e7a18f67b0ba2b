"""The Conversations resource, sync and async side by side.

Each pair of methods shares its request shape through the ``_*_body`` and
``_*_params`` helpers of their common base, ``BaseConversations``; the two
classes differ only in ``await``. The messages, sharing, real-time, external
identity and attachment methods are inherited from their own modules so each
stays short, and are all called on ``client.conversations``.
"""

from __future__ import annotations

from typing import Any

from ..types.api.conversations import (
    ConversationFeedResponse,
    CreateConversationResponse,
    GetConversationResponse,
)
from ._resource import (
    COLLECTION,
    AsyncAPIResource,
    SyncAPIResource,
    conversation_path,
    key_or_new,
)
from .attachments import AsyncAttachments, Attachments
from .external_identities import AsyncExternalIdentities, ExternalIdentities
from .messages import AsyncMessages, Messages
from .participants import AsyncParticipants, Participants
from .realtime import AsyncRealtime, Realtime


class BaseConversations:
    """What ``Conversations`` and ``AsyncConversations`` share: the shape of each
    request (body, query), built without I/O, as in the official package's
    ``BaseConversations``."""

    @staticmethod
    def _create_body(
        user_id: str,
        title: str | None,
        deployment_id: str | None,
        data_source_files: dict[str, Any] | None,
        is_bookmarked: bool,
    ) -> dict[str, Any]:
        # The official client always sends every key, nulls included; so do we.
        return {
            "userId": user_id,
            "title": title,
            "deploymentId": deployment_id,
            "dataSourceFiles": data_source_files if data_source_files is not None else {},
            "isBookmarked": is_bookmarked,
        }

    @staticmethod
    def _update_body(
        title: str,
        data_source_files: dict[str, Any] | None,
        is_bookmarked: bool | None,
        last_execution_status: str | None,
        last_execution_id: str | None,
    ) -> dict[str, Any]:
        # Absent means "leave unchanged" on a PUT here, so only send what was given.
        optional = {
            "dataSourceFiles": data_source_files,
            "isBookmarked": is_bookmarked,
            "lastExecutionStatus": last_execution_status,
            "lastExecutionId": last_execution_id,
        }
        return {"title": title, **{k: v for k, v in optional.items() if v is not None}}

    @staticmethod
    def _feed_params(
        page_number: int | None,
        page_size: int | None,
        sort_by: str | None,
        sort_direction: str | None,
        filter: str | None,
        user_id: str | None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        params = {
            "PageNumber": None if cursor else page_number,
            "PageSize": page_size,
            "SortBy": sort_by,
            "SortDirection": sort_direction,
            "filter": filter,
            "userId": user_id,
            "cursor": cursor,
        }
        return {k: v for k, v in params.items() if v is not None}


class Conversations(
    Messages,
    Participants,
    Realtime,
    ExternalIdentities,
    Attachments,
    SyncAPIResource,
    BaseConversations,
):
    """Conversations: create, read, update, delete and list them; their messages,
    participants, real-time events, external identities and attachments."""

    def create_conversation(
        self,
        user_id: str,
        title: str | None = None,
        deployment_id: str | None = None,
        data_source_files: dict[str, Any] | None = None,
        is_bookmarked: bool = False,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> CreateConversationResponse:
        """Create a conversation for ``user_id``.

        Args:
            user_id: The user who owns the conversation.
            title: Optional title.
            deployment_id: Deployment to attach; the server picks its default when omitted.
            data_source_files: Data source name to list of file names.
            is_bookmarked: Bookmark it from the start.
            correlation_id: Trace id sent as ``X-Correlation-ID``; a fresh UUID if omitted.
            idempotency_key: Sent as ``Idempotency-Key``; a fresh UUID4 per call if
                omitted. Pass your own to make a call safe to repeat yourself (after a
                crash, say): within 24 h the server answers the same key and request
                with the first response instead of acting again.

        Retried on transient failures like a GET: the idempotency key makes a
        retry return the conversation the first attempt created.

        Returns:
            The new conversation, including its ``websocket_url``.

        Raises:
            AiriaAPIError: or one of its subclasses, when the call fails.

        Example:
            ```python
            conversation = client.conversations.create_conversation(
                user_id="user_123", title="My Research Session", is_bookmarked=True
            )
            print(conversation.conversation_id, conversation.websocket_url)
            ```
        """
        body = self._create_body(user_id, title, deployment_id, data_source_files, is_bookmarked)
        return self._client._request(
            "POST",
            COLLECTION,
            json=body,
            correlation_id=correlation_id,
            idempotency_key=key_or_new(idempotency_key),
            cast_to=CreateConversationResponse,
        )

    def get_conversation(
        self, conversation_id: str, correlation_id: str | None = None
    ) -> GetConversationResponse:
        """Fetch a conversation with its messages (oldest first).

        Raises:
            NotFoundError: no conversation with that id is visible to the caller.

        Example:
            ```python
            conversation = client.conversations.get_conversation("your_conversation_id")
            for message in conversation.messages:
                print(f"[{message.role}] {message.message}")
            ```
        """
        return self._client._request(
            "GET",
            conversation_path(conversation_id),
            correlation_id=correlation_id,
            cast_to=GetConversationResponse,
        )

    def delete_conversation(
        self,
        conversation_id: str,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """Delete a conversation and everything in it, permanently.

        Sent with an ``Idempotency-Key`` (``idempotency_key``, else a fresh UUID4), the same
        on every retry. A retry after a lost answer gets that answer, not a 404 for a delete
        that was done.

        Raises:
            NotFoundError: no conversation with that id is visible to the caller.
            PermissionDeniedError: the caller may see it but is not its owner.

        Example:
            ```python
            client.conversations.delete_conversation("your_conversation_id")
            ```
        """
        self._client._request(
            "DELETE",
            conversation_path(conversation_id),
            correlation_id=correlation_id,
            idempotency_key=key_or_new(idempotency_key),
        )

    def update_conversation(
        self,
        conversation_id: str,
        title: str,
        data_source_files: dict[str, Any] | None = None,
        is_bookmarked: bool | None = None,
        last_execution_status: str | None = None,
        last_execution_id: str | None = None,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> GetConversationResponse:
        """Update a conversation's title and, when given, its other settings.

        Arguments left as ``None`` are not sent and stay unchanged.
        ``last_execution_status`` is one of ``InProgress``, ``Completed``,
        ``Failed``, ``NotApplicable``.

        Sent with an ``Idempotency-Key`` (``idempotency_key``, else a fresh UUID4), the same
        on every retry. A retry after a lost answer gets that answer: the change is stored
        (and sent to listeners) once.

        Example:
            ```python
            updated = client.conversations.update_conversation(
                "your_conversation_id", title="Renamed", is_bookmarked=True
            )
            print(updated.title, updated.is_bookmarked)
            ```
        """
        body = self._update_body(
            title, data_source_files, is_bookmarked, last_execution_status, last_execution_id
        )
        return self._client._request(
            "PUT",
            conversation_path(conversation_id),
            json=body,
            correlation_id=correlation_id,
            idempotency_key=key_or_new(idempotency_key),
            cast_to=GetConversationResponse,
        )

    def get_conversations_feed(
        self,
        page_number: int = 1,
        page_size: int = 20,
        sort_by: str | None = None,
        sort_direction: str | None = None,
        filter: str | None = None,
        user_id: str | None = None,
        cursor: str | None = None,
        correlation_id: str | None = None,
    ) -> ConversationFeedResponse:
        """List conversations one page at a time.

        Args:
            page_number: 1-based page number.
            page_size: Items per page.
            sort_by: ``createdAt``, ``updatedAt`` or ``title``.
            sort_direction: ``asc`` or ``desc``.
            filter: Text to match in titles.
            user_id: Only conversations of this user.
            cursor: ``next_cursor`` of the previous page (same sort): continues there,
                however deep, at the cost of a first page; ``page_number`` is ignored.
            correlation_id: Trace id sent as ``X-Correlation-ID``.

        Example:
            ```python
            feed = client.conversations.get_conversations_feed(page_size=10, sort_by="updatedAt")
            print(f"{len(feed.items)} of {feed.total_count}")
            ```
        """
        params = self._feed_params(
            page_number, page_size, sort_by, sort_direction, filter, user_id, cursor
        )
        return self._client._request(
            "GET",
            f"{COLLECTION}/feed",
            params=params,
            correlation_id=correlation_id,
            cast_to=ConversationFeedResponse,
        )


class AsyncConversations(
    AsyncMessages,
    AsyncParticipants,
    AsyncRealtime,
    AsyncExternalIdentities,
    AsyncAttachments,
    AsyncAPIResource,
    BaseConversations,
):
    """Async twin of ``Conversations``: same methods, awaited."""

    async def create_conversation(
        self,
        user_id: str,
        title: str | None = None,
        deployment_id: str | None = None,
        data_source_files: dict[str, Any] | None = None,
        is_bookmarked: bool = False,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> CreateConversationResponse:
        """Create a conversation for ``user_id`` (see ``Conversations.create_conversation``).

        Example:
            ```python
            conversation = await client.conversations.create_conversation(user_id="user_123")
            ```
        """
        body = self._create_body(user_id, title, deployment_id, data_source_files, is_bookmarked)
        return await self._client._request(
            "POST",
            COLLECTION,
            json=body,
            correlation_id=correlation_id,
            idempotency_key=key_or_new(idempotency_key),
            cast_to=CreateConversationResponse,
        )

    async def get_conversation(
        self, conversation_id: str, correlation_id: str | None = None
    ) -> GetConversationResponse:
        """Fetch a conversation with its messages (see ``Conversations.get_conversation``).

        Example:
            ```python
            conversation = await client.conversations.get_conversation("your_conversation_id")
            ```
        """
        return await self._client._request(
            "GET",
            conversation_path(conversation_id),
            correlation_id=correlation_id,
            cast_to=GetConversationResponse,
        )

    async def delete_conversation(
        self,
        conversation_id: str,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """Delete a conversation permanently (see ``Conversations.delete_conversation``).

        Example:
            ```python
            await client.conversations.delete_conversation("your_conversation_id")
            ```
        """
        await self._client._request(
            "DELETE",
            conversation_path(conversation_id),
            correlation_id=correlation_id,
            idempotency_key=key_or_new(idempotency_key),
        )

    async def update_conversation(
        self,
        conversation_id: str,
        title: str,
        data_source_files: dict[str, Any] | None = None,
        is_bookmarked: bool | None = None,
        last_execution_status: str | None = None,
        last_execution_id: str | None = None,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> GetConversationResponse:
        """Update a conversation (see ``Conversations.update_conversation``).

        Example:
            ```python
            updated = await client.conversations.update_conversation("id", title="Renamed")
            ```
        """
        body = self._update_body(
            title, data_source_files, is_bookmarked, last_execution_status, last_execution_id
        )
        return await self._client._request(
            "PUT",
            conversation_path(conversation_id),
            json=body,
            correlation_id=correlation_id,
            idempotency_key=key_or_new(idempotency_key),
            cast_to=GetConversationResponse,
        )

    async def get_conversations_feed(
        self,
        page_number: int = 1,
        page_size: int = 20,
        sort_by: str | None = None,
        sort_direction: str | None = None,
        filter: str | None = None,
        user_id: str | None = None,
        cursor: str | None = None,
        correlation_id: str | None = None,
    ) -> ConversationFeedResponse:
        """List conversations one page at a time (see ``Conversations.get_conversations_feed``).

        Example:
            ```python
            feed = await client.conversations.get_conversations_feed(page_number=2)
            ```
        """
        params = self._feed_params(
            page_number, page_size, sort_by, sort_direction, filter, user_id, cursor
        )
        return await self._client._request(
            "GET",
            f"{COLLECTION}/feed",
            params=params,
            correlation_id=correlation_id,
            cast_to=ConversationFeedResponse,
        )
