"""External identities of a conversation, sync and async side by side.

An external identity maps a thread of an outside system (a Slack or Teams
thread, an e-mail chain) to a conversation, so a bot can find the conversation
again from the thread it is answering in. ``Conversations`` inherits these
methods, so they are called as ``client.conversations.add_external_identity(...)``.

The server checks the fields: ``external_system`` is 2 to 50 characters,
a letter then letters or digits (``^[A-Za-z][A-Za-z0-9]*$``);
``external_channel_id`` and ``external_thread_id`` are 1 to 255 characters.
A value it refuses raises ``UnprocessableEntityError``.
"""

from __future__ import annotations

from typing import Any

from ..types.api.conversations import ExternalIdentity, GetConversationResponse
from ._resource import COLLECTION, AsyncAPIResource, SyncAPIResource, conversation_path, key_or_new

_PATH = "external-identities"


def _identity_body(system: str, channel_id: str, thread_id: str) -> dict[str, Any]:
    return {
        "externalSystem": system,
        "externalChannelId": channel_id,
        "externalThreadId": thread_id,
    }


class ExternalIdentities(SyncAPIResource):
    """Map outside threads to a conversation, list and remove the mappings, look one up."""

    def list_external_identities(
        self, conversation_id: str, correlation_id: str | None = None
    ) -> list[ExternalIdentity]:
        """The external threads mapped to a conversation.

        Example:
            ```python
            for identity in client.conversations.list_external_identities("conversation_id"):
                print(identity.external_system, identity.external_thread_id)
            ```
        """
        return self._client._request(
            "GET",
            conversation_path(conversation_id, _PATH),
            correlation_id=correlation_id,
            cast_to=list[ExternalIdentity],
        )

    def add_external_identity(
        self,
        conversation_id: str,
        external_system: str,
        external_channel_id: str,
        external_thread_id: str,
        correlation_id: str | None = None,
    ) -> ExternalIdentity:
        """Map an outside thread to the conversation.

        Args:
            conversation_id: The conversation.
            external_system: The outside system, e.g. ``Slack``: 2 to 50
                characters, a letter then letters or digits.
            external_channel_id: Its channel (1 to 255 characters).
            external_thread_id: The thread in that channel (1 to 255 characters).
            correlation_id: Trace id sent as ``X-Correlation-ID``.

        Raises:
            ExternalIdentityConflictError: the triple already maps to a
                conversation in this tenant; its ``existing_conversation_id``
                says which.
            UnprocessableEntityError: a field breaks the rules above.

        Example:
            ```python
            from airia import ExternalIdentityConflictError

            try:
                client.conversations.add_external_identity(
                    "conversation_id", "Slack", "C024BE91L", "1712345678.000100"
                )
            except ExternalIdentityConflictError as e:
                print("already mapped to", e.existing_conversation_id)
            ```
        """
        return self._client._request(
            "POST",
            conversation_path(conversation_id, _PATH),
            json=_identity_body(external_system, external_channel_id, external_thread_id),
            correlation_id=correlation_id,
            cast_to=ExternalIdentity,
        )

    def remove_external_identity(
        self,
        conversation_id: str,
        identity_id: str,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """Remove a mapping; the outside thread no longer finds the conversation.

        Sent with an ``Idempotency-Key`` (``idempotency_key``, else a fresh UUID4), the same
        on every retry. A retry after a lost answer gets that answer, not a 404 for the
        removal it did.

        Raises:
            NotFoundError: no such conversation, or no such identity on it.

        Example:
            ```python
            client.conversations.remove_external_identity("conversation_id", "identity_id")
            ```
        """
        self._client._request(
            "DELETE",
            conversation_path(conversation_id, _PATH, identity_id),
            correlation_id=correlation_id,
            idempotency_key=key_or_new(idempotency_key),
        )

    def find_conversation_by_external_identity(
        self,
        external_system: str,
        external_channel_id: str,
        external_thread_id: str,
        correlation_id: str | None = None,
    ) -> GetConversationResponse:
        """The conversation an outside thread is mapped to, with its messages.

        Raises:
            NotFoundError: the thread is not mapped (or its conversation is not
                visible to the caller).

        Example:
            ```python
            from airia import NotFoundError

            try:
                conversation = client.conversations.find_conversation_by_external_identity(
                    "Slack", "C024BE91L", "1712345678.000100"
                )
            except NotFoundError:
                conversation = None  # a new thread: create a conversation and map it
            ```
        """
        return self._client._request(
            "GET",
            f"{COLLECTION}/{_PATH}/lookup",
            params=_identity_body(external_system, external_channel_id, external_thread_id),
            correlation_id=correlation_id,
            cast_to=GetConversationResponse,
        )


class AsyncExternalIdentities(AsyncAPIResource):
    """Async twin of ``ExternalIdentities``: same methods, awaited."""

    async def list_external_identities(
        self, conversation_id: str, correlation_id: str | None = None
    ) -> list[ExternalIdentity]:
        """The external threads mapped to a conversation (see
        ``ExternalIdentities.list_external_identities``).

        Example:
            ```python
            identities = await client.conversations.list_external_identities("conversation_id")
            ```
        """
        return await self._client._request(
            "GET",
            conversation_path(conversation_id, _PATH),
            correlation_id=correlation_id,
            cast_to=list[ExternalIdentity],
        )

    async def add_external_identity(
        self,
        conversation_id: str,
        external_system: str,
        external_channel_id: str,
        external_thread_id: str,
        correlation_id: str | None = None,
    ) -> ExternalIdentity:
        """Map an outside thread to the conversation (see
        ``ExternalIdentities.add_external_identity`` for the rules and errors).

        Example:
            ```python
            identity = await client.conversations.add_external_identity(
                "conversation_id", "Slack", "C024BE91L", "1712345678.000100"
            )
            ```
        """
        return await self._client._request(
            "POST",
            conversation_path(conversation_id, _PATH),
            json=_identity_body(external_system, external_channel_id, external_thread_id),
            correlation_id=correlation_id,
            cast_to=ExternalIdentity,
        )

    async def remove_external_identity(
        self,
        conversation_id: str,
        identity_id: str,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """Remove a mapping (see ``ExternalIdentities.remove_external_identity``).

        Example:
            ```python
            await client.conversations.remove_external_identity("conversation_id", "identity_id")
            ```
        """
        await self._client._request(
            "DELETE",
            conversation_path(conversation_id, _PATH, identity_id),
            correlation_id=correlation_id,
            idempotency_key=key_or_new(idempotency_key),
        )

    async def find_conversation_by_external_identity(
        self,
        external_system: str,
        external_channel_id: str,
        external_thread_id: str,
        correlation_id: str | None = None,
    ) -> GetConversationResponse:
        """The conversation an outside thread is mapped to (see
        ``ExternalIdentities.find_conversation_by_external_identity``).

        Example:
            ```python
            conversation = await client.conversations.find_conversation_by_external_identity(
                "Slack", "C024BE91L", "1712345678.000100"
            )
            ```
        """
        return await self._client._request(
            "GET",
            f"{COLLECTION}/{_PATH}/lookup",
            params=_identity_body(external_system, external_channel_id, external_thread_id),
            correlation_id=correlation_id,
            cast_to=GetConversationResponse,
        )
