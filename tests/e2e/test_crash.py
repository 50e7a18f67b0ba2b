"""SIGKILL under load: what was acknowledged survives, what was deleted stays gone.

For each backend, several rounds: concurrent creates, message appends and deletes
through httpx against the real server, SIGKILL at a random moment, restart on the
same database, then check every acknowledged write against the restarted server:
every create and append answered 2xx is there, no conversation whose delete was
answered 2xx is back, each conversation's stored event sequence (replayed over the
WebSocket from after=0) runs 1..n without a gap, and (SQLite) `PRAGMA
integrity_check` is ok. The seed is printed; AIRIA_CRASH_SEED replays a run's kill
times and operation mix (the interleaving of the workers still varies).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from websockets.asyncio.client import connect

import backends
import sqlite_files

from .support import (
    LiveServer,
    start_server,
    stop_process,
)

pytestmark = pytest.mark.e2e

COLLECTION = "/v1/Conversations"
ROUNDS = 3
WORKERS = 8
TIMEOUT = 10.0
MAX_OPS_PER_WORKER = 400
"""Bounds a round even if the kill came late."""


@dataclass
class Ledger:
    """What the server acknowledged (2xx) and what is uncertain (no answer)."""

    created: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    maybe_deleted: set[str] = field(default_factory=set)
    messages: dict[str, set[str]] = field(default_factory=dict)
    open: list[str] = field(default_factory=list)
    """Acknowledged conversations that no delete has been sent for."""
    acked_writes: int = 0
    unanswered: int = 0


async def workload(
    server: LiveServer, ledger: Ledger, rng: random.Random, kill_after: float
) -> None:
    killed = asyncio.Event()

    async def worker(http: httpx.AsyncClient) -> None:
        for _ in range(MAX_OPS_PER_WORKER):
            if killed.is_set():
                return
            roll = rng.random()
            if roll < 0.3 or len(ledger.open) < 3:
                method, path, body, target = "POST", COLLECTION, None, None
                body = {"userId": f"crash_{uuid.uuid4().hex[:8]}", "title": "crash"}
            elif roll < 0.87:
                target = rng.choice(ledger.open)
                method, path = "POST", f"{COLLECTION}/{target}/messages"
                body = {"message": f"m-{uuid.uuid4().hex}"}
            else:
                target = ledger.open.pop(rng.randrange(len(ledger.open)))
                method, path, body = "DELETE", f"{COLLECTION}/{target}", None
            try:
                response = await http.request(method, path, json=body, headers=server.headers())
            except httpx.TransportError:
                ledger.unanswered += 1
                if method == "DELETE":
                    ledger.maybe_deleted.add(target)
                if killed.is_set():
                    return
                raise
            if response.status_code == 404 and method == "POST" and target not in ledger.open:
                continue  # another worker deleted the conversation meanwhile
            assert response.is_success, (method, path, response.status_code, response.text)
            ledger.acked_writes += 1
            if method == "DELETE":
                ledger.deleted.add(target)
            elif target is None:
                cid = response.json()["conversationId"]
                ledger.created.add(cid)
                ledger.messages[cid] = set()
                ledger.open.append(cid)
            else:
                ledger.messages[target].add(response.json()["messageId"])

    async def killer() -> None:
        await asyncio.sleep(kill_after)
        killed.set()
        server.process.kill()  # SIGKILL: no shutdown code runs

    limits = httpx.Limits(max_connections=WORKERS, max_keepalive_connections=WORKERS)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT, limits=limits) as http:
        kill_task = asyncio.create_task(killer())
        try:
            await asyncio.wait_for(asyncio.gather(*(worker(http) for _ in range(WORKERS))), 60)
            await kill_task
        finally:
            kill_task.cancel()
            if server.process.poll() is None:
                server.process.kill()
            server.process.wait(timeout=TIMEOUT)


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    query.update({k: [v] for k, v in params.items()})
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))


async def stored_events(http: httpx.AsyncClient, server: LiveServer, cid: str) -> list[dict]:
    """Every stored event of `cid`, replayed from after=0 up to a live typing sentinel."""
    url = (await http.get(f"{COLLECTION}/{cid}/websocket-url", headers=server.headers())).json()[
        "websocketUrl"
    ]
    events: list[dict] = []
    async with connect(with_query(url, after="0"), open_timeout=TIMEOUT, max_queue=None) as ws:
        sentinel = await http.post(
            f"{COLLECTION}/{cid}/typing", json={"isTyping": True}, headers=server.headers()
        )
        assert sentinel.status_code == 200, sentinel.text
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if event["type"] == "typing":
                return events
            events.append(event)
            assert len(events) < 100_000


async def verify(server: LiveServer, ledger: Ledger) -> int:
    """Check the ledger against the restarted server; the number of writes verified."""
    verified = 0
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:
        for cid in sorted(ledger.deleted):
            response = await http.get(f"{COLLECTION}/{cid}", headers=server.headers())
            assert response.status_code == 404, f"deleted {cid} is back: {response.text}"
            verified += 1
        for cid in sorted(ledger.created - ledger.deleted):
            response = await http.get(f"{COLLECTION}/{cid}", headers=server.headers())
            if response.status_code == 404 and cid in ledger.maybe_deleted:
                continue  # its delete was sent and may have committed
            assert response.status_code == 200, f"acknowledged {cid} lost: {response.text}"
            stored = {m["id"] for m in response.json()["messages"]}
            missing = ledger.messages[cid] - stored
            assert not missing, f"acknowledged messages of {cid} lost: {sorted(missing)}"
            events = await stored_events(http, server, cid)
            sequences = [e["sequence"] for e in events]
            assert sequences == list(range(1, len(sequences) + 1)), (cid, sequences)
            created = {e["data"]["id"] for e in events if e["type"] == "message.created"}
            assert stored <= created, (cid, sorted(stored - created))
            verified += 1 + len(ledger.messages[cid])
    return verified


def integrity_check(db_path: Path) -> str:
    with sqlite_files.connect(db_path) as conn:
        result = conn.execute("PRAGMA integrity_check").fetchall()
    return ";".join(row[0] for row in result)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_sigkill_under_load_loses_no_acknowledged_write(backend: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("AIRIA_CRASH_SEED", random.randrange(2**32)))
    print(f"\ncrash[{backend}]: seed {seed} (AIRIA_CRASH_SEED={seed} replays the choices)")
    rng = random.Random(seed)
    drop = None
    if backend == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'a.db'}"
    else:
        backends.require(backends.postgres_problem())
        database_url = drop = backends.create_database_sync()
    ledger = Ledger()
    server: LiveServer | None = None
    survived = verified = 0
    try:
        for round_no in range(1, ROUNDS + 1):
            server = start_server(tmp_path, database_url=database_url, AIRIA_LOG_LEVEL="WARNING")
            kill_after = rng.uniform(0.3, 1.5)
            before = ledger.acked_writes
            await workload(server, ledger, rng, kill_after)
            assert server.process.returncode == -9, server.process.returncode
            if backend == "sqlite":
                assert integrity_check(tmp_path / "a.db") == "ok"
            server = start_server(tmp_path, database_url=database_url, AIRIA_LOG_LEVEL="WARNING")
            verified = await verify(server, ledger)
            stop_process(server.process)
            assert server.process.returncode in (0, -15), server.stderr_text()[-3000:]
            survived += 1
            print(
                f"crash[{backend}] round {round_no}: SIGKILL after {kill_after:.2f}s, "
                f"{ledger.acked_writes - before} writes acknowledged this round, "
                f"{ledger.unanswered} unanswered so far; {verified} writes verified"
            )
        if backend == "sqlite":
            assert integrity_check(tmp_path / "a.db") == "ok"
    finally:
        if server is not None:
            stop_process(server.process)
        if drop:
            backends.drop_database_sync(drop)
    assert "Traceback" not in server.stderr_text(), server.stderr_text()[-5000:]
    print(
        f"crash[{backend}]: {survived}/{ROUNDS} kills survived, {verified} acknowledged writes "
        f"verified ({len(ledger.created)} creates, "
        f"{sum(len(m) for m in ledger.messages.values())} appends, {len(ledger.deleted)} deletes)"
    )
