"""``airia messages ...`` and the sharing, read and watch commands of ``airia conversations``."""

import json

import pytest

from .conftest import FakeServer
from .test_events import REJECT, SocketServer, close, ev


@pytest.fixture
def cid(run) -> str:
    return json.loads(run("--json", "conversations", "create", "--user-id", "owner")[1])[
        "conversationId"
    ]


def test_messages_add(run, cid, server: FakeServer):
    code, out, err = run(
        "messages", "add", cid, "--message", "Hello", "--role", "assistant", "--user-id", "u1"
    )
    assert (code, err) == (0, "")
    assert json.loads(server.last.content)["role"] == "assistant"
    assert json.loads(server.last.content)["userId"] == "u1"
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["message_id"] == "m1" and lines["conversation_id"] == cid
    code, out, _ = run("--json", "messages", "add", cid, "--message", "Again", "--image", "u")
    assert json.loads(out)["messageId"] == "m2"
    assert json.loads(server.last.content)["images"] == ["u"]


def test_messages_list_page_and_all(run, cid, server: FakeServer):
    for text in ("one", "two", "three"):
        run("messages", "add", cid, "--message", text)
    code, out, _ = run("messages", "list", cid, "--limit", "2", "--order", "desc")
    assert code == 0
    assert dict(server.last.url.params) == {"limit": "2", "order": "desc"}
    header, first, second, footer = out.splitlines()
    assert header.split()[:3] == ["MESSAGE", "ID", "CREATED"]
    assert second.split()[0] == "m2"
    assert first.split()[0] == "m3" and first.endswith("three")
    assert header.index("MESSAGE", 1) == first.index("three")
    # The footer gives the next page's options: the cursor marks a place, read in the
    # order given with it, so the order is repeated.
    assert footer == "2 messages, next page: --order desc --cursor 2"
    code, out, _ = run("messages", "list", cid, "--limit", "2", "--order", "desc", "--cursor", "2")
    assert dict(server.last.url.params) == {"limit": "2", "order": "desc", "cursor": "2"}
    assert [line.split()[0] for line in out.splitlines()[1:-1]] == ["m1"]
    assert out.splitlines()[-1] == "1 message"

    code, out, _ = run("messages", "list", cid, "--all", "--limit", "2")
    assert [line.split()[0] for line in out.splitlines()[1:-1]] == ["m1", "m2", "m3"]
    assert out.splitlines()[-1] == "3 messages"

    data = json.loads(run("--json", "messages", "list", cid, "--all")[1])
    assert [m["message"] for m in data["items"]] == ["one", "two", "three"]
    assert data["nextCursor"] is None


def test_messages_truncate(run, cid):
    for text in ("one", "two"):
        run("messages", "add", cid, "--message", text)
    code, out, _ = run("--json", "messages", "truncate", cid, "m1")
    assert code == 0
    assert json.loads(out) == {
        "conversationId": cid,
        "fromMessageId": "m1",
        "deletedCount": 2,
        "remainingCount": 0,
    }
    code, _, err = run("messages", "truncate", cid, "m9")
    assert code == 1 and err.startswith("error: 404 Not Found: Message not found")


def test_share_and_participants(run, cid, server: FakeServer):
    code, out, _ = run("conversations", "share", cid, "--user-id", "bob", "--role", "Collaborator")
    assert code == 0
    assert json.loads(server.last.content) == {"userId": "bob", "role": "Collaborator"}
    assert dict(line.split(None, 1) for line in out.splitlines())["role"] == "Collaborator"
    run("conversations", "share", cid, "--user-id", "alexandra")
    code, out, _ = run("conversations", "participants", cid)
    header, bob, alexandra = out.splitlines()
    assert header.split()[:3] == ["USER", "ID", "USERNAME"]
    assert header.index("ROLE") == bob.index("Collaborator") == alexandra.index("Viewer")
    data = json.loads(run("conversations", "participants", cid, "--json")[1])
    assert [p["userId"] for p in data] == ["bob", "alexandra"]
    assert run("conversations", "share", cid, "--user-id", "x", "--role", "Admin")[0] == 2


def test_mark_read(run, cid, server: FakeServer):
    run("messages", "add", cid, "--message", "hi")
    code, out, _ = run("--json", "conversations", "mark-read", cid, "--user-id", "u7")
    assert code == 0 and dict(server.last.url.params) == {"userId": "u7"}
    assert json.loads(out)["lastReadMessageId"] == "m1"


@pytest.fixture
def ws(server: FakeServer, monkeypatch):
    monkeypatch.setattr("airia._realtime.backoff_delay", lambda attempt: 0.0)
    sockets = SocketServer()
    server.ws_base = f"ws://127.0.0.1:{sockets.port}"
    yield sockets
    sockets.stop()


def test_watch_prints_one_line_per_event(run, cid, ws: SocketServer):
    ws.sessions = [
        [
            ev(4, userId="u1"),
            ev(None, "typing", userId="u2", isTyping=True),
            ev(5, "participant.added", conversationId=cid, userId="u3", role="Viewer"),
            ev(6, "conversation.deleted"),
            close(1000, "conversation deleted"),
        ]
    ]
    code, out, err = run("conversations", "watch", cid, "--after", "3")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "2026-11-26T06:01:34.123456Z  #4  message.created  user u1: text 4",
        "2026-11-26T06:01:34.123456Z  -  typing  u2 is typing",
        "2026-11-26T06:01:34.123456Z  #5  participant.added  u3 Viewer",
        "2026-11-26T06:01:34.123456Z  #6  conversation.deleted",
    ]
    assert ws.paths[0].endswith("&after=3")


def test_watch_after_past_the_end_goes_on_from_where_the_history_ends(run, cid, ws: SocketServer):
    ws.sessions = [
        [close(4000, "resume after=2")],
        [ev(3), ev(4, "conversation.deleted"), close(1000)],
    ]
    code, out, err = run("conversations", "watch", cid, "--after", "7")
    assert (code, err) == (0, "")
    assert [line.split()[1] for line in out.splitlines()] == ["#3", "#4"]
    assert ws.paths[1].endswith("&after=2")


def test_watch_json_lines(run, cid, ws: SocketServer):
    ws.sessions = [[ev(1), ev(2, "conversation.deleted"), close(1000)]]
    code, out, _ = run("--json", "conversations", "watch", cid)
    assert code == 0
    first, second = (json.loads(line) for line in out.splitlines())
    assert (first["type"], first["sequence"], first["data"]["message"]) == (
        "message.created",
        1,
        "text 1",
    )
    assert first["createdAt"] == "2026-11-26T06:01:34.123456Z"
    assert second["type"] == "conversation.deleted"


def test_watch_refused_is_one_error_line(run, cid, ws: SocketServer):
    ws.sessions = [[ev(1), close(1008, "access removed")]]
    code, out, err = run("conversations", "watch", cid)
    assert code == 1 and len(out.splitlines()) == 1
    assert err == (
        "error: Real-time channel closed (1008): the server refused the connection "
        "or access was removed\n"
    )
    ws.sessions = [REJECT]
    code, _, err = run("conversations", "watch", cid)
    assert code == 1 and err.startswith("error: 403 Forbidden")


def test_watch_ctrl_c_exits_0(run, cid, ws: SocketServer, monkeypatch):
    from airia._streaming import EventStream

    original = EventStream.__next__
    calls = []

    def interrupt_second(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(EventStream, "__next__", interrupt_second)
    ws.sessions = [[ev(1)]]
    code, out, err = run("conversations", "watch", cid)
    assert (code, err) == (0, "")
    assert out.splitlines() == ["2026-11-26T06:01:34.123456Z  #1  message.created  user -: text 1"]


def test_messages_and_events_from_the_server_are_shown_escaped(run, cid, ws: SocketServer):
    """A message holding a line break or an ESC sequence cannot forge a row or an
    event line, nor drive the reader's terminal."""
    hostile, shown = "hi\nm9  fake\x1b]0;pwned\x07\u202e", "hi\\nm9  fake\\x1b]0;pwned\\x07\\u202e"
    run("messages", "add", cid, "--message", hostile)
    code, out, _ = run("messages", "list", cid)
    _header, row, footer = out.splitlines()
    assert code == 0 and row.endswith(shown) and footer == "1 message"
    assert json.loads(run("--json", "messages", "list", cid)[1])["items"][0]["message"] == hostile

    ws.sessions = [[ev(1, message=hostile, userId="u\r1"), close(1000)]]
    code, out, err = run("conversations", "watch", cid)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"2026-11-26T06:01:34.123456Z  #1  message.created  user u\\r1: {shown}"
    ]
    ws.sessions = [[ev(1, message=hostile), close(1000)]]
    code, out, _ = run("--json", "conversations", "watch", cid)
    assert json.loads(out)["data"]["message"] == hostile
