"""Files going up and down, a chunk at a time.

``prepare_upload`` and ``Multipart`` do no network I/O: they name the file,
guess its type, measure what is left to send and frame the multipart body.
The readers and writers come in a sync and an async version; the async ones
hand each blocking ``read``/``write`` of a file to a thread, so a large upload
or download never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import mimetypes
import os
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Union

CHUNK_SIZE = 64 * 1024
NAME_MAX = 255
"""Bytes in one file name on most file systems (ext4, APFS; NTFS counts UTF-16 units)."""
DEFAULT_CONTENT_TYPE = "application/octet-stream"

FileInput = Union[str, "os.PathLike[str]", bytes, BinaryIO]
"""What ``upload_attachment`` accepts: a path, the bytes, or a binary file object."""
Destination = Union[str, "os.PathLike[str]", BinaryIO]
"""Where ``download_attachment`` writes: a path, or a writable binary file object."""


@dataclass
class Upload:
    file: IO[bytes]
    file_name: str
    content_type: str
    size: int | None
    """Bytes left to send, when known: then the request has a Content-Length."""
    owned: bool
    """Opened here from a path, so closed here too."""
    path: str | os.PathLike[str] | None = None
    """The path it was opened from: a retry opens it again."""
    start: int | None = None
    """Where the bytes to send begin, when the file can seek back there."""

    @property
    def can_rewind(self) -> bool:
        """Whether the bytes can be read again from the start, for a retry."""
        return self.path is not None or self.start is not None

    def rewind(self) -> None:
        """Get ready to read the same bytes again: re-open a path, seek anything else."""
        if self.path is not None:
            self.file.close()
            self.file = open(self.path, "rb")
        elif self.start is not None:
            self.file.seek(self.start)
        else:
            raise RuntimeError("this file object cannot seek, so it cannot be sent again")

    def close(self) -> None:
        if self.owned:
            self.file.close()


def _start(file: Any) -> int | None:
    """The current position of a file object that can seek back to it, else None."""
    try:
        if not file.seekable():
            return None
        return file.tell()
    except (AttributeError, OSError, ValueError, TypeError, io.UnsupportedOperation):
        return None


def _remaining(file: Any) -> int | None:
    """Bytes from the current position to the end, or None (pipes, sockets, wrappers)."""
    try:
        info = os.fstat(file.fileno())
        if stat.S_ISREG(info.st_mode):
            return max(0, info.st_size - file.tell())
    except (AttributeError, OSError, ValueError, TypeError, io.UnsupportedOperation):
        pass
    try:
        position = file.tell()
        end = file.seek(0, os.SEEK_END)
        file.seek(position)
        return max(0, end - position)
    except (AttributeError, OSError, ValueError, TypeError, io.UnsupportedOperation):
        return None


def prepare_upload(file: FileInput, file_name: str | None, content_type: str | None) -> Upload:
    """Open a path (never reading it), wrap bytes, or take a file object as it is."""
    owned = False
    path = None
    start: int | None = 0
    if isinstance(file, (bytes, bytearray, memoryview)):
        stream: Any = io.BytesIO(file)
        default_name = "file"
    elif isinstance(file, (str, os.PathLike)):
        stream = open(file, "rb")
        owned = True
        path = file
        default_name = Path(file).name
    elif callable(getattr(file, "read", None)):
        stream = file
        start = _start(file)
        name = getattr(file, "name", None)
        default_name = os.path.basename(name) if isinstance(name, str) else "file"
    else:
        raise TypeError(
            f"file must be a path, bytes or a binary file object, not {type(file).__name__}"
        )
    name = file_name or default_name or "file"
    guessed = mimetypes.guess_type(name)[0]
    return Upload(
        file=stream,
        file_name=name,
        content_type=content_type or guessed or DEFAULT_CONTENT_TYPE,
        size=_remaining(stream),
        owned=owned,
        path=path,
        start=start if path is None else None,
    )


def _quote(value: str) -> bytes:
    # A quoted-string (RFC 9110): backslash-escape ``"`` and ``\``, which the
    # server's parser (python-multipart) undoes; percent-encode control
    # characters, which would end the header line; send the rest as UTF-8.
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(f"%{ord(c):02X}" if ord(c) < 0x20 else c for c in escaped)
    return escaped.encode()


def boundary_for(idempotency_key: str) -> str:
    """A multipart boundary that is the same for the same key, so that repeating a
    call with your own key sends the same bytes (the server compares them).

    A hash of the key is as unlikely to occur in the file as a random boundary.
    """
    return hashlib.sha256(b"airia-multipart\0" + idempotency_key.encode()).hexdigest()[:32]


class Multipart:
    """The framing of a ``multipart/form-data`` body around one file part.

    Text fields come first, so the server knows them before the file arrives;
    the file's bytes go between ``head`` and ``tail``.
    """

    def __init__(
        self,
        upload: Upload,
        fields: dict[str, str],
        file_field: str = "file",
        boundary: str | None = None,
    ) -> None:
        self.boundary = boundary or os.urandom(16).hex()
        dash = f"--{self.boundary}\r\n".encode()
        head = b""
        for key, value in fields.items():
            head += dash + b'Content-Disposition: form-data; name="' + _quote(key) + b'"\r\n\r\n'
            head += value.encode() + b"\r\n"
        head += dash + b'Content-Disposition: form-data; name="' + _quote(file_field) + b'"'
        head += b'; filename="' + _quote(upload.file_name) + b'"\r\n'
        head += b"Content-Type: " + upload.content_type.encode("latin-1") + b"\r\n\r\n"
        self.head = head
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.size = upload.size

    @property
    def headers(self) -> dict[str, str]:
        """Content-Type; Content-Length too when the file's size is known (else chunked)."""
        headers = {"Content-Type": f"multipart/form-data; boundary={self.boundary}"}
        if self.size is not None:
            headers["Content-Length"] = str(len(self.head) + self.size + len(self.tail))
        return headers


def _checked(chunk: Any) -> bytes:
    if not isinstance(chunk, (bytes, bytearray, memoryview)):
        raise TypeError(f"file must be opened in binary mode; read() gave {type(chunk).__name__}")
    return bytes(chunk)


def _next_read(remaining: int | None) -> int:
    return CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)


def iter_multipart(body: Multipart, upload: Upload) -> Iterator[bytes]:
    """The body, reading the file a chunk at a time (never more than the size measured)."""
    yield body.head
    remaining = body.size
    while remaining is None or remaining > 0:
        chunk = _checked(upload.file.read(_next_read(remaining)))
        if not chunk:
            break
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk
    yield body.tail


async def aiter_multipart(body: Multipart, upload: Upload) -> AsyncIterator[bytes]:
    """``iter_multipart`` for the async client: each file read runs in a thread."""
    yield body.head
    in_memory = isinstance(upload.file, io.BytesIO)
    remaining = body.size
    while remaining is None or remaining > 0:
        size = _next_read(remaining)
        if in_memory:
            chunk = _checked(upload.file.read(size))
        else:
            chunk = _checked(await asyncio.to_thread(upload.file.read, size))
        if not chunk:
            break
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk
    yield body.tail


class ReplayableBody:
    """A request body that can be sent again when a request is retried, if it must.

    ``started`` turns true once the first byte is asked for; until then a retry
    is always possible (nothing was read). After that, ``replayable`` says
    whether the file can be read again from where the first attempt began.
    """

    def __init__(self, body: Multipart, upload: Upload) -> None:
        self.body = body
        self.upload = upload
        self.started = False

    @property
    def replayable(self) -> bool:
        return not self.started or self.upload.can_rewind


class MultipartStream(ReplayableBody):
    """The multipart body for the sync client; each iteration sends it whole.

    Only ``__iter__``: httpx then streams it and, seeing no generator, does not
    refuse to iterate it a second time.
    """

    def __iter__(self) -> Iterator[bytes]:
        if self.started:
            self.upload.rewind()
        self.started = True
        yield from iter_multipart(self.body, self.upload)


class AsyncMultipartStream(ReplayableBody):
    """The multipart body for the async client; each iteration sends it whole."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.started:
            if isinstance(self.upload.file, io.BytesIO):
                self.upload.rewind()
            else:
                await asyncio.to_thread(self.upload.rewind)
        self.started = True
        async for chunk in aiter_multipart(self.body, self.upload):
            yield chunk


def fit_file_name(name: str) -> str:
    """``name`` cut to ``NAME_MAX`` bytes of UTF-8 (most file systems' limit on one
    name), keeping its extension: a stored name may be longer than a file system
    takes (``[Errno 36] File name too long``). A name that fits is kept as is."""
    if len(name.encode()) <= NAME_MAX:
        return name
    stem, extension = os.path.splitext(name)
    if len(extension.encode()) >= NAME_MAX // 2:  # that long, it is part of the name
        stem, extension = name, ""
    budget = NAME_MAX - len(extension.encode())
    # Cut on bytes; a letter split in two is dropped whole.
    return stem.encode()[:budget].decode(errors="ignore") + extension


def _part_path(path: Path) -> Path:
    # A name that just fits must still leave room for the suffix.
    return path.with_name(fit_file_name(path.name + ".part"))


def save(chunks: Iterator[bytes], destination: Destination | None) -> bytes | int:
    """Write the chunks to a path or a file object and return the byte count;
    with no destination, return the bytes.

    A path is written as ``<path>.part`` and renamed when complete, so a
    broken download never leaves a truncated file under the final name.
    """
    if destination is None:
        return b"".join(chunks)
    if isinstance(destination, (str, os.PathLike)):
        path = Path(destination)
        part = _part_path(path)
        try:
            with open(part, "wb") as out:
                written = save(chunks, out)
            os.replace(part, path)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return written
    written = 0
    for chunk in chunks:
        destination.write(chunk)
        written += len(chunk)
    return written


async def asave(chunks: AsyncIterator[bytes], destination: Destination | None) -> bytes | int:
    """``save`` for the async client: each file write runs in a thread."""
    if destination is None:
        return b"".join([chunk async for chunk in chunks])
    if isinstance(destination, (str, os.PathLike)):
        path = Path(destination)
        part = _part_path(path)
        try:
            with open(part, "wb") as out:
                written = await asave(chunks, out)
            os.replace(part, path)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return written
    in_memory = isinstance(destination, io.BytesIO)
    written = 0
    async for chunk in chunks:
        if in_memory:
            destination.write(chunk)
        else:
            await asyncio.to_thread(destination.write, chunk)
        written += len(chunk)
    return written
