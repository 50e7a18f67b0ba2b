"""Attachments: streaming multipart uploads, base64 uploads, listing, signed-URL downloads."""

import base64
import builtins
import hashlib
import io
import json
import logging
import os

import httpx
import pytest

import airia._files
from airia import (
    AiriaAsyncClient,
    AiriaClient,
    APIConnectionError,
    APIStatusError,
    PermissionDeniedError,
)
from airia._files import CHUNK_SIZE
from airia.types.api import Attachment

from .conftest import API_KEY, BASE_URL, FakeServer, parse_multipart, problem

BIG = os.urandom(5 * 1024 * 1024 + 123)  # several MiB, not a multiple of the chunk size


class Spy:
    """A file whose reads and writes are recorded; everything else goes to the real one."""

    def __init__(self, file):
        self._file = file
        self.reads: list[int] = []
        self.writes: list[int] = []
        self.bytes_read = 0

    def __getattr__(self, name):
        return getattr(self._file, name)

    def read(self, size=-1):
        self.reads.append(size)
        data = self._file.read(size)
        self.bytes_read += len(data)
        return data

    def write(self, data):
        self.writes.append(len(data))
        return self._file.write(data)


class Unsized:
    """A stream with ``read`` only: no size to be had (a pipe, a socket)."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def read(self, size=-1):
        return self._data.read(size)


@pytest.fixture
def call(api):
    return api()


@pytest.fixture
def cid(call) -> str:
    return call("create_conversation", user_id="owner").conversation_id


@pytest.fixture
def opened(monkeypatch):
    """Every file ``airia._files`` opens, as a Spy."""
    files: list[Spy] = []

    def spy_open(*args, **kwargs):
        files.append(Spy(builtins.open(*args, **kwargs)))
        return files[-1]

    monkeypatch.setattr(airia._files, "open", spy_open, raising=False)
    return files


def test_upload_a_path_streams_it_as_multipart(call, cid, server: FakeServer, tmp_path, opened):
    path = tmp_path / "report.pdf"
    path.write_bytes(BIG)
    attachment = call("upload_attachment", cid, path)
    assert isinstance(attachment, Attachment)
    assert (attachment.file_name, attachment.content_type, attachment.source) == (
        "report.pdf",
        "application/pdf",
        "agent",
    )
    assert attachment.size == len(BIG)
    assert attachment.sha256 == hashlib.sha256(BIG).hexdigest()
    assert attachment.url.startswith("http://testserver/blobs/")

    request = server.last
    assert (request.method, request.url.path) == (
        "POST",
        f"/v1/Conversations/{cid}/agent-attachments",
    )
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert int(request.headers["content-length"]) == len(request.content)
    assert "transfer-encoding" not in request.headers
    assert parse_multipart(request) == {
        "source": "agent",
        "file": ("report.pdf", "application/pdf", BIG),
    }
    (file,) = opened
    assert file.closed
    assert all(0 < size <= CHUNK_SIZE for size in file.reads)
    assert file.bytes_read == len(BIG)


def test_upload_a_file_object_reads_a_chunk_at_a_time(call, cid, server: FakeServer):
    spy = Spy(io.BytesIO(BIG))
    spy.name = "/somewhere/notes.txt"
    call("upload_attachment", cid, spy, source="user")
    assert all(0 < size <= CHUNK_SIZE for size in spy.reads)
    assert len(spy.reads) >= len(BIG) // CHUNK_SIZE
    assert parse_multipart(server.last) == {
        "source": "user",
        "file": ("notes.txt", "text/plain", BIG),
    }
    assert not spy.closed  # the caller's file stays the caller's


def test_upload_from_the_current_position(call, cid, server: FakeServer):
    data = io.BytesIO(b"HEADERbody")
    data.seek(6)
    call("upload_attachment", cid, data, file_name="b.bin")
    assert parse_multipart(server.last)["file"] == ("b.bin", "application/octet-stream", b"body")
    assert server.last.headers["content-length"] == str(len(server.last.content))


def test_upload_bytes_with_name_and_type(call, cid, server: FakeServer):
    call("upload_attachment", cid, b"{}", file_name="a.json", content_type="application/x-mine")
    assert parse_multipart(server.last)["file"] == ("a.json", "application/x-mine", b"{}")
    call("upload_attachment", cid, b"raw")
    assert parse_multipart(server.last)["file"] == ("file", "application/octet-stream", b"raw")


def test_upload_of_unknown_size_is_chunked(call, cid, server: FakeServer):
    call("upload_attachment", cid, Unsized(BIG), file_name="pipe.bin")
    assert "content-length" not in server.last.headers
    assert server.last.headers["transfer-encoding"] == "chunked"
    assert parse_multipart(server.last)["file"][2] == BIG


def test_awkward_file_names_round_trip(call, cid, server: FakeServer):
    name = 'we"ird \\ näme.txt'
    call("upload_attachment", cid, b"x", file_name=name)
    assert parse_multipart(server.last)["file"][0] == name
    call("upload_attachment", cid, b"x", file_name="line\r\nX-Evil: 1.txt")
    head = server.last.content.split(b"\r\n\r\n")[1]
    assert b'filename="line%0D%0AX-Evil: 1.txt"' in head


def test_upload_refuses_text_mode_and_other_types(call, cid, tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("text")
    with open(path) as text, pytest.raises(TypeError, match="binary mode"):
        call("upload_attachment", cid, text)
    with pytest.raises(TypeError, match="not int"):
        call("upload_attachment", cid, 42)


def test_upload_retry_reopens_the_path_and_closes_every_file(
    call, cid, server: FakeServer, tmp_path, opened, sleeps
):
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 10)
    server.script(problem(503, "Unavailable"))
    attachment = call("upload_attachment", cid, str(path))
    first, second = server.requests[-2:]
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert parse_multipart(second)["file"] == ("big.bin", "application/octet-stream", b"x" * 10)
    assert attachment.size == 10 and len(sleeps) == 1
    assert len(opened) == 2 and opened[1].bytes_read == 10  # opened again, read again
    server.script(problem(413, "File too large", detail="The limit is 25 MiB"))
    with pytest.raises(APIStatusError) as caught:
        call("upload_attachment", cid, path)
    assert caught.value.status_code == 413 and caught.value.message == "File too large"
    assert len(sleeps) == 1  # 413 is not retried
    assert all(f.closed for f in opened) and len(opened) == 3


def test_upload_base64(call, cid, server: FakeServer):
    attachment = call(
        "upload_attachment_base64", cid, b"\x00hello", "h.txt", "text/plain", source="user"
    )
    assert (server.last.method, server.last.url.path) == (
        "POST",
        f"/v1/Conversations/{cid}/agent-attachments/base64",
    )
    assert json.loads(server.last.content) == {
        "base64Content": base64.b64encode(b"\x00hello").decode(),
        "fileName": "h.txt",
        "contentType": "text/plain",
        "source": "user",
    }
    assert (attachment.size, attachment.source, attachment.file_name) == (6, "user", "h.txt")


def test_list_attachments(call, cid, server: FakeServer):
    call("upload_attachment", cid, b"one", file_name="1.txt")
    call("upload_attachment_base64", cid, b"two", "2.png", "image/png")
    listed = call("list_attachments", cid)
    assert server.last.url.path == f"/v1/Conversations/{cid}/attachments"
    assert [(a.blob_id, a.file_name, a.content_type, a.size) for a in listed] == [
        ("b1", "1.txt", "text/plain", 3),
        ("b2", "2.png", "image/png", 3),
    ]
    assert all(a.conversation_id == cid and a.created_at for a in listed)


def test_attachment_model_keeps_unknown_fields():
    a = Attachment.model_validate({"blobId": "b", "url": "http://x/y", "thumbnail": "t"})
    assert (a.blob_id, a.url, a.model_extra) == ("b", "http://x/y", {"thumbnail": "t"})
    assert a.model_dump(by_alias=True, exclude_none=True) == {
        "blobId": "b",
        "url": "http://x/y",
        "thumbnail": "t",
    }


def test_download_to_bytes_path_and_stream(call, cid, server: FakeServer, tmp_path):
    attachment = call("upload_attachment", cid, BIG, file_name="big.bin")
    assert call("download_attachment", attachment) == BIG
    assert call("download_attachment", attachment.url) == BIG

    target = tmp_path / "out.bin"
    assert call("download_attachment", attachment, target) == len(BIG)
    assert target.read_bytes() == BIG
    assert os.listdir(tmp_path) == ["out.bin"]  # no .part left behind

    sink = Spy(io.BytesIO())
    assert call("download_attachment", attachment, sink) == len(BIG)
    assert sink.getvalue() == BIG
    assert len(sink.writes) > 1 and max(sink.writes) <= CHUNK_SIZE


def test_download_sends_credentials_only_to_the_api_origin(call, cid, server: FakeServer):
    attachment = call("upload_attachment", cid, b"data", file_name="d.txt")
    call("download_attachment", attachment)
    assert server.last.headers["x-api-key"] == API_KEY
    assert server.last.headers["accept"] == "*/*"

    elsewhere = attachment.url.replace("http://testserver", "https://files.example")
    assert call("download_attachment", elsewhere) == b"data"
    assert server.last.url.host == "files.example"
    assert "x-api-key" not in server.last.headers
    assert "authorization" not in server.last.headers
    assert server.last.headers["x-correlation-id"]

    other_port = attachment.url.replace("http://testserver", "http://testserver:8080")
    call("download_attachment", other_port)
    assert "x-api-key" not in server.last.headers


def test_download_of_a_relative_url_resolves_against_the_base(call, cid, server: FakeServer):
    attachment = call("upload_attachment", cid, b"rel", file_name="r.txt")
    relative = attachment.url.removeprefix("http://testserver")
    assert call("download_attachment", relative) == b"rel"
    assert str(server.last.url) == attachment.url


def test_expired_or_tampered_url_is_403(call, cid, server: FakeServer, tmp_path):
    attachment = call("upload_attachment", cid, b"data", file_name="d.txt")
    tampered = attachment.url.replace("sig=good", "sig=bad")
    with pytest.raises(PermissionDeniedError) as caught:
        call("download_attachment", tampered, tmp_path / "d.txt")
    assert caught.value.message == "Invalid or expired signature"
    assert os.listdir(tmp_path) == []


def test_download_is_retried_like_any_read(call, cid, server: FakeServer, sleeps):
    attachment = call("upload_attachment", cid, b"data", file_name="d.txt")
    server.script(problem(503, "Unavailable"))
    assert call("download_attachment", attachment) == b"data"
    assert len(sleeps) == 1


class _BreaksMidway(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __iter__(self):
        yield b"x" * CHUNK_SIZE
        raise httpx.ReadError("connection reset")

    async def __aiter__(self):
        yield b"x" * CHUNK_SIZE
        raise httpx.ReadError("connection reset")


def test_a_broken_download_raises_and_leaves_no_file(call, cid, server: FakeServer, tmp_path):
    attachment = call("upload_attachment", cid, b"data", file_name="d.txt")
    server.script(httpx.Response(200, stream=_BreaksMidway()))
    with pytest.raises(APIConnectionError, match="connection reset"):
        call("download_attachment", attachment, tmp_path / "d.txt")
    assert os.listdir(tmp_path) == []


# -- streaming, observed on the wire: the file is read as the body is sent ------


def _attachment_json() -> dict:
    return {"blobId": "b1", "url": "http://testserver/blobs/b1?sig=good"}


class _WatchSync(httpx.BaseTransport):
    """Records, per body chunk received, how much was sent and how much of the file read."""

    def __init__(self, files: list[Spy]):
        self.files, self.seen = files, []

    def handle_request(self, request):
        sent = 0
        for chunk in request.stream:
            sent += len(chunk)
            self.seen.append((sent, self.files[0].bytes_read))
        return httpx.Response(200, json=_attachment_json())


class _WatchAsync(_WatchSync, httpx.AsyncBaseTransport):
    async def handle_async_request(self, request):
        sent = 0
        async for chunk in request.stream:
            sent += len(chunk)
            self.seen.append((sent, self.files[0].bytes_read))
        return httpx.Response(200, json=_attachment_json())


def _assert_read_while_sending(seen: list[tuple[int, int]]) -> None:
    # Never ahead of what has been sent: each chunk is read just before it goes out.
    assert all(read <= sent for sent, read in seen)
    assert len(seen) > len(BIG) // CHUNK_SIZE
    assert seen[-1][1] == len(BIG)


def test_sync_upload_reads_the_file_while_sending(tmp_path, opened):
    path = tmp_path / "big.bin"
    path.write_bytes(BIG)
    transport = _WatchSync(opened)
    http = httpx.Client(transport=transport)
    with AiriaClient(base_url=BASE_URL, api_key=API_KEY, http_client=http) as client:
        assert client.conversations.upload_attachment("c1", path).blob_id == "b1"
    _assert_read_while_sending(transport.seen)
    assert opened[0].closed


async def test_async_upload_reads_the_file_while_sending(tmp_path, opened):
    path = tmp_path / "big.bin"
    path.write_bytes(BIG)
    transport = _WatchAsync(opened)
    http = httpx.AsyncClient(transport=transport)
    async with AiriaAsyncClient(base_url=BASE_URL, api_key=API_KEY, http_client=http) as client:
        result = await client.conversations.upload_attachment("c1", path)
    assert result.blob_id == "b1"
    _assert_read_while_sending(transport.seen)
    assert max(opened[0].reads) <= CHUNK_SIZE and opened[0].closed


async def test_the_servers_own_parser_reads_the_body():
    """Starlette parses uploads on the server; the name, type and bytes survive it."""
    formparsers = pytest.importorskip("starlette.formparsers")
    from starlette.datastructures import Headers

    upload = airia._files.prepare_upload(BIG, 'a "quoted" ü.bin', None)
    body = airia._files.Multipart(upload, {"source": "user"})

    async def stream():
        async for chunk in airia._files.aiter_multipart(body, upload):
            yield chunk

    headers = Headers(headers={k.lower(): v for k, v in body.headers.items()})
    form = await formparsers.MultiPartParser(headers, stream()).parse()
    file = form["file"]
    assert (file.filename, file.content_type, form["source"]) == (
        'a "quoted" ü.bin',
        "application/octet-stream",
        "user",
    )
    assert await file.read() == BIG
    await form.close()


def test_signed_urls_stay_out_of_logs_and_errors(server: FakeServer, sleeps, caplog):
    caplog.set_level(logging.INFO, logger="airia")
    http = httpx.Client(transport=httpx.MockTransport(server))
    client = AiriaClient(base_url=BASE_URL, api_key=API_KEY, log_requests=True, http_client=http)
    url = "http://testserver/blobs/b1?exp=1&sig=secret-signature"
    server.script(problem(503, "busy"), problem(503, "busy"), httpx.ConnectError("refused"))
    with pytest.raises(APIConnectionError) as caught:
        client.conversations.download_attachment(url)
    assert "http://testserver/blobs/b1?[REDACTED]" in str(caught.value)
    assert "GET http://testserver/blobs/b1?[REDACTED] -> 503" in caplog.text
    assert "secret-signature" not in caplog.text + str(caught.value)
