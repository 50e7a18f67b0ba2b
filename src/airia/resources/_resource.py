"""Base of every resource: a handle on the client that sends its requests."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from .._base_client import path_segment

if TYPE_CHECKING:
    from .._client import AiriaAsyncClient, AiriaClient


class SyncAPIResource:
    def __init__(self, client: AiriaClient) -> None:
        self._client = client


class AsyncAPIResource:
    def __init__(self, client: AiriaAsyncClient) -> None:
        self._client = client


COLLECTION = "v1/Conversations"


def conversation_path(conversation_id: str, *parts: str) -> str:
    """``v1/Conversations/{id}/part/...`` with every segment quoted (ids may hold ``/``)."""
    return "/".join([COLLECTION, *(path_segment(p) for p in (conversation_id, *parts))])


def without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def key_or_new(key: str | None) -> str:
    """The caller's key, else a fresh UUID4: one per call, reused by all its retries."""
    return key if key is not None else str(uuid.uuid4())
