"""What a conversation's delete logs when cleaning up after it fails."""

from __future__ import annotations

import errno
import logging

import pytest

from airia_server.domain.auth import Principal
from airia_server.domain.conversations import ConversationService
from airia_server.storage.base import EventRecord

API_KEY = Principal(tenant_id="t1", kind="api_key", key_id="key1")
CID = "01a21e70-b02b-71de-9cb7-a4dd485864e7"


class Store:
    async def delete_conversation(self, tenant_id, conversation_id, deleted_at):
        event = EventRecord(
            conversation_id=conversation_id,
            sequence=2,
            type="conversation.deleted",
            created_at=deleted_at,
            data={"conversationId": conversation_id},
        )
        return event, 1  # one attachment went with it


class Hub:
    async def publish(self, event) -> None:
        pass


async def delete_with_cleanup_raising(exc: Exception, caplog) -> list[logging.LogRecord]:
    service = ConversationService(Store(), Hub(), "default")

    async def sweep():
        raise exc

    service.after_delete = sweep
    with caplog.at_level(logging.INFO, logger="airia_server"):
        await service.delete(API_KEY, CID)  # done: the delete itself committed
    return [r for r in caplog.records if "cleanup after deleting" in r.getMessage()]


async def test_a_cleanup_the_blob_disk_refuses_is_one_warning_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A read-only blob filesystem: the delete answered 204, and its cleanup logged an
    ERROR with a traceback, which operations.md tells operators is a bug."""
    records = await delete_with_cleanup_raising(
        OSError(errno.EROFS, "Read-only file system"), caplog
    )
    assert [(r.levelname, r.exc_info) for r in records] == [("WARNING", None)]
    assert "the sweep will retry" in records[0].getMessage()


async def test_a_cleanup_that_fails_for_a_bug_keeps_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = await delete_with_cleanup_raising(KeyError("a bug"), caplog)
    assert [r.levelname for r in records] == ["ERROR"] and records[0].exc_info is not None
