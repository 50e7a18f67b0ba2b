"""The real-time channel, end to end: several real WebSocket clients and a writer over HTTP.

Every event type reaching every subscriber in order, resuming with `after=`, frames sent by
clients and the role rules for them, removal closing the socket, and a slow consumer dropped
with 4000 (on a second server with a tiny per-socket queue) without hurting a fast one.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .support import (
    LiveServer,
    mint_jwt,
    running_server,
    server_on,
)

pytestmark = pytest.mark.e2e

COLLECTION = "/v1/Conversations"
TIMEOUT = 10.0
STORED = {
    "message.created",
    "messages.truncated",
    "conversation.updated",
    "conversation.deleted",
    "participant.added",
    "participant.updated",
    "participant.removed",
}
SMALL_QUEUE = 5


# --- helpers ------------------------------------------------------------------------------------


def new_user(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:10]}"


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    query.update({k: [v] for k, v in params.items()})
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))


def open_ws(url: str, **kwargs: Any):
    return connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT, **kwargs)


async def receive_event(ws: ClientConnection) -> dict[str, Any]:
    frame = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(frame, str), "events are JSON text frames"
    return json.loads(frame)


async def receive_events(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [await receive_event(ws) for _ in range(count)]


async def expect_closed(ws: ClientConnection, code: int) -> None:
    with pytest.raises(ConnectionClosed):
        extra = await asyncio.wait_for(ws.recv(), TIMEOUT)
        pytest.fail(f"expected the socket to close with {code}, got a frame: {extra}")
    assert ws.close_code == code, (ws.close_code, ws.close_reason)


class Api:
    """The HTTP calls the tests make, each checked for success."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def call(self, method: str, path: str, headers, body: Any = None) -> Any:
        response = await self.http.request(method, path, json=body, headers=headers)
        assert 200 <= response.status_code < 300, (method, path, response.text)
        return response.json() if response.content else None

    async def create(self, headers, user_id: str, **body) -> dict:
        return await self.call("POST", COLLECTION, headers, {"userId": user_id, **body})

    async def share(self, headers, cid: str, user: str, role: str) -> dict:
        return await self.call(
            "POST", f"{COLLECTION}/{cid}/share", headers, {"userId": user, "role": role}
        )

    async def add(self, headers, cid: str, text: str, **body) -> dict:
        return await self.call(
            "POST", f"{COLLECTION}/{cid}/messages", headers, {"message": text, **body}
        )

    async def ws_url(self, headers, cid: str) -> str:
        return (await self.call("GET", f"{COLLECTION}/{cid}/websocket-url", headers))[
            "websocketUrl"
        ]

    async def typing(self, headers, cid: str, is_typing: bool = True) -> dict:
        return await self.call(
            "POST", f"{COLLECTION}/{cid}/typing", headers, {"isTyping": is_typing}
        )


@pytest.fixture
async def api(server: LiveServer):
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as client:
        yield Api(client)


def check_sequences(events: list[dict[str, Any]]) -> None:
    """Stored events carry consecutive sequences; typing and presence carry null."""
    stored = [e["sequence"] for e in events if e["type"] in STORED]
    assert all(isinstance(s, int) for s in stored), events
    assert stored == list(range(stored[0], stored[0] + len(stored))), stored
    for event in events:
        if event["type"] not in STORED:
            assert event["sequence"] is None, event


# --- every event type, to every subscriber ------------------------------------------------------


async def test_every_event_type_reaches_both_clients_in_order(server: LiveServer, api: Api) -> None:
    owner, viewer, guest = new_user("owner"), new_user("viewer"), new_user("guest")
    as_owner, as_viewer = server.bearer(mint_jwt(owner)), server.bearer(mint_jwt(viewer))
    cid = (await api.create(as_owner, owner, title="start"))["conversationId"]
    await api.share(as_owner, cid, viewer, "Viewer")
    key_url = await api.ws_url(server.headers(), cid)
    viewer_url = await api.ws_url(as_viewer, cid)
    assert "ticket=" in key_url and "ticket=" in viewer_url

    async with open_ws(key_url) as by_key, open_ws(viewer_url) as by_viewer:
        first = await api.add(as_owner, cid, "hello")
        second = await api.add(server.headers(), cid, "answer", role="assistant")
        await api.call("PUT", f"{COLLECTION}/{cid}", as_owner, {"title": "renamed"})
        await api.share(as_owner, cid, guest, "Viewer")
        await api.call(
            "PUT",
            f"{COLLECTION}/{cid}/participants/{guest}/role",
            as_owner,
            {"role": "Collaborator"},
        )
        as_guest = server.bearer(mint_jwt(guest))
        await api.typing(as_guest, cid, True)
        await api.call("POST", f"{COLLECTION}/{cid}/presence", as_guest, {"action": "joined"})
        await api.call("DELETE", f"{COLLECTION}/{cid}/participants/{guest}", as_owner)
        truncated = await api.call(
            "DELETE", f"{COLLECTION}/{cid}/messages/{second['messageId']}/truncate", as_owner
        )
        await api.typing(as_owner, cid, False)
        await api.call("DELETE", f"{COLLECTION}/{cid}", as_owner)

        expected_types = [
            "message.created",
            "message.created",
            "conversation.updated",
            "participant.added",
            "participant.updated",
            "typing",
            "presence",
            "participant.removed",
            "messages.truncated",
            "typing",
            "conversation.deleted",
        ]
        streams = []
        for ws in (by_key, by_viewer):
            events = await receive_events(ws, len(expected_types))
            await expect_closed(ws, 1000)
            streams.append(events)

    key_events, viewer_events = streams
    assert key_events == viewer_events, "both subscribers see the same events, in the same order"
    events = key_events
    assert [e["type"] for e in events] == expected_types
    check_sequences(events)
    for event in events:
        assert event["conversationId"] == cid
        assert event["createdAt"].endswith("Z")

    created1, created2, updated, added, changed, typing, presence, removed, cut, typing2, gone = (
        events
    )
    assert created1["data"]["id"] == first["messageId"]
    assert (created1["data"]["message"], created1["data"]["role"]) == ("hello", "user")
    assert created1["data"]["userId"] == owner
    assert created1["data"]["conversationId"] == cid
    assert (created2["data"]["id"], created2["data"]["role"]) == (second["messageId"], "assistant")
    assert updated["data"]["title"] == "renamed"
    assert (added["data"]["userId"], added["data"]["role"]) == (guest, "Viewer")
    assert (changed["data"]["userId"], changed["data"]["role"]) == (guest, "Collaborator")
    assert removed["data"]["userId"] == guest
    assert typing["data"] == {"userId": guest, "isTyping": True}
    assert presence["data"] == {"userId": guest, "action": "joined"}
    assert typing2["data"] == {"userId": owner, "isTyping": False}
    assert (
        cut["data"]
        == truncated
        == {
            "conversationId": cid,
            "fromMessageId": second["messageId"],
            "deletedCount": 1,
            "remainingCount": 1,
        }
    )
    assert gone["data"]["conversationId"] == cid


async def test_message_event_data_is_the_message_as_get_shows_it(
    server: LiveServer, api: Api, user_id: str
) -> None:
    cid = (await api.create(server.headers(), user_id))["conversationId"]
    url = await api.ws_url(server.headers(), cid)
    async with open_ws(url) as ws:
        await api.add(server.headers(), cid, "look", images=["https://example.com/x.png"])
        event = await receive_event(ws)
    stored = (await api.call("GET", f"{COLLECTION}/{cid}", server.headers()))["messages"][0]
    for field in ("id", "conversationId", "message", "role", "images", "createdAt", "userId"):
        assert event["data"][field] == stored[field], field


# --- resuming -----------------------------------------------------------------------------------


async def test_reconnect_with_after_gets_exactly_the_missed_events_then_live_ones(
    server: LiveServer, api: Api, user_id: str
) -> None:
    viewer = new_user("viewer")
    cid = (await api.create(server.headers(), user_id))["conversationId"]
    await api.share(server.headers(), cid, viewer, "Viewer")  # sequence 1
    viewer_url = await api.ws_url(server.bearer(mint_jwt(viewer)), cid)
    key_url = await api.ws_url(server.headers(), cid)

    async with open_ws(key_url) as steady:
        async with open_ws(viewer_url) as flaky:
            for i in range(3):
                await api.add(server.headers(), cid, f"before {i}")
            seen = await receive_events(flaky, 3)
        last = seen[-1]["sequence"]
        assert [e["sequence"] for e in seen] == [last - 2, last - 1, last]

        # While it is away: stored events, and signals that are not stored.
        missed = [
            (await api.add(server.headers(), cid, f"missed {i}"))["messageId"] for i in range(5)
        ]
        await api.typing(server.headers(), cid)
        await api.call("PUT", f"{COLLECTION}/{cid}", server.headers(), {"title": "while away"})

        async with open_ws(with_query(viewer_url, after=str(last))) as resumed:
            replayed = await receive_events(resumed, 6)
            assert [e["sequence"] for e in replayed] == list(range(last + 1, last + 7))
            assert [e["data"]["id"] for e in replayed[:5]] == missed
            assert replayed[5]["type"] == "conversation.updated"

            # Then live ones, with nothing in between: the next frame is the next event.
            live = await api.add(server.headers(), cid, "live")
            event = await receive_event(resumed)
            assert (event["type"], event["sequence"]) == ("message.created", last + 7)
            assert event["data"]["id"] == live["messageId"]

        # The steady one saw everything, typing included, in order.
        steady_events = await receive_events(steady, 3 + 5 + 1 + 1 + 1)
        check_sequences(steady_events)
        assert [e["type"] for e in steady_events].count("typing") == 1


async def test_reconnect_after_the_latest_sequence_replays_nothing(
    server: LiveServer, api: Api, user_id: str
) -> None:
    cid = (await api.create(server.headers(), user_id))["conversationId"]
    url = await api.ws_url(server.headers(), cid)
    for i in range(4):
        await api.add(server.headers(), cid, f"m{i}")
    async with open_ws(with_query(url, after="4")) as ws:
        await api.typing(server.headers(), cid)  # a sentinel: the first frame must be it
        event = await receive_event(ws)
        assert (event["type"], event["sequence"]) == ("typing", None)
    async with open_ws(with_query(url, after="0")) as ws:
        assert [e["sequence"] for e in await receive_events(ws, 4)] == [1, 2, 3, 4]


async def test_last_sequence_says_where_to_subscribe_from(
    server: LiveServer, api: Api, user_id: str
) -> None:
    """`lastSequence` of the URL's answer and of a GET: the last stored event then, so a
    socket opened later with `after=` it gets everything stored in between."""
    headers = server.headers()
    cid = (await api.create(headers, user_id))["conversationId"]
    minted = await api.call("GET", f"{COLLECTION}/{cid}/websocket-url", headers)
    assert minted["lastSequence"] == 0
    await api.add(headers, cid, "one")
    await api.call("PUT", f"{COLLECTION}/{cid}", headers, {"title": "t"})
    got = await api.call("GET", f"{COLLECTION}/{cid}", headers)
    assert (got["lastSequence"], [m["message"] for m in got["messages"]]) == (2, ["one"])
    await api.add(headers, cid, "two")  # after the GET and the URL: still delivered
    async with open_ws(with_query(minted["websocketUrl"], after=str(minted["lastSequence"]))) as ws:
        events = await receive_events(ws, 3)
    assert [(e["sequence"], e["type"]) for e in events] == [
        (1, "message.created"),
        (2, "conversation.updated"),
        (3, "message.created"),
    ]
    async with open_ws(with_query(minted["websocketUrl"], after=str(got["lastSequence"]))) as ws:
        assert (await receive_event(ws))["data"]["message"] == "two"
    fresh = await api.call("GET", f"{COLLECTION}/{cid}/websocket-url", headers)
    assert fresh["lastSequence"] == 3


# --- frames from clients ------------------------------------------------------------------------


async def test_collaborator_frames_are_broadcast_viewer_frames_are_refused(
    server: LiveServer, api: Api, user_id: str
) -> None:
    collaborator, viewer = new_user("collab"), new_user("viewer")
    as_owner = server.bearer(mint_jwt(user_id))
    cid = (await api.create(as_owner, user_id))["conversationId"]
    await api.share(as_owner, cid, collaborator, "Collaborator")
    await api.share(as_owner, cid, viewer, "Viewer")
    collab_url = await api.ws_url(server.bearer(mint_jwt(collaborator)), cid)
    viewer_url = await api.ws_url(server.bearer(mint_jwt(viewer)), cid)

    async with open_ws(collab_url) as by_collab, open_ws(viewer_url) as by_viewer:
        await by_collab.send(json.dumps({"type": "typing", "isTyping": True}))
        typing = await receive_event(by_viewer)
        assert typing["type"] == "typing"
        assert typing["sequence"] is None
        assert typing["conversationId"] == cid
        assert typing["data"] == {"userId": collaborator, "isTyping": True}

        await by_collab.send(json.dumps({"type": "presence", "action": "joined"}))
        presence = await receive_event(by_viewer)
        assert (presence["type"], presence["sequence"]) == ("presence", None)
        assert presence["data"] == {"userId": collaborator, "action": "joined"}

        # The Collaborator gets its own signals too, as every subscriber does.
        own = await receive_events(by_collab, 2)
        assert [e["type"] for e in own] == ["typing", "presence"]

        # A Viewer may watch but not signal: an error back, nothing broadcast.
        await by_viewer.send(json.dumps({"type": "typing", "isTyping": True}))
        error = await receive_event(by_viewer)
        assert error["type"] == "error"
        assert isinstance(error["message"], str) and error["message"]
        await by_viewer.send(json.dumps({"type": "presence", "action": "joined"}))
        assert (await receive_event(by_viewer))["type"] == "error"

        # Frames the server cannot use: an error, and the socket stays open.
        bad_frames = [
            "not json",
            {"type": "dance"},
            {"type": "typing", "isTyping": "yes"},
            {"type": "presence"},
            {"type": "presence", "action": "away"},
        ]
        for bad in bad_frames:
            await by_collab.send(bad if isinstance(bad, str) else json.dumps(bad))
            assert (await receive_event(by_collab))["type"] == "error"

        sentinel = await api.add(as_owner, cid, "sentinel")
        for ws in (by_collab, by_viewer):
            event = await receive_event(ws)
            assert event["type"] == "message.created", "nothing else was broadcast"
            assert event["data"]["id"] == sentinel["messageId"]

        # A typing frame without isTyping, or with null, is typing, as over HTTP.
        for frame in ({"type": "typing"}, {"type": "typing", "isTyping": None}):
            await by_collab.send(json.dumps(frame))
            typing = await receive_event(by_viewer)
            assert typing["data"] == {"userId": collaborator, "isTyping": True}


async def test_demoted_collaborator_can_no_longer_signal(
    server: LiveServer, api: Api, user_id: str
) -> None:
    collaborator = new_user("collab")
    cid = (await api.create(server.headers(), user_id))["conversationId"]
    await api.share(server.headers(), cid, collaborator, "Collaborator")
    url = await api.ws_url(server.bearer(mint_jwt(collaborator)), cid)
    async with open_ws(url) as ws:
        await api.call(
            "PUT",
            f"{COLLECTION}/{cid}/participants/{collaborator}/role",
            server.headers(),
            {"role": "Viewer"},
        )
        updated = await receive_event(ws)
        assert (updated["type"], updated["data"]["role"]) == ("participant.updated", "Viewer")
        await ws.send(json.dumps({"type": "typing", "isTyping": True}))
        assert (await receive_event(ws))["type"] == "error"


async def test_frames_are_refused_once_a_demotion_is_answered_before_the_socket_hears_of_it(
    server: LiveServer, api: Api, user_id: str, tmp_path: Path
) -> None:
    """A frame is held to the user's role as it stands, not as the socket last heard it:
    changes made on an instance whose events never reach this one (no Redis between
    them) stop a demoted, then a removed, user's typing and presence at once."""
    collaborator = new_user("collab")
    as_owner = server.bearer(mint_jwt(user_id))
    cid = (await api.create(as_owner, user_id))["conversationId"]
    await api.share(as_owner, cid, collaborator, "Collaborator")
    collab_url = await api.ws_url(server.bearer(mint_jwt(collaborator)), cid)
    owner_url = await api.ws_url(as_owner, cid)
    role_path = f"{COLLECTION}/{cid}/participants/{collaborator}"

    with running_server(
        tmp_path, database_url=server.env["AIRIA_DATABASE_URL"], AIRIA_REDIS_URL=None
    ) as deaf:
        async with (
            httpx.AsyncClient(base_url=deaf.base_url, timeout=TIMEOUT) as elsewhere,
            open_ws(collab_url) as by_collab,
            open_ws(owner_url) as by_owner,
        ):
            changed = await elsewhere.put(
                f"{role_path}/role", json={"role": "Viewer"}, headers=as_owner
            )
            assert changed.status_code == 200, changed.text
            await by_collab.send(json.dumps({"type": "typing", "isTyping": True}))
            refused = await receive_event(by_collab)
            assert refused["type"] == "error" and "Viewer" in refused["message"]

            removed = await elsewhere.delete(role_path, headers=as_owner)
            assert removed.status_code == 200, removed.text
            await by_collab.send(json.dumps({"type": "presence", "action": "joined"}))
            refused = await receive_event(by_collab)
            assert refused["type"] == "error" and "no longer" in refused["message"]

            # Nothing of theirs went out: the owner's next frame is their own.
            await api.typing(as_owner, cid)
            assert (await receive_event(by_owner))["data"] == {"userId": user_id, "isTyping": True}


async def test_a_replay_holds_no_content_of_truncated_messages(
    server: LiveServer, api: Api, user_id: str
) -> None:
    """Truncation deletes messages from the event log's replay too: a user shared with
    later and replaying from the start sees that the messages were there (their events
    keep the sequence gap-free) but not what they said."""
    as_owner = server.bearer(mint_jwt(user_id))
    cid = (await api.create(as_owner, user_id))["conversationId"]
    kept = await api.add(as_owner, cid, "public hello")
    secret = await api.add(as_owner, cid, "password=hunter2", images=["data:image/png;base64,AA"])
    await api.call(
        "DELETE", f"{COLLECTION}/{cid}/messages/{secret['messageId']}/truncate", as_owner
    )
    newcomer = new_user("newcomer")
    await api.share(as_owner, cid, newcomer, "Viewer")
    url = await api.ws_url(server.bearer(mint_jwt(newcomer)), cid)

    async with open_ws(with_query(url, after="0")) as ws:
        replayed = await receive_events(ws, 4)
    assert [(e["type"], e["sequence"]) for e in replayed] == [
        ("message.created", 1),
        ("message.created", 2),
        ("messages.truncated", 3),
        ("participant.added", 4),
    ]
    first, second = replayed[0]["data"], replayed[1]["data"]
    assert (first["id"], first["message"]) == (kept["messageId"], "public hello")
    assert second["id"] == secret["messageId"]
    assert (second["message"], second["images"]) == (None, None)
    assert (second["userId"], second["role"]) == (user_id, "user")
    assert "hunter2" not in json.dumps(replayed)


async def test_removed_participant_gets_the_event_then_close_1008(
    server: LiveServer, api: Api, user_id: str
) -> None:
    viewer, other = new_user("viewer"), new_user("other")
    cid = (await api.create(server.headers(), user_id))["conversationId"]
    await api.share(server.headers(), cid, viewer, "Viewer")
    await api.share(server.headers(), cid, other, "Viewer")
    viewer_url = await api.ws_url(server.bearer(mint_jwt(viewer)), cid)
    other_url = await api.ws_url(server.bearer(mint_jwt(other)), cid)

    async with open_ws(viewer_url) as removed_ws, open_ws(other_url) as staying:
        await api.call("DELETE", f"{COLLECTION}/{cid}/participants/{viewer}", server.headers())
        event = await receive_event(removed_ws)
        assert (event["type"], event["data"]["userId"]) == ("participant.removed", viewer)
        await expect_closed(removed_ws, 1008)

        # Someone else's socket stays open and keeps receiving.
        assert (await receive_event(staying))["type"] == "participant.removed"
        await api.add(server.headers(), cid, "still here")
        assert (await receive_event(staying))["type"] == "message.created"

    # The removed user's ticket no longer opens the socket.
    with pytest.raises(InvalidStatus) as refused:
        async with open_ws(viewer_url):
            pass
    assert refused.value.response.status_code == 403


async def test_a_user_added_again_resumes_from_before_their_removal(
    server: LiveServer, api: Api, user_id: str
) -> None:
    """The replayed removal is history: the user is back, so the socket stays open."""
    bob = new_user("bob")
    cid = (await api.create(server.headers(), user_id))["conversationId"]
    await api.share(server.headers(), cid, bob, "Viewer")
    await api.call("DELETE", f"{COLLECTION}/{cid}/participants/{bob}", server.headers())
    await api.share(server.headers(), cid, bob, "Collaborator")
    url = await api.ws_url(server.bearer(mint_jwt(bob)), cid)
    async with open_ws(with_query(url, after="0")) as ws:
        replayed = await receive_events(ws, 3)
        assert [e["type"] for e in replayed] == [
            "participant.added",
            "participant.removed",
            "participant.added",
        ]
        sentinel = await api.add(server.headers(), cid, "welcome back")
        assert (await receive_event(ws))["data"]["id"] == sentinel["messageId"]
        await ws.send(json.dumps({"type": "typing", "isTyping": True}))  # a Collaborator now
        assert (await receive_event(ws))["type"] == "typing"


async def test_leaving_closes_the_own_socket_with_1008(
    server: LiveServer, api: Api, user_id: str
) -> None:
    collaborator = new_user("collab")
    cid = (await api.create(server.headers(), user_id))["conversationId"]
    await api.share(server.headers(), cid, collaborator, "Collaborator")
    as_collab = server.bearer(mint_jwt(collaborator))
    async with open_ws(await api.ws_url(as_collab, cid)) as ws:
        await api.call("DELETE", f"{COLLECTION}/{cid}/participants/{collaborator}", as_collab)
        assert (await receive_event(ws))["type"] == "participant.removed"
        await expect_closed(ws, 1008)


# --- a slow consumer, on a server with a tiny per-socket queue ----------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres+redis"])
def small_queue_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A second server, started like the session's, with AIRIA_WS_QUEUE_SIZE=5, on each backend."""
    root = tmp_path_factory.mktemp("small-queue-server")
    with server_on(request.param, root, AIRIA_WS_QUEUE_SIZE=str(SMALL_QUEUE)) as server:
        yield server


async def tiny_buffer_socket(url: str) -> socket.socket:
    """A connected TCP socket with a small receive buffer, so unread frames back up quickly."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.wait_for(
        asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port)), TIMEOUT
    )
    return sock


async def test_slow_consumer_is_dropped_with_4000_and_resumes_without_loss(
    small_queue_server: LiveServer,
) -> None:
    server = small_queue_server
    count = 150
    # Large, incompressible frames (permessage-deflate would shrink repeated text to nothing),
    # so the socket buffers fill long before `count` events are sent.
    text = secrets.token_urlsafe(45_000)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as http:
        api = Api(http)
        cid = (await api.create(server.headers(), new_user("owner")))["conversationId"]
        url = await api.ws_url(server.headers(), cid)

        async with (
            open_ws(url, max_queue=4096, max_size=2**20) as fast,
            open_ws(
                url,
                sock=await tiny_buffer_socket(url),
                max_queue=1,
                compression=None,
                max_size=2**20,
            ) as slow,
        ):
            fast_events: list[dict[str, Any]] = []

            async def read_fast() -> None:
                while len(fast_events) < count:
                    fast_events.append(await receive_event(fast))

            reader = asyncio.create_task(read_fast())
            ids = [
                (await api.add(server.headers(), cid, f"{i}:{text}"))["messageId"]
                for i in range(count)
            ]
            await asyncio.wait_for(reader, TIMEOUT)

            # The fast consumer got every event, in order, and is still open.
            assert [e["sequence"] for e in fast_events] == list(range(1, count + 1))
            assert [e["data"]["id"] for e in fast_events] == ids
            assert fast.close_code is None

            # The slow one gets what was already on its way, then 4000.
            slow_events: list[dict[str, Any]] = []

            async def drain_slow() -> None:
                with pytest.raises(ConnectionClosed):
                    while True:
                        slow_events.append(json.loads(await slow.recv()))

            await asyncio.wait_for(drain_slow(), TIMEOUT)
            assert slow.close_code == 4000, (slow.close_code, slow.close_reason)
            got = [e["sequence"] for e in slow_events]
            assert got == list(range(1, len(got) + 1)), "what arrived came in order, without gaps"
            assert len(got) < count, "the slow socket was dropped before the end"

            # The fast one was not disturbed: it still gets live events.
            await api.typing(server.headers(), cid)
            assert (await receive_event(fast))["type"] == "typing"

        # Reconnecting with after=<last seen> fills the gap exactly, then goes live.
        last = got[-1] if got else 0
        async with open_ws(with_query(url, after=str(last)), max_size=2**20) as resumed:
            rest = await receive_events(resumed, count - last)
            assert [e["sequence"] for e in rest] == list(range(last + 1, count + 1))
            assert [e["data"]["id"] for e in rest] == ids[last:]
            await api.add(server.headers(), cid, "live")
            live = await receive_event(resumed)
            assert (live["type"], live["sequence"]) == ("message.created", count + 1)
    assert server.process.poll() is None


async def test_a_consumer_that_never_reads_again_is_cut_off(small_queue_server: LiveServer) -> None:
    """Dropped with 4000, but its close frame cannot reach a client that reads nothing
    (its buffers are full): 10 s on, the server cuts the connection, and with it all
    it had buffered for the client, instead of holding both for ever."""
    server = small_queue_server
    text = secrets.token_urlsafe(45_000)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as http:
        api = Api(http)
        cid = (await api.create(server.headers(), new_user("owner")))["conversationId"]
        url = await api.ws_url(server.headers(), cid)
        sock = await tiny_buffer_socket(url)
        ours = sock.getsockname()[1]
        async with open_ws(url, sock=sock, max_queue=1, compression=None, max_size=2**20):
            # Enough to fill the kernel's buffers both ways (a few MB on loopback).
            for i in range(60):
                await api.add(server.headers(), cid, f"{i}:{text}")
            assert server_side_open(server, ours)  # stuck: its buffers full both ways
            await asyncio.sleep(14)  # the close times out after 10 s; then the cut
            # Checked before reading anything: reading would drain the buffers and let
            # even a graceful close through.
            assert not server_side_open(server, ours)


def server_side_open(server: LiveServer, client_port: int) -> bool:
    """Whether the server still holds its end of the connection from `client_port`, as
    the kernel's table of TCP connections has it (local port, remote port, state 01:
    established)."""
    port = urlsplit(server.base_url).port
    table = Path("/proc/net/tcp")
    if not table.exists():
        pytest.skip("SKIPPED PLATFORM: no /proc/net/tcp to see the server's connections")
    for line in table.read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if (
            int(local.rsplit(":", 1)[1], 16) == port
            and int(remote.rsplit(":", 1)[1], 16) == client_port
            and state == "01"
        ):
            return True
    return False


# --- resuming past the end, odd `after`s, binary frames, an API key's typing ---------------------


async def test_resuming_past_the_last_stored_event_is_told_where_it_ends(
    server: LiveServer, api: Api, user_id: str
) -> None:
    """A client whose `after` is beyond the conversation's last event holds another history
    (a restored backup, say): rather than skip to `after`, the server closes with 4000 and
    the sequence to resume from."""
    cid = (await api.create(server.headers(), user_id))["conversationId"]
    url = await api.ws_url(server.headers(), cid)
    for i in range(3):
        await api.add(server.headers(), cid, f"m{i}")
    # However far past: a number of more digits than any sequence has is past it too.
    for after in ("10", "9223372036854775806", "1" * 19, "9" * 40):
        async with open_ws(with_query(url, after=after)) as ws:
            await expect_closed(ws, 4000)
            assert ws.close_reason == "resume after=3"
    async with open_ws(with_query(url, after="3")) as ws:
        await api.add(server.headers(), cid, "m3")
        assert (await receive_event(ws))["sequence"] == 4
    # Leading zeros are not digits of the number: 1 in 22 digits is 1.
    async with open_ws(with_query(url, after="0" * 21 + "1")) as ws:
        assert [e["sequence"] for e in await receive_events(ws, 3)] == [2, 3, 4]


@pytest.mark.parametrize("after", ["1_0", "+1", " 1", "\u0661", "-1", "1.0", "1e3", "0x1"])
async def test_an_after_that_is_not_a_sequence_is_refused(
    server: LiveServer, api: Api, user_id: str, after: str
) -> None:
    cid = (await api.create(server.headers(), user_id))["conversationId"]
    url = await api.ws_url(server.headers(), cid)
    with pytest.raises(InvalidStatus) as refused:
        async with open_ws(with_query(url, after=after)):
            pass
    # The ticket is good: the answer names what to fix, not "get a fresh URL".
    answer = refused.value.response
    assert answer.status_code == 422
    problem = json.loads(answer.body)
    assert problem["message"] == "Invalid value for 'after'"
    assert problem["errors"] == [{"field": "after", "message": "not a sequence number"}]


async def test_a_binary_frame_is_answered_with_an_error(
    server: LiveServer, api: Api, user_id: str
) -> None:
    cid = (await api.create(server.headers(), user_id))["conversationId"]
    async with open_ws(await api.ws_url(server.headers(), cid)) as ws:
        await ws.send(b'{"type": "typing", "isTyping": true}')
        error = await receive_event(ws)
        assert error["type"] == "error" and "binary" in error["message"]
        sentinel = await api.add(server.headers(), cid, "still open")
        assert (await receive_event(ws))["data"]["id"] == sentinel["messageId"]


async def test_typing_by_an_api_key_without_a_user_is_the_owners(
    server: LiveServer, api: Api, user_id: str
) -> None:
    """As a message by an API key is the owner's unless it names a user; never null."""
    cid = (await api.create(server.headers(), user_id))["conversationId"]
    async with open_ws(await api.ws_url(server.headers(), cid)) as ws:
        answer = await api.typing(server.headers(), cid)
        assert answer["userId"] == user_id
        assert (await receive_event(ws))["data"] == {"userId": user_id, "isTyping": True}
        await api.call(
            "POST", f"{COLLECTION}/{cid}/presence", server.headers(), {"action": "joined"}
        )
        assert (await receive_event(ws))["data"] == {"userId": user_id, "action": "joined"}
        await ws.send(json.dumps({"type": "typing", "isTyping": False}))
        assert (await receive_event(ws))["data"] == {"userId": user_id, "isTyping": False}
        await ws.send(json.dumps({"type": "typing", "isTyping": True, "userId": "named"}))
        assert (await receive_event(ws))["data"] == {"userId": "named", "isTyping": True}


async def test_a_socket_that_floods_frames_is_held_to_its_rate(
    server: LiveServer, api: Api, user_id: str
) -> None:
    """Each typing frame costs a database read and goes to every socket: a burst of 100
    is answered, past the first 20 or so, with error frames, and those are not sent on.
    The socket stays open, and its next frame goes through once the rate allows."""
    cid = (await api.create(server.headers(), user_id))["conversationId"]
    url = await api.ws_url(server.headers(), cid)
    async with open_ws(url) as sender, open_ws(url) as watcher:
        frame = json.dumps({"type": "typing", "isTyping": True})
        for _ in range(100):
            await sender.send(frame)
        answers = [await receive_event(sender) for _ in range(100)]
        refused = [a for a in answers if a["type"] == "error"]
        assert refused and all("too many frames" in a["message"] for a in refused)
        sent_on = 100 - len(refused)
        assert [await receive_event(watcher) for _ in range(sent_on)]
        marker = await api.add(server.headers(), cid, "after the flood")
        assert (await receive_event(watcher))["data"]["id"] == marker["messageId"]


async def test_a_frame_that_is_not_a_signal_is_told_why(
    server: LiveServer, api: Api, user_id: str
) -> None:
    """The error frame says what is wrong with it, not the name of a Python exception."""
    cid = (await api.create(server.headers(), user_id))["conversationId"]
    async with open_ws(await api.ws_url(server.headers(), cid)) as ws:
        for frame, said in (("not json", "malformed"), ('{"type": 1}', "Expected `str`")):
            await ws.send(frame)
            error = await receive_event(ws)
            assert error["type"] == "error" and said in error["message"], error


async def test_a_frame_naming_a_user_takes_the_user_id_rules_of_http(
    server: LiveServer, api: Api, user_id: str
) -> None:
    """An API key's socket may name the user it speaks for, as HTTP bodies do, and under
    the same rules: 1 to 255 characters, no NUL. Otherwise an error frame, nothing sent."""
    cid = (await api.create(server.headers(), user_id))["conversationId"]
    async with open_ws(await api.ws_url(server.headers(), cid)) as ws:
        for bad in ("u" * 256, "nul\x00here", ""):
            await ws.send(json.dumps({"type": "typing", "isTyping": True, "userId": bad}))
            error = await receive_event(ws)
            assert error["type"] == "error" and "userId" in error["message"], error
        await ws.send(json.dumps({"type": "typing", "isTyping": True, "userId": "u" * 255}))
        assert (await receive_event(ws))["data"] == {"userId": "u" * 255, "isTyping": True}


# --- a revoked API key, on a server that checks every second ------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres+redis"])
def fast_heartbeat_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A third, whose API-key check runs at every 1-second heartbeat."""
    root = tmp_path_factory.mktemp("fast-heartbeat-server")
    with server_on(request.param, root, AIRIA_WS_HEARTBEAT_SECONDS="1") as server:
        yield server


async def test_a_revoked_keys_tickets_open_nothing_and_its_sockets_close(
    fast_heartbeat_server: LiveServer,
) -> None:
    server = fast_heartbeat_server
    key = server.create_api_key(f"tenant_{uuid.uuid4().hex[:8]}", name="to-revoke")
    headers = {"X-API-KEY": key}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:
        api = Api(http)
        cid = (await api.create(headers, new_user("owner")))["conversationId"]
        url = await api.ws_url(headers, cid)
        spare = await api.ws_url(headers, cid)
        async with open_ws(url) as ws:
            listing = server.cli("keys", "list")
            (row,) = [line for line in listing.stdout.splitlines() if "to-revoke" in line]
            assert server.cli("keys", "revoke", row.split()[0]).returncode == 0
            await expect_closed(ws, 1008)
            assert ws.close_reason == "API key revoked"
        with pytest.raises(InvalidStatus) as refused:
            async with open_ws(spare):
                pass
        assert refused.value.response.status_code == 403


async def test_a_revoked_keys_socket_sends_nothing_more(server: LiveServer) -> None:
    """Between a key's revocation and the check that closes its sockets (every 10 s
    here), a frame sent on one is refused, not broadcast. (Should the check close the
    socket first, that is as good an answer.)"""
    key = server.create_api_key(f"tenant_{uuid.uuid4().hex[:8]}", name="revoked-frames")
    headers = {"X-API-KEY": key}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:
        api = Api(http)
        cid = (await api.create(headers, new_user("owner")))["conversationId"]
        async with open_ws(await api.ws_url(headers, cid)) as ws:
            listing = server.cli("keys", "list")
            (row,) = [line for line in listing.stdout.splitlines() if "revoked-frames" in line]
            assert server.cli("keys", "revoke", row.split()[0]).returncode == 0
            try:
                await ws.send(json.dumps({"type": "typing", "isTyping": True}))
                answer = await receive_event(ws)
            except ConnectionClosed:
                assert ws.close_code == 1008, (ws.close_code, ws.close_reason)
            else:
                assert answer["type"] == "error" and "revoked" in answer["message"], answer
