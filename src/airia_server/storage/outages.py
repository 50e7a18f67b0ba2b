"""Which database failures mean the database cannot serve now, not that the server is
broken.

The API answers them 503 with Retry-After (507 for a full disk): the request was fine
and may be sent again. They are told apart by what the database says (PostgreSQL's
SQLSTATE class, SQLite's result code), never by a list of exception classes, which
missed every kind it did not name (a read-only standby, a database refusing
connections, one recreated empty) and answered them 500. Anything not recognised
here stays a 500, so a bug (bad SQL, a wrong argument, a table name misspelt) is never
taken for an outage.
"""

from __future__ import annotations

import enum
import re
import sqlite3
from pathlib import Path

import asyncpg


class Outage(enum.Enum):
    AWAY = "away"
    """Cannot be reached, refuses connections, is shutting down or out of connections."""
    READ_ONLY = "read-only"
    """Refuses writes: a standby (during a failover), or default_transaction_read_only."""
    NO_SCHEMA = "no schema"
    """This server's tables are missing: a database recreated empty, or never migrated."""
    DISK_FULL = "disk full"
    BUSY = "busy"
    """The transaction was rolled back for another's sake (a deadlock, a serialization
    conflict): sent again, it goes through."""
    TIMED_OUT = "timed out"
    """A statement ran past `AIRIA_DATABASE_STATEMENT_TIMEOUT_SECONDS` (waiting on a
    lock, most often) and PostgreSQL cancelled it: rolled back, nothing was done."""


class DatabaseUnavailable(Exception):
    """Raised by a store itself: a connection could not be made, or its ping found
    the database unable to serve (`outage`). The message is for /readyz."""

    def __init__(self, outage: Outage, message: str) -> None:
        super().__init__(message)
        self.outage = outage


# PostgreSQL, by SQLSTATE (Appendix A of its manual): whole classes first, then codes.
_PG_CLASSES = {
    "08": Outage.AWAY,  # connection exception
    "53": Outage.AWAY,  # insufficient resources: too many connections, out of memory
    "57": Outage.AWAY,  # operator intervention: shutdown, crash, cannot connect now
}
_PG_CODES = {
    "25006": Outage.READ_ONLY,  # read_only_sql_transaction
    "3D000": Outage.AWAY,  # invalid_catalog_name: the database itself is gone
    "40001": Outage.BUSY,  # serialization_failure
    "40P01": Outage.BUSY,  # deadlock_detected
    "57014": Outage.TIMED_OUT,  # query_canceled: our statement_timeout
    "53100": Outage.DISK_FULL,
}

# asyncpg's own errors that mean the connection (or its pool) is gone; the rest of
# its InterfaceErrors are the code's (a wrong number of arguments, two operations at
# once on one connection).
_ASYNCPG_GONE = ("connection is closed", "connection was closed", "pool is clos")

# SQLite, by primary result code (https://sqlite.org/rescode.html), and by message
# before Python 3.11 (which does not give the code).
_SQLITE_ERROR, _SQLITE_READONLY, _SQLITE_FULL = 1, 8, 13
_SQLITE_MESSAGES = (
    ("database or disk is full", Outage.DISK_FULL),
    ("readonly database", Outage.READ_ONLY),
    ("database is locked", Outage.AWAY),
    ("database table is locked", Outage.AWAY),
    ("disk i/o error", Outage.AWAY),
    ("unable to open database", Outage.AWAY),
)

# The tables the migrations make: one of them missing is a schema that is not there
# (42P01, "no such table"); any other name missing is a misspelt query, a bug.
_OWN_TABLES = frozenset(["schema_migrations"]) | frozenset(
    name.lower()
    for sql in (Path(__file__).parent / "migrations").glob("*/*.sql")
    for name in re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", sql.read_text(), re.I)
)
_MISSING_TABLE = re.compile(
    r'relation "(?:\w+\.)?(\w+)" does not exist|no such table: (?:\w+\.)?(\w+)'
)


def _missing_own_table(exc: BaseException) -> Outage | None:
    found = _MISSING_TABLE.search(str(exc))
    name = found and (found.group(1) or found.group(2))
    return Outage.NO_SCHEMA if name and name.lower() in _OWN_TABLES else None


def outage_of(exc: BaseException) -> Outage | None:
    """What `exc` says of the database, or None when it is no outage (a bug: a 500)."""
    if isinstance(exc, DatabaseUnavailable):
        return exc.outage
    if isinstance(exc, asyncpg.PostgresError):
        code = exc.sqlstate or ""
        if code == "42P01":  # undefined_table
            return _missing_own_table(exc)
        return _PG_CODES.get(code) or _PG_CLASSES.get(code[:2])
    if isinstance(exc, asyncpg.InterfaceError):
        # A connection closed under a query, a pool closing; not a wrong argument.
        message = str(exc)
        return Outage.AWAY if any(gone in message for gone in _ASYNCPG_GONE) else None
    if isinstance(exc, asyncpg.InternalClientError):
        # asyncpg refusing a query on a connection the server has just ended: the
        # session's FATAL (57P01) came in while it was idle, and the socket's close
        # has not been seen yet.
        return Outage.AWAY
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11 and later
        if code is None:
            message = str(exc).lower()
            if "no such table" in message:
                return _missing_own_table(exc)
            return next((o for text, o in _SQLITE_MESSAGES if text in message), None)
        code &= 0xFF
        if code == _SQLITE_FULL:
            return Outage.DISK_FULL
        if code == _SQLITE_READONLY:
            return Outage.READ_ONLY
        if code == _SQLITE_ERROR:  # bad SQL, unless it is the schema that is missing
            return _missing_own_table(exc)
        return Outage.AWAY  # locked, busy, cannot open, an I/O error
    return None
