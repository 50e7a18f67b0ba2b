"""Problem documents (RFC 9457): the members every error carries."""

from __future__ import annotations

import errno
import json
import sqlite3
from contextlib import closing

import asyncpg
import pytest

from airia_server.api.openapi import openapi_document
from airia_server.api.problems import problem_body, unavailable_response
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
