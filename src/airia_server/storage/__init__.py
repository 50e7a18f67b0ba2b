"""Storage backends behind one protocol (`Store`)."""

from __future__ import annotations

from airia_server.config import Settings
from airia_server.storage.base import Store


def open_store(settings: Settings) -> Store:
    """The store named by `AIRIA_DATABASE_URL` (not started yet)."""
    from airia_server.storage.sqlite import SqliteStore

    return SqliteStore(settings.sqlite_path, write_batch_max=settings.write_batch_max)


__all__ = ["Store", "open_store"]
