"""The no-I/O half of the event stream: close codes, backoff, resume URLs, frame handling."""

import json
import logging

import httpx
import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from airia import (
    APIConnectionError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    WebSocketClosedError,
)
from airia._realtime import (
    BaseEventStream,
    Step,
    backoff_delay,
    close_action,
    connect_error,
    is_transient,
    plan_after_close,
    redact_url,
    resume_point,
    resume_url,
)
from airia.types.api import (
    ConversationEvent,
    ConversationUpdatedEvent,
    MessageCreatedEvent,
    MessagesTruncatedEvent,
    ParticipantAddedEvent,
    ParticipantRemovedEvent,
    PresenceEvent,
    TypingEvent,
    parse_event,
)

from .conftest import NOW

MESSAGE = {
    "id": "m1",
    "conversationId": "c1",
    "message": "hi",
    "role": "user",
    "images": None,
    "imageAttachmentIds": None,
    "createdAt": NOW,
    "updatedAt": NOW,
    "userId": "u1",
}
PARTICIPANT = {"conversationId": "c1", "userId": "u2", "role": "Viewer", "sharedAt": NOW}


def frame(type_: str, sequence: int | None, data: dict | None = None) -> str:
    payload = {"type": type_, "sequence": sequence, "conversationId": "c1", "createdAt": NOW}
    return json.dumps({**payload, "data": data or {}})


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (1000, "stop"),
        (1001, "reconnect"),
        (1006, "reconnect"),
        (1011, "reconnect"),
        (None, "reconnect"),
        (1008, "fail"),
        (4000, "resume"),
    ],
)
def test_close_action(code, action):
    assert close_action(code) == action


def test_backoff_doubles_is_capped_and_jittered(monkeypatch):
    monkeypatch.setattr("airia._realtime.random.random", lambda: 0.0)
    assert [backoff_delay(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    monkeypatch.setattr("airia._realtime.random.random", lambda: 1.0)
    assert backoff_delay(0) == 0.25 and backoff_delay(10) == 15


def test_plan_stop_fail_and_resume():
    plan = lambda code, attempt=0, **kw: plan_after_close(  # noqa: E731
        code, attempt, reconnect=kw.get("reconnect", True), max_attempts=kw.get("max_attempts")
    )
    assert plan(1000) == Step("stop")
    assert plan(1008).action == "fail" and "refused" in plan(1008).reason
    assert plan(4000) == Step("reconnect", 0.0)
    # A resume that keeps failing backs off like any other reconnect.
    assert plan(4000, attempt=2).delay > 0
    assert plan(1001).action == "reconnect" and 0 < plan(1001).delay <= 0.5
    assert plan(1006, attempt=3).delay > plan(1006).delay
    assert plan(1006, attempt=3, max_attempts=3).action == "fail"
    assert "gave up after 3" in plan(None, attempt=3, max_attempts=3).reason
    assert plan(1006, attempt=2, max_attempts=3).action == "reconnect"


def test_plan_without_reconnect():
    def plan(code):
        return plan_after_close(code, 0, reconnect=False, max_attempts=None)

    assert plan(1001) == Step("stop")
    assert plan(4000) == Step("stop")
    assert plan(1006).action == "fail"
    assert plan(1000) == Step("stop")
    assert plan(1008).action == "fail"


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (None, "ws://h/v1/Conversations/c/ws?ticket=t.x"),
        (0, "ws://h/v1/Conversations/c/ws?ticket=t.x&after=0"),
        (41, "ws://h/v1/Conversations/c/ws?ticket=t.x&after=41"),
    ],
)
def test_resume_url(after, expected):
    assert resume_url("ws://h/v1/Conversations/c/ws?ticket=t.x", after) == expected


def test_resume_url_replaces_an_existing_after():
    url = resume_url("wss://h/ws?after=3&ticket=a%2Bb", 7)
    assert url == "wss://h/ws?ticket=a%2Bb&after=7"


def test_redact_url_drops_the_ticket():
    assert (
        redact_url("ws://h/v1/Conversations/c/ws?ticket=secret") == "ws://h/v1/Conversations/c/ws"
    )


def _invalid_status(status: int, body: bytes = b"") -> InvalidStatus:
    return InvalidStatus(Response(status, "", Headers(), body))


def test_connect_error_maps_handshake_statuses_and_transport_errors():
    assert isinstance(connect_error(_invalid_status(403)), PermissionDeniedError)
    assert isinstance(connect_error(_invalid_status(404)), NotFoundError)
    assert isinstance(connect_error(_invalid_status(503)), InternalServerError)
    refused = connect_error(ConnectionRefusedError(111, "Connection refused"))
    assert isinstance(refused, APIConnectionError) and "Connection refused" in refused.message
    rest = NotFoundError(404, "Conversation not found")
    assert connect_error(rest) is rest


def test_is_transient():
    assert is_transient(connect_error(_invalid_status(503)))
    assert is_transient(connect_error(_invalid_status(429)))
    assert is_transient(APIConnectionError("down"))
    assert not is_transient(connect_error(_invalid_status(403)))
    assert not is_transient(connect_error(_invalid_status(401)))
    assert not is_transient(NotFoundError(404, "gone"))


def test_parse_event_by_type():
    event = parse_event(json.loads(frame("message.created", 1, MESSAGE)))
    assert isinstance(event, MessageCreatedEvent)
    assert (event.sequence, event.conversation_id, event.data.message) == (1, "c1", "hi")
    assert event.created_at is not None and event.created_at.tzinfo is not None
    truncated = {"conversationId": "c1", "fromMessageId": "m1", "deletedCount": 2}
    assert isinstance(
        parse_event(json.loads(frame("messages.truncated", 2, truncated))), MessagesTruncatedEvent
    )
    added = parse_event(json.loads(frame("participant.added", 3, PARTICIPANT)))
    assert isinstance(added, ParticipantAddedEvent) and added.data.role == "Viewer"
    removed = parse_event(json.loads(frame("participant.removed", 4, PARTICIPANT)))
    assert isinstance(removed, ParticipantRemovedEvent)
    updated = parse_event(json.loads(frame("conversation.updated", 5, {"title": "T"})))
    assert isinstance(updated, ConversationUpdatedEvent) and updated.data == {"title": "T"}
    typing = parse_event(json.loads(frame("typing", None, {"userId": "u1", "isTyping": True})))
    assert isinstance(typing, TypingEvent) and typing.data.is_typing and typing.sequence is None
    presence = parse_event(json.loads(frame("presence", None, {"userId": "u1", "action": "left"})))
    assert isinstance(presence, PresenceEvent) and presence.data.action == "left"


def test_unknown_type_or_unreadable_data_falls_back_to_the_base_event():
    future = parse_event({"type": "reaction.added", "sequence": 9, "data": {"emoji": "+1"}})
    assert type(future) is ConversationEvent and future.data == {"emoji": "+1"}
    odd = parse_event({"type": "message.created", "sequence": 1, "data": {"nope": 1}})
    assert type(odd) is ConversationEvent and odd.data == {"nope": 1}
    # Dumping by alias gives the wire form back.
    assert parse_event(json.loads(frame("typing", None, {"isTyping": False}))).model_dump(
        mode="json", by_alias=True
    )["data"] == {"userId": None, "isTyping": False}


def _stream(**kwargs) -> BaseEventStream:
    options = {"after": None, "reconnect": True, "max_reconnect_attempts": None, **kwargs}
    return BaseEventStream("c1", logger=logging.getLogger("airia"), log_requests=False, **options)


def test_accept_delivers_each_sequence_once_and_in_order():
    stream = _stream(after=2)
    delivered = [
        stream._accept(frame("message.created", seq, MESSAGE)) for seq in (1, 2, 3, 3, 2, 4)
    ]
    assert [e.sequence if e else None for e in delivered] == [None, None, 3, None, None, 4]
    assert stream.last_sequence == 4
    # Ephemeral events have no sequence and never count as duplicates.
    typing = stream._accept(frame("typing", None, {"userId": "u", "isTyping": True}))
    assert typing is not None and stream.last_sequence == 4


def test_accept_skips_frames_that_are_not_events():
    stream = _stream()
    assert stream._accept("not json") is None
    assert stream._accept("[1, 2]") is None
    assert stream._accept(json.dumps({"sequence": 1})) is None
    assert stream.last_sequence is None


def test_conversation_deleted_finishes_the_stream():
    stream = _stream()
    assert stream._accept(frame("conversation.deleted", 7)) is not None
    assert stream._finished and stream.last_sequence == 7


def test_socket_url_resumes_after_the_last_delivered_sequence():
    stream = _stream()
    assert stream._socket_url("ws://h/ws?ticket=t") == "ws://h/ws?ticket=t"
    stream._accept(frame("message.created", 12, MESSAGE))
    assert stream._socket_url("ws://h/ws?ticket=t2") == "ws://h/ws?ticket=t2&after=12"


def test_on_close_counts_attempts_and_resets_on_open(monkeypatch):
    monkeypatch.setattr("airia._realtime.backoff_delay", lambda attempt: float(attempt))
    stream = _stream(max_reconnect_attempts=2)
    assert stream._on_close(1006, "") == 0.0
    assert stream._on_close(1006, "") == 1.0
    with pytest.raises(WebSocketClosedError, match="gave up after 2") as info:
        stream._on_close(1006, "")
    assert info.value.close_code == 1006 and info.value.status_code is None
    stream = _stream(max_reconnect_attempts=2)
    stream._on_close(1006, "")
    stream._on_open("ws://h/ws?ticket=t")
    assert stream._on_close(1001, "restart") == 0.0
    assert stream.close_code == 1001


@pytest.mark.parametrize(
    ("reason", "point"),
    [("resume after=41", 41), ("resume after=0", 0), ("", None), ("resume after=x", None)],
)
def test_resume_point(reason, point):
    assert resume_point(reason) == point


def test_a_4000_resumes_from_its_reason_and_backs_off_when_it_repeats(monkeypatch):
    monkeypatch.setattr("airia._realtime.backoff_delay", lambda attempt: float(attempt))
    stream = _stream(after=9, max_reconnect_attempts=3)
    assert stream._on_close(4000, "resume after=5") == 0.0
    assert stream.last_sequence == 5
    for expected in (1.0, 2.0):
        stream._on_open("ws://h/ws?ticket=t")
        assert stream._on_close(4000, "resume after=5") == expected
    stream._on_open("ws://h/ws?ticket=t")
    stream._accept(frame("message.created", 6, MESSAGE))
    assert stream._on_close(4000, "resume after=6") == 0.0
    for expected in (1.0, 2.0):
        stream._on_open("ws://h/ws?ticket=t")
        assert stream._on_close(4000, "resume after=6") == expected
    stream._on_open("ws://h/ws?ticket=t")
    # The repeats count against max_reconnect_attempts, although each opened.
    with pytest.raises(WebSocketClosedError, match="gave up after 3"):
        stream._on_close(4000, "resume after=6")


def test_on_close_refusal_raises_and_normal_close_finishes():
    stream = _stream()
    with pytest.raises(WebSocketClosedError) as info:
        stream._on_close(1008, "access removed")
    assert (info.value.close_code, info.value.close_reason) == (1008, "access removed")
    assert stream._finished
    stream = _stream()
    stream._on_close(1000, "conversation deleted")
    assert stream._finished and stream.close_code == 1000


def test_connect_errors_before_the_first_open_are_raised():
    stream = _stream()
    with pytest.raises(APIConnectionError):
        stream._on_connect_error(OSError("Connection refused"))
    assert stream._finished


def test_a_rest_error_before_the_first_open_is_raised_as_it_is():
    """The URL's REST call failed (404): that error, not one caused by itself."""
    stream = _stream()
    refused = NotFoundError(404, "Conversation not found")
    with pytest.raises(NotFoundError) as info:
        stream._on_connect_error(refused)
    assert info.value is refused and info.value.__cause__ is None
    with pytest.raises(APIConnectionError) as info:
        _stream()._on_connect_error(OSError("Connection refused"))
    assert isinstance(info.value.__cause__, OSError)


def test_transient_connect_errors_after_an_open_are_retried(monkeypatch):
    monkeypatch.setattr("airia._realtime.backoff_delay", lambda attempt: 0.1)
    stream = _stream(max_reconnect_attempts=1)
    stream._on_open("ws://h/ws")
    assert stream._on_connect_error(OSError("Connection refused")) == 0.1
    # Past max_reconnect_attempts: closed for good, as documented, the failure its cause.
    with pytest.raises(WebSocketClosedError, match="gave up after 1") as info:
        stream._on_connect_error(OSError("Connection refused"))
    assert info.value.close_code == 1006 and stream._finished
    assert isinstance(info.value.__cause__, APIConnectionError)
    stream = _stream()
    stream._on_open("ws://h/ws")
    with pytest.raises(NotFoundError):
        stream._on_connect_error(NotFoundError(404, "gone"))


def test_response_status_error_carries_the_handshake_body():
    error = connect_error(_invalid_status(403, b'{"message": "ticket expired"}'))
    assert error.message == "ticket expired" and isinstance(error.response, httpx.Response)
