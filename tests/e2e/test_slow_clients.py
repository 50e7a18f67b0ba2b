"""Slow clients: a request head that trickles in gets 408 and the connection closes."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import running_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    with running_server(
        tmp_path,
        AIRIA_BOOTSTRAP_API_KEY=None,
        AIRIA_JWT_SECRET=None,
        AIRIA_LOG_FORMAT=None,
        AIRIA_HEADER_READ_TIMEOUT_SECONDS="1",
    ) as server:
        yield server.port


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_a_trickling_head_gets_408_and_a_closed_connection(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        started = time.monotonic()
        answer = read_all(sock)  # ends when the server closes
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert b"application/problem+json" in head
    problem = json.loads(body)
    assert problem["status"] == 408
    assert "instance" not in problem  # no request arrived whole
    # Its own correlation id, in the header and the body alike.
    headers = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
    assert problem["correlationId"] == headers[b"x-correlation-id"].decode()
    assert len(problem["correlationId"]) == 32
    assert time.monotonic() - started < 8


def test_a_silent_connection_is_closed_too(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        assert read_all(sock).startswith(b"HTTP/1.1 408")


def test_a_prompt_client_may_pause_between_requests(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(5)
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):  # head and body may come apart
                chunk = sock.recv(4096)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")
            time.sleep(1.5)  # longer than the head timeout, within keep-alive
