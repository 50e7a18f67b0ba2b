"""The WebSocket channel against clients that do not play by the protocol's spirit,
driven with raw frames: a message too large or in too many fragments is closed with
1009 at once, a ping flood from a client that reads nothing stops being read, an
upgrade request websockets cannot parse is answered and closed, and a text message
that is not UTF-8 is closed with 1007 and logged as the client's error."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from .support import LiveServer, running_server

pytestmark = pytest.mark.e2e

TIMEOUT = 10.0
TEXT, CONT, CLOSE, PING = 0x1, 0x0, 0x8, 0x9


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running_server(tmp_path_factory.mktemp("ws-frames")) as server:
        yield server


def socket_path(server: LiveServer) -> str:
    """The path and query of a new conversation's `websocketUrl`."""
    with server.client() as http:
        response = http.post("/v1/Conversations", json={"userId": "u"}, headers=server.headers())
        assert response.status_code == 201, response.text
    url = urlsplit(response.json()["websocketUrl"])
    return f"{url.path}?{url.query}"


def upgrade_request(path: str, *extra: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """A client frame, masked with a zero key (so the payload goes as it is)."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", first, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    return head + b"\0\0\0\0" + payload


def open_socket(server: LiveServer, **options: int) -> socket.socket:
    """A WebSocket, open: the 101 read, nothing after it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    for option, value in options.items():
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, option), value)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(upgrade_request(socket_path(server)))
    head = b""
    while b"\r\n\r\n" not in head:
        byte = sock.recv(1)
        assert byte, head
        head += byte
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def close_code(sock: socket.socket) -> int | None:
    """The code of the server's close frame, skipping the frames before it; None if the
    connection ends without one."""
    data = b""
    while True:
        while len(data) >= 2:
            size, start = data[1] & 0x7F, 2
            if size == 126:
                size, start = struct.unpack("!H", data[2:4])[0], 4
            if len(data) < start + size:
                break
            if data[0] & 0x0F == CLOSE:
                return struct.unpack("!H", data[start : start + 2])[0]
            data = data[start + size :]
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        data += chunk


def send_until_closed(sock: socket.socket, unit: bytes, limit: int) -> int:
    """Send `unit` over and over, up to `limit` bytes: how many went before the server
    closed (or stopped reading for `TIMEOUT`)."""
    chunk = unit * max(1, 65536 // len(unit))
    sent = 0
    try:
        while sent < limit:
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass
    return sent


@pytest.mark.parametrize("size", [0, 1], ids=["empty", "one-byte"])
def test_a_message_in_endless_fragments_is_closed_with_1009(server: LiveServer, size: int) -> None:
    """The client's frames are small signals; a message that never ends (a text frame,
    then continuation frames for ever) is closed once it holds 16 KiB or 64 fragments,
    not parsed and held until the server runs out of time and memory."""
    with open_socket(server) as sock:
        sock.sendall(frame(TEXT, b"{", fin=False))
        sent = send_until_closed(sock, frame(CONT, b"a" * size, fin=False), 64 << 20)
        assert sent < 64 << 20, "the server read 64 MiB of one message"
        assert close_code(sock) == 1009


def test_large_fragments_are_closed_with_1009_past_16_kib(server: LiveServer) -> None:
    with open_socket(server) as sock:
        sock.sendall(frame(TEXT, b"[" + b" " * 4095, fin=False))
        for _ in range(4):
            sock.sendall(frame(CONT, b" " * 4096, fin=False))
        assert close_code(sock) == 1009


def test_a_5_mib_frame_is_refused_from_its_header(server: LiveServer) -> None:
    with open_socket(server) as sock:
        # A header announcing 5 MiB, and none of the payload: the close comes anyway.
        sock.sendall(struct.pack("!BBQ", 0x80 | TEXT, 0x80 | 127, 5 << 20) + b"\0\0\0\0")
        assert close_code(sock) == 1009


def test_a_ping_flood_from_a_client_that_reads_nothing_is_not_read_either(
    server: LiveServer,
) -> None:
    """Each ping is answered with a pong; a client that reads none of them would have the
    server queue pongs without end. Once what is buffered for it passes the transport's
    high-water mark, the server stops reading it: its sends stall."""
    rss_before = rss_mib(server)
    with open_socket(server, SO_RCVBUF=4096) as sock:
        sock.settimeout(3)
        sent = send_until_closed(sock, frame(PING, b"p" * 125), 96 << 20)
        assert sent < 96 << 20, "the server read 96 MiB of pings from a client that reads none"
        assert rss_mib(server) - rss_before < 40
    with server.client() as http:
        assert http.get("/healthz").status_code == 200


def rss_mib(server: LiveServer) -> float:
    status = Path(f"/proc/{server.process.pid}/status")
    if not status.exists():
        pytest.skip("SKIPPED PLATFORM: no /proc to read the server's memory from")
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize(
    "extra",
    [
        ["X-Pad: " + "x" * 9000],
        [f"X-Pad-{i}: x" for i in range(130)],
        ["Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: ??"],
    ],
    ids=["line-over-8-kib", "130-headers", "invalid-handshake"],
)
def test_an_upgrade_websockets_cannot_parse_is_answered_and_closed(
    server: LiveServer, extra: list[str]
) -> None:
    """websockets reads the upgrade request with limits of its own (8 KiB a line, 128
    headers), under the server's 16 KiB. Past them, the client used to get no answer,
    and the connection stayed open for good (no deadline applies after the upgrade)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(upgrade_request("/v1/Conversations/x/ws?ticket=x", *extra))
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes (or TIMEOUT: a failure)
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 4"), answer[:300]
    assert b"application/problem+json" in head.lower(), head
    status = 431 if extra[0].startswith("X-Pad") else 400
    assert head.startswith(b"HTTP/1.1 %d" % status), head
    assert json.loads(body)["status"] == status


def refusal(server: LiveServer, request: bytes) -> tuple[int, dict, bytes]:
    """The server's answer to an upgrade request it refuses: status, problem, head."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes (or TIMEOUT: a failure)
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), answer[:500]
    assert b"x-correlation-id: " in head.lower(), head
    problem = json.loads(body)
    status = int(head.split(b" ", 2)[1])
    assert problem["status"] == status and problem["detail"], problem
    return status, problem, head


def test_every_refused_upgrade_is_a_problem_and_no_server_error(server: LiveServer) -> None:
    """Each way an upgrade is refused is answered like any other bad request: with its
    4xx as problem+json, and not one ERROR line in the log. Upgrade headers over the
    16 KiB limit (in lines websockets itself accepts) were a 500 and an ERROR line;
    a path with no socket, or a bad ticket, an empty 403; a request websockets finds
    no valid upgrade, its plain text."""
    path = socket_path(server)
    base, _, ticket = path.partition("?")
    pads = [f"X-Pad-{i}: {'x' * 7000}" for i in range(3)]  # 21 KiB, each line under 8 KiB
    assert refusal(server, upgrade_request(path, *pads))[0] == 431

    status, problem, _ = refusal(server, upgrade_request("/healthz"))
    assert (status, problem["detail"]) == (404, "No route matches /healthz")
    assert refusal(server, upgrade_request("/v1/nowhere/ws"))[0] == 404

    for bad in (f"{base}?ticket=x.y", base):
        status, problem, _ = refusal(server, upgrade_request(bad))
        assert status == 403 and "ticket" in problem["detail"], problem
    status, problem, _ = refusal(server, upgrade_request(f"{base}?{ticket}&after=x"))
    assert status == 422 and "after" in problem["detail"], problem

    no_key = upgrade_request(path).replace(b"Sec-WebSocket-Key", b"X-Not-The-Key")
    status, problem, _ = refusal(server, no_key)
    assert status == 400 and "Sec-WebSocket-Key" in problem["detail"], problem
    other_version = upgrade_request(path).replace(b"Version: 13", b"Version: 8")
    assert refusal(server, other_version)[0] == 400

    with httpx.Client(base_url=server.base_url) as http:  # the log lines are written by now
        assert http.get("/healthz").status_code == 200
    log = server.stderr_text()
    assert '"level":"error"' not in log and "ERROR" not in log, log[-3000:]


def test_a_text_message_that_is_not_utf8_is_closed_with_1007_quietly(server: LiveServer) -> None:
    """A client's error, repeatable by anyone with a ticket: logged at INFO, without the
    ERROR and the traceback uvicorn logs for it."""
    with open_socket(server) as sock:
        sock.sendall(frame(TEXT, b'{"type": "\xff"}'))
        assert close_code(sock) == 1007
    with httpx.Client(base_url=server.base_url) as http:  # the log line is written by now
        assert http.get("/healthz").status_code == 200
    log = server.stderr_text()
    assert "not UTF-8" in log
    assert "Invalid UTF-8" not in log and "Traceback" not in log, log[-3000:]
