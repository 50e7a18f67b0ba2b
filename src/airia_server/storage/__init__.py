"""Storage backends behind one protocol (`Store`)."""

from __future__ import annotations

from airia_server.config import Settings
from airia_server.storage.base import Store
from airia_server.storage.blobs import BlobStore, FilesystemBlobStore, PostgresBlobStore


def open_store(settings: Settings, *, serving: bool = False) -> Store:
    """The store named by `AIRIA_DATABASE_URL` (not started yet). `serving`: for the
    server's requests, whose statements PostgreSQL gives up after
    `AIRIA_DATABASE_STATEMENT_TIMEOUT_SECONDS`; the commands (an export's counts and
    sorts over every row, an import's last pass) may take longer, and have none."""
    if settings.is_postgres:
        from airia_server.storage.postgres import PostgresStore

        return PostgresStore(
            settings.database_url,
            min_pool=settings.database_pool_min,
            max_pool=settings.database_pool_max,
            connect_timeout=settings.database_connect_timeout_seconds,
            statement_timeout=settings.database_statement_timeout_seconds if serving else None,
        )
    from airia_server.storage.sqlite import SqliteStore

    return SqliteStore(settings.sqlite_path, write_batch_max=settings.write_batch_max)


def open_blob_store(settings: Settings, store: Store) -> BlobStore:
    kind = settings.blob_store
    if kind == "auto":
        kind = "database" if settings.is_postgres else "filesystem"
    if kind == "database":
        return PostgresBlobStore(store)
    return FilesystemBlobStore(settings.blob_dir)


def _latest() -> dict[str, int]:
    from airia_server.storage import postgres, sqlite

    return {"sqlite": sqlite.migrations()[-1][0], "postgres": postgres.migrations()[-1][0]}


LATEST_MIGRATION = _latest()
"""The newest schema version this code knows, per backend."""

__all__ = ["LATEST_MIGRATION", "BlobStore", "Store", "open_blob_store", "open_store"]
