"""``conversations.events``: both clients against a real in-process WebSocket server.

The REST half (``websocket-url``) is the fake server; the socket is a scripted
``websockets`` server on 127.0.0.1 that plays one list of actions per
connection, so reconnects, close codes and resumes are exercised for real.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.sync.server import ServerConnection, serve

from airia import APIConnectionError, NotFoundError, PermissionDeniedError, WebSocketClosedError
from airia.types.api import ConversationEvent, MessageCreatedEvent, ParticipantAddedEvent

from .conftest import NOW, FakeServer

REJECT = "reject"


def ev(sequence: int | None, type_: str = "message.created", **data: Any) -> str:
    if type_ == "message.created":
        data = {
            "id": f"m{sequence}",
            "conversationId": "c",
            "message": f"text {sequence}",
            "role": "user",
            "createdAt": NOW,
            "updatedAt": NOW,
            **data,
        }
    payload = {"type": type_, "sequence": sequence, "conversationId": "c", "createdAt": NOW}
    return json.dumps({**payload, "data": data})


def close(code: int, reason: str = "") -> tuple[str, int, str]:
    return ("close", code, reason)


DROP = ("drop",)
RECV = ("recv",)
SILENT = ("silent",)
"""From here on the server answers no ping: a connection gone without a close."""


class SocketServer:
    """Plays ``sessions[i]`` to the i-th connection; records paths and frames received."""

    def __init__(self) -> None:
        self.sessions: list[Any] = []
        self.paths: list[str] = []
        self.received: list[dict[str, Any]] = []
        self._server = serve(self._handle, "127.0.0.1", 0, process_request=self._gate)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _gate(self, connection: ServerConnection, request: Any) -> Any:
        if self.sessions and self.sessions[0] == REJECT:
            self.sessions.pop(0)
            self.paths.append(request.path)
            return connection.respond(403, "refused\n")
        return None

    def _handle(self, ws: ServerConnection) -> None:
        self.paths.append(ws.request.path)
        actions = self.sessions.pop(0) if self.sessions else []
        try:
            for action in actions:
                if isinstance(action, str):
                    ws.send(action)
                elif action[0] == "close":
                    ws.close(action[1], action[2])
                    return
                elif action == DROP:
                    ws.socket.shutdown(socket.SHUT_RDWR)
                    return
                elif action == RECV:
                    self.received.append(json.loads(ws.recv()))
                elif action == SILENT:
                    send_frame = ws.protocol.send_frame

                    def no_pongs(frame: Frame, send: Any = send_frame) -> None:
                        if frame.opcode is not Opcode.PONG:
                            send(frame)

                    ws.protocol.send_frame = no_pongs  # type: ignore[method-assign]
            for _ in ws:  # hold the connection until the client leaves
                pass
        except ConnectionClosed:
            pass

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(5)


@pytest.fixture
def ws(server: FakeServer, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("airia._realtime.backoff_delay", lambda attempt: 0.0)
    sockets = SocketServer()
    server.ws_base = f"ws://127.0.0.1:{sockets.port}"
    yield sockets
    sockets.stop()


@pytest.fixture
def call(api):
    return api()


@pytest.fixture
def cid(call) -> str:
    return call("create_conversation", user_id="owner").conversation_id


def watch(call, cid: str, limit: int | None = None, **kwargs: Any) -> list[ConversationEvent]:
    """Every event until the stream ends (or ``limit`` of them), with either client."""
    conversations = call.client.conversations
    if call.kind == "sync":
        events = []
        with conversations.events(cid, **kwargs) as stream:
            for event in stream:
                events.append(event)
                if len(events) == limit:
                    break
        return events

    async def drain() -> list[ConversationEvent]:
        events = []
        async with conversations.events(cid, **kwargs) as stream:
            async for event in stream:
                events.append(event)
                if len(events) == limit:
                    break
        return events

    return asyncio.run(asyncio.wait_for(drain(), 10))


def test_events_are_typed_in_order_and_end_after_deletion(call, cid, ws: SocketServer):
    participant = {"conversationId": cid, "userId": "u2", "role": "Viewer"}
    ws.sessions = [
        [
            ev(1),
            ev(None, "typing", userId="u2", isTyping=True),
            ev(2, "participant.added", **participant),
            ev(3, "conversation.deleted"),
            close(1000, "conversation deleted"),
        ]
    ]
    events = watch(call, cid)
    assert [(e.type, e.sequence) for e in events] == [
        ("message.created", 1),
        ("typing", None),
        ("participant.added", 2),
        ("conversation.deleted", 3),
    ]
    assert isinstance(events[0], MessageCreatedEvent) and events[0].data.message == "text 1"
    assert isinstance(events[2], ParticipantAddedEvent) and events[2].data.user_id == "u2"
    assert ws.paths == [f"/v1/Conversations/{cid}/ws?ticket=t1"]


def test_reconnects_with_a_fresh_ticket_and_resumes_after_the_last_sequence(
    call, cid, ws: SocketServer
):
    ws.sessions = [
        [ev(1), ev(2), close(1001, "going away")],
        [ev(2), ev(3), close(4000, "resume after=3")],
        [DROP],
        [ev(3), ev(4), ev(5, "conversation.deleted"), close(1000)],
    ]
    events = watch(call, cid)
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5]
    assert ws.paths == [
        f"/v1/Conversations/{cid}/ws?ticket=t1",
        f"/v1/Conversations/{cid}/ws?ticket=t2&after=2",
        f"/v1/Conversations/{cid}/ws?ticket=t3&after=3",
        f"/v1/Conversations/{cid}/ws?ticket=t4&after=3",
    ]


def test_an_after_past_the_end_resumes_where_the_close_reason_says(call, cid, ws: SocketServer):
    # 9 is past the last stored event: the server closes with 4000 and where its
    # history ends; events above that, live ones too, are then delivered.
    ws.sessions = [
        [close(4000, "resume after=5")],
        [ev(6), ev(7, "conversation.deleted"), close(1000)],
    ]
    assert [e.sequence for e in watch(call, cid, after=9)] == [6, 7]
    assert ws.paths == [
        f"/v1/Conversations/{cid}/ws?ticket=t1&after=9",
        f"/v1/Conversations/{cid}/ws?ticket=t2&after=5",
    ]


def test_a_resume_below_what_was_delivered_delivers_that_history(call, cid, ws: SocketServer):
    # The server came back with an older database: its sequences 4 and 5 are new.
    ws.sessions = [
        [ev(11), ev(12), close(1012, "restart")],
        [close(4000, "resume after=3")],
        [ev(4), ev(5, "conversation.deleted"), close(1000)],
    ]
    assert [e.sequence for e in watch(call, cid)] == [11, 12, 4, 5]
    assert [p.rsplit("&", 1)[-1] for p in ws.paths[1:]] == ["after=12", "after=3"]


def test_a_4000_again_without_progress_backs_off(
    call, cid, ws: SocketServer, monkeypatch: pytest.MonkeyPatch
):
    asked: list[int] = []
    monkeypatch.setattr("airia._realtime.backoff_delay", lambda attempt: asked.append(attempt) or 0)
    stuck = [close(4000, "resume after=5")]
    ws.sessions = [stuck, stuck, stuck, [ev(6), close(4000, "resume after=6")], [close(1000)]]
    assert [e.sequence for e in watch(call, cid, after=9)] == [6]
    # The first 4000 and the one after an event reconnect at once; the repeats back off.
    assert asked == [1, 2]
    assert len(ws.paths) == 5


def test_after_is_sent_on_the_first_connect(call, cid, ws: SocketServer):
    ws.sessions = [[ev(7), ev(8)]]
    assert [e.sequence for e in watch(call, cid, limit=2, after=6)] == [7, 8]
    assert ws.paths == [f"/v1/Conversations/{cid}/ws?ticket=t1&after=6"]


def test_without_after_the_stream_starts_from_the_first_urls_last_sequence(
    call, cid, ws: SocketServer, server: FakeServer
):
    # A drop before the first event: what was stored meanwhile (8) is still sent.
    server.last_sequence = 7
    ws.sessions = [[close(1001)], [ev(8), ev(9, "conversation.deleted"), close(1000)]]
    assert [e.sequence for e in watch(call, cid)] == [8, 9]
    assert ws.paths == [
        f"/v1/Conversations/{cid}/ws?ticket=t1&after=7",
        f"/v1/Conversations/{cid}/ws?ticket=t2&after=7",
    ]


def test_with_opens_the_socket_on_entering(call, cid, ws: SocketServer):
    ws.sessions = [[RECV, ev(1)]]
    conversations = call.client.conversations
    if call.kind == "sync":
        with conversations.events(cid) as stream:
            stream.send_typing(True)  # open: no iteration needed
            assert next(stream).sequence == 1
    else:

        async def run() -> None:
            async with conversations.events(cid) as stream:
                await stream.send_typing(True)
                assert (await stream.__anext__()).sequence == 1

        asyncio.run(asyncio.wait_for(run(), 10))
    assert ws.received == [{"type": "typing", "isTyping": True}]
    assert len(ws.paths) == 1


def test_without_with_the_socket_opens_at_the_first_iteration(client, ws: SocketServer):
    cid = client.conversations.create_conversation(user_id="owner").conversation_id
    ws.sessions = [[ev(1)]]
    stream = client.conversations.events(cid)
    assert ws.paths == []
    assert next(stream).sequence == 1 and len(ws.paths) == 1
    stream.close()


def test_a_connection_gone_silent_is_noticed_by_pings_and_resumed(
    call, cid, ws: SocketServer, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
):
    """No close, no error: only the pings tell. The stream resumes after what it had, and
    the library's own report of the timeout (an ERROR with a traceback) reaches no
    stderr of the program's."""
    monkeypatch.setattr("airia._streaming.PING_INTERVAL", 0.2)
    monkeypatch.setattr("airia._streaming.PING_TIMEOUT", 0.2)
    ws.sessions = [[ev(1), SILENT], [ev(2), close(1000)]]
    assert [e.sequence for e in watch(call, cid)] == [1, 2]
    assert ws.paths[1].endswith("&after=1")
    assert "Traceback" not in capfd.readouterr().err


def test_access_removed_raises(call, cid, ws: SocketServer):
    ws.sessions = [[ev(1), close(1008, "access removed")]]
    with pytest.raises(WebSocketClosedError) as info:
        watch(call, cid)
    assert (info.value.close_code, info.value.close_reason) == (1008, "access removed")
    assert len(ws.paths) == 1


def test_refused_handshake_raises_without_retrying(call, cid, ws: SocketServer):
    ws.sessions = [REJECT]
    with pytest.raises(PermissionDeniedError):
        watch(call, cid)
    assert len(ws.paths) == 1


def test_refused_reconnect_raises(call, cid, ws: SocketServer):
    ws.sessions = [[ev(1), close(1001)], REJECT]
    with pytest.raises(PermissionDeniedError):
        watch(call, cid)
    assert len(ws.paths) == 2


def test_without_reconnect_a_restart_ends_the_stream(call, cid, ws: SocketServer):
    ws.sessions = [[ev(1), close(1001, "restart")]]
    assert [e.sequence for e in watch(call, cid, reconnect=False)] == [1]
    assert len(ws.paths) == 1


def test_without_reconnect_a_drop_raises(call, cid, ws: SocketServer):
    ws.sessions = [[ev(1), DROP]]
    with pytest.raises(WebSocketClosedError) as info:
        watch(call, cid, reconnect=False)
    assert info.value.close_code == 1006


def test_max_reconnect_attempts(call, cid, ws: SocketServer):
    # Each reconnect opens, so the count starts over: a server that keeps
    # restarting is followed; one that keeps refusing the socket is not.
    ws.sessions = [[close(1001)], [close(1001)], [ev(1), ev(2, "conversation.deleted")]]
    assert [e.sequence for e in watch(call, cid, max_reconnect_attempts=1)] == [1, 2]


def test_conversation_gone_while_away_raises(call, cid, ws: SocketServer, server: FakeServer):
    # The REST call for a fresh URL answers 404 once the conversation is gone.
    ws.sessions = [[ev(1), close(1001)]]
    with pytest.raises(NotFoundError, match="Conversation not found"):
        _watch_deleting(call, cid, server)
    assert len(ws.paths) == 1


def _watch_deleting(call, cid, server: FakeServer):
    events = []
    conversations = call.client.conversations

    def on_event(event):
        events.append(event)
        server.conversations.pop(cid, None)

    if call.kind == "sync":
        for event in conversations.events(cid):
            on_event(event)
        return events

    async def drain():
        async for event in conversations.events(cid):
            on_event(event)

    asyncio.run(asyncio.wait_for(drain(), 10))
    return events


def test_close_from_another_thread_ends_a_blocked_iteration(client, ws: SocketServer):
    cid = client.conversations.create_conversation(user_id="owner").conversation_id
    ws.sessions = [[ev(1)]]
    stream = client.conversations.events(cid)
    assert next(stream).sequence == 1
    threading.Timer(0.1, stream.close).start()
    started = time.monotonic()
    assert list(stream) == []
    assert time.monotonic() - started < 5


async def test_async_close_ends_a_blocked_iteration(async_client, ws: SocketServer):
    cid = (await async_client.conversations.create_conversation(user_id="owner")).conversation_id
    ws.sessions = [[ev(1)]]
    stream = async_client.conversations.events(cid)
    assert (await stream.__anext__()).sequence == 1
    asyncio.get_running_loop().call_later(0.1, lambda: asyncio.ensure_future(stream.close()))
    rest = [event async for event in stream]
    assert rest == []


def test_stream_sends_typing_and_presence(client, ws: SocketServer):
    cid = client.conversations.create_conversation(user_id="owner").conversation_id
    ws.sessions = [[ev(1), RECV, RECV, ev(2)]]
    with client.conversations.events(cid) as stream:
        assert next(stream).sequence == 1
        stream.send_typing(True)
        stream.send_presence("joined")
        assert next(stream).sequence == 2
    assert ws.received == [
        {"type": "typing", "isTyping": True},
        {"type": "presence", "action": "joined"},
    ]


async def test_async_stream_sends_typing(async_client, ws: SocketServer):
    cid = (await async_client.conversations.create_conversation(user_id="owner")).conversation_id
    ws.sessions = [[ev(1), RECV, ev(2)]]
    async with async_client.conversations.events(cid) as stream:
        assert (await stream.__anext__()).sequence == 1
        await stream.send_typing(False)
        assert (await stream.__anext__()).sequence == 2
    assert ws.received == [{"type": "typing", "isTyping": False}]


def test_stream_signals_name_the_user_they_are_by(call, cid, ws: SocketServer):
    ws.sessions = [[ev(1), RECV, RECV, ev(2)]]

    def signal(stream):
        yield stream.send_typing(True, user_id="bot")
        yield stream.send_presence("left", user_id="été-🙂")

    if call.kind == "sync":
        with call.client.conversations.events(cid) as stream:
            next(stream)
            list(signal(stream))
            next(stream)
    else:

        async def run() -> None:
            async with call.client.conversations.events(cid) as stream:
                await stream.__anext__()
                for sent in signal(stream):
                    await sent
                await stream.__anext__()

        asyncio.run(asyncio.wait_for(run(), 10))
    assert ws.received == [
        {"type": "typing", "isTyping": True, "userId": "bot"},
        {"type": "presence", "action": "left", "userId": "été-🙂"},
    ]


@pytest.mark.parametrize("user_id", ["", "u" * 256, "nul\x00here", "lone\ud800"])
def test_a_signal_naming_a_user_the_server_would_refuse_is_a_value_error(
    call, cid, ws: SocketServer, user_id: str
):
    ws.sessions = [[ev(1), close(1000)]]
    if call.kind == "sync":
        with call.client.conversations.events(cid) as stream:
            next(stream)
            with pytest.raises(ValueError, match="user_id"):
                stream.send_typing(True, user_id=user_id)
            with pytest.raises(ValueError, match="user_id"):
                stream.send_presence("joined", user_id=user_id)
        return

    async def run() -> None:
        async with call.client.conversations.events(cid) as stream:
            await stream.__anext__()
            with pytest.raises(ValueError, match="user_id"):
                await stream.send_typing(True, user_id=user_id)
            with pytest.raises(ValueError, match="user_id"):
                await stream.send_presence("joined", user_id=user_id)

    asyncio.run(asyncio.wait_for(run(), 10))


def test_sending_before_the_channel_is_open_is_an_error(client):
    stream = client.conversations.events("c")
    with pytest.raises(APIConnectionError, match="not open"):
        stream.send_typing()
