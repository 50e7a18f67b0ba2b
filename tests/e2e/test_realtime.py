"""The real-time channel with a real WebSocket client against the real server."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .support import LiveServer, mint_jwt

pytestmark = pytest.mark.e2e

TIMEOUT = 5.0


async def create(http: httpx.AsyncClient, headers: dict[str, str], user_id: str) -> dict:
    response = await http.post("/v1/Conversations", json={"userId": user_id}, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def update(http: httpx.AsyncClient, headers: dict[str, str], cid: str, title: str) -> None:
    response = await http.put(f"/v1/Conversations/{cid}", json={"title": title}, headers=headers)
    assert response.status_code == 200, response.text


async def receive_event(ws: ClientConnection) -> dict[str, Any]:
    frame = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(frame, str), "events are JSON text frames"
    return json.loads(frame)


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    query.update({k: [v] for k, v in params.items()})
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))


def open_ws(url: str):
    return connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT)


@pytest.fixture
async def ahttp(server: LiveServer):
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as client:
        yield client


async def refused_status(url: str) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with open_ws(url):
            pass
    return info.value.response.status_code


async def test_updates_arrive_in_sequence_then_delete_closes(
    server: LiveServer, ahttp: httpx.AsyncClient, user_id: str
) -> None:
    created = await create(ahttp, server.headers(), user_id)
    cid = created["conversationId"]
    assert created["websocketUrl"].startswith(f"{server.ws_base_url}/v1/Conversations/{cid}/ws?")

    async with open_ws(created["websocketUrl"]) as ws:
        await update(ahttp, server.headers(), cid, "first")
        first = await receive_event(ws)
        assert first["type"] == "conversation.updated"
        assert first["sequence"] == 1
        assert first["conversationId"] == cid
        assert first["createdAt"].endswith("Z")
        assert first["data"]["title"] == "first"

        await update(ahttp, server.headers(), cid, "second")
        second = await receive_event(ws)
        assert (second["type"], second["sequence"], second["data"]["title"]) == (
            "conversation.updated",
            2,
            "second",
        )

        deleted = await ahttp.delete(f"/v1/Conversations/{cid}", headers=server.headers())
        assert deleted.status_code in (200, 204)
        gone = await receive_event(ws)
        assert gone["type"] == "conversation.deleted"
        assert gone["conversationId"] == cid
        assert gone["sequence"] == 3

        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == 1000


async def test_reconnect_with_after_replays_what_was_missed(
    server: LiveServer, ahttp: httpx.AsyncClient, user_id: str
) -> None:
    created = await create(ahttp, server.headers(), user_id)
    cid, url = created["conversationId"], created["websocketUrl"]
    async with open_ws(url) as ws:
        await update(ahttp, server.headers(), cid, "one")
        assert (await receive_event(ws))["sequence"] == 1
    await update(ahttp, server.headers(), cid, "two")  # while nobody listens

    async with open_ws(with_query(url, after="1")) as ws:
        replayed = await receive_event(ws)
        assert (replayed["sequence"], replayed["data"]["title"]) == (2, "two")
        await update(ahttp, server.headers(), cid, "three")
        live = await receive_event(ws)
        assert (live["sequence"], live["data"]["title"]) == (3, "three")

    async with open_ws(with_query(url, after="0")) as ws:
        titles = [(await receive_event(ws))["data"]["title"] for _ in range(3)]
        assert titles == ["one", "two", "three"]


async def test_without_after_only_new_events_arrive(
    server: LiveServer, ahttp: httpx.AsyncClient, user_id: str
) -> None:
    created = await create(ahttp, server.headers(), user_id)
    cid = created["conversationId"]
    await update(ahttp, server.headers(), cid, "before")
    async with open_ws(created["websocketUrl"]) as ws:
        await update(ahttp, server.headers(), cid, "after")
        event = await receive_event(ws)
        assert (event["sequence"], event["data"]["title"]) == (2, "after")


async def test_every_subscriber_gets_every_event_once_in_order(
    server: LiveServer, ahttp: httpx.AsyncClient, user_id: str
) -> None:
    created = await create(ahttp, server.headers(), user_id)
    cid, url = created["conversationId"], created["websocketUrl"]
    async with open_ws(url) as a, open_ws(url) as b:
        await asyncio.gather(*(update(ahttp, server.headers(), cid, f"t{i}") for i in range(10)))
        for ws in (a, b):
            sequences = [(await receive_event(ws))["sequence"] for _ in range(10)]
            assert sequences == list(range(1, 11))


async def test_bearer_created_url_works_for_its_user(
    server: LiveServer, ahttp: httpx.AsyncClient, user_id: str
) -> None:
    as_user = server.bearer(mint_jwt(user_id))
    created = await create(ahttp, as_user, user_id)
    async with open_ws(created["websocketUrl"]) as ws:
        await update(ahttp, as_user, created["conversationId"], "mine")
        assert (await receive_event(ws))["data"]["title"] == "mine"


async def test_tampered_ticket_is_refused_before_accept(
    server: LiveServer, ahttp: httpx.AsyncClient, user_id: str
) -> None:
    created = await create(ahttp, server.headers(), user_id)
    url = created["websocketUrl"]
    ticket = parse_qs(urlsplit(url).query)["ticket"][0]
    payload, signature = ticket.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]

    assert await refused_status(with_query(url, ticket=f"{payload}.{flipped}")) == 403
    assert await refused_status(with_query(url, ticket="garbage")) == 403
    assert await refused_status(with_query(url, ticket="")) == 403
    parts = urlsplit(url)
    assert await refused_status(urlunsplit(parts._replace(query=""))) == 403


async def test_ticket_for_another_conversation_is_refused(
    server: LiveServer, ahttp: httpx.AsyncClient, user_id: str
) -> None:
    first = await create(ahttp, server.headers(), user_id)
    second = await create(ahttp, server.headers(), user_id)
    ticket = parse_qs(urlsplit(first["websocketUrl"]).query)["ticket"][0]
    url = with_query(second["websocketUrl"], ticket=ticket)
    assert await refused_status(url) == 403


async def test_unknown_and_deleted_conversations_are_refused(
    server: LiveServer, ahttp: httpx.AsyncClient, user_id: str
) -> None:
    created = await create(ahttp, server.headers(), user_id)
    ticket = parse_qs(urlsplit(created["websocketUrl"]).query)["ticket"][0]
    unknown = f"{server.ws_base_url}/v1/Conversations/not-a-conversation/ws?ticket={ticket}"
    assert await refused_status(unknown) == 403

    deleted = await ahttp.delete(
        f"/v1/Conversations/{created['conversationId']}", headers=server.headers()
    )
    assert deleted.status_code in (200, 204)
    assert await refused_status(created["websocketUrl"]) == 403


@pytest.mark.parametrize("after", ["-1", "abc", "1.5", "9" * 22 + "x"])
async def test_bad_after_is_refused(
    server: LiveServer, ahttp: httpx.AsyncClient, user_id: str, after: str
) -> None:
    created = await create(ahttp, server.headers(), user_id)
    assert await refused_status(with_query(created["websocketUrl"], after=after)) == 422
    # A bad ticket is refused as one, whatever `after` holds.
    assert await refused_status(with_query(created["websocketUrl"], after=after, ticket="x")) == 403


@pytest.mark.parametrize(
    "query", ["ticket=%FF", "ticket={ticket}&after=%ED%A0%80", "ticket={ticket}%00"]
)
async def test_a_query_that_is_not_utf8_is_refused_with_400(
    server: LiveServer, ahttp: httpx.AsyncClient, user_id: str, query: str
) -> None:
    """As on every HTTP route: the bytes are not text (or hold a NUL, which no text the
    server stores can), whatever the ticket."""
    created = await create(ahttp, server.headers(), user_id)
    base, ticket = created["websocketUrl"].split("?ticket=")
    assert await refused_status(f"{base}?{query.format(ticket=ticket)}") == 400


@pytest.mark.parametrize("ticket", ["a.%C3%A9", "%C3%A9.%C3%A9"], ids=["utf8-sig", "utf8-both"])
async def test_non_ascii_ticket_is_refused_not_crashed(
    server: LiveServer, ahttp: httpx.AsyncClient, user_id: str, ticket: str
) -> None:
    created = await create(ahttp, server.headers(), user_id)
    base = created["websocketUrl"].split("?")[0]
    assert await refused_status(f"{base}?ticket={ticket}") == 403
    # and the server is still serving
    assert (await ahttp.get("/healthz")).status_code == 200
