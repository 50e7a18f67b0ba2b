"""Every bad input over plain HTTP: the status it earns and a problem+json body. Never a 500."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
import uuid
from urllib.parse import urlsplit

import httpx
import pytest

from .support import LiveServer, assert_problem, mint_jwt

pytestmark = pytest.mark.e2e

COLLECTION = "/v1/Conversations"
SOME_UUID = "0190f5a2-7c3e-7b1a-9d4e-2f6a8b0c1d2e"  # well formed, never minted by the server


def create(http: httpx.Client, headers: dict[str, str], user_id: str, **body) -> dict:
    response = http.post(COLLECTION, json={"userId": user_id, **body}, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response.json()


def exchange(server: LiveServer, raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """Bytes as sent, whatever a client library would make of them: the answer's status
    line, headers (by lower-case name) and body, read until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(raw)
        sock.settimeout(10)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b": ")
        headers[name.lower()] = value
    return status, headers, body


# --- bytes that are not HTTP ---------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /v1/Conversations HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /v1/Conversations HTTP/1.1\r\nHost: x\r\nA header without a colon\r\n\r\n",
        b"POST /v1/Conversations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["request-line", "content-length", "header", "chunk-size"],
)
def test_a_request_that_is_not_http_is_400_problem_and_closed(
    server: LiveServer, raw: bytes
) -> None:
    """Refused before the application sees it, by the HTTP parser: still problem+json
    (uvicorn itself answers in plain text), and the connection is closed."""
    head, headers, body = exchange(server, raw)
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"connection"] == b"close"
    assert int(headers[b"content-length"]) == len(body)
    problem = json.loads(body)
    assert problem["type"] == "about:blank" and problem["status"] == 400
    assert problem["message"] == "Invalid HTTP request"
    assert problem["correlationId"] == headers[b"x-correlation-id"].decode()


@pytest.mark.parametrize(
    "host_lines",
    [
        b"",
        b"Host: \r\n",
        b"Host: a b\r\n",
        b"Host: x/y?z#\r\n",
        "Host: hé.com\r\n".encode(),
        b"Host: x\r\nHost: y\r\n",
        b"Host: [::1\r\n",
        b"Host: x:80:80\r\n",
        b"Host: a:99999\r\n",
        b"Host: a:65536\r\n",
        b"Host: [::1]:0\r\n",
    ],
    ids=[
        "missing",
        "empty",
        "space",
        "path-and-fragment",
        "not-ascii",
        "twice",
        "open-bracket",
        "two-ports",
        "port-99999",
        "port-65536",
        "port-0",
    ],
)
def test_a_request_without_one_valid_host_is_400(server: LiveServer, host_lines: bytes) -> None:
    """RFC 9112, 3.2. Links the server hands out are built from Host when no public URL
    is set: a Host such as 'x/y?z#' would have put the ticket in a URL fragment."""
    raw = (
        b"POST /v1/Conversations HTTP/1.1\r\n" + host_lines + b"Connection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: 15\r\n"
        b"X-API-KEY: " + server.api_key.encode() + b'\r\n\r\n{"userId":"u1"}'
    )
    status, headers, body = exchange(server, raw)
    assert status.startswith(b"HTTP/1.1 400 "), (status, body)
    problem = json.loads(body)
    assert problem["message"] == "Invalid Host header"
    assert problem["correlationId"] == headers[b"x-correlation-id"].decode()


@pytest.mark.parametrize(
    "host",
    [
        b"example.com",
        b"example.com:8080",
        b"127.0.0.1:1",
        b"example.com:65535",
        b"example.com:",  # an empty port is the default one (RFC 3986, 3.2.3)
        b"[::1]:8000",
        b"my_host.local",
        b"example.com ",  # whitespace around a value is not part of it (RFC 9110, 5.5)
        b"example.com:8080\t",
    ],
)
def test_a_valid_host_is_served(server: LiveServer, host: bytes) -> None:
    raw = (
        b"GET /v1/Conversations/feed HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n"
        b"X-API-KEY: " + server.api_key.encode() + b"\r\n\r\n"
    )
    status, _, body = exchange(server, raw)
    assert status.startswith(b"HTTP/1.1 200 "), (status, body)


@pytest.mark.parametrize(
    "codings",
    [b"gzip, chunked", b"gzip\r\nTransfer-Encoding: chunked"],
    ids=["gzip-chunked", "two-headers"],
)
def test_a_transfer_coding_other_than_chunked_alone_is_501(
    server: LiveServer, codings: bytes
) -> None:
    """RFC 9112, 6.1. The parser reads any list that ends in chunked as chunked alone:
    a gzipped body would have been read as if it were plain. (Chunked twice is the
    parser's 400.)"""
    chunk = b'{"userId":"u1"}'
    raw = (
        b"POST /v1/Conversations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + codings + b"\r\n"
        b"Content-Type: application/json\r\nX-API-KEY: "
        + server.api_key.encode()
        + b"\r\n\r\n"
        + f"{len(chunk):x}\r\n".encode()
        + chunk
        + b"\r\n0\r\n\r\n"
    )
    status, headers, body = exchange(server, raw)  # read until the server closes
    assert status.startswith(b"HTTP/1.1 501 "), (status, body)
    assert headers[b"content-type"] == b"application/problem+json"
    problem = json.loads(body)
    assert problem["message"] == "Transfer coding not supported"
    assert problem["title"] == "Not Implemented", problem  # it was "Error"


def test_a_client_that_half_closes_after_its_request_gets_the_answer(
    server: LiveServer, user_id: str
) -> None:
    """HTTP/1.1 allows a client to close its side once its request is sent: the answer
    still comes (the request was carried out either way), then the connection closes."""
    body = json.dumps({"userId": user_id}).encode()
    raw = (
        b"POST /v1/Conversations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-API-KEY: " + server.api_key.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:300]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["userId"] == user_id


def test_http_1_0_may_leave_host_out(server: LiveServer) -> None:
    raw = b"GET /healthz HTTP/1.0\r\n\r\n"
    status, _, body = exchange(server, raw)
    assert status.startswith(b"HTTP/1.1 200 "), (status, body)


# --- request bodies -----------------------------------------------------------------


def test_malformed_json_is_400(server: LiveServer, http: httpx.Client) -> None:
    response = http.post(
        COLLECTION,
        content=b'{"userId": "u1",',
        headers={**server.headers(), "content-type": "application/json"},
    )
    assert_problem(response, 400)


def test_empty_body_is_400(server: LiveServer, http: httpx.Client) -> None:
    response = http.post(
        COLLECTION, content=b"", headers={**server.headers(), "content-type": "application/json"}
    )
    assert_problem(response, 400)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"userId": 123}, "userId"),
        ({"userId": "u1", "isBookmarked": "yes"}, "isBookmarked"),
        ({"userId": "u1", "dataSourceFiles": ["doc1.pdf"]}, "dataSourceFiles"),
        ({"userId": "u1", "dataSourceFiles": {"documents": "doc1.pdf"}}, "dataSourceFiles"),
        ({"userId": "u1", "title": 5}, "title"),
        ({"userId": "u1", "deploymentId": ["d"]}, "deploymentId"),
        ({"userId": ""}, "userId"),
        ({}, "userId"),
        ({"title": "no user"}, "userId"),
        ({"userId": None}, "userId"),
    ],
    ids=[
        "userId-int",
        "isBookmarked-string",
        "dataSourceFiles-list",
        "dataSourceFiles-values-not-lists",
        "title-int",
        "deploymentId-list",
        "userId-empty",
        "userId-missing",
        "userId-missing-with-title",
        "userId-null",
    ],
)
def test_wrong_field_is_422_naming_the_field(
    server: LiveServer, http: httpx.Client, body: dict, field: str
) -> None:
    response = http.post(COLLECTION, json=body, headers=server.headers())
    problem = assert_problem(response, 422)
    assert field in problem["detail"] or field in problem["message"], problem


@pytest.mark.parametrize("body", [[], "a string", 42, None, True], ids=repr)
def test_body_that_is_not_an_object_is_422(
    server: LiveServer, http: httpx.Client, body: object
) -> None:
    response = http.post(
        COLLECTION,
        content=json.dumps(body).encode(),
        headers={**server.headers(), "content-type": "application/json"},
    )
    assert_problem(response, 422)


def test_unknown_fields_are_ignored(server: LiveServer, http: httpx.Client, user_id: str) -> None:
    created = create(http, server.headers(), user_id, somethingNew={"a": 1}, title=None)
    assert created["userId"] == user_id


def test_a_nul_is_refused_where_it_would_be_stored_and_ignored_elsewhere(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    headers = {**server.headers(), "content-type": "application/json"}
    ignored = http.post(
        COLLECTION,
        content=json.dumps({"userId": user_id, "extra": {"k": "\x00"}}).encode(),
        headers=headers,
    )
    assert ignored.status_code == 201, ignored.text
    for body, field in [
        ({"userId": user_id, "title": "a\x00b"}, "title"),
        ({"userId": user_id, "dataSourceFiles": {"docs": ["ok", "b\x00d"]}}, "dataSourceFiles"),
    ]:
        response = http.post(COLLECTION, content=json.dumps(body).encode(), headers=headers)
        problem = assert_problem(response, 422)
        assert field in problem["message"], problem
        assert problem["errors"][0]["field"].startswith(field), problem


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "\\udc00\\ud800"])
def test_a_lone_surrogate_is_422_naming_the_field(
    server: LiveServer, http: httpx.Client, user_id: str, escape: str
) -> None:
    """What `json.dumps` writes for a Python string holding half a surrogate pair."""
    raw = f'{{"userId": "{user_id}", "title": "a{escape}b"}}'.encode()
    response = http.post(
        COLLECTION, content=raw, headers={**server.headers(), "content-type": "application/json"}
    )
    problem = assert_problem(response, 422)
    assert problem["message"].startswith("Invalid value for 'title'"), problem
    assert [error["field"] for error in problem["errors"]] == ["title"], problem


def test_body_over_one_mebibyte_is_413(server: LiveServer, http: httpx.Client) -> None:
    padding = "x" * (1024 * 1024 + 1)
    response = http.post(
        COLLECTION,
        content=json.dumps({"userId": "u1", "title": padding}).encode(),
        headers={**server.headers(), "content-type": "application/json"},
    )
    assert_problem(response, 413)


def test_chunked_body_over_the_limit_is_413(server: LiveServer, http: httpx.Client) -> None:
    def chunks():
        yield b'{"userId": "u1", "title": "'
        for _ in range(17):
            yield b"x" * 65536
        yield b'"}'

    response = http.post(
        COLLECTION,
        content=chunks(),
        headers={**server.headers(), "content-type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_non_json_content_type_is_415(
    server: LiveServer, http: httpx.Client, content_type: str
) -> None:
    response = http.post(
        COLLECTION,
        content=b'{"userId": "u1"}',
        headers={**server.headers(), "content-type": content_type},
    )
    assert_problem(response, 415)


def test_update_with_blank_title_is_422(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    created = create(http, server.headers(), user_id)
    # Spaces, and characters that show nothing: a zero-width space, a byte order
    # mark, a word joiner, a soft hyphen, the Braille blank and the Hangul filler.
    # And a variation selector alone, the combining grapheme joiner, Khmer's invisible
    # vowels: Unicode's default-ignorable characters.
    for title in (
        *("", "   ", "\u3000", "\u200b", " \ufeff\u2060 ", "\u00ad", "\u2800", "\u3164"),
        *("\ufe0f", "\u034f", "\u17b4\u17b5"),
    ):
        response = http.put(
            f"{COLLECTION}/{created['conversationId']}",
            json={"title": title},
            headers=server.headers(),
        )
        problem = assert_problem(response, 422)
        assert "title" in problem["detail"] or "title" in problem["message"]
    # Format characters that draw a glyph, and invisible ones within text, are a title.
    for title in ("\u06dd", "\U000110bd", "\U0001f469\u200d\U0001f4bb", "\u200bhello"):
        response = http.put(
            f"{COLLECTION}/{created['conversationId']}",
            json={"title": title},
            headers=server.headers(),
        )
        assert response.status_code == 200 and response.json()["title"] == title


def test_update_with_bad_execution_status_is_422(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    created = create(http, server.headers(), user_id)
    response = http.put(
        f"{COLLECTION}/{created['conversationId']}",
        json={"title": "t", "lastExecutionStatus": "Exploded"},
        headers=server.headers(),
    )
    problem = assert_problem(response, 422)
    assert "lastExecutionStatus" in problem["detail"]


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe\x00garbage",
        b'{"userId": "\xc3\x28"}',
        b"[" * 10_000 + b"]" * 10_000,
        b'{"userId": "u1", "dataSourceFiles": {"d": [' + b'"f",' * 2000 + b'"f"]}}',
        b'{"userId": "u1", "isBookmarked": 1e999}',
        b'{"userId": "u1", "title": 123456789012345678901234567890}',
        rb'{"userId": "u1\u0000"}',
        b'{"userId": "u1"} trailing',
        b'{"userId": "u1", "userId": 5}',
    ],
    ids=[
        "not-utf8",
        "invalid-utf8-in-string",
        "deeply-nested",
        "too-many-files",
        "huge-float",
        "huge-int",
        "nul-in-user-id",
        "trailing-garbage",
        "duplicate-key",
    ],
)
def test_hostile_bodies_are_client_errors_never_500(
    server: LiveServer, http: httpx.Client, raw: bytes
) -> None:
    response = http.post(
        COLLECTION, content=raw, headers={**server.headers(), "content-type": "application/json"}
    )
    if response.status_code in (200, 201):
        return  # tolerated input (a NUL is a legal JSON string character)
    assert 400 <= response.status_code < 500, response.text
    assert_problem(response, response.status_code)


# --- credentials --------------------------------------------------------------------


def _none_alg_token(sub: str) -> str:
    import base64

    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {"sub": sub, "tenant": "default", "exp": 4_000_000_000}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


BAD_CREDENTIALS = {
    "none": {},
    "wrong-key": {"X-API-KEY": "ak_not-a-real-key"},
    "empty-key": {"X-API-KEY": ""},
    "basic-auth": {"Authorization": "Basic dXNlcjpwYXNz"},
    "bearer-without-token": {"Authorization": "Bearer"},
    "token-without-scheme": {"Authorization": mint_jwt("u1")},
    "bearer-garbage": {"Authorization": "Bearer not.a.jwt"},
    "expired-jwt": {"Authorization": "Bearer " + mint_jwt("u1", ttl=-120)},
    "alg-none-jwt": {"Authorization": "Bearer " + _none_alg_token("u1")},
    "other-secret-jwt": {"Authorization": "Bearer " + mint_jwt("u1", secret="x" * 48)},
    "jwt-without-sub": {
        "Authorization": "Bearer "
        + __import__("jwt").encode({"tenant": "default", "exp": 4_000_000_000}, "x" * 48)
    },
}


@pytest.mark.parametrize("headers", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", COLLECTION),
        ("GET", f"{COLLECTION}/{SOME_UUID}"),
        ("GET", f"{COLLECTION}/feed"),
        ("PUT", f"{COLLECTION}/{SOME_UUID}"),
        ("DELETE", f"{COLLECTION}/{SOME_UUID}"),
    ],
)
def test_bad_credentials_are_401(
    http: httpx.Client, headers: dict[str, str], method: str, path: str
) -> None:
    body = {"userId": "u1"} if method == "POST" else {"title": "t"} if method == "PUT" else None
    response = http.request(method, path, json=body, headers=headers)
    assert_problem(response, 401)
    assert "www-authenticate" in response.headers


def test_jwt_without_sub_signed_with_the_right_secret_is_401(http: httpx.Client) -> None:
    import jwt

    from .support import JWT_SECRET

    token = jwt.encode({"tenant": "default", "exp": 4_000_000_000}, JWT_SECRET)
    response = http.get(f"{COLLECTION}/feed", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "a\x00b"},
        {"tenant": "de\x00fault"},
        {"sub": "u" * 256},
        {"tenant": ""},
        {"sub": 7},
        {"sub": "a\ud800"},
        {"tenant": "\udfff"},
        {"exp": 10**400},
    ],
    ids=[
        "nul-in-sub",
        "nul-in-tenant",
        "sub-too-long",
        "empty-tenant",
        "sub-not-text",
        "surrogate-in-sub",
        "surrogate-tenant",
        "exp-past-any-float",
    ],
)
def test_a_signed_token_naming_no_storable_user_is_401(http: httpx.Client, claims: dict) -> None:
    """Signed with the right secret, but naming a user or tenant no database could
    store (PostgreSQL refuses NUL in text): refused at the door, on every backend."""
    import jwt

    from .support import JWT_SECRET

    token = jwt.encode(
        {"sub": "u1", "tenant": "default", "exp": 4_000_000_000, **claims}, JWT_SECRET
    )
    for path in (f"{COLLECTION}/feed", f"{COLLECTION}/{SOME_UUID}"):
        response = http.get(path, headers={"Authorization": f"Bearer {token}"})
        assert_problem(response, 401)


@pytest.mark.parametrize("padding", [b" ", b"\t", b"  \t "])
def test_whitespace_around_an_api_key_is_not_part_of_it(server: LiveServer, padding: bytes) -> None:
    """As around any header value (RFC 9110, 5.5); HTTP libraries send such values."""
    key = server.api_key.encode()
    raw = (
        b"GET /v1/Conversations/feed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"X-API-KEY:" + padding + key + padding + b"\r\n\r\n"
    )
    status, _, body = exchange(server, raw)
    assert status.startswith(b"HTTP/1.1 200 "), body


def test_whitespace_after_a_content_length_is_allowed(server: LiveServer, user_id: str) -> None:
    body = json.dumps({"userId": user_id}).encode()
    raw = (
        b"POST /v1/Conversations HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nX-API-KEY: " + server.api_key.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b" \r\n\r\n" + body
    )
    status, _, answer = exchange(server, raw)
    assert status.startswith(b"HTTP/1.1 201 "), answer
    assert json.loads(answer)["userId"] == user_id


@pytest.mark.parametrize("second", ["ak_not-a-real-key", None], ids=["other-key", "same-key"])
def test_two_different_api_keys_are_401(
    server: LiveServer, http: httpx.Client, second: str | None
) -> None:
    """Which of two keys would count is anyone's guess (a proxy may add one): refused,
    whichever comes first. The same key twice is one credential."""
    for pair in ([server.api_key, second], [second, server.api_key]):
        headers = [("X-API-KEY", value or server.api_key) for value in pair]
        response = http.get(f"{COLLECTION}/feed", headers=headers)
        if second is None:
            assert response.status_code == 200, response.text
        else:
            problem = assert_problem(response, 401)
            assert problem["message"] == "Conflicting credentials"
    tokens = [("Authorization", f"Bearer {mint_jwt('u1')}"), ("Authorization", "Bearer x.y.z")]
    assert_problem(http.get(f"{COLLECTION}/feed", headers=tokens), 401)


@pytest.mark.parametrize(
    "authorization",
    ["Basic dXNlcjpwYXNz", "Bearer not-a-jwt", "Bearer " + "x" * 40],
    ids=["proxy-basic", "bad-bearer", "garbage"],
)
def test_with_an_api_key_the_authorization_header_is_not_read(
    server: LiveServer, http: httpx.Client, user_id: str, authorization: str
) -> None:
    """A proxy in front may authenticate its users with `Authorization` and pass the header
    on: the key decides, as docs/api.md says, and the request is the key's (tenant-wide,
    the token's user neither narrows nor widens it)."""
    headers = {"X-API-KEY": server.api_key, "Authorization": authorization}
    created = http.post(COLLECTION, json={"userId": user_id}, headers=headers)
    assert created.status_code == 201, created.text
    assert assert_problem(
        http.get(f"{COLLECTION}/feed", headers={"Authorization": authorization}), 401
    )


def test_api_key_header_name_is_case_insensitive(server: LiveServer, http: httpx.Client) -> None:
    response = http.get(f"{COLLECTION}/feed", headers={"x-api-key": server.api_key})
    assert response.status_code == 200


def test_revoked_key_is_401(server: LiveServer, http: httpx.Client, user_id: str) -> None:
    key = server.create_api_key("revocation-tenant", name="to-revoke")
    created = create(http, {"X-API-KEY": key}, user_id)
    listing = server.cli("keys", "list", "--tenant", "revocation-tenant")
    assert listing.returncode == 0, listing.stderr
    rows = [line for line in listing.stdout.splitlines() if "to-revoke" in line]
    assert len(rows) == 1, listing.stdout
    key_id = rows[0].split()[0]
    uuid.UUID(key_id)

    revoked = server.cli("keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr

    response = http.get(f"{COLLECTION}/{created['conversationId']}", headers={"X-API-KEY": key})
    assert_problem(response, 401)
    again = server.cli("keys", "revoke", key_id)
    assert again.returncode != 0


# --- feed query parameters ----------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"PageSize": "0"}, "PageSize"),
        ({"PageSize": "1000"}, "PageSize"),
        ({"PageSize": "abc"}, "PageSize"),
        ({"PageSize": "-1"}, "PageSize"),
        ({"PageNumber": "0"}, "PageNumber"),
        ({"PageNumber": "1.5"}, "PageNumber"),
        ({"SortBy": "bogus"}, "SortBy"),
        ({"SortBy": "title; DROP TABLE conversations"}, "SortBy"),
        ({"SortDirection": "sideways"}, "SortDirection"),
        ({"filter": "x" * 501}, "filter"),
        # Numbers in ASCII digits only: int() alone would read all of these.
        ({"PageNumber": "1_0"}, "PageNumber"),
        ({"PageNumber": "+1"}, "PageNumber"),
        ({"PageNumber": " 1"}, "PageNumber"),
        ({"PageNumber": "\u0661"}, "PageNumber"),
        ({"PageSize": "\uff15"}, "PageSize"),
        ({"PageSize": "²"}, "PageSize"),
        ({"userId": "u" * 256}, "userId"),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, dict) else v,
)
def test_bad_feed_parameters_are_422(
    server: LiveServer, http: httpx.Client, params: dict, field: str
) -> None:
    response = http.get(f"{COLLECTION}/feed", params=params, headers=server.headers())
    problem = assert_problem(response, 422)
    assert field in problem["detail"] or field in problem["message"]


@pytest.mark.parametrize(
    "query",
    [b"userId=%FF", b"filter=%FF", b"filter=%ED%A0%80", b"userId=u%C3"],
    ids=["ff-user", "ff-filter", "surrogate", "cut-short"],
)
def test_a_query_string_that_is_not_utf8_is_400_not_read_as_u_fffd(
    server: LiveServer, http: httpx.Client, user_id: str, query: bytes
) -> None:
    """Read leniently, `%FF` became U+FFFD and the feed answered with the conversations
    of a user whose id is "\ufffd", and a filter matched titles holding one."""
    lenient = "\ufffd"
    made = http.post(
        COLLECTION,
        json={"userId": lenient, "title": f"{lenient}!{user_id}"},
        headers=server.headers(),
    )
    assert made.status_code in (200, 201), made.text
    raw = b"GET " + COLLECTION.encode() + b"/feed?" + query + b" HTTP/1.1\r\n"
    raw += b"Host: x\r\nConnection: close\r\nX-API-KEY: " + server.api_key.encode() + b"\r\n\r\n"
    status, headers, body = exchange(server, raw)
    assert status.startswith(b"HTTP/1.1 400 "), body
    assert headers[b"content-type"].startswith(b"application/problem+json")
    assert json.loads(body)["message"] == "Query string is not UTF-8"
    # Well-formed UTF-8 is read as it is.
    response = http.get(
        f"{COLLECTION}/feed",
        params={"userId": lenient, "filter": f"\ufffd!{user_id}"},
        headers=server.headers(),
    )
    assert response.status_code == 200 and response.json()["totalCount"] == 1


# --- routing ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/v1/conversation", "/v1/Conversations/a/b/c"])
def test_unknown_route_is_404_problem(server: LiveServer, http: httpx.Client, path: str) -> None:
    assert_problem(http.get(path, headers=server.headers()), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", COLLECTION),
        ("GET", COLLECTION),
        ("POST", "/healthz"),
        ("PUT", COLLECTION),
        ("POST", f"{COLLECTION}/{SOME_UUID}"),
    ],
)
def test_wrong_method_is_405_problem(
    server: LiveServer, http: httpx.Client, method: str, path: str
) -> None:
    response = http.request(method, path, headers=server.headers())
    assert_problem(response, 405)
    assert "allow" in response.headers


# --- tenants and users --------------------------------------------------------------


@pytest.fixture(scope="module")
def other_tenant_key(live_server: LiveServer) -> str:
    return live_server.create_api_key("tenant-b")


def test_other_tenant_sees_404_for_get_put_delete(
    server: LiveServer, http: httpx.Client, other_tenant_key: str, user_id: str
) -> None:
    created = create(http, server.headers(), user_id, title="tenant A's")
    path = f"{COLLECTION}/{created['conversationId']}"
    b = {"X-API-KEY": other_tenant_key}

    assert_problem(http.get(path, headers=b), 404)
    assert_problem(http.put(path, json={"title": "hijacked"}, headers=b), 404)
    assert_problem(http.delete(path, headers=b), 404)

    still = http.get(path, headers=server.headers())
    assert still.status_code == 200
    assert still.json()["title"] == "tenant A's"


def test_other_tenant_feed_does_not_list_it(
    server: LiveServer, http: httpx.Client, other_tenant_key: str, user_id: str
) -> None:
    create(http, server.headers(), user_id)
    feed = http.get(
        f"{COLLECTION}/feed", params={"userId": user_id}, headers={"X-API-KEY": other_tenant_key}
    )
    assert feed.status_code == 200
    assert feed.json() == {"items": [], "totalCount": 0}


def test_bearer_token_of_another_tenant_sees_404(
    server: LiveServer, http: httpx.Client, user_id: str
) -> None:
    created = create(http, server.headers(), user_id)
    token = mint_jwt(user_id, tenant="tenant-b")
    response = http.get(f"{COLLECTION}/{created['conversationId']}", headers=server.bearer(token))
    assert_problem(response, 404)


def test_bearer_users_are_isolated(server: LiveServer, http: httpx.Client) -> None:
    alice, bob = f"alice_{uuid.uuid4().hex[:8]}", f"bob_{uuid.uuid4().hex[:8]}"
    as_alice = server.bearer(mint_jwt(alice))
    as_bob = server.bearer(mint_jwt(bob))
    mine = create(http, as_alice, alice, title="alice's")
    path = f"{COLLECTION}/{mine['conversationId']}"

    assert http.get(path, headers=as_alice).status_code == 200
    assert_problem(http.get(path, headers=as_bob), 404)
    assert_problem(http.put(path, json={"title": "bob was here"}, headers=as_bob), 404)
    assert_problem(http.delete(path, headers=as_bob), 404)
    assert http.get(path, headers=as_alice).json()["title"] == "alice's"


def test_bearer_cannot_create_for_another_user(server: LiveServer, http: httpx.Client) -> None:
    token = mint_jwt(f"alice_{uuid.uuid4().hex[:8]}")
    response = http.post(COLLECTION, json={"userId": "somebody_else"}, headers=server.bearer(token))
    assert_problem(response, 403)


def test_bearer_feed_lists_only_own_conversations(server: LiveServer, http: httpx.Client) -> None:
    alice, bob = f"alice_{uuid.uuid4().hex[:8]}", f"bob_{uuid.uuid4().hex[:8]}"
    as_alice = server.bearer(mint_jwt(alice))
    own = {create(http, as_alice, alice)["conversationId"] for _ in range(2)}
    create(http, server.headers(), bob)

    feed = http.get(f"{COLLECTION}/feed", params={"PageSize": 100}, headers=as_alice)
    assert feed.status_code == 200
    body = feed.json()
    assert {item["conversationId"] for item in body["items"]} == own
    assert body["totalCount"] == 2
    assert all(item["userId"] == alice for item in body["items"])

    other = http.get(f"{COLLECTION}/feed", params={"userId": bob}, headers=as_alice)
    assert other.status_code in (403, 404) or other.json()["totalCount"] == 0
    if other.status_code >= 400:
        assert_problem(other, other.status_code)


def test_bearer_token_works_with_the_seed_flow(server: LiveServer, http: httpx.Client) -> None:
    carol = f"carol_{uuid.uuid4().hex[:8]}"
    as_carol = server.bearer(mint_jwt(carol))
    created = create(http, as_carol, carol)
    path = f"{COLLECTION}/{created['conversationId']}"
    assert http.get(path, headers=as_carol).json()["userId"] == carol
    assert http.delete(path, headers=as_carol).status_code in (200, 204)
    assert_problem(http.get(path, headers=as_carol), 404)


# --- ids of any shape ---------------------------------------------------------------


@pytest.mark.parametrize(
    "conversation_id",
    [
        "your_conversation_id",
        SOME_UUID,
        SOME_UUID.upper(),
        "x" * 300,
        "%C3%A9t%C3%A9-%E6%97%A5%E6%9C%AC",
        "%27%20OR%201%3D1%20--",
        "..%2Fx",
        "00000000-0000-0000-0000-000000000000",
        "{" + SOME_UUID + "}",
    ],
    ids=[
        "seed-placeholder",
        "random-uuid",
        "upper-uuid",
        "300-chars",
        "unicode",
        "sql",
        "dotdot-slash",
        "nil-uuid",
        "braced-uuid",
    ],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_unknown_ids_are_404_whatever_their_shape(
    server: LiveServer, http: httpx.Client, conversation_id: str, method: str
) -> None:
    body = {"title": "t"} if method == "PUT" else None
    response = http.request(
        method, f"{COLLECTION}/{conversation_id}", json=body, headers=server.headers()
    )
    assert_problem(response, 404)


def test_problem_carries_instance_and_correlation_id(
    server: LiveServer, http: httpx.Client
) -> None:
    response = http.get(
        f"{COLLECTION}/your_conversation_id",
        headers={**server.headers(), "X-Correlation-ID": "trace-123"},
    )
    problem = assert_problem(response, 404)
    assert problem["message"] == "Conversation not found"
    assert problem["instance"] == f"{COLLECTION}/your_conversation_id"
    assert problem["correlationId"] == "trace-123"
    assert response.headers["x-correlation-id"] == "trace-123"


def test_invalid_utf8_inside_a_json_string_is_400(server: LiveServer, http: httpx.Client) -> None:
    # msgspec raises UnicodeDecodeError (not DecodeError) for this input.
    response = http.post(
        COLLECTION,
        content=b'{"userId": "\xc3\x28"}',
        headers={**server.headers(), "content-type": "application/json"},
    )
    assert_problem(response, 400)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_empty_id_is_a_404_problem_not_a_redirect(
    server: LiveServer, http: httpx.Client, method: str
) -> None:
    # What a client sends for conversation_id="": `/v1/Conversations/`.
    body = {"title": "t"} if method == "PUT" else None
    response = http.request(method, f"{COLLECTION}/", json=body, headers=server.headers())
    assert_problem(response, 404)


# --- a backend away -----------------------------------------------------------------


def test_requests_while_the_database_is_away_are_503_with_retry_after(tmp_path) -> None:
    """The request was fine: 503 and Retry-After say to send it again, where a 500 says
    the server is broken. The database here is dropped under a running server."""
    import backends

    from .support import running_server

    backends.require(backends.postgres_problem())
    url = backends.create_database_sync()
    try:
        with running_server(tmp_path, database_url=url) as server, server.client() as http:
            created = create(http, server.headers(), "u1")
            backends.drop_database_sync(url)  # its connections are cut as it goes
            for _ in range(3):  # each pooled connection finds out in turn
                response = http.get(
                    f"{COLLECTION}/{created['conversationId']}", headers=server.headers()
                )
                problem = assert_problem(response, 503)
                assert response.headers["retry-after"] == "1"
                assert problem["message"] == "Service unavailable"
            # Logged for the operator, one line a request: an outage, not a bug.
            log = server.stderr_text()
            assert "answered 503" in log and "unhandled error" not in log
    finally:
        backends.drop_database_sync(url)


# What a database does during a failover, an operator's change or a bad restore.
_CANNOT_SERVE = {
    "read-only": "ALTER DATABASE {name} SET default_transaction_read_only = on",
    "refusing connections": "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false",
    "recreated empty": "DROP DATABASE {name} WITH (FORCE); CREATE DATABASE {name}",
}


@pytest.mark.parametrize("state", list(_CANNOT_SERVE))
def test_a_database_that_cannot_serve_is_503_and_not_ready(tmp_path, state: str) -> None:
    """A standby that refuses writes, a database that refuses connections, one recreated
    without its tables: the request was fine every time, so 503 with Retry-After, where
    each was a 500. /readyz names which."""
    import backends

    from .support import running_server

    backends.require(backends.postgres_problem())
    url = backends.create_database_sync()
    try:
        with running_server(tmp_path, database_url=url) as server, server.client() as http:
            created = create(http, server.headers(), "u1")
            messages = f"{COLLECTION}/{created['conversationId']}/messages"
            for sql in _CANNOT_SERVE[state].split("; "):
                backends.alter_database_sync(url, sql)
            for _ in range(3):  # each pooled connection finds out in turn
                response = http.post(messages, json={"message": "hi"}, headers=server.headers())
                problem = assert_problem(response, 503)
                assert response.headers["retry-after"] == "1"
                assert problem["message"] == "Service unavailable"
            checks = http.get("/readyz").json()["checks"]
            assert {
                "read-only": checks["database"].startswith("read-only")
                and checks["migrations"] == "ok",
                "refusing connections": checks["database"].startswith("unreachable")
                and "migrations" not in checks,
                "recreated empty": checks["database"] == "ok"
                and checks["migrations"].startswith("no schema"),
            }[state], checks
            assert http.get("/readyz").status_code == 503
    finally:
        backends.alter_database_sync(url, "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
        backends.drop_database_sync(url)


class _Blackhole:
    """A TCP relay to PostgreSQL until `close_off()`: then its connections are cut, and
    new ones are accepted and never answered, as by a host whose database hangs."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._closed_off = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            if self._closed_off:
                continue
            upstream = socket.create_connection(self._target)
            self._sockets.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)

    def close_off(self) -> None:
        self._closed_off = True
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()  # a reset, as a dropped route ends up

    def stop(self) -> None:
        self._listener.close()
        self.close_off()


def test_a_database_host_that_never_answers_is_503_within_the_connect_timeout(
    tmp_path,
) -> None:
    """asyncpg waits 60 s for a connection by default: every request hung that long.
    AIRIA_DATABASE_CONNECT_TIMEOUT_SECONDS bounds it."""
    import backends

    from .support import running_server

    backends.require(backends.postgres_problem())
    url = backends.create_database_sync()
    parts = urlsplit(url)
    relay = _Blackhole(parts.hostname or "127.0.0.1", parts.port or 5432)
    via_relay = parts._replace(netloc=f"{parts.username}@127.0.0.1:{relay.port}").geturl()
    try:
        with (
            running_server(
                tmp_path,
                database_url=via_relay,
                AIRIA_DATABASE_CONNECT_TIMEOUT_SECONDS="1",
                AIRIA_DATABASE_POOL_MIN="1",
            ) as server,
            server.client() as http,
        ):
            created = create(http, server.headers(), "u1")
            relay.close_off()
            for _ in range(3):
                # Given up by the server within its 1 s connect timeout; asyncpg's own
                # (60 s) would make the client give up first (ReadTimeout, a failure).
                response = http.get(
                    f"{COLLECTION}/{created['conversationId']}",
                    headers=server.headers(),
                    timeout=15,
                )
                assert_problem(response, 503)
                assert response.headers["retry-after"] == "1"
    finally:
        relay.stop()
        backends.drop_database_sync(url)


@pytest.mark.parametrize("write", ["append", "identity"])
def test_a_write_past_the_statement_timeout_is_503_not_done_and_done_once_when_sent_again(
    tmp_path, write: str
) -> None:
    """A write waiting on another's lock past AIRIA_DATABASE_STATEMENT_TIMEOUT_SECONDS
    is cancelled by PostgreSQL and rolled back: the 503 means "not done", and the same
    request sent again with its Idempotency-Key is done once. (Given up by the client
    instead, the statement went on waiting, committed once the lock was free, and the
    retry stored a second copy.)"""
    import asyncpg

    import backends

    from .support import running_server

    backends.require(backends.postgres_problem())
    url = backends.create_database_sync()
    try:
        with (
            running_server(
                tmp_path, database_url=url, AIRIA_DATABASE_STATEMENT_TIMEOUT_SECONDS="1"
            ) as server,
            server.client() as http,
        ):
            cid = create(http, server.headers(), "u1")["conversationId"]
            path, body = {
                "append": (f"{COLLECTION}/{cid}/messages", {"message": "once"}),
                "identity": (
                    f"{COLLECTION}/{cid}/external-identities",
                    {"externalSystem": "teams", "externalChannelId": "c", "externalThreadId": "t"},
                ),
            }[write]
            headers = {**server.headers(), "Idempotency-Key": f"k-{write}"}

            async def locked_write() -> httpx.Response:
                conn = await asyncpg.connect(url)
                try:
                    async with conn.transaction():
                        await conn.execute(
                            "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", cid
                        )
                        async with httpx.AsyncClient(base_url=server.base_url) as client:
                            response = await client.post(
                                path, json=body, headers=headers, timeout=20
                            )
                        await asyncio.sleep(1.5)  # past the timeout, the lock still held
                finally:
                    await conn.close()
                return response

            response = asyncio.run(locked_write())
            problem = assert_problem(response, 503)
            assert "statement timeout" in problem["detail"], problem
            again = http.post(path, json=body, headers=headers)
            assert again.status_code == 201, again.text
            if write == "append":
                got = http.get(f"{COLLECTION}/{cid}", headers=server.headers()).json()
                assert [m["message"] for m in got["messages"]] == ["once"]
            else:
                listed = http.get(path, headers=server.headers()).json()
                assert len(listed) == 1, listed
    finally:
        backends.drop_database_sync(url)


def test_links_built_from_host_are_whole(tmp_path) -> None:
    """On a server listening on 0.0.0.0 without a public URL, websocketUrl comes from
    Host: without the whitespace after it, and, where HTTP/1.0 sent none, from the
    address the request came to (not a port-80 `localhost`)."""
    from .support import running_server

    with running_server(tmp_path, host="0.0.0.0") as server:
        body = json.dumps({"userId": "u1"}).encode()

        def create_with(host_line: bytes, version: bytes = b"1.1") -> str:
            raw = (
                b"POST /v1/Conversations HTTP/"
                + version
                + b"\r\n"
                + host_line
                + b"Connection: close\r\nContent-Type: application/json\r\n"
                + b"X-API-KEY: "
                + server.api_key.encode()
                + b"\r\n"
                + b"Content-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            status, _, answer = exchange(server, raw)
            assert status.split()[1] == b"201", (status, answer)
            return json.loads(answer)["websocketUrl"]

        assert create_with(b"Host: chat.example:8080 \r\n").startswith(
            "ws://chat.example:8080/v1/Conversations/"
        )
        assert create_with(b"", b"1.0").startswith(f"ws://127.0.0.1:{server.port}/v1/")


def test_every_link_follows_one_rule_for_its_host(server: LiveServer, http: httpx.Client) -> None:
    """On a server listening on one address (the session's: 127.0.0.1) without a public
    URL, websocketUrl and attachment links both name that address, whatever Host says;
    they had differed (attachment links followed Host)."""
    headers = {**server.headers(), "Host": "elsewhere.example"}
    created = http.post(COLLECTION, json={"userId": "u1"}, headers=headers)
    assert created.status_code == 201, created.text
    cid = created.json()["conversationId"]
    payload = {"base64Content": "aGk=", "fileName": "a.txt", "contentType": "text/plain"}
    uploaded = http.post(
        f"{COLLECTION}/{cid}/agent-attachments/base64", json=payload, headers=headers
    )
    assert uploaded.status_code == 200, uploaded.text
    listed = http.get(f"{COLLECTION}/{cid}/attachments", headers=headers).json()
    host = server.base_url.removeprefix("http://")
    assert created.json()["websocketUrl"].startswith(f"ws://{host}/v1/Conversations/{cid}/ws?")
    for url in (uploaded.json()["url"], listed[0]["url"]):
        assert url.startswith(f"http://{host}/v1/attachments/"), url
