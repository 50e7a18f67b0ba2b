"""Every limit is configurable and answered with the right 4xx problem: body size 413,
deep JSON 4xx, field lengths and list sizes 422, page sizes 422, headers 431, sockets
per user (403 at the handshake), stalled bodies 408, and per-minute rate limits per API
key and per user (429 with Retry-After), shared by two instances through Redis."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

import backends

from .support import (
    LiveServer,
    assert_problem,
    mint_jwt,
    start_server,
    stop_process,
)

pytestmark = pytest.mark.e2e

COLLECTION = "/v1/Conversations"
MAX_BODY = 256 * 1024
MAX_HEADERS = 4096
FEED_PAGE = 50
SOCKETS_PER_USER = 2
PER_KEY = 5
PER_USER = 4
SHARED_LIMIT = 6
TESTED: list[str] = []


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(
        tmp_path_factory.mktemp("limits"),
        AIRIA_MAX_BODY_BYTES=str(MAX_BODY),
        AIRIA_MAX_HEADER_BYTES=str(MAX_HEADERS),
        AIRIA_BODY_READ_TIMEOUT_SECONDS="1",
        AIRIA_WS_MAX_SOCKETS_PER_USER=str(SOCKETS_PER_USER),
        AIRIA_FEED_MAX_PAGE_SIZE=str(FEED_PAGE),
    )
    yield server
    stop_process(server.process)


@pytest.fixture
def http(limited: LiveServer) -> Iterator[httpx.Client]:
    with limited.client() as client:
        yield client


def new_conversation(http: httpx.Client, server: LiveServer) -> str:
    response = http.post(COLLECTION, json={"userId": "alice"}, headers=server.headers())
    assert response.status_code == 201, response.text
    return response.json()["conversationId"]


def expect(name: str, response: httpx.Response, status: int, field: str | None = None) -> dict:
    body = assert_problem(response, status)
    if field is not None:
        assert any((e.get("field") or "").startswith(field) for e in body.get("errors", [])), body
    TESTED.append(f"{name}: {status}")
    return body


def test_body_over_the_limit_is_413_declared_or_streamed(
    http: httpx.Client, limited: LiveServer
) -> None:
    big = {"userId": "alice", "title": "x" * MAX_BODY}
    expect("body over the limit", http.post(COLLECTION, json=big, headers=limited.headers()), 413)

    def chunks() -> Iterator[bytes]:
        yield b'{"userId": "alice", "title": "'
        for _ in range(MAX_BODY // 8192 + 2):
            yield b"x" * 8192
        yield b'"}'

    headers = {**limited.headers(), "Content-Type": "application/json"}
    response = http.post(COLLECTION, content=chunks(), headers=headers)
    expect("streamed body over the limit", response, 413)
    cid = new_conversation(http, limited)
    response = http.post(
        f"{COLLECTION}/{cid}/messages", json={"message": "y" * MAX_BODY}, headers=limited.headers()
    )
    expect("message body over the limit", response, 413)
    # Just under the limit is fine (a message of 100,000 characters fits).
    response = http.post(
        f"{COLLECTION}/{cid}/messages", json={"message": "y" * 100_000}, headers=limited.headers()
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("depth", [1_000, 50_000])
def test_deeply_nested_json_is_a_client_error(
    http: httpx.Client, limited: LiveServer, depth: int
) -> None:
    headers = {**limited.headers(), "Content-Type": "application/json"}
    cid = new_conversation(http, limited)
    bodies = {
        "top level": "[" * depth + "]" * depth,
        "in a field": '{"userId": "alice", "title": ' + "[" * depth + "]" * depth + "}",
        "objects in an unknown field": '{"userId": "alice", "x": '
        + '{"a": ' * depth
        + "1"
        + "}" * depth
        + "}",
        "in dataSourceFiles": '{"userId": "alice", "dataSourceFiles": {"a": '
        + "[" * depth
        + "]" * depth
        + "}}",
    }
    wrong = []
    for name, body in bodies.items():
        paths = (COLLECTION, f"{COLLECTION}/{cid}/messages", f"{COLLECTION}/{cid}/share")
        for path in paths:
            response = http.post(path, content=body.encode(), headers=headers)
            if not 400 <= response.status_code < 500:
                wrong.append(f"{name} to {path.replace(cid, '{id}')}: {response.status_code}")
                continue
            assert_problem(response, response.status_code)
            TESTED.append(f"JSON nested {depth} deep {name}: {response.status_code}")
    assert not wrong, wrong


@pytest.mark.parametrize(
    "name, body, field",
    [
        ("userId of 256 characters", {"userId": "u" * 256}, "userId"),
        ("empty userId", {"userId": ""}, "userId"),
        ("title of 501 characters", {"userId": "a", "title": "t" * 501}, "title"),
        ("deploymentId of 256", {"userId": "a", "deploymentId": "d" * 256}, "deploymentId"),
        (
            "dataSourceFiles with 101 sources",
            {"userId": "a", "dataSourceFiles": {f"s{i}": [] for i in range(101)}},
            "dataSourceFiles",
        ),
        (
            "dataSourceFiles with 1001 files in a source",
            {"userId": "a", "dataSourceFiles": {"s": [f"f{i}" for i in range(1001)]}},
            "dataSourceFiles",
        ),
        (
            "dataSourceFiles source name of 256",
            {"userId": "a", "dataSourceFiles": {"s" * 256: []}},
            "dataSourceFiles",
        ),
        (
            "dataSourceFiles file name of 1025",
            {"userId": "a", "dataSourceFiles": {"s": ["f" * 1025]}},
            "dataSourceFiles",
        ),
    ],
)
def test_field_lengths_on_create_are_422(
    http: httpx.Client, limited: LiveServer, name: str, body: dict, field: str
) -> None:
    expect(name, http.post(COLLECTION, json=body, headers=limited.headers()), 422, field)


def test_field_lengths_on_every_other_body_are_422(http: httpx.Client, limited: LiveServer) -> None:
    cid = new_conversation(http, limited)
    at = f"{COLLECTION}/{cid}"
    cases = [
        (
            "message of 100,001 characters",
            "POST",
            f"{at}/messages",
            {"message": "m" * 100_001},
            "message",
        ),
        ("21 images", "POST", f"{at}/messages", {"message": "m", "images": ["i"] * 21}, "images"),
        ("image URL of 4097", "POST", f"{at}/messages", {"images": ["i" * 4097]}, "images"),
        (
            "21 imageAttachmentIds",
            "POST",
            f"{at}/messages",
            {"message": "m", "imageAttachmentIds": [str(uuid.uuid4())] * 21},
            "imageAttachmentIds",
        ),
        (
            "message userId of 256",
            "POST",
            f"{at}/messages",
            {"message": "m", "userId": "u" * 256},
            "userId",
        ),
        ("updated title of 501", "PUT", at, {"title": "t" * 501}, "title"),
        ("updated empty title", "PUT", at, {"title": ""}, "title"),
        (
            "updated dataSourceFiles with 101 sources",
            "PUT",
            at,
            {"title": "t", "dataSourceFiles": {f"s{i}": [] for i in range(101)}},
            "dataSourceFiles",
        ),
        (
            "lastExecutionId of 256",
            "PUT",
            at,
            {"title": "t", "lastExecutionId": "e" * 256},
            "lastExecutionId",
        ),
        ("shared userId of 256", "POST", f"{at}/share", {"userId": "u" * 256}, "userId"),
        ("typing userId of 256", "POST", f"{at}/typing", {"userId": "u" * 256}, "userId"),
        (
            "externalSystem of 51",
            "POST",
            f"{at}/external-identities",
            {"externalSystem": "s" * 51, "externalChannelId": "c", "externalThreadId": "t"},
            "externalSystem",
        ),
        (
            "externalThreadId of 256",
            "POST",
            f"{at}/external-identities",
            {"externalSystem": "slack", "externalChannelId": "c", "externalThreadId": "t" * 256},
            "externalThreadId",
        ),
        (
            "upload fileName of 256",
            "POST",
            f"{at}/agent-attachments/base64",
            {"base64Content": "eA==", "fileName": "f" * 256},
            "fileName",
        ),
    ]
    for name, method, path, body, field in cases:
        response = http.request(method, path, json=body, headers=limited.headers())
        expect(name, response, 422, field)


def test_page_sizes_out_of_range_are_422(http: httpx.Client, limited: LiveServer) -> None:
    cid = new_conversation(http, limited)
    feed = f"{COLLECTION}/feed"
    ok = http.get(feed, params={"PageSize": FEED_PAGE}, headers=limited.headers())
    assert ok.status_code == 200, ok.text
    for value in ("0", "-1", str(FEED_PAGE + 1), "1e3", "ten"):
        response = http.get(feed, params={"PageSize": value}, headers=limited.headers())
        expect(f"feed PageSize={value}", response, 422, "PageSize")
    response = http.get(feed, params={"PageNumber": "0"}, headers=limited.headers())
    expect("feed PageNumber=0", response, 422, "PageNumber")
    messages = f"{COLLECTION}/{cid}/messages"
    assert http.get(messages, params={"limit": 200}, headers=limited.headers()).status_code == 200
    for value in ("0", "201", "x"):
        response = http.get(messages, params={"limit": value}, headers=limited.headers())
        expect(f"messages limit={value}", response, 422, "limit")


def test_headers_over_the_limit_are_431(http: httpx.Client, limited: LiveServer) -> None:
    headers = {**limited.headers(), "X-Padding": "p" * MAX_HEADERS}
    expect("one header over the limit", http.get(f"{COLLECTION}/feed", headers=headers), 431)
    many = {**limited.headers(), **{f"X-Pad-{i}": "p" * 100 for i in range(60)}}
    expect("many headers over the limit", http.get("/healthz", headers=many), 431)
    assert http.get("/healthz", headers={"X-Padding": "p" * 1000}).status_code == 200


def test_a_head_of_endless_small_lines_is_431_before_it_ends(limited: LiveServer) -> None:
    """The limit holds while the head arrives, not only once it is whole: the parser
    keeps every header line until the blank one, and endless small lines (well within
    the head deadline) used to take hundreds of MB before the 431."""
    parts = urlsplit(limited.base_url)
    lines = b"a: b\r\n" * 10_000
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode())
        try:
            while sent < 64 << 20:  # never the blank line
                sock.sendall(lines)
                sent += len(lines)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    assert sent < 64 << 20, "the server read 64 MiB of one request head"
    assert received.startswith(b"HTTP/1.1 431"), received[:300]
    assert b"application/problem+json" in received.partition(b"\r\n\r\n")[0]
    TESTED.append("a head of endless small header lines: 431 while it arrives")


def test_a_stalled_body_is_408(limited: LiveServer) -> None:
    parts = urlsplit(limited.base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as sock:
        sock.sendall(
            (
                f"POST {COLLECTION} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"X-API-KEY: {limited.api_key}\r\nContent-Type: application/json\r\n"
                "Content-Length: 100\r\n\r\n"
            ).encode()
            + b'{"userId":'
        )
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)  # the server answers within its 1 s timeout
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received[:500]
    assert b"application/problem+json" in head.lower()
    problem = json.loads(body)
    assert problem["status"] == 408
    # The head had arrived: the answer names the request, and carries its own id.
    assert problem["instance"] == COLLECTION
    cid = re.search(rb"\r\nx-correlation-id: ([0-9a-f]{32})\r\n", head.lower())
    assert cid is not None and problem["correlationId"] == cid.group(1).decode(), head
    TESTED.append("stalled body (AIRIA_BODY_READ_TIMEOUT_SECONDS=1): 408")


def _open(stack: contextlib.ExitStack, url: str) -> ClientConnection | int:
    """An open socket (closed with `stack`), or the status its handshake was refused with."""
    try:
        return stack.enter_context(connect(url, open_timeout=10, close_timeout=5))
    except InvalidStatus as exc:
        return exc.response.status_code


def test_sockets_per_user_over_the_limit_are_refused(
    http: httpx.Client, limited: LiveServer
) -> None:
    user = f"u_{uuid.uuid4().hex[:8]}"
    as_user = limited.bearer(mint_jwt(user))
    cids = [
        http.post(COLLECTION, json={"userId": user}, headers=as_user).json()["conversationId"]
        for _ in range(2)
    ]

    def url(cid: str) -> str:
        got = http.get(f"{COLLECTION}/{cid}/websocket-url", headers=as_user)
        return got.json()["websocketUrl"]

    stack = contextlib.ExitStack()
    opened = [_open(stack, url(cids[n % 2])) for n in range(SOCKETS_PER_USER)]
    try:
        assert all(isinstance(ws, ClientConnection) for ws in opened), opened
        assert _open(stack, url(cids[0])) == 403
        with pytest.raises(InvalidStatus) as refused:
            stack.enter_context(connect(url(cids[1]), open_timeout=10, close_timeout=5))
        problem = json.loads(refused.value.response.body)
        assert problem["status"] == 403, problem
        assert "AIRIA_WS_MAX_SOCKETS_PER_USER" in problem["detail"], problem
        TESTED.append(f"socket {SOCKETS_PER_USER + 1} of one user: 403")
        # Another user, and the API key's tickets, are not counted against this user.
        other = _open(
            stack,
            http.get(f"{COLLECTION}/{cids[0]}/websocket-url", headers=limited.headers()).json()[
                "websocketUrl"
            ],
        )
        assert isinstance(other, ClientConnection)
        other.close()
        # A socket closed frees its place.
        opened.pop().close()
        deadline = time.monotonic() + 10
        while isinstance(again := _open(stack, url(cids[0])), int) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert isinstance(again, ClientConnection), again
        opened.append(again)
    finally:
        stack.close()


def test_sockets_of_users_whose_tenant_and_name_join_alike_are_counted_apart(
    http: httpx.Client, limited: LiveServer
) -> None:
    """User `b:c` of tenant `…a` and user `c` of tenant `…a:b`: joined with ':' both
    read the same, and one's open sockets refused the other's."""
    tenant = f"t{uuid.uuid4().hex[:8]}"
    first = limited.bearer(mint_jwt("b:c", tenant))
    second = limited.bearer(mint_jwt("c", f"{tenant}:b"))

    def url(headers: dict[str, str], user: str) -> str:
        created = http.post(COLLECTION, json={"userId": user}, headers=headers)
        assert created.status_code == 201, created.text
        return created.json()["websocketUrl"]

    stack = contextlib.ExitStack()
    try:
        for _ in range(SOCKETS_PER_USER):
            assert isinstance(_open(stack, url(first, "b:c")), ClientConnection)
        assert _open(stack, url(first, "b:c")) == 403
        assert isinstance(_open(stack, url(second, "c")), ClientConnection)
        TESTED.append("sockets of users whose tenant:user read alike: counted apart")
    finally:
        stack.close()


# --- rate limits ----------------------------------------------------------------------


def wait_for_fresh_window(room: float = 10.0) -> None:
    """Windows are calendar minutes: start a count with `room` seconds left in one."""
    left = 60 - time.time() % 60
    if left < room:
        time.sleep(left + 0.05)


def assert_limited(response: httpx.Response, name: str) -> None:
    expect(name, response, 429)
    retry = int(response.headers["Retry-After"])
    assert 1 <= retry <= 61, retry


def test_rate_limits_per_key_and_per_user(tmp_path: Path) -> None:
    server = start_server(
        tmp_path, AIRIA_RATE_LIMIT_PER_KEY=str(PER_KEY), AIRIA_RATE_LIMIT_PER_USER=str(PER_USER)
    )
    try:
        other_key = server.create_api_key("default")
        with server.client() as http:
            wait_for_fresh_window()
            feed = f"{COLLECTION}/feed"
            for _ in range(PER_KEY):
                assert http.get(feed, headers=server.headers()).status_code == 200
            assert_limited(
                http.get(feed, headers=server.headers()), f"request {PER_KEY + 1} of a key"
            )
            # The limit is per key: another key of the same tenant is not affected.
            assert http.get(feed, headers=server.headers(other_key)).status_code == 200
            # A POST with an Idempotency-Key is one request, though both the key check
            # and the handler ask who is calling.
            keyed = server.create_api_key("default")
            for i in range(PER_KEY + 1):
                response = http.post(
                    COLLECTION,
                    json={"userId": "u"},
                    headers={**server.headers(keyed), "Idempotency-Key": f"once-{i}"},
                )
                if i < PER_KEY:
                    assert response.status_code == 201, (i, response.text)
            assert_limited(response, f"idempotent POST {PER_KEY + 1} of a key")
            alice = server.bearer(mint_jwt("alice"))
            for _ in range(PER_USER):
                assert http.get(feed, headers=alice).status_code == 200
            # Per user, whatever the token: a fresh token for alice counts as alice.
            assert_limited(
                http.get(feed, headers=server.bearer(mint_jwt("alice", ttl=999))),
                f"request {PER_USER + 1} of a user",
            )
            assert http.get(feed, headers=server.bearer(mint_jwt("bob"))).status_code == 200
            assert (
                http.get(feed, headers=server.bearer(mint_jwt("alice", "acme"))).status_code == 200
            )
            # No credentials, health checks: not limited, never 429.
            assert http.get("/healthz").status_code == 200
    finally:
        stop_process(server.process)


def test_rate_limits_are_shared_between_instances_through_redis(tmp_path: Path) -> None:
    backends.require(backends.postgres_problem())
    backends.require(backends.redis_problem())
    database_url = backends.create_database_sync()
    servers: list[LiveServer] = []
    try:
        shared = dict(
            AIRIA_REDIS_URL=backends.REDIS_URL,
            AIRIA_REDIS_PREFIX=f"limits{uuid.uuid4().hex[:12]}",
            AIRIA_RATE_LIMIT_PER_KEY=str(SHARED_LIMIT),
            AIRIA_RATE_LIMIT_PER_USER=str(SHARED_LIMIT),
        )
        servers = [start_server(tmp_path / n, database_url=database_url, **shared) for n in "ab"]
        clients = [s.client() for s in servers]
        try:
            wait_for_fresh_window()
            for credentials in (servers[0].headers(), servers[0].bearer(mint_jwt("carol"))):
                statuses = [
                    clients[n % 2].get(f"{COLLECTION}/feed", headers=credentials).status_code
                    for n in range(SHARED_LIMIT)
                ]
                assert statuses == [200] * SHARED_LIMIT
                for client in clients:  # over the combined count on either instance
                    assert_limited(
                        client.get(f"{COLLECTION}/feed", headers=credentials),
                        f"request over {SHARED_LIMIT} split across two instances",
                    )
        finally:
            for client in clients:
                client.close()
    finally:
        for server in servers:
            stop_process(server.process)
        backends.drop_database_sync(database_url)


def test_the_server_logged_no_unhandled_error(limited: LiveServer) -> None:
    text = limited.stderr_text()
    assert "Traceback" not in text, text[text.index("Traceback") - 300 :][:3000]


def test_summary() -> None:
    print(f"\nlimits: {len(TESTED)} limits answered with the right status")
    for line in TESTED:
        print("  ", line)
