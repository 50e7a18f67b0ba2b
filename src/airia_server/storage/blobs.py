"""Where attachment bytes live: a directory on disk, or PostgreSQL for many instances.

Content is addressed by (tenant, SHA-256), so identical uploads in one tenant
are stored once. Uploads are first written to a staging file (hashed and
counted as they stream in), then handed to the store, which takes the file
over. Which blobs are referenced is the database's business (`blobs`,
`attachments`); a store only holds bytes. `sweep_staging` deletes the staging
files an upload cut off by a crash left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Protocol

_CHUNK = 256 * 1024


class MissingBlob(FileNotFoundError):
    """The database refers to content whose bytes the store does not hold, or not all
    of them: files deleted, or a blob directory (or `blob_chunks`) not restored with
    the database. An operator's matter; `where` names what was looked for."""

    def __init__(self, where: str) -> None:
        super().__init__(errno.ENOENT, "blob content missing", where)
        self.where = where


class BlobDiskError(OSError):
    """An OSError of attachment storage's own disk (the staging files, the blob
    directory), raised in place of the one the system gave with its errno: the API
    tells it apart from an OSError of a socket to the database or Redis, and says which
    disk cannot take the bytes (a full one, a read-only one)."""


@contextlib.contextmanager
def _on_blob_disk() -> Iterator[None]:
    try:
        yield
    except BlobDiskError:
        raise
    except OSError as exc:
        raise BlobDiskError(exc.errno, exc.strerror, exc.filename) from exc


class BlobStore(Protocol):
    staging_dir: Path
    """Uploads are staged here, on the same filesystem as the store where it has one."""

    async def put(self, tenant_id: str, sha256: str, staged: Path) -> None:
        """Keep the staged file's bytes under (tenant, sha256); the staged file is consumed."""

    def read(self, tenant_id: str, sha256: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end) of the blob."""

    async def check(self, tenant_id: str, sha256: str, size: int) -> None:
        """Raise MissingBlob unless all `size` bytes of the blob are there: called before
        a response starts, since one found wanting half way can only be cut off."""

    forget: Callable[[str, str], None] | None
    """Delete a blob's bytes (a file), for the store's sweep, which calls it before the
    deletion of the blob's row commits (`Store.sweep_blobs`); None where the bytes are
    rows beside it, which the sweep deletes in the same statement."""

    async def exists(self, tenant_id: str, sha256: str) -> bool: ...


def _tenant_dir(tenant_id: str) -> str:
    # Tenant names are caller-chosen text: never let one become a path.
    return hashlib.sha256(tenant_id.encode()).hexdigest()[:24]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemBlobStore:
    """`<root>/<tenant hash>/<sha[:2]>/<sha>`, written by atomic rename after fsync."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging_dir = root / ".staging"
        self.staging_dir.mkdir(parents=True, exist_ok=True)

    def _path(self, tenant_id: str, sha256: str) -> Path:
        return self.root / _tenant_dir(tenant_id) / sha256[:2] / sha256

    async def put(self, tenant_id: str, sha256: str, staged: Path) -> None:
        await asyncio.to_thread(self._put, tenant_id, sha256, staged)

    def _put(self, tenant_id: str, sha256: str, staged: Path) -> None:
        target = self._path(tenant_id, sha256)
        if target.exists():
            staged.unlink(missing_ok=True)
            return
        with _on_blob_disk():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
            _fsync_dir(target.parent)

    async def read(self, tenant_id: str, sha256: str, start: int, end: int) -> AsyncIterator[bytes]:
        with open(self._path(tenant_id, sha256), "rb") as handle:
            handle.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = await asyncio.to_thread(handle.read, min(_CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk

    async def check(self, tenant_id: str, sha256: str, size: int) -> None:
        path = self._path(tenant_id, sha256)

        def held() -> int:
            # Opened, not only looked at: a file this process may not read (a restore
            # with the wrong owner), a directory in its place, a broken disk fail here
            # rather than once the response has begun.
            with open(path, "rb") as handle:
                return os.fstat(handle.fileno()).st_size

        try:
            length = await asyncio.to_thread(held)
        except FileNotFoundError:
            raise MissingBlob(str(path)) from None
        except OSError as exc:
            raise MissingBlob(f"{path} (cannot be read: {exc.strerror or exc})") from None
        if length < size:  # cut short (a copy that did not finish): as good as missing
            raise MissingBlob(f"{path} (holds {length} of {size} bytes)")

    def forget(self, tenant_id: str, sha256: str) -> None:
        self._path(tenant_id, sha256).unlink(missing_ok=True)

    async def exists(self, tenant_id: str, sha256: str) -> bool:
        return self._path(tenant_id, sha256).exists()


class PostgresBlobStore:
    """Blob bytes in `blob_chunks` (1 MiB rows), so every instance reads every file."""

    chunk_size = 1024 * 1024
    forget = None  # the sweep deletes a blob's chunks with its row

    def __init__(self, pool_owner, staging_dir: Path | None = None) -> None:
        self._owner = pool_owner  # the PostgresStore, whose pool is opened at start
        self.staging_dir = staging_dir or Path(tempfile.gettempdir()) / "airia-uploads"
        self.staging_dir.mkdir(parents=True, exist_ok=True)

    async def put(self, tenant_id: str, sha256: str, staged: Path) -> None:
        try:
            if await self.exists(tenant_id, sha256):
                return
            async with self._owner.pool.acquire() as conn, conn.transaction():
                with open(staged, "rb") as handle:
                    seq = 0
                    while True:
                        data = await asyncio.to_thread(handle.read, self.chunk_size)
                        if not data and seq > 0:
                            break
                        await conn.execute(
                            "INSERT INTO blob_chunks (tenant_id, sha256, seq, data) "
                            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                            tenant_id,
                            sha256,
                            seq,
                            data,
                        )
                        seq += 1
                        if not data:
                            break
        finally:
            staged.unlink(missing_ok=True)

    async def read(self, tenant_id: str, sha256: str, start: int, end: int) -> AsyncIterator[bytes]:
        size = self.chunk_size
        for seq in range(start // size, (max(end, 1) - 1) // size + 1):
            data = await self._owner.pool.fetchval(
                "SELECT data FROM blob_chunks WHERE tenant_id = $1 AND sha256 = $2 AND seq = $3",
                tenant_id,
                sha256,
                seq,
            )
            if data is None:  # deleted since `check`: cut off, rather than end short
                raise MissingBlob(self._where(tenant_id, sha256, seq))
            lo = max(start - seq * size, 0)
            hi = min(end - seq * size, len(data))
            if lo < hi:
                yield bytes(data[lo:hi])

    async def check(self, tenant_id: str, sha256: str, size: int) -> None:
        # An empty blob is one empty chunk. A chunk's length is read from its header
        # (`octet_length` of a stored bytea does not read its data), so a chunk cut
        # short counts as missing too, as a short file does.
        expected = max(-(-size // self.chunk_size), 1)
        held, length = await self._owner.pool.fetchrow(
            "SELECT count(*), coalesce(sum(octet_length(data)), 0) FROM blob_chunks "
            "WHERE tenant_id = $1 AND sha256 = $2 AND seq < $3",
            tenant_id,
            sha256,
            expected,
        )
        if held < expected or length < size:
            raise MissingBlob(
                f"{self._where(tenant_id, sha256)} ({held} of {expected} chunks, "
                f"{length} of {size} bytes)"
            )

    @staticmethod
    def _where(tenant_id: str, sha256: str, seq: int | None = None) -> str:
        chunk = "" if seq is None else f" seq {seq}"
        return f"blob_chunks tenant {tenant_id!r} sha256 {sha256}{chunk}"

    async def exists(self, tenant_id: str, sha256: str) -> bool:
        found = await self._owner.pool.fetchval(
            "SELECT 1 FROM blob_chunks WHERE tenant_id = $1 AND sha256 = $2 AND seq = 0",
            tenant_id,
            sha256,
        )
        return found is not None


STAGING_ABANDONED_SECONDS = 600
"""A staging file untouched this long belongs to no upload: a live one writes its file as
the bytes arrive, and one that stalls is refused long before (the body read timeout)."""


def sweep_staging(staging_dir: Path, untouched_since: float) -> int:
    """Delete the staging files (`upload-*`) not written since `untouched_since` (a
    `time.time()`): what uploads cut off by a crash left, which no blob references and
    so no blob sweep finds. Returns how many went."""
    removed = 0
    for path in staging_dir.glob("upload-*"):
        try:
            if path.stat().st_mtime < untouched_since:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # finished, or swept by another instance
            continue
    return removed


class StagedUpload:
    """A staging file that hashes and counts what is written, refusing past `limit`."""

    def __init__(self, staging_dir: Path, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._hash = hashlib.sha256()
        with _on_blob_disk():
            fd, name = tempfile.mkstemp(dir=staging_dir, prefix="upload-")
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise OverflowError(self.limit)
        self._hash.update(data)
        with _on_blob_disk():
            self._file.write(data)

    def sha256(self) -> str:
        return self._hash.hexdigest()

    def finish(self) -> str:
        """Flush to disk; the SHA-256 of the content."""
        if not self._file.closed:
            with _on_blob_disk():
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
        return self._hash.hexdigest()

    def discard(self) -> None:
        # Closing flushes what is buffered, and on a full disk fails again (the file
        # is closed all the same): the bytes are thrown away, the file must go.
        with contextlib.suppress(OSError):
            self._file.close()
        self.path.unlink(missing_ok=True)
