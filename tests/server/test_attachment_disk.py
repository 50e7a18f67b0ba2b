"""Uploads whose bytes the attachment disk cannot take: answered for what that is.

The disk is made to fail under the real request path, in process: a staging file
whose writes find no space, a staging directory on a read-only filesystem.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from airia_server.app import create_app
from airia_server.config import Settings

KEY = {"X-API-KEY": "key"}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        bootstrap_api_key="key",
        blob_dir=tmp_path / "blobs",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def conversation(http: httpx.AsyncClient) -> str:
    response = await http.post("/v1/Conversations", json={"userId": "u"}, headers=KEY)
    assert response.status_code in (200, 201), response.text
    return response.json()["conversationId"]


async def upload(http: httpx.AsyncClient, cid: str, form: str) -> httpx.Response:
    base = f"/v1/Conversations/{cid}/agent-attachments"
    if form == "multipart":
        return await http.post(base, files={"file": ("a.txt", b"x" * 100_000)}, headers=KEY)
    body = {"base64Content": "eHh4", "fileName": "a.txt"}
    return await http.post(f"{base}/base64", json=body, headers=KEY)


class _NoSpace:
    """A staging file on a full disk: every write fails; closing still closes."""

    def __init__(self, real) -> None:
        self._real = real

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str):
        return getattr(self._real, name)


def staging_files(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "blobs" / ".staging").iterdir())


@pytest.mark.parametrize("form", ["multipart", "base64"])
async def test_an_upload_onto_a_full_disk_is_507_and_leaves_no_staging_file(
    client: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    """The multipart form answered 400 "Malformed multipart body" with the OSError's
    text as detail ("[Errno 28] No space left on device"): its parsing took every
    exception for a malformed body. Both forms now answer what the base64 one did."""
    cid = await conversation(client)
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: _NoSpace(real_fdopen(fd, mode)))
    response = await upload(client, cid, form)
    assert response.status_code == 507, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "disk is full" in response.json()["detail"]
    assert staging_files(tmp_path) == []


@pytest.mark.parametrize("form", ["multipart", "base64"])
async def test_an_upload_onto_a_read_only_disk_says_attachment_storage_is_not_writable(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    """It was a 503 saying "the database, or Redis" did not answer, and to retry
    shortly: neither is true of a blob directory remounted read-only."""
    cid = await conversation(client)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    response = await upload(client, cid, form)
    assert response.status_code == 507, response.text
    assert response.headers["content-type"] == "application/problem+json"
    detail = response.json()["detail"]
    assert "Attachment storage is not writable" in detail and "Read-only" in detail
    assert "database" not in detail and "Redis" not in detail
    assert "retry-after" not in response.headers


@pytest.mark.parametrize(("scheme", "link"), [("wss", "https"), ("ws", "http")])
async def test_a_link_is_http_whatever_scheme_a_proxy_named(
    tmp_path: Path, scheme: str, link: str
) -> None:
    """A trusted proxy's `X-Forwarded-Proto: wss` on an HTTP request made the download
    links `wss://…`, which no HTTP client opens."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        bootstrap_api_key="key",
        blob_dir=tmp_path / "blobs",
        host="0.0.0.0",  # no public URL: links follow the request
    )
    app = create_app(settings)

    async def proxied(scope, receive, send) -> None:
        await app({**scope, "scheme": scheme} if scope["type"] == "http" else scope, receive, send)

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=proxied)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            uploaded = await upload(http, await conversation(http), "base64")
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["url"].startswith(f"{link}://testserver/v1/attachments/")
