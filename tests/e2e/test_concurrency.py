"""Concurrent writers against the real server: nothing lost, nothing doubled, no sequence gaps."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from contextlib import closing
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from .support import LiveServer, mint_jwt

pytestmark = pytest.mark.e2e

COLLECTION = "/v1/Conversations"
TIMEOUT = 10.0
WRITERS = 8
PER_WRITER = 25


def new_user(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:10]}"


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    query.update({k: [v] for k, v in params.items()})
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))


def open_ws(url: str):
    return connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT, max_queue=4096)


async def receive_event(ws: ClientConnection) -> dict[str, Any]:
    frame = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(frame, str)
    return json.loads(frame)


async def call(http: httpx.AsyncClient, method: str, path: str, headers, body=None) -> Any:
    response = await http.request(method, path, json=body, headers=headers)
    assert 200 <= response.status_code < 300, (method, path, response.text)
    return response.json() if response.content else None


async def replay_all(url: str, http: httpx.AsyncClient, cid: str, headers) -> list[dict]:
    """Every stored event from after=0, ending at a live sentinel so nothing is left unread."""
    events: list[dict] = []
    async with open_ws(with_query(url, after="0")) as ws:
        await call(http, "POST", f"{COLLECTION}/{cid}/typing", headers, {"isTyping": True})
        while True:
            event = await receive_event(ws)
            if event["type"] == "typing":
                return events
            events.append(event)
            assert len(events) <= 10_000


async def test_concurrent_writers_store_every_message_once_without_sequence_gaps(
    server: LiveServer, user_id: str
) -> None:
    async with httpx.AsyncClient(
        base_url=server.base_url,
        timeout=10.0,
        limits=httpx.Limits(max_connections=WRITERS, max_keepalive_connections=WRITERS),
    ) as http:
        as_owner = server.bearer(mint_jwt(user_id))
        cid = (await call(http, "POST", COLLECTION, as_owner, {"userId": user_id}))[
            "conversationId"
        ]
        # Half the writers are Collaborators with their own tokens, half use the API key.
        writers: list[tuple[str, dict[str, str], dict[str, str]]] = []
        for w in range(WRITERS):
            if w % 2 == 0:
                collaborator = new_user(f"writer{w}")
                await call(
                    http,
                    "POST",
                    f"{COLLECTION}/{cid}/share",
                    as_owner,
                    {"userId": collaborator, "role": "Collaborator"},
                )
                writers.append((f"w{w}", server.bearer(mint_jwt(collaborator)), {}))
            else:
                writers.append((f"w{w}", server.headers(), {"userId": f"key_writer_{w}"}))
        shares = WRITERS // 2
        url = (await call(http, "GET", f"{COLLECTION}/{cid}/websocket-url", server.headers()))[
            "websocketUrl"
        ]

        async def write(name: str, headers: dict[str, str], extra: dict[str, str]) -> list[str]:
            ids = []
            for i in range(PER_WRITER):
                body = {"message": f"{name}-{i}", **extra}
                created = await call(http, "POST", f"{COLLECTION}/{cid}/messages", headers, body)
                ids.append(created["messageId"])
            return ids

        total = WRITERS * PER_WRITER
        async with open_ws(url) as live:
            written = await asyncio.wait_for(
                asyncio.gather(*(write(*writer) for writer in writers)), 60
            )
            live_events = [await receive_event(live) for _ in range(total)]

        # Stored once each: exactly 200 messages, distinct ids and texts, as sent.
        messages = (await call(http, "GET", f"{COLLECTION}/{cid}", as_owner))["messages"]
        assert len(messages) == total
        ids = [m["id"] for m in messages]
        texts = [m["message"] for m in messages]
        assert len(set(ids)) == total
        assert len(set(texts)) == total
        assert set(ids) == {i for batch in written for i in batch}
        assert set(texts) == {f"w{w}-{i}" for w in range(WRITERS) for i in range(PER_WRITER)}
        # Each writer's own messages keep the order it sent them in.
        for (name, _, _), batch in zip(writers, written, strict=True):
            mine = [m for m in messages if m["message"].startswith(f"{name}-")]
            assert [m["id"] for m in mine] == batch
            assert [m["message"] for m in mine] == [f"{name}-{i}" for i in range(PER_WRITER)]

        # The paged listing agrees.
        paged: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 37}
            if cursor:
                params["cursor"] = cursor
            page = await call(
                http, "GET", f"{COLLECTION}/{cid}/messages?{urlencode(params)}", as_owner
            )
            paged += [m["id"] for m in page["items"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert paged == ids

        feed = await call(
            http, "GET", f"{COLLECTION}/feed?{urlencode({'userId': user_id})}", server.headers()
        )
        [item] = [i for i in feed["items"] if i["conversationId"] == cid]
        assert item["messageCount"] == total

        # The live subscriber saw every message once, in sequence order, without gaps.
        assert [e["type"] for e in live_events] == ["message.created"] * total
        assert [e["sequence"] for e in live_events] == list(range(shares + 1, shares + total + 1))
        assert [e["data"]["id"] for e in live_events] == ids

        # The stored log, replayed from the start: 1..N, N = the state-changing requests made.
        replayed = await replay_all(url, http, cid, server.headers())
        assert [e["sequence"] for e in replayed] == list(range(1, shares + total + 1))
        assert [e["type"] for e in replayed] == ["participant.added"] * shares + [
            "message.created"
        ] * total
        assert [e["data"]["id"] for e in replayed[shares:]] == ids


async def test_concurrent_state_changes_of_every_kind_keep_one_gapless_sequence(
    server: LiveServer, user_id: str
) -> None:
    """Messages, renames, shares and role changes at once: one sequence, each event once."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as http:
        key = server.headers()
        cid = (await call(http, "POST", COLLECTION, key, {"userId": user_id}))["conversationId"]
        url = (await call(http, "GET", f"{COLLECTION}/{cid}/websocket-url", key))["websocketUrl"]
        people = [new_user(f"p{i}") for i in range(10)]

        async def messages() -> None:
            for i in range(20):
                await call(http, "POST", f"{COLLECTION}/{cid}/messages", key, {"message": f"m{i}"})

        async def renames() -> None:
            for i in range(10):
                await call(http, "PUT", f"{COLLECTION}/{cid}", key, {"title": f"t{i}"})

        async def sharing(user: str) -> None:
            share = {"userId": user, "role": "Viewer"}
            await call(http, "POST", f"{COLLECTION}/{cid}/share", key, share)
            role = {"role": "Collaborator"}
            await call(http, "PUT", f"{COLLECTION}/{cid}/participants/{user}/role", key, role)

        async def signals() -> None:
            for _ in range(10):
                await call(http, "POST", f"{COLLECTION}/{cid}/typing", key, {"isTyping": True})

        async with open_ws(url) as live:
            await asyncio.wait_for(
                asyncio.gather(messages(), renames(), signals(), *(sharing(p) for p in people)), 60
            )
            stored_total = 20 + 10 + 2 * len(people)
            live_events = [await receive_event(live) for _ in range(stored_total + 10)]

        stored = [e for e in live_events if e["sequence"] is not None]
        assert [e["sequence"] for e in stored] == list(range(1, stored_total + 1))
        assert sum(e["type"] == "typing" for e in live_events) == 10
        counts: dict[str, int] = {}
        for event in stored:
            counts[event["type"]] = counts.get(event["type"], 0) + 1
        assert counts == {
            "message.created": 20,
            "conversation.updated": 10,
            "participant.added": len(people),
            "participant.updated": len(people),
        }
        # Each person was added before their role changed.
        for person in people:
            kinds = [e["type"] for e in stored if e["data"].get("userId") == person]
            assert kinds == ["participant.added", "participant.updated"], (person, kinds)

        replayed = await replay_all(url, http, cid, key)
        assert [json.dumps(e, sort_keys=True) for e in replayed] == [
            json.dumps(e, sort_keys=True) for e in stored
        ], "the stored log replays exactly what was sent live"

        participants = await call(http, "GET", f"{COLLECTION}/{cid}/participants", key)
        assert {p["userId"]: p["role"] for p in participants} == {
            user_id: "Owner",
            **{p: "Collaborator" for p in people},
        }
        conversation = await call(http, "GET", f"{COLLECTION}/{cid}", key)
        assert len(conversation["messages"]) == 20
        assert conversation["title"] == "t9"


# --- a delete racing the writes that add rows to its conversation ---------------------

OWNED_TABLES = (
    "messages",
    "conversation_events",
    "conversation_participants",
    "conversation_reads",
    "external_identities",
    "attachments",
)


async def rows_left(server: LiveServer, cid: str) -> dict[str, int]:
    """The rows of conversation `cid` in each table that holds some, read from the
    server's own database."""
    url = server.env["AIRIA_DATABASE_URL"]
    sql = "SELECT count(*) FROM {} WHERE conversation_id = {}"
    if url.startswith("sqlite:"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            counts = {t: db.execute(sql.format(t, "?"), (cid,)).fetchone()[0] for t in OWNED_TABLES}
    else:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            counts = {t: await conn.fetchval(sql.format(t, "$1"), cid) for t in OWNED_TABLES}
        finally:
            await conn.close()
    return {table: n for table, n in counts.items() if n}


async def test_a_delete_racing_writes_to_its_conversation_leaves_none_of_its_rows(
    server: LiveServer,
) -> None:
    """On PostgreSQL, the delete read each table as it was when its statement began:
    what the writes it waited for had added stayed (messages, events, participants,
    identities), and the feed of a user shared in meanwhile counted the conversation
    for ever, and the external threads mapped meanwhile could never be mapped again
    (409, naming no conversation)."""
    key = server.headers()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:

        async def write(method: str, path: str, body=None, headers=key) -> int:
            response = await http.request(method, path, json=body, headers=headers)
            assert response.status_code < 500, (method, path, response.text)
            return response.status_code

        async def delete_soon(path: str) -> int:
            await asyncio.sleep(0.005)  # while the others are on their way
            return await write("DELETE", path)

        left, guests = {}, []
        for attempt in range(8):
            owner = new_user("owner")
            cid = (await call(http, "POST", COLLECTION, key, {"userId": owner}))["conversationId"]
            path = f"{COLLECTION}/{cid}"
            as_owner = server.bearer(mint_jwt(owner, "default"))
            threads = [f"thread-{cid}-{i}" for i in range(10)]
            shared = [new_user("guest") for _ in range(5)]
            guests += shared

            identity = {"externalSystem": "teams", "externalChannelId": "c"}
            upload = {"base64Content": "aGk=", "fileName": "a.txt", "contentType": "text/plain"}
            statuses = await asyncio.gather(
                delete_soon(path),
                *(write("POST", f"{path}/messages", {"message": f"m{i}"}) for i in range(20)),
                *(
                    write(
                        "POST", f"{path}/external-identities", {**identity, "externalThreadId": t}
                    )
                    for t in threads
                ),
                *(write("POST", f"{path}/share", {"userId": u}) for u in shared),
                *(write("POST", f"{path}/agent-attachments/base64", upload) for _ in range(3)),
                *(write("PATCH", f"{path}/mark-as-read", headers=as_owner) for _ in range(3)),
            )
            assert statuses[0] == 204, statuses
            if rows := await rows_left(server, cid):
                left[attempt] = rows
            # The threads are free again: none is held by what the delete left behind.
            again = (await call(http, "POST", COLLECTION, key, {"userId": owner}))["conversationId"]
            for thread in threads:
                body = {**identity, "externalThreadId": thread}
                assert await write("POST", f"{COLLECTION}/{again}/external-identities", body) == 201
        assert left == {}
        for guest in guests:
            feed = await call(http, "GET", f"{COLLECTION}/feed?userId={guest}", key)
            assert (feed["totalCount"], feed["items"]) == (0, []), guest
