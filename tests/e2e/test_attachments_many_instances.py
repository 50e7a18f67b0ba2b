"""Attachments across two `airia-server` processes over one database and one Redis: PostgreSQL,
or one SQLite file (processes on one host, as `--workers` runs them).

On PostgreSQL the blob store defaults to the database, and on SQLite both processes share the
blob directory, so bytes uploaded through A are read through B; the signing key is kept in the
database, so a link A signed opens on B (the signature covers the attachment and the expiry,
not the host). Deleting on one instance deletes for both, and content stays stored once per
tenant whichever instance received it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

import backends
import sqlite_files

from .support import (
    BOOTSTRAP_KEY,
    assert_problem,
    mint_jwt,
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


@dataclass
class Pair:
    a: Instance
    b: Instance
    database_url: str
    blob_dir: Path


def spawn_instance(name: str, root: Path, **settings: str) -> Instance:
    server = start_server(root, name=name, wait=False, **settings)
    return Instance(name, server.base_url, server.process, server.stderr_path)


def wait_ready(instance: Instance) -> None:
    deadline = time.monotonic() + TIMEOUT
    with httpx.Client(timeout=2.0) as http:
        while True:
            response = http.get(f"{instance.base_url}/readyz")
            if response.status_code == 200:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{instance.name} not ready: {response.text}")
            time.sleep(0.05)


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    if request.param == "postgres":
        backends.require(backends.postgres_problem())
    backends.require(backends.redis_problem())
    root = tmp_path_factory.mktemp("attachments-many")
    if request.param == "postgres":
        database_url = backends.create_database_sync()
    else:
        database_url = f"sqlite:///{root / 'shared.db'}"
    settings = dict(
        database_url=database_url,
        AIRIA_REDIS_URL=backends.REDIS_URL,
        AIRIA_REDIS_PREFIX=f"airia-test-{uuid.uuid4().hex[:12]}",
        # Deleted content goes at once, so a delete on one instance shows on the other.
        AIRIA_BLOB_SWEEP_GRACE_SECONDS="0",
    )
    started: list[Instance] = []
    try:
        started.append(spawn_instance("a", root, **settings))
        started.append(spawn_instance("b", root, **settings))
        for instance in started:
            wait_healthy(instance.process, instance.base_url, instance.stderr_path)
            wait_ready(instance)
        yield Pair(started[0], started[1], database_url, root / "blobs")
    finally:
        for instance in started:
            stop_process(instance.process)
        if request.param == "postgres":
            backends.drop_database_sync(database_url)


@pytest.fixture
def clients(pair: Pair) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    for instance in (pair.a, pair.b):
        if instance.process.poll() is not None:
            pytest.fail(f"instance {instance.name} died:\n" + instance.stderr_path.read_text())
    with (
        httpx.Client(base_url=pair.a.base_url, timeout=TIMEOUT, headers=HEADERS) as on_a,
        httpx.Client(base_url=pair.b.base_url, timeout=TIMEOUT, headers=HEADERS) as on_b,
    ):
        yield on_a, on_b


def on(url: str, instance: Instance) -> str:
    """The same signed URL, pointed at `instance`."""
    return urlunsplit(urlsplit(url)._replace(netloc=instance.netloc))


def fetch(url: str, **headers: str) -> httpx.Response:
    with httpx.Client(timeout=TIMEOUT) as anon:
        return anon.get(url, headers=headers)


def create(http: httpx.Client, user_id: str = "many_user", **headers: str) -> str:
    response = http.post(COLLECTION, json={"userId": user_id}, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response.json()["conversationId"]


def upload(http: httpx.Client, cid: str, data: bytes, name: str = "f.bin", **headers) -> dict:
    response = http.post(
        f"{COLLECTION}/{cid}/agent-attachments",
        files={"file": (name, data, "application/octet-stream")},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return response.json()


def listed(http: httpx.Client, cid: str, **headers: str) -> list[dict]:
    response = http.get(f"{COLLECTION}/{cid}/attachments", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def blob_rows(pair: Pair, sha256: str) -> int:
    """How many tenants hold this content: in the database store (PostgreSQL), or in the
    blob directory, as the database records it (SQLite)."""
    if pair.database_url.startswith("sqlite:///"):
        files = len(list(pair.blob_dir.glob(f"*/{sha256[:2]}/{sha256}")))
        with sqlite_files.connect(pair.database_url.removeprefix("sqlite:///")) as conn:
            (rows,) = conn.execute(
                "SELECT count(DISTINCT tenant_id) FROM blobs WHERE sha256 = ?", (sha256,)
            ).fetchone()
        assert files == rows, f"{files} files, {rows} blob rows"
        return files

    async def count() -> int:
        conn = await asyncpg.connect(pair.database_url)
        try:
            return await conn.fetchval(
                "SELECT count(DISTINCT tenant_id) FROM blob_chunks WHERE sha256 = $1", sha256
            )
        finally:
            await conn.close()

    return asyncio.run(count())


def test_uploaded_on_a_downloaded_and_listed_on_b(
    pair: Pair, clients: tuple[httpx.Client, httpx.Client]
) -> None:
    on_a, on_b = clients
    cid = create(on_a)
    data = os.urandom(2 * 1024 * 1024 + 333)  # more than one 1 MiB chunk
    att = upload(on_a, cid, data, "across.bin")
    assert urlsplit(att["url"]).netloc == pair.a.netloc

    response = fetch(on(att["url"], pair.b))
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-disposition"].startswith("attachment")

    start, end = 1024 * 1024 - 5, 1024 * 1024 + 5
    ranged = fetch(on(att["url"], pair.b), Range=f"bytes={start}-{end}")
    assert ranged.status_code == 206
    assert ranged.content == data[start : end + 1]
    assert ranged.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"

    found = listed(on_b, cid)
    assert [a["blobId"] for a in found] == [att["blobId"]]
    assert found[0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert found[0]["size"] == len(data)
    # B's listing links to B, and its link works on A too.
    assert urlsplit(found[0]["url"]).netloc == pair.b.netloc
    assert fetch(found[0]["url"]).content == data
    assert fetch(on(found[0]["url"], pair.a)).content == data


def test_a_base64_upload_on_b_is_read_on_a(
    pair: Pair, clients: tuple[httpx.Client, httpx.Client]
) -> None:
    on_a, on_b = clients
    cid = create(on_a)
    data = os.urandom(70_000)
    response = on_b.post(
        f"{COLLECTION}/{cid}/agent-attachments/base64",
        json={"base64Content": base64.b64encode(data).decode(), "fileName": "b.png"},
    )
    assert response.status_code == 200, response.text
    att = response.json()
    assert att["contentType"] == "image/png"
    assert fetch(on(att["url"], pair.a)).content == data
    assert [a["blobId"] for a in listed(on_a, cid)] == [att["blobId"]]
    # A message written on A may show the image uploaded on B.
    message = on_a.post(
        f"{COLLECTION}/{cid}/messages",
        json={"message": "see", "imageAttachmentIds": [att["blobId"]]},
    )
    assert message.status_code in (200, 201), message.text


def test_a_tampered_link_is_refused_by_both(
    pair: Pair, clients: tuple[httpx.Client, httpx.Client]
) -> None:
    on_a, _ = clients
    cid = create(on_a)
    att = upload(on_a, cid, b"signed on a")
    parts = urlsplit(att["url"])
    tampered = urlunsplit(parts._replace(query=parts.query.replace("signature=", "signature=x")))
    for instance in (pair.a, pair.b):
        assert_problem(fetch(on(tampered, instance)), 403)
        assert fetch(on(att["url"], instance)).content == b"signed on a"


def test_the_same_content_through_both_is_stored_once_per_tenant(
    pair: Pair, clients: tuple[httpx.Client, httpx.Client]
) -> None:
    on_a, on_b = clients
    data = os.urandom(10_000)
    sha = hashlib.sha256(data).hexdigest()
    first = upload(on_a, create(on_a), data)
    second = upload(on_b, create(on_b), data)
    assert first["sha256"] == second["sha256"] == sha
    assert blob_rows(pair, sha) == 1

    other = f"other_{uuid.uuid4().hex[:8]}"
    token = {"Authorization": f"Bearer {mint_jwt(other, 'many-other')}"}
    with httpx.Client(base_url=pair.b.base_url, timeout=TIMEOUT, headers=token) as as_other:
        theirs = upload(as_other, create(as_other, other), data)
    assert theirs["sha256"] == sha
    assert blob_rows(pair, sha) == 2
    for att, instance in ((first, pair.b), (second, pair.a), (theirs, pair.a)):
        assert fetch(on(att["url"], instance)).content == data


def test_deleted_on_b_is_gone_on_a(pair: Pair, clients: tuple[httpx.Client, httpx.Client]) -> None:
    on_a, on_b = clients
    data = os.urandom(20_000)
    shared = os.urandom(30_000)
    cid = create(on_a)
    keeper_cid = create(on_a)
    gone = upload(on_a, cid, data)
    gone_shared = upload(on_a, cid, shared)
    kept = upload(on_b, keeper_cid, shared)

    response = on_b.delete(f"{COLLECTION}/{cid}")
    assert response.status_code in (200, 204), response.text
    for instance in (pair.a, pair.b):
        assert_problem(fetch(on(gone["url"], instance)), 404)
        assert_problem(fetch(on(gone_shared["url"], instance)), 404)
        assert fetch(on(kept["url"], instance)).content == shared
    assert_problem(on_a.get(f"{COLLECTION}/{cid}/attachments"), 404)
    assert blob_rows(pair, gone["sha256"]) == 0
    assert blob_rows(pair, kept["sha256"]) == 1
