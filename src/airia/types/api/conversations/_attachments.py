"""Pydantic models for external identities and attachments of a conversation.

Same conventions as ``_conversations``: snake_case attributes over a camelCase
wire, unknown fields kept. Only what the contract guarantees is required.
"""

from __future__ import annotations

from datetime import datetime

from ._conversations import _Model


class ExternalIdentity(_Model):
    """A thread of an outside system (Slack, Teams, ...) mapped to a conversation.

    The triple ``(external_system, external_channel_id, external_thread_id)``
    is unique in a tenant: it points to exactly one conversation.
    """

    id: str
    conversation_id: str
    external_system: str
    external_channel_id: str
    external_thread_id: str
    created_at: datetime | None = None


class Attachment(_Model):
    """A file stored with a conversation.

    ``url`` is a signed, expiring absolute URL that needs no credentials: pass
    the attachment (or the URL) to ``download_attachment``. ``source`` is
    ``user`` or ``agent``; ``size`` is in bytes and ``sha256`` is hex.
    """

    blob_id: str
    url: str
    conversation_id: str | None = None
    file_name: str | None = None
    content_type: str | None = None
    size: int | None = None
    source: str | None = None
    created_at: datetime | None = None
    sha256: str | None = None
