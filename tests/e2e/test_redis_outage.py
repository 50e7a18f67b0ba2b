"""Redis goes away and comes back under two running instances (PostgreSQL + Redis).

Redis here is a private `redis-server` on a free port, started and stopped by the test (the
shared one on 6379 is never touched). While it is down: /readyz says 503 with the Redis check
failing, every HTTP read and write still succeeds (the database is the record), and a socket
keeps receiving the events of writes made on its own instance. When it is back: /readyz is
200 again, a socket on the other instance that missed events during the outage receives them
(the hub rereads the stored log), and reconnecting with `after=` gives everything.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

import backends

from .support import (
    BOOTSTRAP_KEY,
    free_port,
    mint_jwt,
    start_server,
    stop_process,
    wait_healthy,
)

pytestmark = pytest.mark.e2e

COLLECTION = "/v1/Conversations"
HEADERS = {"X-API-KEY": BOOTSTRAP_KEY}
TIMEOUT = 15.0
POLL_SECONDS = 10.0


class PrivateRedis:
    """A throw-away redis-server on one port, stoppable and restartable."""

    def __init__(self, root: Path) -> None:
        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.root = root
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.binary is not None
        log = open(self.root / "redis.log", "ab")
        with log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.root),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
            )
        deadline = time.monotonic() + POLL_SECONDS
        while not self._answers():
            if self.process.poll() is not None:
                pytest.fail("redis-server exited:\n" + (self.root / "redis.log").read_text())
            if time.monotonic() > deadline:
                pytest.fail("redis-server did not answer PING")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def _answers(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class Server:
    def __init__(self, name: str, root: Path, database_url: str, redis_url: str) -> None:
        """Started, not yet waited for: `wait_healthy` it before use."""
        self.name = name
        server = start_server(
            root, name=name, wait=False, database_url=database_url, AIRIA_REDIS_URL=redis_url
        )
        self.base_url = server.base_url
        self.stderr_path = server.stderr_path
        self.process = server.process

    @property
    def netloc(self) -> str:
        return urlsplit(self.base_url).netloc

    def readyz(self) -> httpx.Response:
        return httpx.get(f"{self.base_url}/readyz", timeout=5.0)

    def wait_readyz(self, status: int) -> dict[str, Any]:
        """Poll /readyz until it answers `status`; its body."""
        deadline = time.monotonic() + POLL_SECONDS
        while True:
            response = self.readyz()
            if response.status_code == status:
                return response.json()
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{self.name}: /readyz stayed {response.status_code} {response.text}, "
                    f"expected {status}:\n" + self.stderr_path.read_text(errors="replace")
                )
            time.sleep(0.1)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[PrivateRedis, Server, Server]]:
    backends.require(backends.postgres_problem())
    if shutil.which("redis-server") is None:
        backends.require("redis-server is not installed (apt-get install redis-server)")
    database_url = backends.create_database_sync()
    redis = PrivateRedis(tmp_path)
    servers: list[Server] = []
    try:
        redis.start()
        servers.append(Server("one", tmp_path, database_url, redis.url))
        servers.append(Server("two", tmp_path, database_url, redis.url))
        for server in servers:
            wait_healthy(server.process, server.base_url, server.stderr_path)
        yield redis, servers[0], servers[1]
    finally:
        for server in servers:
            stop_process(server.process)
        redis.stop()
        backends.drop_database_sync(database_url)


def ok(response: httpx.Response) -> Any:
    assert 200 <= response.status_code < 300, (str(response.request.url), response.text)
    return response.json() if response.content else None


def open_ws(url: str):
    return connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT)


async def receive(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) for _ in range(count)]


def on_server(url: str, server: Server, **query: int) -> str:
    parts = urlsplit(url)
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    return urlunsplit(parts._replace(netloc=server.netloc, query=parts.query + extra))


async def test_writes_and_local_sockets_survive_a_redis_outage_and_remote_sockets_catch_up(
    setup: tuple[PrivateRedis, Server, Server],
) -> None:
    redis, one, two = setup
    for server in (one, two):
        body = server.wait_readyz(200)
        assert body["checks"]["redis"] == "ok"
        assert body["checks"]["database"] == "ok"

    user = f"user_{uuid.uuid4().hex[:8]}"
    async with (
        httpx.AsyncClient(base_url=one.base_url, timeout=TIMEOUT, headers=HEADERS) as on_one,
        httpx.AsyncClient(base_url=two.base_url, timeout=TIMEOUT, headers=HEADERS) as on_two,
    ):
        cid = ok(await on_one.post(COLLECTION, json={"userId": user}))["conversationId"]
        url = ok(await on_one.get(f"{COLLECTION}/{cid}/websocket-url"))["websocketUrl"]
        async with open_ws(url) as local, open_ws(on_server(url, two)) as remote:
            # Before the outage: a write on one reaches both.
            first = ok(await on_one.post(f"{COLLECTION}/{cid}/messages", json={"message": "0"}))
            for ws in (local, remote):
                (event,) = await receive(ws, 1)
                assert (event["sequence"], event["data"]["id"]) == (1, first["messageId"])

            redis.stop()
            for server in (one, two):
                body = server.wait_readyz(503)
                assert body["status"] == "unavailable"
                assert body["checks"]["redis"] != "ok"
                assert body["checks"]["database"] == "ok"

            # Writes need only the database.
            other = ok(await on_two.post(COLLECTION, json={"userId": user, "title": "outage"}))
            assert ok(await on_one.get(f"{COLLECTION}/{other['conversationId']}"))["title"] == (
                "outage"
            )
            during = []
            for i in range(1, 4):
                during.append(
                    ok(await on_one.post(f"{COLLECTION}/{cid}/messages", json={"message": str(i)}))
                )
            ok(await on_one.put(f"{COLLECTION}/{cid}", json={"title": "renamed in the outage"}))
            seen = ok(await on_two.get(f"{COLLECTION}/{cid}"))
            assert [m["message"] for m in seen["messages"]] == ["0", "1", "2", "3"]
            assert seen["title"] == "renamed in the outage"
            feed = ok(await on_two.get(f"{COLLECTION}/feed", params={"userId": user}))
            assert feed["totalCount"] == 2

            # The socket on the writing instance gets them at once (local delivery).
            events = await receive(local, 4)
            assert [e["sequence"] for e in events] == [2, 3, 4, 5]
            assert [e["data"]["id"] for e in events[:3]] == [m["messageId"] for m in during]
            assert events[3]["type"] == "conversation.updated"

            redis.start()
            for server in (one, two):
                assert server.wait_readyz(200)["checks"]["redis"] == "ok"

            # The socket on the other instance missed them live; the hub rereads the log.
            caught_up = await receive(remote, 4)
            assert caught_up == events

            # And fan-out works again, both ways.
            after = ok(await on_two.post(f"{COLLECTION}/{cid}/messages", json={"message": "4"}))
            for ws in (local, remote):
                (event,) = await receive(ws, 1)
                assert (event["sequence"], event["data"]["id"]) == (6, after["messageId"])

        # Reconnecting with after= gives everything, on either instance.
        for server in (one, two):
            async with open_ws(on_server(url, server, after=0)) as ws:
                replayed = await receive(ws, 6)
            assert [e["sequence"] for e in replayed] == [1, 2, 3, 4, 5, 6]
            assert replayed[1:5] == events


async def test_a_socket_on_the_other_instance_catches_up_from_after_even_without_the_resync(
    setup: tuple[PrivateRedis, Server, Server],
) -> None:
    """The client's own guarantee, whatever the hub does: a reconnect with `after=` during
    the outage itself (to an instance that did not see the writes live) misses nothing."""
    redis, one, two = setup
    one.wait_readyz(200)
    two.wait_readyz(200)
    async with httpx.AsyncClient(base_url=one.base_url, timeout=TIMEOUT, headers=HEADERS) as http:
        cid = ok(await http.post(COLLECTION, json={"userId": "u"}))["conversationId"]
        url = ok(await http.get(f"{COLLECTION}/{cid}/websocket-url"))["websocketUrl"]
        redis.stop()
        one.wait_readyz(503)
        ids = [
            ok(await http.post(f"{COLLECTION}/{cid}/messages", json={"message": str(i)}))[
                "messageId"
            ]
            for i in range(5)
        ]
        async with open_ws(on_server(url, two, after=2)) as ws:
            events = await receive(ws, 3)
            assert [e["data"]["id"] for e in events] == ids[2:]
            # Live events of writes on *another* instance cannot arrive while Redis is
            # down; the next write on this instance is delivered here at once, though.
            async with httpx.AsyncClient(
                base_url=two.base_url, timeout=TIMEOUT, headers=HEADERS
            ) as on_two:
                local = ok(await on_two.post(f"{COLLECTION}/{cid}/messages", json={"message": "x"}))
            (event,) = await receive(ws, 1)
            assert (event["sequence"], event["data"]["id"]) == (6, local["messageId"])


class TcpProxy:
    """A TCP forwarder to Redis that the test can cut and restore: a partition between one
    instance and Redis while the other instance still reaches it. Or stall: connections
    stay open and carry nothing (what goes through is dropped), as behind a firewall that
    drops packets, until `resume`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.stalled = False

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if self.stalled:
                        continue
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()
                self._writers.discard(dst)

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except asyncio.CancelledError:  # the loop is closing: the connection is gone
            pass


@pytest.fixture
async def partitionable(tmp_path: Path) -> AsyncIterator[tuple[TcpProxy, Server, Server]]:
    """Instance `one` reaches a private Redis through a proxy the test can cut or stall;
    `two` reaches it directly."""
    backends.require(backends.postgres_problem())
    if shutil.which("redis-server") is None:
        backends.require("redis-server is not installed (apt-get install redis-server)")
    database_url = backends.create_database_sync()
    redis = PrivateRedis(tmp_path)
    proxy = TcpProxy(redis.port)
    servers: list[Server] = []
    try:
        redis.start()
        await proxy.start()
        one = Server("one", tmp_path, database_url, f"redis://127.0.0.1:{proxy.port}/0")
        servers.append(one)
        two = Server("two", tmp_path, database_url, redis.url)
        servers.append(two)
        for server in servers:
            await asyncio.to_thread(
                wait_healthy, server.process, server.base_url, server.stderr_path
            )
            await asyncio.to_thread(server.wait_readyz, 200)
        yield proxy, one, two
    finally:
        for server in servers:
            stop_process(server.process)
        await proxy.cut()
        redis.stop()
        backends.drop_database_sync(database_url)


async def missed_then_caught_up(proxy: TcpProxy, one: Server, two: Server, *, stall: bool) -> None:
    """A conversation watched from both instances; `one` loses Redis (cut, or stalled)
    and is written to; it comes back. Its /readyz must say 503 meanwhile, and the socket on
    `two` must receive the event written meanwhile without waiting for a later event or a
    reconnect: `one` tells the others to reread the stored log."""
    async with httpx.AsyncClient(base_url=one.base_url, timeout=TIMEOUT, headers=HEADERS) as on_one:
        cid = ok(await on_one.post(COLLECTION, json={"userId": "u"}))["conversationId"]
        url = ok(await on_one.get(f"{COLLECTION}/{cid}/websocket-url"))["websocketUrl"]
        async with open_ws(url) as local, open_ws(on_server(url, two)) as remote:
            first = ok(await on_one.post(f"{COLLECTION}/{cid}/messages", json={"message": "0"}))
            for ws in (local, remote):
                (event,) = await receive(ws, 1)
                assert event["data"]["id"] == first["messageId"]

            if stall:
                proxy.stalled = True
            else:
                await proxy.cut()
                await asyncio.to_thread(one.wait_readyz, 503)
            # The write answers, and its event reaches the socket on its own instance.
            cut_off = ok(await on_one.post(f"{COLLECTION}/{cid}/messages", json={"message": "1"}))
            (event,) = await receive(local, 1)
            assert (event["sequence"], event["data"]["id"]) == (2, cut_off["messageId"])
            body = await asyncio.to_thread(one.wait_readyz, 503)
            assert body["checks"]["redis"].startswith("unreachable"), body
            assert (await asyncio.to_thread(two.readyz)).status_code == 200

            if stall:
                proxy.stalled = False
            else:
                await proxy.start()
            await asyncio.to_thread(one.wait_readyz, 200)
            try:
                (missed,) = await receive(remote, 1)
            except asyncio.TimeoutError:
                # What does deliver it: the next event of the conversation.
                async with httpx.AsyncClient(
                    base_url=two.base_url, timeout=TIMEOUT, headers=HEADERS
                ) as on_two:
                    ok(await on_two.post(f"{COLLECTION}/{cid}/messages", json={"message": "2"}))
                late = await receive(remote, 2)
                assert [e["sequence"] for e in late] == [2, 3]
                pytest.fail(
                    "BUG: the event written on instance one while it had lost Redis did not "
                    f"reach the socket on instance two within {TIMEOUT:.0f} s of one being "
                    "back; it arrived only with the next event"
                )
            assert missed == event


async def test_an_event_written_on_an_instance_cut_off_from_redis_reaches_the_others_sockets(
    partitionable: tuple[TcpProxy, Server, Server],
) -> None:
    """The proxy closes `one`'s connections to Redis and refuses new ones."""
    await missed_then_caught_up(*partitionable, stall=False)


async def test_an_instance_whose_redis_stalls_says_so_and_the_others_catch_up(
    partitionable: tuple[TcpProxy, Server, Server],
) -> None:
    """The proxy keeps `one`'s connections open and carries nothing: no error is raised on
    either of them, so `one` has to notice by the clock (a PUBLISH that does not answer,
    a listening connection that hears nothing, not even its PINGs answered)."""
    await missed_then_caught_up(*partitionable, stall=True)


async def test_a_deletion_and_a_removal_missed_in_an_outage_still_close_the_remote_sockets(
    setup: tuple[PrivateRedis, Server, Server],
) -> None:
    """What the stored log cannot give back on its own: a conversation deleted in the
    outage has no log left, and a removed user's socket must not stay open to read
    what follows. On the resync, the first socket is sent `conversation.deleted` and
    closed with 1000; the second gets the replayed `participant.removed` and 1008."""
    redis, one, two = setup
    owner, bob = f"owner_{uuid.uuid4().hex[:8]}", f"bob_{uuid.uuid4().hex[:8]}"
    as_bob = {"Authorization": f"Bearer {mint_jwt(bob)}"}
    async with (
        httpx.AsyncClient(base_url=one.base_url, timeout=TIMEOUT, headers=HEADERS) as on_one,
        httpx.AsyncClient(base_url=two.base_url, timeout=TIMEOUT) as on_two,
    ):
        doomed = ok(await on_one.post(COLLECTION, json={"userId": owner}))["conversationId"]
        shared = ok(await on_one.post(COLLECTION, json={"userId": owner}))["conversationId"]
        ok(await on_one.post(f"{COLLECTION}/{doomed}/messages", json={"message": "0"}))
        ok(
            await on_one.post(
                f"{COLLECTION}/{shared}/share", json={"userId": bob, "role": "Collaborator"}
            )
        )
        doomed_url = ok(await on_one.get(f"{COLLECTION}/{doomed}/websocket-url"))["websocketUrl"]
        bob_url = ok(await on_two.get(f"{COLLECTION}/{shared}/websocket-url", headers=as_bob))[
            "websocketUrl"
        ]
        async with (
            open_ws(on_server(doomed_url, two)) as watching_doomed,
            open_ws(bob_url) as watching_shared,
        ):
            redis.stop()
            for server in (one, two):
                server.wait_readyz(503)
            ok(await on_one.delete(f"{COLLECTION}/{doomed}"))
            ok(await on_one.delete(f"{COLLECTION}/{shared}/participants/{bob}"))
            ok(await on_one.post(f"{COLLECTION}/{shared}/messages", json={"message": "secret"}))
            redis.start()
            for server in (one, two):
                server.wait_readyz(200)

            (gone,) = await receive(watching_doomed, 1)
            assert gone["type"] == "conversation.deleted"
            assert (gone["sequence"], gone["data"]) == (2, {"conversationId": doomed})
            await asyncio.wait_for(watching_doomed.wait_closed(), TIMEOUT)
            assert watching_doomed.close_code == 1000

            (removed,) = await receive(watching_shared, 1)
            assert (removed["type"], removed["data"]["userId"]) == ("participant.removed", bob)
            await asyncio.wait_for(watching_shared.wait_closed(), TIMEOUT)
            assert watching_shared.close_code == 1008  # and never the message after it


async def test_a_socket_on_an_instance_whose_redis_stalls_gets_what_was_written_elsewhere(
    partitionable: tuple[TcpProxy, Server, Server],
) -> None:
    """The other direction: `one` publishes nothing, and its listening connection stays
    open while the events written on `two` are dropped on their way. `one` must notice by
    the silence (its PINGs unanswered), say 503, and once the path is back, reread the log
    for its sockets: the event written on `two` meanwhile arrives without a later one."""
    proxy, one, two = partitionable
    async with httpx.AsyncClient(base_url=two.base_url, timeout=TIMEOUT, headers=HEADERS) as on_two:
        cid = ok(await on_two.post(COLLECTION, json={"userId": "u"}))["conversationId"]
        url = ok(await on_two.get(f"{COLLECTION}/{cid}/websocket-url"))["websocketUrl"]
        async with open_ws(on_server(url, one)) as on_one:
            proxy.stalled = True
            written = ok(await on_two.post(f"{COLLECTION}/{cid}/messages", json={"message": "1"}))
            body = await asyncio.to_thread(one.wait_readyz, 503)
            assert body["checks"]["redis"].startswith("unreachable"), body
            proxy.stalled = False
            await asyncio.to_thread(one.wait_readyz, 200)
            (event,) = await receive(on_one, 1)
            assert (event["sequence"], event["data"]["id"]) == (1, written["messageId"])
