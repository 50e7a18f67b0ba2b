"""Problem documents (RFC 9457): the members every error carries."""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
from contextlib import closing

import asyncpg
import pytest

from airia_server.api.openapi import openapi_document
from airia_server.api.problems import problem_body, unavailable_response
from airia_server.storage.blobs import BlobDiskError
from airia_server.storage.outages import DatabaseUnavailable, Outage


def test_a_problem_always_names_its_type_and_leaves_out_empty_members() -> None:
    body = json.loads(problem_body(404, "Conversation not found", "Conversation x", None))
    assert body == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "Conversation x",
        "message": "Conversation not found",
    }


def test_extra_members_join_the_problem() -> None:
    errors = [{"field": "userId", "message": "required"}]
    body = json.loads(problem_body(422, "Invalid", "Invalid", "/v1/Conversations", errors=errors))
    assert body["type"] == "about:blank" and body["instance"] == "/v1/Conversations"
    assert body["errors"] == errors


def test_the_document_says_type_is_always_there() -> None:
    schema = openapi_document()["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "message"} <= set(schema["required"])


def _sqlite_error(sql: str) -> sqlite3.Error:
    return _sqlite_error_on(sqlite3.connect(":memory:"), sql)


def _sqlite_error_on(conn: sqlite3.Connection, sql: str) -> sqlite3.Error:
    """What `sql` raises on `conn`, which is then closed (Python 3.13 warns about a
    connection collected open)."""
    with closing(conn):
        try:
            conn.execute(sql)
        except sqlite3.Error as exc:
            return exc
    raise AssertionError(f"{sql} did not fail")


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.ReadOnlySQLTransactionError("a standby"),  # 25006
        asyncpg.ConnectionFailureError("gone"),  # class 08
        asyncpg.TooManyConnectionsError("full"),  # class 53
        asyncpg.CannotConnectNowError("starting up"),  # class 57
        asyncpg.AdminShutdownError("terminated"),
        asyncpg.InvalidCatalogNameError("no database"),
        asyncpg.UndefinedTableError('relation "conversations" does not exist'),  # empty
        asyncpg.SerializationError("could not serialize access"),  # 40001
        asyncpg.DeadlockDetectedError("deadlock detected"),  # 40P01
        asyncpg.InterfaceError("cannot call Connection.fetch(): connection is closed"),
        asyncpg.InterfaceError("pool is closing"),
        asyncpg.InternalClientError("cannot switch to state 11"),
        DatabaseUnavailable(Outage.AWAY, "unreachable: ObjectNotInPrerequisiteStateError"),
        _sqlite_error("SELECT * FROM conversations"),  # no such table
        # Before Python 3.11 no result code comes with the error: its message tells.
        sqlite3.OperationalError("database is locked"),
        sqlite3.OperationalError("no such table: conversations"),
    ],
    ids=type,
)
def test_a_database_that_cannot_serve_now_is_503_with_retry_after(exc: Exception) -> None:
    response = unavailable_response(exc, "/v1/Conversations")
    assert response is not None and response.status_code == 503
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.PostgresSyntaxError("a typo"),
        asyncpg.UndefinedColumnError("a typo"),
        asyncpg.UniqueViolationError("a missed conflict"),
        asyncpg.DataError("an argument of the wrong type"),
        # 55000 outside connecting is a bug (currval before nextval, and the like)
        asyncpg.ObjectNotInPrerequisiteStateError("lastval is not yet defined"),
        _sqlite_error("SELEC 1"),
        _sqlite_error("SELECT nope"),
        # A table name misspelt is no missing schema.
        asyncpg.UndefinedTableError('relation "conversatons" does not exist'),
        _sqlite_error("SELECT * FROM conversatons"),
        sqlite3.OperationalError("no such table: conversatons"),
        sqlite3.OperationalError('near "SELEC": syntax error'),  # as before Python 3.11
        # asyncpg's own errors for what the code did wrong.
        asyncpg.InterfaceError("the server expects 2 arguments for this query, 1 was passed"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        ValueError("a bug"),
    ],
    ids=type,
)
def test_a_bug_is_no_outage(exc: Exception) -> None:
    """It stays a 500 (logged with its traceback by the middleware), never a 503 that
    tells clients to wait it out."""
    assert unavailable_response(exc, "/v1/Conversations") is None


def _full_sqlite_error() -> sqlite3.Error:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (x)")
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    return _sqlite_error_on(conn, "INSERT INTO t SELECT zeroblob(100000)")


@pytest.mark.parametrize(
    "exc",
    [
        _full_sqlite_error(),  # "database or disk is full"
        asyncpg.DiskFullError("could not extend file"),
        OSError(errno.ENOSPC, "No space left on device"),  # attachment bytes
    ],
    ids=type,
)
def test_a_full_disk_is_507_not_a_retry_shortly(exc: Exception) -> None:
    """It was a 503 saying a backend "did not answer; retry shortly": waiting does not
    free a disk."""
    response = unavailable_response(exc, "/v1/Conversations")
    assert response is not None and response.status_code == 507
    assert "retry-after" not in response.headers
    assert b"disk is full" in response.body


async def _answer_of(app, caplog: pytest.LogCaptureFixture) -> tuple[int, list]:
    from airia_server.api.middleware import RequestContextMiddleware

    from .asgi import http_scope

    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    middleware = RequestContextMiddleware(app, access_log_enabled=False)
    with caplog.at_level(logging.INFO, logger="airia_server"):
        await middleware(http_scope("GET", "/v1/Conversations/feed"), receive, send)
    records = [r for r in caplog.records if r.name == "airia_server.api"]
    return sent[0]["status"], records


@pytest.mark.parametrize(
    "exc",
    [asyncpg.CannotConnectNowError("the database system is starting up"), ConnectionRefusedError()],
    ids=type,
)
async def test_an_outage_is_logged_in_one_line_per_request_not_as_an_unhandled_error(
    exc: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    """Each request of a database outage wrote an ERROR "unhandled error" with a 4 KB
    traceback; the 503 is the answer, and a warning line says why."""

    async def app(scope, receive, send):
        raise exc

    status, records = await _answer_of(app, caplog)
    assert status == 503
    assert [(r.levelname, r.exc_info) for r in records] == [("WARNING", None)]
    assert "answered 503" in records[0].getMessage()


async def test_a_bug_is_still_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope, receive, send):
        raise KeyError("a bug")

    status, records = await _answer_of(app, caplog)
    assert status == 500
    assert [r.levelname for r in records] == ["ERROR"] and records[0].exc_info is not None
    assert "unhandled error on GET" in records[0].getMessage()


def test_only_attachment_storage_s_own_disk_is_said_to_be_not_writable() -> None:
    """An OSError of the blob store's disk says so (a read-only one is 507, no
    retry-shortly); one of a socket (the database, Redis) keeps its 503."""
    read_only = unavailable_response(BlobDiskError(errno.EROFS, "Read-only file system"), "/x")
    assert read_only is not None and read_only.status_code == 507
    assert b"Attachment storage is not writable (Read-only file system)" in read_only.body
    assert b"Redis" not in read_only.body and "retry-after" not in read_only.headers
    full = unavailable_response(BlobDiskError(errno.ENOSPC, "No space left on device"), "/x")
    assert full is not None and full.status_code == 507 and b"disk is full" in full.body
    socket = unavailable_response(ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "/x")
    assert socket is not None and socket.status_code == 503
    assert b"the database, or Redis" in socket.body


async def test_an_outage_after_the_answer_began_is_not_logged_as_a_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The 503 could no longer be sent; the line said "answered 503" all the same."""

    from airia_server.api.middleware import WRAPPED_SEND

    async def app(scope, receive, send):
        # As a response made outside the router (a stream, say) is sent.
        await scope[WRAPPED_SEND]({"type": "http.response.start", "status": 200, "headers": []})
        raise TimeoutError()  # no words of its own

    status, records = await _answer_of(app, caplog)
    assert status == 200
    assert [r.getMessage() for r in records] == [
        "GET /v1/Conversations/feed failed after its answer began: TimeoutError"
    ]
