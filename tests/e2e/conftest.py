"""The real `airia-server` process on a free port, shared by every e2e test of a session.

The server gets a fresh SQLite database, a known bootstrap API key and a JWT
secret, so tests can authenticate both ways and mint keys for other tenants
through the same command line an operator uses.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import backends
import httpx
import pytest

from .support import (
    BOOTSTRAP_KEY,
    JWT_SECRET,
    LiveServer,
    clean_env,
    free_port,
    stop_process,
    wait_healthy,
)


@pytest.fixture(scope="session", params=["sqlite", "postgres+redis"])
def live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The embedded default, then the scale-out deployment: every e2e test runs on both."""
    root = tmp_path_factory.mktemp("server")
    db_path = root / "a.db"
    port = free_port()
    database_url = f"sqlite:///{db_path}"
    extra: dict[str, str] = {}
    if request.param == "postgres+redis":
        backends.require(backends.postgres_problem())
        backends.require(backends.redis_problem())
        database_url = backends.create_database_sync()
        request.addfinalizer(lambda: backends.drop_database_sync(database_url))
        extra["AIRIA_REDIS_URL"] = backends.REDIS_URL
    env = clean_env(
        AIRIA_DATABASE_URL=database_url,
        AIRIA_BLOB_DIR=str(root / "blobs"),
        AIRIA_BOOTSTRAP_API_KEY=BOOTSTRAP_KEY,
        AIRIA_JWT_SECRET=JWT_SECRET,
        AIRIA_LOG_FORMAT="text",
        **extra,
    )
    stderr_path = root / "server.stderr"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "airia_server",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(proc, base_url, stderr_path)
        yield LiveServer(
            base_url=base_url,
            api_key=BOOTSTRAP_KEY,
            env=env,
            db_path=db_path,
            stderr_path=stderr_path,
            process=proc,
        )
    finally:
        stop_process(proc)


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
