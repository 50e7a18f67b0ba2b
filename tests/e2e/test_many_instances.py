"""Two `airia-server` processes over one database and one Redis: any instance serves any
request and any socket. The database is PostgreSQL (instances on many hosts) or one SQLite
file (processes on one host, as `--workers` runs them).

Writes on one are read, changed and deleted on the other; a socket on A receives, in order,
the events of writes made on B; a client moves from A to B with `after=` and misses nothing;
concurrent appends through both instances leave one gap-free sequence; typing crosses over.
The WebSocket ticket key is generated once and kept in the database, so a URL minted by A
opens on B.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

import backends

from .support import (
    BOOTSTRAP_KEY,
    all_messages,
    start_server,
    stop_process,
    wait_healthy,
)

pytestmark = pytest.mark.e2e

COLLECTION = "/v1/Conversations"
TIMEOUT = 15.0
HEADERS = {"X-API-KEY": BOOTSTRAP_KEY}


@dataclass
class Instance:
    name: str
    base_url: str
    process: subprocess.Popen
    stderr_path: Path

    @property
    def netloc(self) -> str:
        return urlsplit(self.base_url).netloc


def spawn_instance(name: str, root: Path, **settings: str) -> Instance:
    """Start the process; `wait_healthy` it before use."""
    server = start_server(root, name=name, wait=False, **settings)
    return Instance(name, server.base_url, server.process, server.stderr_path)


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def instances(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Instance, Instance]]:
    if request.param == "postgres":
        backends.require(backends.postgres_problem())
    backends.require(backends.redis_problem())
    root = tmp_path_factory.mktemp("many")
    if request.param == "postgres":
        database_url = backends.create_database_sync()
    else:
        database_url = f"sqlite:///{root / 'shared.db'}"
    settings = dict(
        database_url=database_url,
        AIRIA_REDIS_URL=backends.REDIS_URL,
        # Our own channel on the shared Redis: other runs' events are not ours.
        AIRIA_REDIS_PREFIX=f"airia-test-{uuid.uuid4().hex[:12]}",
    )
    started: list[Instance] = []
    try:
        # Both start at once: migrations take turns under the advisory lock (PostgreSQL)
        # or the write lock (SQLite).
        started.append(spawn_instance("a", root, **settings))
        started.append(spawn_instance("b", root, **settings))
        for instance in started:
            wait_healthy(instance.process, instance.base_url, instance.stderr_path)
            wait_ready(instance)
        yield started[0], started[1]
    finally:
        for instance in started:
            stop_process(instance.process)
        if request.param == "postgres":
            backends.drop_database_sync(database_url)


def wait_ready(instance: Instance) -> None:
    """/readyz answers 200 (Redis subscribed) within a bound."""
    deadline = time.monotonic() + TIMEOUT
    with httpx.Client(timeout=2.0) as http:
        while True:
            response = http.get(f"{instance.base_url}/readyz")
            if response.status_code == 200:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{instance.name} not ready: {response.text}")
            time.sleep(0.05)


@pytest.fixture
async def a_and_b(instances: tuple[Instance, Instance]):
    a, b = instances
    for instance in (a, b):
        if instance.process.poll() is not None:
            pytest.fail(f"instance {instance.name} died:\n" + instance.stderr_path.read_text())
    async with (
        httpx.AsyncClient(base_url=a.base_url, timeout=TIMEOUT, headers=HEADERS) as on_a,
        httpx.AsyncClient(base_url=b.base_url, timeout=TIMEOUT, headers=HEADERS) as on_b,
    ):
        yield a, b, on_a, on_b


def ok(response: httpx.Response) -> Any:
    assert 200 <= response.status_code < 300, (str(response.request.url), response.text)
    return response.json() if response.content else None


def on_instance(url: str, instance: Instance, **query: int) -> str:
    """The same ticketed URL, pointed at `instance`, with extra query parameters."""
    parts = urlsplit(url)
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    return urlunsplit(parts._replace(netloc=instance.netloc, query=parts.query + extra))


def open_ws(url: str):
    return connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT, max_size=None)


async def receive(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) for _ in range(count)]


async def ws_url(http: httpx.AsyncClient, cid: str) -> str:
    return ok(await http.get(f"{COLLECTION}/{cid}/websocket-url"))["websocketUrl"]


def new_user() -> str:
    return f"user_{uuid.uuid4().hex[:10]}"


# --- any instance serves any request -----------------------------------------------------------


async def test_created_on_a_is_read_updated_and_deleted_on_b(a_and_b) -> None:
    a, b, on_a, on_b = a_and_b
    user = new_user()
    created = ok(await on_a.post(COLLECTION, json={"userId": user, "title": "from A"}))
    cid = created["conversationId"]
    assert urlsplit(created["websocketUrl"]).netloc == a.netloc
    ok(await on_a.post(f"{COLLECTION}/{cid}/messages", json={"message": "hello from A"}))

    seen = ok(await on_b.get(f"{COLLECTION}/{cid}"))
    assert seen["title"] == "from A"
    assert [m["message"] for m in seen["messages"]] == ["hello from A"]
    assert urlsplit(seen["websocketUrl"]).netloc == b.netloc

    ok(await on_b.put(f"{COLLECTION}/{cid}", json={"title": "renamed on B"}))
    ok(await on_b.post(f"{COLLECTION}/{cid}/messages", json={"message": "hello from B"}))
    back = ok(await on_a.get(f"{COLLECTION}/{cid}"))
    assert back["title"] == "renamed on B"
    assert [m["message"] for m in back["messages"]] == ["hello from A", "hello from B"]
    feed = ok(await on_a.get(f"{COLLECTION}/feed", params={"userId": user}))
    assert [item["conversationId"] for item in feed["items"]] == [cid]

    assert (await on_b.delete(f"{COLLECTION}/{cid}")).status_code == 204
    assert (await on_a.get(f"{COLLECTION}/{cid}")).status_code == 404
    assert (await on_b.get(f"{COLLECTION}/{cid}")).status_code == 404


async def test_a_ticket_minted_by_a_opens_on_b(a_and_b) -> None:
    _a, b, on_a, _ = a_and_b
    cid = ok(await on_a.post(COLLECTION, json={"userId": new_user()}))["conversationId"]
    url = await ws_url(on_a, cid)
    async with open_ws(on_instance(url, b)) as ws:
        added = ok(await on_a.post(f"{COLLECTION}/{cid}/messages", json={"message": "x"}))
        (event,) = await receive(ws, 1)
    assert event["data"]["id"] == added["messageId"]


# --- events cross instances ------------------------------------------------------------------


async def test_a_socket_on_a_receives_in_order_the_events_of_writes_on_b(a_and_b) -> None:
    _, _, on_a, on_b = a_and_b
    user, guest = new_user(), new_user()
    cid = ok(await on_a.post(COLLECTION, json={"userId": user}))["conversationId"]
    async with open_ws(await ws_url(on_a, cid)) as ws:
        ids = []
        for i in range(10):
            added = ok(await on_b.post(f"{COLLECTION}/{cid}/messages", json={"message": f"m{i}"}))
            ids.append(added["messageId"])
        ok(await on_b.put(f"{COLLECTION}/{cid}", json={"title": "t"}))
        ok(await on_b.post(f"{COLLECTION}/{cid}/share", json={"userId": guest, "role": "Viewer"}))
        events = await receive(ws, 12)
    assert [e["sequence"] for e in events] == list(range(1, 13))
    assert [e["type"] for e in events] == ["message.created"] * 10 + [
        "conversation.updated",
        "participant.added",
    ]
    assert [e["data"]["id"] for e in events[:10]] == ids


async def test_moving_from_a_to_b_with_after_misses_nothing(a_and_b) -> None:
    _a, b, on_a, on_b = a_and_b
    cid = ok(await on_a.post(COLLECTION, json={"userId": new_user()}))["conversationId"]
    url = await ws_url(on_a, cid)
    ids = []
    async with open_ws(url) as ws:
        for i in range(10):
            added = ok(await on_b.post(f"{COLLECTION}/{cid}/messages", json={"message": f"m{i}"}))
            ids.append(added["messageId"])
        first = await receive(ws, 4)
    assert [e["sequence"] for e in first] == [1, 2, 3, 4]
    # More writes while the client is between instances, through A this time.
    for i in range(10, 13):
        added = ok(await on_a.post(f"{COLLECTION}/{cid}/messages", json={"message": f"m{i}"}))
        ids.append(added["messageId"])
    async with open_ws(on_instance(url, b, after=4)) as ws:
        rest = await receive(ws, 9)
        live = ok(await on_a.post(f"{COLLECTION}/{cid}/messages", json={"message": "live"}))
        (last,) = await receive(ws, 1)
    assert [e["sequence"] for e in rest] == list(range(5, 14))
    assert [e["data"]["id"] for e in first + rest] == ids
    assert (last["sequence"], last["data"]["id"]) == (14, live["messageId"])


async def test_concurrent_appends_through_both_instances_leave_one_gapless_sequence(
    a_and_b,
) -> None:
    _, b, on_a, on_b = a_and_b
    writers_per_instance, per_writer = 4, 25
    total = 2 * writers_per_instance * per_writer
    cid = ok(await on_a.post(COLLECTION, json={"userId": new_user()}))["conversationId"]

    async def writer(http: httpx.AsyncClient, name: str) -> list[str]:
        ids = []
        for i in range(per_writer):
            body = {"message": f"{name}-{i}"}
            ids.append(ok(await http.post(f"{COLLECTION}/{cid}/messages", json=body))["messageId"])
        return ids

    async with (
        open_ws(await ws_url(on_a, cid)) as live_a,
        open_ws(await ws_url(on_b, cid)) as live_b,
    ):
        results = await asyncio.gather(
            *(writer(on_a, f"a{w}") for w in range(writers_per_instance)),
            *(writer(on_b, f"b{w}") for w in range(writers_per_instance)),
        )
        seen_a = await receive(live_a, total)
        seen_b = await receive(live_b, total)
    written = [message_id for ids in results for message_id in ids]
    assert len(set(written)) == total

    for seen in (seen_a, seen_b):
        assert [e["sequence"] for e in seen] == list(range(1, total + 1))
        assert sorted(e["data"]["id"] for e in seen) == sorted(written)
    assert seen_a == seen_b, "both instances deliver the same events in the same order"
    # Each writer's messages keep that writer's order.
    order = [e["data"]["message"] for e in seen_a]
    for name in [f"{p}{w}" for p in "ab" for w in range(writers_per_instance)]:
        mine = [m for m in order if m.startswith(f"{name}-")]
        assert mine == [f"{name}-{i}" for i in range(per_writer)]

    # Stored once each, in the order of the event log, whichever instance reads.
    for http in (on_a, on_b):
        stored = await all_messages(http, cid)
        assert [m["id"] for m in stored] == [e["data"]["id"] for e in seen_a]
    async with open_ws(on_instance(await ws_url(on_a, cid), b, after=0)) as ws:
        replayed = await receive(ws, total)
    assert replayed == seen_a


async def test_typing_sent_on_b_reaches_a_socket_on_a(a_and_b) -> None:
    _a, b, on_a, on_b = a_and_b
    user = new_user()
    cid = ok(await on_a.post(COLLECTION, json={"userId": user}))["conversationId"]
    url = await ws_url(on_a, cid)
    async with open_ws(url) as watcher, open_ws(on_instance(url, b)) as typer:
        ok(await on_b.post(f"{COLLECTION}/{cid}/typing", json={"isTyping": True, "userId": user}))
        (by_http,) = await receive(watcher, 1)
        assert by_http["type"] == "typing"
        assert by_http["sequence"] is None
        assert by_http["data"] == {"userId": user, "isTyping": True}
        (echo,) = await receive(typer, 1)
        assert echo == by_http
        # A frame sent over B's socket is broadcast to A's too.
        await typer.send(json.dumps({"type": "presence", "action": "joined"}))
        (presence,) = await receive(watcher, 1)
    assert presence["type"] == "presence"
    assert presence["data"]["action"] == "joined"
