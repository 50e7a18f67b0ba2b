"""SIGTERM with requests in flight and WebSockets open: sockets are closed with 1001,
the listener stops accepting, the requests in flight finish with 2xx (and are stored),
and the process exits within a bound. The same with `serve --workers 2`, whose workers
run uvicorn's own server (it closed sockets with 1012 before the protocol asked the
application to close them)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import backends

from .support import (
    mint_jwt,
    start_server,
    stop_process,
)

pytestmark = pytest.mark.e2e

COLLECTION = "/v1/Conversations"
TIMEOUT = 10.0
EXIT_BOUND_SECONDS = 15.0
IN_FLIGHT = 4


class SlowBody:
    """A JSON body sent in two parts: the second only once `release` is set."""

    def __init__(self, text: str, release: asyncio.Event) -> None:
        self.data = json.dumps({"message": text}).encode()
        self.release = release
        self.first_part_sent = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data[:5]
        self.first_part_sent.set()
        await asyncio.wait_for(self.release.wait(), 30)
        yield self.data[5:]


def connection_refused(base_url: str) -> bool:
    parts = urlsplit(base_url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


@pytest.mark.parametrize("backend", ["sqlite", "postgres+redis", "sqlite-workers"])
async def test_sigterm_closes_sockets_with_1001_finishes_requests_and_exits(
    backend: str, tmp_path: Path
) -> None:
    extra: dict[str, str] = {}
    drop = None
    workers = 2 if backend == "sqlite-workers" else 1
    if backend.startswith("sqlite"):
        database_url = f"sqlite:///{tmp_path / 'a.db'}"
    else:
        backends.require(backends.postgres_problem())
        backends.require(backends.redis_problem())
        database_url = drop = backends.create_database_sync()
        extra["AIRIA_REDIS_URL"] = backends.REDIS_URL
    server = start_server(tmp_path, database_url=database_url, workers=workers, **extra)
    clients: list[httpx.AsyncClient] = []
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:
            created = await http.post(
                COLLECTION, json={"userId": "alice"}, headers=server.bearer(mint_jwt("alice"))
            )
            assert created.status_code == 201, created.text
            cid = created.json()["conversationId"]
            by_key = await http.get(f"{COLLECTION}/{cid}/websocket-url", headers=server.headers())
            urls = [created.json()["websocketUrl"], by_key.json()["websocketUrl"]]

        sockets = [await connect(url, open_timeout=TIMEOUT) for url in urls]
        release = asyncio.Event()
        bodies = [SlowBody(f"in flight {n}", release) for n in range(IN_FLIGHT)]
        for _ in bodies:
            client = httpx.AsyncClient(base_url=server.base_url, timeout=30.0)
            clients.append(client)
            # The connection is open and accepted before the slow request rides on it.
            assert (await client.get("/healthz")).status_code == 200
        in_flight = [
            asyncio.create_task(
                client.post(
                    f"{COLLECTION}/{cid}/messages",
                    content=body,
                    headers={**server.headers(), "Content-Type": "application/json"},
                )
            )
            for client, body in zip(clients, bodies, strict=True)
        ]
        for body in bodies:
            await asyncio.wait_for(body.first_part_sent.wait(), TIMEOUT)

        server.process.send_signal(signal.SIGTERM)

        codes = []
        for ws in sockets:
            with pytest.raises(ConnectionClosed):
                while True:  # nothing else is sent to it; the close comes within the bound
                    await asyncio.wait_for(ws.recv(), EXIT_BOUND_SECONDS)
            codes.append(ws.close_code)
        assert codes == [1001, 1001]

        # The sockets were told to go after the listener closed: no new connection now.
        # Each worker closes its own listener before its sockets, but the sockets may
        # all be on one worker while the other is a moment behind with the signal.
        deadline = time.monotonic() + (0 if workers == 1 else EXIT_BOUND_SECONDS)
        while not connection_refused(server.base_url):
            assert time.monotonic() < deadline, "still accepting connections"
            await asyncio.sleep(0.05)

        release.set()
        responses = await asyncio.wait_for(asyncio.gather(*in_flight), EXIT_BOUND_SECONDS)
        assert [r.status_code for r in responses] == [201] * IN_FLIGHT, [r.text for r in responses]
        message_ids = {r.json()["messageId"] for r in responses}

        returncode = await asyncio.to_thread(server.process.wait, EXIT_BOUND_SECONDS)
        assert returncode in (0, -signal.SIGTERM), server.stderr_text()[-3000:]
        assert "Traceback" not in server.stderr_text(), server.stderr_text()[-5000:]
        for ws in sockets:
            await ws.close()

        # What the in-flight requests were answered 2xx for is stored.
        server = start_server(tmp_path, database_url=database_url, workers=workers, **extra)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:
            got = await http.get(f"{COLLECTION}/{cid}", headers=server.headers())
            assert got.status_code == 200
            assert {m["id"] for m in got.json()["messages"]} == message_ids
        print(f"\nshutdown[{backend}]: 2 sockets closed 1001, {IN_FLIGHT} in-flight requests 201")
    finally:
        for client in clients:
            await client.aclose()
        stop_process(server.process)
        if drop:
            backends.drop_database_sync(drop)


def test_a_request_still_running_when_the_drain_ends_is_503_and_logged_quietly(
    tmp_path: Path,
) -> None:
    """A request whose body has not come when the 10 s are over is answered 503 with
    Retry-After, as problem+json with its correlation id, and the log says how many
    were cut off in a WARNING: no plain-text 500, no cancelled task's traceback."""
    server = start_server(tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/Conversations HTTP/1.1\r\nHost: x\r\nX-Correlation-ID: slow-1\r\n"
                + f"X-API-KEY: {server.api_key}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            time.sleep(0.5)  # the head is in: the request is in flight
            server.process.send_signal(signal.SIGTERM)
            answer = b""
            while chunk := sock.recv(65536):  # the body never comes; the server closes
                answer += chunk
        returncode = server.process.wait(EXIT_BOUND_SECONDS)
    finally:
        stop_process(server.process)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer[:500]
    assert b"\r\nretry-after: 1\r\n" in head.lower()
    assert b"content-type: application/problem+json" in head.lower()
    problem = json.loads(body)
    assert (problem["status"], problem["correlationId"]) == (503, "slow-1")
    assert returncode in (0, -signal.SIGTERM)
    log = server.stderr_text()
    assert "ERROR" not in log and "Traceback" not in log, log[-3000:]
    assert "1 request(s) still running after 10 s cut off" in log, log[-3000:]
