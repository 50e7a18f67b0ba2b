"""The real `airia-server` process on a free port, shared by every e2e test of a session.

The server gets a fresh SQLite database, a known bootstrap API key and a JWT
secret, so tests can authenticate both ways and mint keys for other tenants
through the same command line an operator uses.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from .support import LiveServer, server_on


@pytest.fixture(scope="session", params=["sqlite", "postgres+redis"])
def live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The embedded default, then the scale-out deployment: every e2e test runs on both."""
    with server_on(request.param, tmp_path_factory.mktemp("server")) as server:
        yield server


@pytest.fixture
def server(live_server: LiveServer) -> LiveServer:
    """The session's server, checked to be still running before each test."""
    if live_server.process.poll() is not None:
        pytest.fail("airia-server died:\n" + live_server.stderr_text())
    return live_server


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture
def user_id() -> str:
    """A user id no other test uses, so feeds and counts are the test's own."""
    return f"user_{uuid.uuid4().hex[:12]}"
