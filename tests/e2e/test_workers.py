"""`airia-server serve --workers 2` on SQLite, with Redis for events: one port, two
processes over one database file.

Requests reach both processes (told apart by their correlation ids); appends made
concurrently through the port leave one gap-free sequence, stored once each; a socket
receives every event, whichever worker made the write and whichever holds the socket;
and each worker writes its access log, one line per request. Connections opened
together are spread over the workers, even when one is busy as they arrive; a second
server on the same port fails to start; SIGHUP replaces the workers, each new one with
a listening socket of its own; and the workers stop when their supervisor is killed
outright.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

import backends

from .support import BOOTSTRAP_KEY, all_messages, run_cli, start_server, stop_process

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

        # Each new connection goes to one worker (on Linux, by a hash of its addresses).
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


def _worker_of(sock: socket.socket) -> str:
    """The process part of the correlation id of one GET /healthz on `sock`."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed after {head!r}"
        head += chunk
    for line in head.split(b"\r\n"):
        name, _, value = line.decode().partition(":")
        if name.lower() == "x-correlation-id":
            return value.strip()[:16]
    raise AssertionError(f"no correlation id in {head!r}")


def _connect_at_once(address: tuple[str, int], count: int) -> list[socket.socket]:
    """`count` connections to `address`, all started before any is waited for, as a
    load generator or a proxy's pool opens them."""
    conns = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    for conn in conns:
        conn.setblocking(False)
        conn.connect_ex(address)
    for conn in conns:
        _, writable, _ = select.select([], [conn], [], TIMEOUT)
        assert writable, "connection not established"
        assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        conn.settimeout(TIMEOUT)
    return conns


def _worker_pids(server_pid: int) -> list[int]:
    """The worker processes of `serve --workers` (not multiprocessing's helpers). A
    child may exit between being listed and being read (an old worker, as SIGHUP
    replaces it): it is not a worker any more."""
    workers = []
    for pid in _children(server_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"spawn_main" in cmdline:
            workers.append(pid)
    return workers


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel balances SO_REUSEPORT on Linux")
def test_connections_are_spread_over_the_workers_even_when_one_is_busy(tmp_path: Path) -> None:
    # A proxy's pool (or a load generator) opens its connections at once, and keeps
    # them. With one socket shared by the workers, whichever worker got the CPU first
    # accepted all of them, and the one busy at that moment (here: stopped) got none,
    # for as long as they stayed open. With a socket each, the kernel hashes each
    # connection to a worker: 2 in a million bursts of 32 leave one fewer than 4.
    server = start_server(tmp_path, workers=2)
    host, port = server.base_url.removeprefix("http://").split(":")
    busy = None
    try:
        deadline = time.monotonic() + TIMEOUT
        while server.stderr_path.read_text().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, "the second worker did not start"
            time.sleep(0.05)
        workers = _worker_pids(server.process.pid)
        assert len(workers) == 2, workers
        busy = workers[1]
        os.kill(busy, signal.SIGSTOP)
        conns = _connect_at_once((host, int(port)), 32)
        try:
            time.sleep(0.5)  # time for the running worker to accept what it can
            os.kill(busy, signal.SIGCONT)
            busy = None
            counts: dict[str, int] = {}
            for conn in conns:
                worker = _worker_of(conn)
                counts[worker] = counts.get(worker, 0) + 1
        finally:
            for conn in conns:
                conn.close()
    finally:
        if busy is not None:
            os.kill(busy, signal.SIGCONT)
        stop_process(server.process)
    assert len(counts) == 2, f"connections per worker: {counts}"
    assert min(counts.values()) >= 4, f"connections per worker: {counts}"


def test_workers_refuse_a_port_another_server_listens_on(tmp_path: Path) -> None:
    # The workers' sockets share their port (SO_REUSEPORT); a second server started
    # on it by mistake must fail, not silently take half the connections.
    first = start_server(tmp_path / "first", workers=2)
    try:
        port = first.base_url.rsplit(":", 1)[1]
        result = run_cli(
            first.env, "serve", "--host", "127.0.0.1", "--port", port, "--workers", "2"
        )
        assert first.process.poll() is None
        with httpx.Client(base_url=first.base_url, headers=HEADERS) as http:
            assert http.get("/healthz").status_code == 200
    finally:
        stop_process(first.process)
    assert result.returncode != 0, result.stderr[-2000:]
    assert "address already in use" in result.stderr.lower(), result.stderr[-2000:]


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    # SIGKILL (or the OOM killer) gives the supervisor no chance to stop its workers;
    # they must not go on serving the port on their own.
    server = start_server(tmp_path, workers=2)
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(workers := _worker_pids(server.process.pid)) < 2:
            assert time.monotonic() < deadline, f"workers: {workers}"
            time.sleep(0.05)
        server.process.kill()
        server.process.wait(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while (alive := [p for p in workers if _running(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop_process(server.process)
    assert not alive, f"workers {alive} outlived their supervisor"


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc for the workers")
def test_sighup_replaces_the_workers_and_each_new_one_listens(tmp_path: Path) -> None:
    # Each worker's socket is made in the worker, from the supervisor's pickled port
    # (SharedPort): a worker started later (SIGHUP's rolling restart) must get its own.
    server = start_server(tmp_path, workers=2)
    port = int(server.base_url.rsplit(":", 1)[1])
    try:
        old = _worker_pids(server.process.pid)
        assert len(old) == 2, old
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 4 * TIMEOUT
        while True:
            new = _worker_pids(server.process.pid)
            if len(new) == 2 and not set(new) & set(old) and _listeners(port) == 2:
                break
            assert time.monotonic() < deadline, f"workers {old} -> {new}"
            time.sleep(0.1)
        conns = _connect_at_once(("127.0.0.1", port), 32)
        try:
            served_by = {_worker_of(conn) for conn in conns}
        finally:
            for conn in conns:
                conn.close()
    finally:
        stop_process(server.process)
    assert len(served_by) == 2, f"answers came from {len(served_by)} worker(s)"


def _listeners(port: int) -> int:
    """How many sockets listen on `port` (IPv4), from /proc/net/tcp."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
            count += 1
    return count


def _running(pid: int) -> bool:
    """Whether `pid` runs (an exited child of a dead parent is reaped by init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
