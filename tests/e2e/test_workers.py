"""`airia-server serve --workers 2` on SQLite, with Redis for events: one port, two
processes over one database file.

Requests reach both processes (told apart by their correlation ids); appends made
concurrently through the port leave one gap-free sequence, stored once each; a socket
receives every event, whichever worker made the write and whichever holds the socket;
and each worker writes its access log, one line per request.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

import backends

from .support import BOOTSTRAP_KEY, all_messages, start_server, stop_process

pytestmark = pytest.mark.e2e

COLLECTION = "/v1/Conversations"
HEADERS = {"X-API-KEY": BOOTSTRAP_KEY}
TIMEOUT = 15.0


def _children(pid: int) -> list[int]:
    """The child processes of `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # ppid
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc for the workers")
async def test_two_workers_on_one_sqlite_file_serve_one_consistent_conversation(
    tmp_path: Path,
) -> None:
    backends.require(backends.redis_problem())
    server = start_server(
        tmp_path,
        workers=2,
        AIRIA_REDIS_URL=backends.REDIS_URL,
        AIRIA_REDIS_PREFIX=f"airia-test-{uuid.uuid4().hex[:12]}",
    )
    try:
        workers = _children(server.process.pid)
        assert len(workers) >= 2, f"expected two worker processes, found {workers}"
        writers, per_writer = 8, 30
        total = writers * per_writer
        limits = httpx.Limits(max_connections=writers, max_keepalive_connections=writers)
        async with httpx.AsyncClient(
            base_url=server.base_url, headers=HEADERS, timeout=TIMEOUT, limits=limits
        ) as http:
            created = await http.post(COLLECTION, json={"userId": "worker-test"})
            assert created.status_code == 201, created.text
            cid = created.json()["conversationId"]
            ticket = (await http.get(f"{COLLECTION}/{cid}")).json()["websocketUrl"]

            served_by: set[str] = set()  # the process part of each answer's correlation id

            async def writer(name: str) -> None:
                for i in range(per_writer):
                    r = await http.post(
                        f"{COLLECTION}/{cid}/messages", json={"message": f"{name}-{i}"}
                    )
                    assert r.status_code == 201, r.text
                    served_by.add(r.headers["x-correlation-id"][:16])

            sockets = [await connect(ticket) for _ in range(4)]
            try:
                await asyncio.gather(*(writer(f"w{n}") for n in range(writers)))
                seen = []
                for ws in sockets:
                    events = []
                    while len(events) < total:
                        frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                        if frame.get("type") == "message.created":
                            events.append(frame)
                    seen.append(events)
            finally:
                for ws in sockets:
                    await ws.close()

            sequences = [event["sequence"] for event in seen[0]]
            assert sequences == list(range(sequences[0], sequences[0] + total)), "gap-free"
            assert all(events == seen[0] for events in seen), "every socket, the same events"
            stored = await all_messages(http, cid)
            assert [m["id"] for m in stored] == [e["data"]["id"] for e in seen[0]]
            for n in range(writers):
                mine = [m["message"] for m in stored if m["message"].startswith(f"w{n}-")]
                assert mine == [f"w{n}-{i}" for i in range(per_writer)]

        # Each new connection goes to whichever worker accepts it first.
        for _ in range(100):
            if len(served_by) >= 2:
                break
            async with httpx.AsyncClient(base_url=server.base_url, headers=HEADERS) as fresh:
                r = await fresh.get(f"{COLLECTION}/{cid}")
                served_by.add(r.headers["x-correlation-id"][:16])
        assert len(served_by) == 2, f"answers came from {len(served_by)} process(es)"
    finally:
        stop_process(server.process)
    log = server.stderr_path.read_text()
    logged = log.count(f"POST /v1/Conversations/{cid}/messages 201 ")
    assert logged == total, f"{logged} of {total} appends in the access log:\n{log[-2000:]}"
    # Once each: not also uvicorn's own access line (`"POST /v1/... HTTP/1.1" 201`).
    mentioned = log.count(f"POST /v1/Conversations/{cid}/messages")
    assert mentioned == total, f"appends logged {mentioned} times for {total}:\n{log[-2000:]}"
    deadline = time.monotonic() + 10
    while (alive := [p for p in workers if Path(f"/proc/{p}").exists()]) and (
        time.monotonic() < deadline
    ):
        await asyncio.sleep(0.05)
    assert not alive, f"workers {alive} outlived the server"


def test_workers_without_redis_say_that_events_stay_in_each_worker(tmp_path: Path) -> None:
    server = start_server(tmp_path, workers=2)
    try:
        log = server.stderr_path.read_text()
    finally:
        stop_process(server.process)
    assert "2 workers without AIRIA_REDIS_URL" in log
    assert "only the events of writes made by its own worker" in log
