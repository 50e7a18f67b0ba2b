"""Which database failures mean the database cannot serve now, not that the server is
broken.

The API answers them 503 with Retry-After (507 for a full disk): the request was fine
and may be sent again. They are told apart by what the database says (PostgreSQL's
SQLSTATE class, SQLite's result code), never by a list of exception classes, which
missed every kind it did not name (a read-only standby, a database refusing
connections, one recreated empty) and answered them 500. Anything not recognised
here stays a 500, so a bug (bad SQL, a wrong argument) is never taken for an outage.
"""

from __future__ import annotations

import enum
import sqlite3

import asyncpg


class Outage(enum.Enum):
    AWAY = "away"
    """Cannot be reached, refuses connections, is shutting down or out of connections."""
    READ_ONLY = "read-only"
    """Refuses writes: a standby (during a failover), or default_transaction_read_only."""
    NO_SCHEMA = "no schema"
    """This server's tables are missing: a database recreated empty, or never migrated."""
    DISK_FULL = "disk full"


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
    "42P01": Outage.NO_SCHEMA,  # undefined_table: every table is made by a migration
    "53100": Outage.DISK_FULL,
}

# SQLite, by primary result code (https://sqlite.org/rescode.html).
_SQLITE_ERROR, _SQLITE_READONLY, _SQLITE_FULL = 1, 8, 13


def outage_of(exc: BaseException) -> Outage | None:
    """What `exc` says of the database, or None when it is no outage (a bug: a 500)."""
    if isinstance(exc, DatabaseUnavailable):
        return exc.outage
    if isinstance(exc, asyncpg.PostgresError):
        code = exc.sqlstate or ""
        return _PG_CODES.get(code) or _PG_CLASSES.get(code[:2])
    if isinstance(exc, asyncpg.InterfaceError):
        # A connection closed under a query, a pool closing; not an argument the
        # code passed wrong (`DataError`) or a bad configuration.
        if isinstance(exc, (asyncpg.DataError, asyncpg.ClientConfigurationError)):
            return None
        return Outage.AWAY
    if isinstance(exc, asyncpg.InternalClientError):
        # asyncpg refusing a query on a connection the server has just ended: the
        # session's FATAL (57P01) came in while it was idle, and the socket's close
        # has not been seen yet.
        return Outage.AWAY
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11 and later
        if code is None:
            return Outage.AWAY
        code &= 0xFF
        if code == _SQLITE_FULL:
            return Outage.DISK_FULL
        if code == _SQLITE_READONLY:
            return Outage.READ_ONLY
        if code == _SQLITE_ERROR:  # bad SQL, unless it is the schema that is missing
            return Outage.NO_SCHEMA if "no such table" in str(exc) else None
        return Outage.AWAY  # locked, busy, cannot open, an I/O error
    return None
