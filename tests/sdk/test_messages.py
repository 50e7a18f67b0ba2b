"""Messages, sharing, typing, presence and the WebSocket URL: wire shape and parsing."""

import json
from datetime import datetime, timezone

import httpx
import pytest

from airia import APIResponseValidationError
from airia.types.api import (
    AddMessageResponse,
    ConversationMessage,
    MarkAsReadResponse,
    MessagePage,
    Participant,
    PresenceResponse,
    TruncateMessagesResponse,
    TypingResponse,
    WebSocketUrlResponse,
)

from .conftest import FakeServer, problem

UTC_NOW = datetime(2026, 11, 26, 6, 1, 34, 123456, tzinfo=timezone.utc)


@pytest.fixture
def call(api):
    return api()


@pytest.fixture
def cid(call) -> str:
    return call("create_conversation", user_id="owner").conversation_id


def test_add_message_sends_every_field(call, cid, server: FakeServer):
    added = call("add_message", cid, "Hello")
    assert isinstance(added, AddMessageResponse)
    assert (added.message_id, added.conversation_id, added.created_at) == ("m1", cid, UTC_NOW)
    request = server.last
    assert (request.method, request.url.path) == ("POST", f"/v1/Conversations/{cid}/messages")
    assert json.loads(request.content) == {
        "message": "Hello",
        "role": "user",
        "images": None,
        "imageAttachmentIds": None,
        "userId": None,
    }


def test_add_message_with_all_options(call, cid, server: FakeServer):
    call(
        "add_message",
        cid,
        None,
        role="assistant",
        images=["data:image/png;base64,AA=="],
        image_attachment_ids=["att-1"],
        user_id="user_9",
        correlation_id="cid-1",
    )
    assert json.loads(server.last.content) == {
        "message": None,
        "role": "assistant",
        "images": ["data:image/png;base64,AA=="],
        "imageAttachmentIds": ["att-1"],
        "userId": "user_9",
    }
    assert server.last.headers["X-Correlation-ID"] == "cid-1"


def test_add_message_is_retried_with_its_idempotency_key(call, cid, server: FakeServer, sleeps):
    server.script(problem(503, "Busy"))
    added = call("add_message", cid, "x")
    first, second = server.requests[-2:]
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert first.content == second.content
    assert len(sleeps) == 1 and added.message_id == "m1"
    assert len(server.conversations[cid]["messages"]) == 1


def test_list_messages_params_and_page(call, cid, server: FakeServer):
    for text in ("a", "b", "c"):
        call("add_message", cid, text)
    page = call("list_messages", cid)
    assert dict(server.last.url.params) == {}
    assert isinstance(page, MessagePage) and page.next_cursor is None
    assert [m.message for m in page.items] == ["a", "b", "c"]
    assert isinstance(page.items[0], ConversationMessage)
    assert page.items[0].user_id == "owner" and page.items[0].image_attachment_ids is None

    page = call("list_messages", cid, limit=2, order="desc", cursor="0")
    assert dict(server.last.url.params) == {"limit": "2", "order": "desc", "cursor": "0"}
    assert [m.message for m in page.items] == ["c", "b"]
    assert page.next_cursor == "2"


def test_iter_messages_follows_cursors(call, cid, server: FakeServer):
    for i in range(5):
        call("add_message", cid, str(i))
    before = len(server.requests)
    messages = call.collect("iter_messages", cid, page_size=2)
    assert [m.message for m in messages] == ["0", "1", "2", "3", "4"]
    pages = server.requests[before:]
    assert [r.url.params.get("cursor") for r in pages] == [None, "2", "4"]
    assert {r.url.params["limit"] for r in pages} == {"2"}
    assert [m.message for m in call.collect("iter_messages", cid, order="desc")] == list("43210")


def test_iter_messages_stops_on_an_empty_page_even_with_a_cursor(call, cid, server: FakeServer):
    server.script(httpx.Response(200, json={"items": [], "nextCursor": "again"}))
    assert call.collect("iter_messages", cid) == []


def test_truncate_messages(call, cid, server: FakeServer):
    for text in ("a", "b", "c"):
        call("add_message", cid, text)
    result = call("truncate_messages", cid, "m2")
    assert server.last.method == "DELETE"
    assert server.last.url.path == f"/v1/Conversations/{cid}/messages/m2/truncate"
    assert isinstance(result, TruncateMessagesResponse)
    assert (result.from_message_id, result.deleted_count, result.remaining_count) == ("m2", 2, 1)


def test_mark_as_read(call, cid, server: FakeServer):
    call("add_message", cid, "a")
    read = call("mark_as_read", cid)
    assert (server.last.method, server.last.url.path) == (
        "PATCH",
        f"/v1/Conversations/{cid}/mark-as-read",
    )
    assert dict(server.last.url.params) == {}
    assert isinstance(read, MarkAsReadResponse)
    assert (read.user_id, read.last_read_message_id, read.read_at) == ("owner", "m1", UTC_NOW)
    assert call("mark_as_read", cid, user_id="u2").user_id == "u2"
    assert dict(server.last.url.params) == {"userId": "u2"}


def test_feed_items_carry_unread_count(call, cid):
    call("add_message", cid, "a")
    assert call("get_conversations_feed").items[0].unread_count == 1


def test_sharing_round_trip(call, cid, server: FakeServer):
    shared = call("share_conversation", cid, "user_456")
    assert json.loads(server.last.content) == {"userId": "user_456", "role": "Viewer"}
    assert server.last.url.path == f"/v1/Conversations/{cid}/share"
    assert isinstance(shared, Participant)
    assert (shared.user_id, shared.role, shared.shared_at) == ("user_456", "Viewer", UTC_NOW)
    assert shared.shared_by_username == "Owner"

    call("share_conversation", cid, "user_789", role="Collaborator")
    listed = call("list_participants", cid)
    assert [(p.user_id, p.role) for p in listed] == [
        ("user_456", "Viewer"),
        ("user_789", "Collaborator"),
    ]
    assert all(isinstance(p, Participant) for p in listed)

    updated = call("update_participant_role", cid, "user_456", "Collaborator")
    assert (server.last.method, server.last.url.path) == (
        "PUT",
        f"/v1/Conversations/{cid}/participants/user_456/role",
    )
    assert json.loads(server.last.content) == {"role": "Collaborator"}
    assert updated.role == "Collaborator"

    removed = call("remove_participant", cid, "user_789")
    assert server.last.method == "DELETE"
    assert removed.user_id == "user_789"
    assert [p.user_id for p in call("list_participants", cid)] == ["user_456"]


def test_user_ids_are_quoted_in_paths(call, server: FakeServer):
    server.script(*(problem(404, "Not found") for _ in range(2)))
    for method in ("update_participant_role", "remove_participant"):
        args = ("c/1", "a/b?c", "Viewer") if method == "update_participant_role" else ("c/1", "..")
        with pytest.raises(Exception, match="Not found"):
            call(method, *args)
    assert server.requests[0].url.raw_path == b"/v1/Conversations/c%2F1/participants/a%2Fb%3Fc/role"
    assert server.requests[1].url.raw_path == b"/v1/Conversations/c%2F1/participants/%2E%2E"


def test_participants_list_that_is_not_a_list_is_a_validation_error(call, server: FakeServer):
    server.script(httpx.Response(200, json={"items": []}))
    with pytest.raises(APIResponseValidationError, match=r"list\[.*Participant\]"):
        call("list_participants", "c")


def test_typing_and_presence(call, cid, server: FakeServer):
    typing = call("send_typing", cid, user_id="u1")
    assert json.loads(server.last.content) == {"isTyping": True, "userId": "u1"}
    assert server.last.url.path == f"/v1/Conversations/{cid}/typing"
    assert isinstance(typing, TypingResponse)
    assert (typing.conversation_id, typing.user_id, typing.is_typing) == (cid, "u1", True)
    assert call("send_typing", cid, is_typing=False).is_typing is False
    assert json.loads(server.last.content) == {"isTyping": False, "userId": None}

    presence = call("send_presence", cid, "joined", user_id="u1")
    assert json.loads(server.last.content) == {"action": "joined", "userId": "u1"}
    assert server.last.url.path == f"/v1/Conversations/{cid}/presence"
    assert isinstance(presence, PresenceResponse) and presence.action == "joined"


def test_websocket_url(call, cid, server: FakeServer):
    first = call("websocket_url", cid)
    assert (server.last.method, server.last.url.path) == (
        "GET",
        f"/v1/Conversations/{cid}/websocket-url",
    )
    assert isinstance(first, WebSocketUrlResponse)
    assert first.websocket_url == f"ws://testserver/v1/Conversations/{cid}/ws?ticket=t1"
    assert first.expires_at == UTC_NOW
    assert call("websocket_url", cid).websocket_url.endswith("ticket=t2")
