"""The real servers the suite runs against besides SQLite: PostgreSQL and Redis.

`make test` uses them whenever they answer and says loudly when they do not;
with AIRIA_TEST_REQUIRE_SERVICES=1 (as `.ci/run` sets) an unreachable server
fails the run instead, so CI always proves every backend.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import socket
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "AIRIA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("AIRIA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRED = os.environ.get("AIRIA_TEST_REQUIRE_SERVICES") == "1"


def _run(coro):
    """Run a coroutine to the end from sync code, even inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@functools.cache
def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used, or None when it can."""

    async def probe() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=3)
        await conn.close()

    try:
        _run(probe())
    except Exception as exc:
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable ({exc!r})"
    return None


@functools.cache
def redis_problem() -> str | None:
    parts = urlsplit(REDIS_URL)
    try:
        with socket.create_connection((parts.hostname, parts.port or 6379), timeout=3) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(16).startswith(b"+PONG"):
                return f"Redis at {REDIS_URL} did not answer PING"
    except OSError as exc:
        return f"Redis at {REDIS_URL} is not reachable ({exc!r})"
    return None


def require(problem: str | None) -> None:
    """Skip (loudly) or, when the services are required, fail."""
    if problem is None:
        return
    if REQUIRED:
        pytest.fail(f"{problem}; AIRIA_TEST_REQUIRE_SERVICES=1 needs it")
    pytest.skip(f"SKIPPED BACKEND: {problem}")


def _database_url(name: str) -> str:
    parts = urlsplit(POSTGRES_ADMIN_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def create_database(options: str = "") -> str:
    """A new, empty database, made with CREATE DATABASE's `options`; its URL."""
    name = f"airia_test_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" {options}')
    finally:
        await conn.close()
    return _database_url(name)


async def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def alter_database(url: str, sql: str) -> None:
    """Run `sql` as the administrator, `{name}` standing for the database of `url`, then
    end that database's sessions, so the next connection made to it sees the change
    (`ALTER DATABASE ... SET` applies to new sessions only)."""
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(sql.format(name=f'"{name}"'))
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
    finally:
        await conn.close()


async def fetch(url: str, sql: str) -> list:
    """The first column of `sql`'s rows, run on the database of `url`."""
    conn = await asyncpg.connect(url)
    try:
        return [row[0] for row in await conn.fetch(sql)]
    finally:
        await conn.close()


def fetch_sync(url: str, sql: str) -> list:
    return _run(fetch(url, sql))


def alter_database_sync(url: str, sql: str) -> None:
    _run(alter_database(url, sql))


def create_database_sync() -> str:
    return _run(create_database())


def drop_database_sync(url: str) -> None:
    _run(drop_database(url))
