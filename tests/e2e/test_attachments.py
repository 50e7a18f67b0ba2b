"""Attachments against the real server: uploads (multipart and base64), lists, signed downloads.

The session server (SQLite, then PostgreSQL+Redis with the blobs in the database) proves the
wire: byte-identical round trips, ranges, headers, signatures, names, roles, references from
messages, deletion. Servers of our own (SQLite, blobs in a directory we can look into, a small
size limit, no sweep grace, a known signing key) prove what only shows on disk or in settings:
the limit before and during the body, nothing left behind by a refused or abandoned upload,
content stored once per tenant, blobs deleted with their last conversation, real expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

import httpx
import pytest

import backends

from .support import (
    BOOTSTRAP_KEY,
    LiveServer,
    assert_problem,
    mint_jwt,
    start_server,
    stop_process,
)

pytestmark = pytest.mark.e2e

COLLECTION = "/v1/Conversations"
UNKNOWN_UUID = "0190f5a2-7c3e-7b1a-9d4e-2f6a8b0c1d2e"
ATTACHMENT_FIELDS = {
    "blobId",
    "url",
    "conversationId",
    "fileName",
    "contentType",
    "size",
    "source",
    "sha256",
    "createdAt",
}
SMALL_LIMIT = 100_000
SIGNING_KEY = "e2e-attachments-signing-key-" + "x" * 24
WAIT_SECONDS = 10.0


# --- helpers ------------------------------------------------------------------------------


def new_user(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:10]}"


def bearer(sub: str, tenant: str = "default") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_jwt(sub, tenant)}"}


def create(http: httpx.Client, headers: dict[str, str], user_id: str) -> str:
    response = http.post(COLLECTION, json={"userId": user_id}, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response.json()["conversationId"]


def upload(
    http: httpx.Client,
    headers: dict[str, str],
    cid: str,
    data: bytes,
    file_name: str = "file.bin",
    content_type: str | None = "application/octet-stream",
    **fields: str,
) -> httpx.Response:
    part = (file_name, data, content_type) if content_type else (file_name, data)
    return http.post(
        f"{COLLECTION}/{cid}/agent-attachments",
        files={"file": part},
        data=fields or None,
        headers=headers,
    )


def upload_ok(http: httpx.Client, headers: dict[str, str], cid: str, data: bytes, **kw) -> dict:
    response = upload(http, headers, cid, data, **kw)
    assert response.status_code == 200, response.text
    return response.json()


def upload_b64(
    http: httpx.Client, headers: dict[str, str], cid: str, data: bytes, **body
) -> httpx.Response:
    payload = {"base64Content": base64.b64encode(data).decode(), "fileName": "file.bin", **body}
    return http.post(f"{COLLECTION}/{cid}/agent-attachments/base64", json=payload, headers=headers)


def listed(http: httpx.Client, headers: dict[str, str], cid: str) -> list[dict]:
    response = http.get(f"{COLLECTION}/{cid}/attachments", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def fetch(url: str, **headers: str) -> httpx.Response:
    """GET with no credentials at all, as a browser following the link would."""
    with httpx.Client(timeout=30.0) as anon:
        return anon.get(url, headers=headers)


def download(url: str) -> bytes:
    response = fetch(url)
    assert response.status_code == 200, response.text
    return response.content


def with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def with_attachment_id(url: str, attachment_id: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/v1/attachments/{attachment_id}/content"))


def multipart_body(data: bytes, boundary: str, file_name: str = "big.bin") -> bytes:
    return (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


def parse_disposition(value: str) -> tuple[str | None, str | None]:
    """(disposition type, file name) as a browser reads them: RFC 6266, filename* first."""
    message = Message()
    message["Content-Disposition"] = value
    extended = re.search(r"filename\*\s*=\s*UTF-8''([^;\s]+)", value, re.IGNORECASE)
    if extended:
        return message.get_content_disposition(), unquote(extended.group(1), errors="strict")
    return message.get_content_disposition(), message.get_filename()


def assert_download_headers(response: httpx.Response, attachment: dict) -> None:
    assert response.headers["content-type"].split(";")[0] == attachment["contentType"]
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-disposition"].startswith("attachment")


# --- the session server: both backends ------------------------------------------------------


@pytest.fixture(scope="module")
def other_tenant() -> str:
    return f"attachments-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def other_tenant_key(live_server: LiveServer, other_tenant: str) -> str:
    return live_server.create_api_key(other_tenant, name="attachments e2e")


def test_multipart_upload_round_trips_the_bytes(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    data = os.urandom(3000) + b"\x00\r\n--not-a-boundary\r\n" + bytes(range(256))
    att = upload_ok(
        http, headers, cid, data, file_name="report.pdf", content_type="application/pdf"
    )
    assert set(att) == ATTACHMENT_FIELDS
    assert att["conversationId"] == cid
    assert att["fileName"] == "report.pdf"
    assert att["contentType"] == "application/pdf"
    assert att["size"] == len(data)
    assert att["sha256"] == hashlib.sha256(data).hexdigest()
    assert att["source"] == "agent"
    assert uuid.UUID(att["blobId"])
    assert att["createdAt"]

    parts = urlsplit(att["url"])
    assert att["url"].startswith(server.base_url + "/")
    query = parse_qs(parts.query)
    assert set(query) == {"expires", "signature"}
    assert int(query["expires"][0]) > time.time()

    response = fetch(att["url"])
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["content-length"] == str(len(data))
    assert_download_headers(response, att)
    assert "report.pdf" in response.headers["content-disposition"]


def test_base64_upload_round_trips_the_bytes(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    data = os.urandom(4097)
    response = upload_b64(
        http, headers, cid, data, fileName="pic.png", contentType="image/png", source="user"
    )
    assert response.status_code == 200, response.text
    att = response.json()
    assert set(att) == ATTACHMENT_FIELDS
    assert (att["fileName"], att["contentType"], att["source"]) == ("pic.png", "image/png", "user")
    assert att["size"] == len(data)
    assert att["sha256"] == hashlib.sha256(data).hexdigest()
    response = fetch(att["url"])
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-length"] == str(len(data))
    assert_download_headers(response, att)


def test_source_field_of_a_multipart_upload(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    assert upload_ok(http, headers, cid, b"u", source="user")["source"] == "user"
    assert upload_ok(http, headers, cid, b"a", source="agent")["source"] == "agent"
    assert_problem(upload(http, headers, cid, b"x", source="robot"), 422)
    assert_problem(upload_b64(http, headers, cid, b"x", source="robot"), 422)
    assert len(listed(http, headers, cid)) == 2


def test_empty_files_round_trip(server: LiveServer, http: httpx.Client, user_id: str) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    empty_sha = hashlib.sha256(b"").hexdigest()
    multipart = upload_ok(http, headers, cid, b"", file_name="empty.txt", content_type="text/plain")
    response = upload_b64(http, headers, cid, b"", fileName="empty2.txt")
    assert response.status_code == 200, response.text
    for att in (multipart, response.json()):
        assert att["size"] == 0
        assert att["sha256"] == empty_sha
        got = fetch(att["url"])
        assert got.status_code == 200, got.text
        assert got.content == b""
        assert got.headers["content-length"] == "0"
        # Nothing to take a range of.
        ranged = fetch(att["url"], Range="bytes=0-")
        assert_problem(ranged, 416)
        assert ranged.headers["content-range"] == "bytes */0"


def test_a_five_megabyte_random_file_round_trips(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    data = os.urandom(5 * 1024 * 1024 + 12345)
    att = upload_ok(http, headers, cid, data, file_name="big.bin")
    assert att["size"] == len(data)
    assert att["sha256"] == hashlib.sha256(data).hexdigest()
    response = fetch(att["url"])
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(data))
    assert hashlib.sha256(response.content).hexdigest() == att["sha256"]
    assert response.content == data
    # A range across the 1 MiB chunk boundary of the database store, and the very end.
    start, end = 1024 * 1024 - 10, 3 * 1024 * 1024 + 10
    ranged = fetch(att["url"], Range=f"bytes={start}-{end}")
    assert ranged.status_code == 206
    assert ranged.content == data[start : end + 1]
    tail = fetch(att["url"], Range="bytes=-7")
    assert tail.status_code == 206
    assert tail.content == data[-7:]


def test_a_streamed_multipart_upload_without_content_length(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    data = os.urandom(300_000)
    boundary = uuid.uuid4().hex
    body = multipart_body(data, boundary, "streamed.bin")

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 7000):
            yield body[i : i + 7000]

    response = http.post(
        f"{COLLECTION}/{cid}/agent-attachments",
        content=chunks(),
        headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 200, response.text
    att = response.json()
    assert att["size"] == len(data)
    assert att["fileName"] == "streamed.bin"
    assert download(att["url"]) == data


def test_list_gives_every_attachment_with_working_urls(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    assert listed(http, headers, cid) == []
    contents = [b"one", b"two two", b"three three three"]
    uploaded = [
        upload_ok(http, headers, cid, data, file_name=f"{i}.txt") for i, data in enumerate(contents)
    ]
    found = listed(http, headers, cid)
    assert [a["blobId"] for a in found] == [a["blobId"] for a in uploaded]
    for att, data in zip(found, contents, strict=True):
        assert set(att) == ATTACHMENT_FIELDS
        assert att["size"] == len(data)
        assert download(att["url"]) == data
    other = create(http, headers, user_id)
    assert listed(http, headers, other) == []


def test_the_same_content_twice_gives_two_attachments_with_one_hash(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    data = os.urandom(2048)
    first = upload_ok(http, headers, cid, data, file_name="a.bin")
    second = upload_b64(http, headers, cid, data, fileName="b.bin").json()
    assert first["sha256"] == second["sha256"]
    assert first["blobId"] != second["blobId"]
    assert (first["fileName"], second["fileName"]) == ("a.bin", "b.bin")
    assert download(first["url"]) == download(second["url"]) == data


# --- ranges -------------------------------------------------------------------------------


@pytest.fixture
def thousand(server: LiveServer, http: httpx.Client, user_id: str) -> tuple[dict, bytes]:
    data = os.urandom(1000)
    cid = create(http, server.headers(), user_id)
    return upload_ok(http, server.headers(), cid, data, content_type="text/plain"), data


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=100-100", 100, 101),
        ("bytes=990-", 990, 1000),
        ("bytes=0-", 0, 1000),
        ("bytes=-10", 990, 1000),
        ("bytes=-1", 999, 1000),
        ("bytes=500-5000", 500, 1000),
        ("bytes=-5000", 0, 1000),
        ("bytes=999-999", 999, 1000),
    ],
)
def test_a_byte_range_is_206_with_content_range(
    thousand: tuple[dict, bytes], header: str, start: int, end: int
) -> None:
    att, data = thousand
    response = fetch(att["url"], Range=header)
    assert response.status_code == 206, response.text
    assert response.content == data[start:end]
    assert response.headers["content-range"] == f"bytes {start}-{end - 1}/1000"
    assert response.headers["content-length"] == str(end - start)
    assert_download_headers(response, att)


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-2000", "bytes=5000-", "bytes=-0"])
def test_an_unsatisfiable_range_is_416(thousand: tuple[dict, bytes], header: str) -> None:
    att, _ = thousand
    response = fetch(att["url"], Range=header)
    assert_problem(response, 416)
    assert response.headers["content-range"] == "bytes */1000"


@pytest.mark.parametrize(
    "header",
    # bytes=5-3 is invalid, not unsatisfiable (RFC 9110, 14.1.1): ignored like the rest.
    ["items=0-5", "bytes=0-1,5-6", "bytes=-", "nonsense", "bytes=5-3", "bytes=\u0661-".encode()],
)
def test_a_range_the_server_does_not_serve_is_ignored(
    thousand: tuple[dict, bytes], header: str | bytes
) -> None:
    att, data = thousand
    response = fetch(att["url"], Range=header)
    assert response.status_code == 200, response.text
    assert response.content == data
    assert "content-range" not in response.headers


def test_head_gives_the_headers_without_the_bytes(thousand: tuple[dict, bytes]) -> None:
    att, _ = thousand
    with httpx.Client(timeout=10.0) as anon:
        response = anon.head(att["url"])
        assert response.status_code == 200
        assert response.content == b""
        assert response.headers["content-length"] == "1000"
        assert_download_headers(response, att)
        ranged = anon.head(att["url"], headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206
        assert ranged.headers["content-range"] == "bytes 10-19/1000"


def lose_content(server: LiveServer, sha256: str) -> None:
    """Take a blob's bytes away from under the database, as an operator who did not
    restore the blob directory (or `blob_chunks`) would."""
    if "AIRIA_REDIS_URL" in server.env:  # PostgreSQL: the bytes are in the database
        url = server.env["AIRIA_DATABASE_URL"]
        sql = f"DELETE FROM blob_chunks WHERE sha256 = '{sha256}' RETURNING seq"
        assert backends.fetch_sync(url, sql), "the chunks were there"
    else:
        files = list(Path(server.env["AIRIA_BLOB_DIR"]).rglob(sha256))
        assert files, "the file was there"
        for path in files:
            path.unlink()


@pytest.mark.parametrize("range_header", [None, "bytes=10-19", "bytes=-5"])
def test_content_missing_from_the_blob_store_is_a_500_problem_before_any_byte(
    server: LiveServer, http: httpx.Client, user_id: str, range_header: str | None
) -> None:
    """It was a 200 with its Content-Length, cut off once the body found the file
    missing (FileNotFoundError, "ASGI callable returned without completing response"),
    and counted as served; PostgreSQL sent a short body. Now the bytes are checked
    before the response starts: a 500 the 5xx alerting sees, and an ERROR naming
    what is missing."""
    cid = create(http, server.headers(), user_id)
    att = upload_ok(http, server.headers(), cid, os.urandom(1000))
    lose_content(server, att["sha256"])

    headers = {"Range": range_header} if range_header else {}
    body = assert_problem(fetch(att["url"], **headers), 500)
    assert body["message"] == "Attachment content is missing"
    assert att["blobId"] in body["detail"] and "blob store" in body["detail"]
    with httpx.Client(timeout=10.0) as anon:
        assert anon.head(att["url"], headers=headers).status_code == 500
    logged = [
        line
        for line in server.stderr_text().splitlines()
        if att["blobId"] in line and "content is missing" in line
    ]
    assert logged and "ERROR" in logged[-1], logged
    assert att["sha256"] in logged[-1]  # the file's path, or the chunks' key


def test_content_cut_short_or_unreadable_is_the_same_500_before_any_byte(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    """A chunk cut short in `blob_chunks` was sent as 200 with the full length and cut
    off; so was a file replaced by a directory (IsADirectoryError once streaming); a
    file the server may not read was a 503 blaming the database."""
    postgres = "AIRIA_REDIS_URL" in server.env
    cid = create(http, server.headers(), user_id)
    damages = ["cut short"] if postgres else ["cut short", "a directory in its place"]
    for damage in damages:
        att = upload_ok(http, server.headers(), cid, os.urandom(3000))
        if postgres:
            sql = (
                "UPDATE blob_chunks SET data = substring(data from 1 for 10) "
                f"WHERE sha256 = '{att['sha256']}' RETURNING seq"
            )
            assert backends.fetch_sync(server.env["AIRIA_DATABASE_URL"], sql)
        else:
            (path,) = Path(server.env["AIRIA_BLOB_DIR"]).rglob(att["sha256"])
            path.unlink()
            if damage == "cut short":
                path.write_bytes(b"0123456789")
            else:
                path.mkdir()
        for headers in ({}, {"Range": "bytes=0-4"}):
            body = assert_problem(fetch(att["url"], **headers), 500)
            assert body["message"] == "Attachment content is missing", damage


# --- signed links -----------------------------------------------------------------------------


def test_the_link_needs_no_credentials_and_ignores_wrong_ones(
    thousand: tuple[dict, bytes],
) -> None:
    att, data = thousand
    assert fetch(att["url"]).content == data
    response = fetch(att["url"], Authorization="Bearer not-a-token", **{"X-API-KEY": "wrong"})
    assert response.status_code == 200
    assert response.content == data


def test_tampered_links_are_403(
    server: LiveServer, http: httpx.Client, user_id: str, thousand: tuple[dict, bytes]
) -> None:
    att, _ = thousand
    query = parse_qs(urlsplit(att["url"]).query)
    expires, signature = query["expires"][0], query["signature"][0]
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    cid = create(http, server.headers(), user_id)
    other = upload_ok(http, server.headers(), cid, b"another file")
    bad_urls = [
        with_query(att["url"], signature=flipped),
        with_query(att["url"], signature=signature[:-1]),
        with_query(att["url"], signature=""),
        with_query(att["url"], signature=None),
        with_query(att["url"], expires=str(int(expires) + 1)),
        with_query(att["url"], expires=str(int(expires) + 86400)),
        with_query(att["url"], expires="1000000000"),  # in the past
        with_query(att["url"], expires="0"),
        with_query(att["url"], expires="-1"),
        with_query(att["url"], expires="soon"),
        with_query(att["url"], expires="²"),  # str.isdigit says yes; int() says no
        with_query(att["url"], expires=None),
        with_query(att["url"], expires=None, signature=None),
        with_query(att["url"], signature=signature * 10),
        # Another attachment's id under this one's valid signature, and the other way round.
        with_attachment_id(att["url"], other["blobId"]),
        with_attachment_id(other["url"], att["blobId"]),
        with_attachment_id(att["url"], UNKNOWN_UUID),
        with_attachment_id(att["url"], "not-a-uuid"),
    ]
    for url in bad_urls:
        response = fetch(url)
        assert_problem(response, 403)
    # The genuine links still work.
    assert fetch(att["url"]).status_code == 200
    assert download(other["url"]) == b"another file"


def test_the_url_of_a_listed_attachment_is_as_good_as_the_uploads(
    thousand: tuple[dict, bytes], server: LiveServer, http: httpx.Client
) -> None:
    att, data = thousand
    again = listed(http, server.headers(), att["conversationId"])
    assert [a["blobId"] for a in again] == [att["blobId"]]
    assert download(again[0]["url"]) == data


# --- names and content types --------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("../../etc/passwd", "passwd"),
        ("/absolute/path/notes.txt", "notes.txt"),
        ("..\\..\\windows\\system32\\evil.exe", "evil.exe"),
        ("C:\\Users\\me\\Desktop\\photo.jpg", "photo.jpg"),
        ("résumé final.pdf", "résumé final.pdf"),
        ("Übersicht_äöü.txt", "Übersicht_äöü.txt"),
        ("отчёт.docx", "отчёт.docx"),
        ("报告 2024.xlsx", "报告 2024.xlsx"),
        ("📎 clip 🧷.png", "📎 clip 🧷.png"),
        # Joined emoji and the joiners of Persian and Indic scripts are letters' glue.
        ("\U0001f469\u200d\U0001f4bb notes.pdf", "\U0001f469\u200d\U0001f4bb notes.pdf"),
        (
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.txt",
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.txt",
        ),
        # Bidi controls disguise an extension ("invoice\u202efdp.exe" shows as
        # "invoiceexe.pdf"); line separators and control characters break a line.
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("a\u200fb\u2066c\u2069.txt", "abc.txt"),
        ("line\u2028two\u2029\x1b[31m.txt", "linetwo[31m.txt"),
        # A name that shows nothing is none.
        ("\u200b", "upload"),
        (" \ufeff\u00ad ", "upload"),
    ],
)
def test_file_names_lose_their_paths_and_keep_their_letters(
    server: LiveServer, http: httpx.Client, user_id: str, sent: str, stored: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    data = f"content of {sent}".encode()
    multipart = upload_ok(http, headers, cid, data, file_name=sent)
    response = upload_b64(http, headers, cid, data, fileName=sent)
    assert response.status_code == 200, response.text
    for att in (multipart, response.json()):
        assert att["fileName"] == stored
        got = fetch(att["url"])
        assert got.status_code == 200, got.text
        assert got.content == data
        disposition = got.headers["content-disposition"]
        assert disposition.startswith("attachment")
        assert "/" not in disposition and "\\" not in disposition
        if "filename*=" in disposition:
            assert parse_disposition(disposition) == ("attachment", stored), disposition
    assert [a["fileName"] for a in listed(http, headers, cid)] == [stored, stored]


def test_quotes_in_a_name_do_not_break_the_disposition_header(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    name = 'a"; filename="evil.html'
    response = upload_b64(http, headers, cid, b"quoted", fileName=name)
    assert response.status_code == 200, response.text
    att = response.json()
    assert att["fileName"] == name
    got = fetch(att["url"])
    assert got.status_code == 200, got.text
    disposition = got.headers["content-disposition"]
    kind, name_seen = parse_disposition(disposition)
    assert kind == "attachment", disposition
    # A browser sees one file name, not the one smuggled in by the quote.
    assert name_seen != "evil.html", disposition
    assert name_seen.startswith("a"), disposition


def test_a_name_without_a_file_name_gets_one(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    for sent in ("../", "dir/"):
        att = upload_ok(http, headers, cid, b"x", file_name=sent)
        assert att["fileName"]
        assert "/" not in att["fileName"]


@pytest.mark.parametrize(
    ("file_name", "sent_type", "stored_type"),
    [
        ("a.bin", "image/png", "image/png"),
        ("a.bin", "Image/PNG; charset=binary", "image/png"),
        ("photo.png", None, "image/png"),
        ("notes.txt", "not a type", "text/plain"),
        ("noextension", "", "application/octet-stream"),
        # Sent back as a header, which is Latin-1: letters past ASCII are no type.
        ("notes.txt", "text/pl\u03b1in", "text/plain"),
        ("noextension", "text/plaiñ", "application/octet-stream"),
    ],
)
def test_content_types_are_kept_cleaned_or_guessed(
    server: LiveServer,
    http: httpx.Client,
    user_id: str,
    file_name: str,
    sent_type: str | None,
    stored_type: str,
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    body = {"fileName": file_name}
    if sent_type is not None:
        body["contentType"] = sent_type
    response = upload_b64(http, headers, cid, b"bytes", **body)
    assert response.status_code == 200, response.text
    att = response.json()
    assert att["contentType"] == stored_type
    got = fetch(att["url"])
    assert got.headers["content-type"].split(";")[0] == stored_type
    assert got.headers["x-content-type-options"] == "nosniff"


def test_html_is_never_served_inline(server: LiveServer, http: httpx.Client, user_id: str) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    data = b"<script>alert(document.cookie)</script>"
    att = upload_ok(http, headers, cid, data, file_name="x.html", content_type="text/html")
    got = fetch(att["url"])
    assert got.status_code == 200
    assert got.headers["content-disposition"].startswith("attachment")
    assert got.headers["x-content-type-options"] == "nosniff"


# --- bad uploads ---------------------------------------------------------------------------


def test_malformed_uploads_are_refused_and_store_nothing(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    url = f"{COLLECTION}/{cid}/agent-attachments"
    # Not multipart at all.
    assert_problem(http.post(url, content=b"raw", headers=headers), 415)
    assert_problem(http.post(url, json={"file": "x"}, headers=headers), 415)
    # Multipart without a boundary.
    response = http.post(
        url, content=b"x", headers={**headers, "Content-Type": "multipart/form-data"}
    )
    assert_problem(response, 415)
    # No part named file.
    assert_problem(
        http.post(url, data={"source": "user"}, files={"other": ("a", b"a")}, headers=headers), 422
    )
    # A body that is not the multipart it claims to be.
    response = http.post(
        url,
        content=b"this is not multipart at all",
        headers={**headers, "Content-Type": "multipart/form-data; boundary=zzz"},
    )
    assert 400 <= response.status_code < 500, response.text
    # A body cut short: no closing boundary, or its final "--" missing. What arrived
    # is not the file, and is not kept as if it were.
    whole = multipart_body(b"hello world", "zzz")
    for cut in (whole[: whole.index(b"world") + 3], whole[: -len(b"--\r\n")]):
        multipart = {**headers, "Content-Type": "multipart/form-data; boundary=zzz"}
        response = http.post(url, content=cut, headers=multipart)
        problem = assert_problem(response, 400)
        assert problem["message"] == "Malformed multipart body"
    assert listed(http, headers, cid) == []

    b64 = f"{url}/base64"
    for body in (
        {"base64Content": "***not base64***", "fileName": "a"},
        {"base64Content": "QUJD", "fileName": ""},
        {"base64Content": "QUJD"},
        {"fileName": "a"},
        {"base64Content": "QUJD", "fileName": "a" * 256},
        {"base64Content": 5, "fileName": "a"},
        {"base64Content": "QUJD", "fileName": "a", "source": "robot"},
    ):
        assert_problem(http.post(b64, json=body, headers=headers), 422)
    assert listed(http, headers, cid) == []


def test_uploads_to_an_unknown_conversation_are_404(server: LiveServer, http: httpx.Client) -> None:
    headers = server.headers()
    for cid in (UNKNOWN_UUID, "nope"):
        assert_problem(upload(http, headers, cid, b"x"), 404)
        assert_problem(upload_b64(http, headers, cid, b"x"), 404)
        assert_problem(http.get(f"{COLLECTION}/{cid}/attachments", headers=headers), 404)


def test_uploads_are_checked_for_access_before_their_body(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    """An upload's conversation and role are checked before its body is read (it may be
    25 MiB): a body that is no upload at all still gets 404 where the caller cannot see
    the conversation, 403 from a Viewer, and 422 only from one who may upload."""
    viewer, stranger = new_user("viewer"), new_user("stranger")
    cid = create(http, bearer(user_id), user_id)
    shared = http.post(
        f"{COLLECTION}/{cid}/share",
        json={"userId": viewer, "role": "Viewer"},
        headers=bearer(user_id),
    )
    assert shared.status_code == 200, shared.text
    not_base64 = {"base64Content": 5, "fileName": "a.txt"}
    for headers, status in ((bearer(stranger), 404), (bearer(viewer), 403), (bearer(user_id), 422)):
        url = f"{COLLECTION}/{cid}/agent-attachments"
        assert_problem(http.post(f"{url}/base64", json=not_base64, headers=headers), status)
        no_file = http.post(url, files={"source": (None, "user")}, headers=headers)
        assert_problem(no_file, status)
    assert listed(http, bearer(user_id), cid) == []


def test_attachments_need_credentials(server: LiveServer, http: httpx.Client, user_id: str) -> None:
    cid = create(http, server.headers(), user_id)
    assert_problem(upload(http, {}, cid, b"x"), 401)
    assert_problem(upload_b64(http, {}, cid, b"x"), 401)
    assert_problem(http.get(f"{COLLECTION}/{cid}/attachments"), 401)


# --- who may do what ------------------------------------------------------------------------


def test_roles_for_attachments(
    server: LiveServer, http: httpx.Client, other_tenant: str, other_tenant_key: str
) -> None:
    owner, collaborator, viewer, stranger = (
        new_user(n) for n in ("owner", "collab", "viewer", "stranger")
    )
    cid = create(http, bearer(owner), owner)
    for user, role in ((collaborator, "Collaborator"), (viewer, "Viewer")):
        response = http.post(
            f"{COLLECTION}/{cid}/share",
            json={"userId": user, "role": role},
            headers=bearer(owner),
        )
        assert response.status_code == 200, response.text

    by_owner = upload_ok(http, bearer(owner), cid, b"owner's")
    by_collab = upload_ok(http, bearer(collaborator), cid, b"collaborator's", source="user")
    response = upload_b64(http, bearer(collaborator), cid, b"collaborator's b64")
    assert response.status_code == 200, response.text
    by_key = upload_ok(http, server.headers(), cid, b"key's")

    assert_problem(upload(http, bearer(viewer), cid, b"viewer's"), 403)
    assert_problem(upload_b64(http, bearer(viewer), cid, b"viewer's"), 403)

    expected = [
        by_owner["blobId"],
        by_collab["blobId"],
        response.json()["blobId"],
        by_key["blobId"],
    ]
    for headers in (bearer(owner), bearer(collaborator), bearer(viewer), server.headers()):
        assert [a["blobId"] for a in listed(http, headers, cid)] == expected

    for headers in (
        bearer(stranger),
        bearer(owner, other_tenant),
        server.headers(other_tenant_key),
    ):
        assert_problem(upload(http, headers, cid, b"outsider"), 404)
        assert_problem(upload_b64(http, headers, cid, b"outsider"), 404)
        assert_problem(http.get(f"{COLLECTION}/{cid}/attachments", headers=headers), 404)
    assert len(listed(http, bearer(owner), cid)) == 4


# --- messages that show uploaded images -----------------------------------------------------


def test_messages_reference_their_conversations_attachments(
    server: LiveServer, http: httpx.Client, user_id: str, other_tenant_key: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    pic = upload_ok(http, headers, cid, os.urandom(64), file_name="a.png", content_type="image/png")
    pic2 = upload_b64(http, headers, cid, os.urandom(64), fileName="b.png").json()
    url = f"{COLLECTION}/{cid}/messages"

    response = http.post(
        url,
        json={"message": "look", "imageAttachmentIds": [pic["blobId"], pic2["blobId"]]},
        headers=headers,
    )
    assert response.status_code in (200, 201), response.text
    message_id = response.json()["messageId"]
    only_images = http.post(url, json={"imageAttachmentIds": [pic["blobId"]]}, headers=headers)
    assert only_images.status_code in (200, 201), only_images.text
    upper = http.post(
        url,
        json={"message": "upper", "imageAttachmentIds": [pic["blobId"].upper()]},
        headers=headers,
    )
    assert upper.status_code in (200, 201), upper.text

    messages = http.get(f"{COLLECTION}/{cid}", headers=headers).json()["messages"]
    by_id = {m["id"]: m for m in messages}
    assert by_id[message_id]["imageAttachmentIds"] == [pic["blobId"], pic2["blobId"]]
    assert by_id[upper.json()["messageId"]]["imageAttachmentIds"] == [pic["blobId"]]

    # Another conversation's attachment, another tenant's, an unknown one: 422, nothing stored.
    elsewhere = create(http, headers, user_id)
    foreign = upload_ok(http, headers, elsewhere, b"not here")
    their_cid = create(http, server.headers(other_tenant_key), user_id)
    theirs = upload_ok(http, server.headers(other_tenant_key), their_cid, b"not yours")
    for ids in (
        [foreign["blobId"]],
        [theirs["blobId"]],
        [pic["blobId"], foreign["blobId"]],
        [UNKNOWN_UUID],
        ["not-a-uuid"],
    ):
        bad = http.post(url, json={"message": "bad", "imageAttachmentIds": ids}, headers=headers)
        assert_problem(bad, 422)
    # ...and the other tenant cannot point at ours from a conversation of theirs.
    bad = http.post(
        f"{COLLECTION}/{their_cid}/messages",
        json={"message": "bad", "imageAttachmentIds": [pic["blobId"]]},
        headers=server.headers(other_tenant_key),
    )
    assert_problem(bad, 422)
    after = http.get(f"{COLLECTION}/{cid}", headers=headers).json()["messages"]
    assert len(after) == len(messages)


# --- deleting the conversation --------------------------------------------------------------


def test_deleting_the_conversation_deletes_its_attachments(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = server.headers()
    cid = create(http, headers, user_id)
    gone = upload_ok(http, headers, cid, os.urandom(500))
    shared_data = os.urandom(700)
    shared_gone = upload_ok(http, headers, cid, shared_data)
    keeper_cid = create(http, headers, user_id)
    keeper = upload_ok(http, headers, keeper_cid, shared_data)

    response = http.delete(f"{COLLECTION}/{cid}", headers=headers)
    assert response.status_code in (200, 204), response.text
    assert_problem(http.get(f"{COLLECTION}/{cid}/attachments", headers=headers), 404)
    assert_problem(fetch(gone["url"]), 404)
    assert_problem(fetch(shared_gone["url"]), 404)
    # The same content is still another conversation's.
    assert download(keeper["url"]) == shared_data
    assert [a["blobId"] for a in listed(http, headers, keeper_cid)] == [keeper["blobId"]]


# --- servers of our own -------------------------------------------------------------------


@dataclass
class OwnServer:
    base_url: str
    blob_dir: Path
    process: subprocess.Popen
    stderr_path: Path

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    @property
    def staging(self) -> Path:
        return self.blob_dir / ".staging"

    def blob_files(self) -> list[Path]:
        """Every stored blob file: all files under the blob dir but the staging area."""
        return sorted(
            p for p in self.blob_dir.rglob("*") if p.is_file() and self.staging not in p.parents
        )

    def staged_files(self) -> list[Path]:
        return sorted(self.staging.iterdir()) if self.staging.exists() else []

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail("own airia-server died:\n" + self.stderr_path.read_text())


def start_own_server(root: Path, **settings: str) -> OwnServer:
    server = start_server(
        root,
        name="own",
        AIRIA_SECRET_KEY=SIGNING_KEY,
        AIRIA_BLOB_STORE="filesystem",
        **settings,
    )
    return OwnServer(server.base_url, root / "blobs", server.process, server.stderr_path)


@pytest.fixture
def own(tmp_path: Path) -> Iterator[OwnServer]:
    """A fresh SQLite server: blobs in a directory, 100 000 bytes at most, no sweep grace."""
    server = start_own_server(
        tmp_path,
        AIRIA_MAX_UPLOAD_BYTES=str(SMALL_LIMIT),
        AIRIA_BLOB_SWEEP_GRACE_SECONDS="0",
    )
    try:
        yield server
    finally:
        stop_process(server.process)


@pytest.fixture
def own_http(own: OwnServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=own.base_url, timeout=10.0) as client:
        yield client


KEY = {"X-API-KEY": BOOTSTRAP_KEY}


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def raw_request(port: int, head: str, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS)
    sock.sendall(head.encode() + body)
    return sock


def read_status(sock: socket.socket) -> int:
    received = b""
    while b"\r\n" not in received:
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
    return int(received.split(b" ", 2)[1])


def post_head(cid: str, boundary: str, length: int | None) -> str:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST {COLLECTION}/{cid}/agent-attachments HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        f"X-API-KEY: {BOOTSTRAP_KEY}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"{framing}\r\n\r\n"
    )


def assert_nothing_left(own: OwnServer, http: httpx.Client, cid: str) -> None:
    assert own.blob_files() == []
    assert own.staged_files() == []
    assert listed(http, KEY, cid) == []


def test_an_upload_at_the_limit_is_kept_and_one_byte_more_is_413(
    own: OwnServer, own_http: httpx.Client
) -> None:
    cid = create(own_http, KEY, "limit_user")
    at_limit = os.urandom(SMALL_LIMIT)
    att = upload_ok(own_http, KEY, cid, at_limit)
    assert att["size"] == SMALL_LIMIT
    assert download(att["url"]) == at_limit
    files_before = own.blob_files()
    assert len(files_before) == 1

    over = os.urandom(SMALL_LIMIT + 1)
    assert_problem(upload(own_http, KEY, cid, over), 413)
    assert_problem(upload_b64(own_http, KEY, cid, over), 413)
    # Within base64's allowance for the encoded body, but too much once decoded.
    assert_problem(upload_b64(own_http, KEY, cid, os.urandom(SMALL_LIMIT + 3)), 413)
    response = upload_b64(own_http, KEY, cid, at_limit)
    assert response.status_code == 200, response.text
    assert own.blob_files() == files_before
    assert own.staged_files() == []
    assert [a["size"] for a in listed(own_http, KEY, cid)] == [SMALL_LIMIT, SMALL_LIMIT]


def test_a_declared_length_over_the_limit_is_413_before_the_body(
    own: OwnServer, own_http: httpx.Client
) -> None:
    cid = create(own_http, KEY, "declared_user")
    boundary = uuid.uuid4().hex
    # Only the head goes out: the answer must not wait for 10 MB that never come.
    with raw_request(own.port, post_head(cid, boundary, 10 * 1024 * 1024)) as sock:
        assert read_status(sock) == 413
    # The same through an ordinary client that sends it all.
    body = multipart_body(os.urandom(SMALL_LIMIT + 70_000), boundary)
    try:
        response = own_http.post(
            f"{COLLECTION}/{cid}/agent-attachments",
            content=body,
            headers={**KEY, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    except httpx.TransportError:
        pass  # the server may close the connection on an unread body
    else:
        assert_problem(response, 413)
    own.check_alive()
    assert_nothing_left(own, own_http, cid)


def test_a_streamed_upload_over_the_limit_is_413_and_leaves_nothing(
    own: OwnServer, own_http: httpx.Client
) -> None:
    cid = create(own_http, KEY, "streamed_user")
    boundary = uuid.uuid4().hex
    # A file just over the limit, inside the multipart allowance: refused while staging.
    body = multipart_body(os.urandom(SMALL_LIMIT + 1), boundary)

    def chunks(payload: bytes) -> Iterator[bytes]:
        for i in range(0, len(payload), 8192):
            yield payload[i : i + 8192]

    headers = {**KEY, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    url = f"{COLLECTION}/{cid}/agent-attachments"
    response = own_http.post(url, content=chunks(body), headers=headers)
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)

    # A body over the limit and the multipart allowance: refused while receiving.
    big = multipart_body(os.urandom(SMALL_LIMIT + 70_000), boundary)
    try:
        response = own_http.post(url, content=chunks(big), headers=headers)
    except httpx.TransportError:
        pass  # the server may close the connection on an unread body
    else:
        assert_problem(response, 413)
    own.check_alive()
    assert_nothing_left(own, own_http, cid)
    # The server is fine afterwards.
    assert upload_ok(own_http, KEY, cid, b"small")["size"] == 5


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_abandoned_upload_leaves_nothing_behind(
    own: OwnServer, own_http: httpx.Client, framing: str
) -> None:
    cid = create(own_http, KEY, "abandon_user")
    boundary = uuid.uuid4().hex
    body = multipart_body(os.urandom(80_000), boundary)
    part = body[:30_000]
    if framing == "chunked":
        head = post_head(cid, boundary, None)
        sent = f"{len(part):x}\r\n".encode() + part + b"\r\n"
    else:
        head = post_head(cid, boundary, len(body))
        sent = part
    sock = raw_request(own.port, head, sent)
    try:
        # The server has begun: a staging file exists while it waits for the rest.
        wait_until(lambda: own.staged_files() != [], "the upload to be staged")
    finally:
        sock.close()
    wait_until(lambda: own.staged_files() == [], "the staging file to be removed")
    own.check_alive()
    assert_nothing_left(own, own_http, cid)


def test_content_is_stored_once_per_tenant(own: OwnServer, own_http: httpx.Client) -> None:
    data = os.urandom(5000)
    first_cid = create(own_http, KEY, "dedupe_user")
    second_cid = create(own_http, KEY, "dedupe_user")
    a = upload_ok(own_http, KEY, first_cid, data, file_name="a.bin")
    b = upload_ok(own_http, KEY, first_cid, data, file_name="b.bin")
    c = upload_b64(own_http, KEY, second_cid, data, fileName="c.bin").json()
    assert a["sha256"] == b["sha256"] == c["sha256"] == hashlib.sha256(data).hexdigest()
    assert len({a["blobId"], b["blobId"], c["blobId"]}) == 3
    files = own.blob_files()
    assert len(files) == 1
    assert files[0].read_bytes() == data
    assert files[0].name == a["sha256"]

    # Another tenant's copy of the same bytes is a file of its own.
    other = new_user("other")
    other_headers = bearer(other, "dedupe-other")
    other_cid = create(own_http, other_headers, other)
    d = upload_ok(own_http, other_headers, other_cid, data)
    assert d["sha256"] == a["sha256"]
    files = own.blob_files()
    assert len(files) == 2
    assert all(f.read_bytes() == data for f in files)
    assert own.staged_files() == []
    for att in (a, b, c, d):
        assert download(att["url"]) == data


def test_deleting_the_last_reference_deletes_the_blob(
    own: OwnServer, own_http: httpx.Client
) -> None:
    only = os.urandom(3000)
    shared = os.urandom(4000)
    cid = create(own_http, KEY, "sweep_user")
    keeper_cid = create(own_http, KEY, "sweep_user")
    alone = upload_ok(own_http, KEY, cid, only)
    shared_here = upload_ok(own_http, KEY, cid, shared)
    shared_there = upload_b64(own_http, KEY, keeper_cid, shared).json()
    # The same bytes in another tenant are that tenant's.
    other = new_user("other")
    other_headers = bearer(other, "sweep-other")
    other_cid = create(own_http, other_headers, other)
    theirs = upload_ok(own_http, other_headers, other_cid, only)
    assert len(own.blob_files()) == 3

    response = own_http.delete(f"{COLLECTION}/{cid}", headers=KEY)
    assert response.status_code in (200, 204), response.text
    remaining = {p.read_bytes() for p in own.blob_files()}
    assert len(own.blob_files()) == 2
    assert remaining == {shared, only}  # ours of `only` is gone; the other tenant's is not
    assert_problem(fetch(alone["url"]), 404)
    assert_problem(fetch(shared_here["url"]), 404)
    assert download(shared_there["url"]) == shared
    assert download(theirs["url"]) == only

    response = own_http.delete(f"{COLLECTION}/{keeper_cid}", headers=KEY)
    assert response.status_code in (200, 204), response.text
    assert [p.read_bytes() for p in own.blob_files()] == [only]
    assert_problem(fetch(shared_there["url"]), 404)

    # Uploading the content again after its blob is gone stores it afresh.
    again_cid = create(own_http, KEY, "sweep_user")
    again = upload_ok(own_http, KEY, again_cid, shared)
    assert download(again["url"]) == shared
    assert len(own.blob_files()) == 2


def sign(attachment_id: str, expires: int) -> str:
    digest = hmac.new(
        SIGNING_KEY.encode(), f"attachment:{attachment_id}:{expires}".encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_an_expired_link_is_403(own: OwnServer, own_http: httpx.Client) -> None:
    cid = create(own_http, KEY, "expiry_user")
    att = upload_ok(own_http, KEY, cid, b"soon gone")
    query = parse_qs(urlsplit(att["url"]).query)
    expires = int(query["expires"][0])
    # We know the key, so we can sign like the server does.
    assert sign(att["blobId"], expires) == query["signature"][0]
    still_valid = with_query(
        att["url"], expires=str(expires + 60), signature=sign(att["blobId"], expires + 60)
    )
    assert download(still_valid) == b"soon gone"

    past = int(time.time()) - 5
    expired = with_query(att["url"], expires=str(past), signature=sign(att["blobId"], past))
    problem = assert_problem(fetch(expired), 403)
    assert "expired" in problem["detail"]


def test_links_live_as_long_as_the_configured_ttl(tmp_path: Path) -> None:
    server = start_own_server(tmp_path, AIRIA_ATTACHMENT_URL_TTL_SECONDS="10")
    try:
        with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
            cid = create(client, KEY, "ttl_user")
            before = time.time()
            att = upload_ok(client, KEY, cid, b"ten seconds")
            after = time.time()
            expires = int(parse_qs(urlsplit(att["url"]).query)["expires"][0])
            assert int(before) + 10 <= expires <= int(after) + 10 + 1
            listed_expires = int(
                parse_qs(urlsplit(listed(client, KEY, cid)[0]["url"]).query)["expires"][0]
            )
            assert listed_expires >= expires
            assert download(att["url"]) == b"ten seconds"
            past = int(time.time()) - 1
            expired = with_query(att["url"], expires=str(past), signature=sign(att["blobId"], past))
            assert_problem(fetch(expired), 403)
    finally:
        stop_process(server.process)
