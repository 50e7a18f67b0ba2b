"""Sharing a conversation with other users, sync and async side by side.

``Conversations`` inherits these methods. Roles are ``Owner``,
``Collaborator`` and ``Viewer``.
"""

from __future__ import annotations

from ..types.api.conversations import Participant
from ._resource import AsyncAPIResource, SyncAPIResource, conversation_path, key_or_new


class Participants(SyncAPIResource):
    """Share a conversation, list who has access, change or remove access."""

    def share_conversation(
        self,
        conversation_id: str,
        user_id: str,
        role: str = "Viewer",
        correlation_id: str | None = None,
    ) -> Participant:
        """Give ``user_id`` access to the conversation with ``role``.

        Raises:
            PermissionDeniedError: the caller may not share it.

        Example:
            ```python
            participant = client.conversations.share_conversation(
                "your_conversation_id", user_id="user_456", role="Collaborator"
            )
            print(participant.user_id, participant.role, participant.shared_at)
            ```
        """
        return self._client._request(
            "POST",
            conversation_path(conversation_id, "share"),
            json={"userId": user_id, "role": role},
            correlation_id=correlation_id,
            cast_to=Participant,
        )

    def list_participants(
        self, conversation_id: str, correlation_id: str | None = None
    ) -> list[Participant]:
        """Everyone with access to the conversation, the owner included.

        Example:
            ```python
            for p in client.conversations.list_participants("your_conversation_id"):
                print(p.user_id, p.role)
            ```
        """
        return self._client._request(
            "GET",
            conversation_path(conversation_id, "participants"),
            correlation_id=correlation_id,
            cast_to=list[Participant],
        )

    def update_participant_role(
        self,
        conversation_id: str,
        user_id: str,
        role: str,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Participant:
        """Change a participant's role.

        Sent with an ``Idempotency-Key`` (``idempotency_key``, else a fresh UUID4), the same
        on every retry. A retry after a lost answer gets that answer: the change is stored
        (and sent to listeners) once.

        Example:
            ```python
            client.conversations.update_participant_role(
                "your_conversation_id", "user_456", role="Viewer"
            )
            ```
        """
        return self._client._request(
            "PUT",
            conversation_path(conversation_id, "participants", user_id, "role"),
            json={"role": role},
            correlation_id=correlation_id,
            idempotency_key=key_or_new(idempotency_key),
            cast_to=Participant,
        )

    def remove_participant(
        self,
        conversation_id: str,
        user_id: str,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Participant:
        """Take a user's access away; returns the participant that was removed.

        Sent with an ``Idempotency-Key`` (``idempotency_key``, else a fresh UUID4), the same
        on every retry. A retry after a lost answer gets that answer, not a 404 for the
        removal it did.

        Example:
            ```python
            removed = client.conversations.remove_participant("your_conversation_id", "user_456")
            ```
        """
        return self._client._request(
            "DELETE",
            conversation_path(conversation_id, "participants", user_id),
            correlation_id=correlation_id,
            idempotency_key=key_or_new(idempotency_key),
            cast_to=Participant,
        )


class AsyncParticipants(AsyncAPIResource):
    """Async twin of ``Participants``: same methods, awaited."""

    async def share_conversation(
        self,
        conversation_id: str,
        user_id: str,
        role: str = "Viewer",
        correlation_id: str | None = None,
    ) -> Participant:
        """Give ``user_id`` access (see ``Participants.share_conversation``).

        Example:
            ```python
            await client.conversations.share_conversation("conversation_id", user_id="user_456")
            ```
        """
        return await self._client._request(
            "POST",
            conversation_path(conversation_id, "share"),
            json={"userId": user_id, "role": role},
            correlation_id=correlation_id,
            cast_to=Participant,
        )

    async def list_participants(
        self, conversation_id: str, correlation_id: str | None = None
    ) -> list[Participant]:
        """Everyone with access (see ``Participants.list_participants``).

        Example:
            ```python
            participants = await client.conversations.list_participants("conversation_id")
            ```
        """
        return await self._client._request(
            "GET",
            conversation_path(conversation_id, "participants"),
            correlation_id=correlation_id,
            cast_to=list[Participant],
        )

    async def update_participant_role(
        self,
        conversation_id: str,
        user_id: str,
        role: str,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Participant:
        """Change a participant's role (see ``Participants.update_participant_role``).

        Example:
            ```python
            await client.conversations.update_participant_role("c", "user_456", role="Viewer")
            ```
        """
        return await self._client._request(
            "PUT",
            conversation_path(conversation_id, "participants", user_id, "role"),
            json={"role": role},
            correlation_id=correlation_id,
            idempotency_key=key_or_new(idempotency_key),
            cast_to=Participant,
        )

    async def remove_participant(
        self,
        conversation_id: str,
        user_id: str,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Participant:
        """Take a user's access away (see ``Participants.remove_participant``).

        Example:
            ```python
            await client.conversations.remove_participant("conversation_id", "user_456")
            ```
        """
        return await self._client._request(
            "DELETE",
            conversation_path(conversation_id, "participants", user_id),
            correlation_id=correlation_id,
            idempotency_key=key_or_new(idempotency_key),
            cast_to=Participant,
        )
