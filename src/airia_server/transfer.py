"""`airia-server export` and `import`: move a deployment's data between databases.

The export is JSON Lines, one object per line, each with a `kind`:

    {"kind":"header","format":"airia-export","version":2,"exportedAt":"…","tenant":null,…}
    {"kind":"api_key",…}                       every key record, with its hash (never a key)
    {"kind":"conversation",…}                  then that conversation's
    {"kind":"participant",…}                     participants,
    {"kind":"message",…}                         messages (with their position),
    {"kind":"read_position",…}                   read positions,
    {"kind":"event",…}                           stored events (sequence, type, data),
    {"kind":"external_identity",…}               external identities (system, channel, thread)
    {"kind":"attachment",…}                      and attachment records (sha256, name, type…)
    …
    {"kind":"blob","tenantId":…,"sha256":…,"size":…,"createdAt":…,"lastUsedAt":…,"content":"…"}
    …                                          the bytes of every blob the attachments above
                                               reference (per tenant and SHA-256), base64
    {"kind":"end","counts":{…}}                the rows written, per kind

It is written from one consistent snapshot of the source (a read transaction)
and streamed: each table is read through its own cursor, all ordered by
conversation, and merged, so memory does not grow with the data. A blob's
content is read from the source's blob store (a directory for SQLite, the
`blob_chunks` table for PostgreSQL) and base64-encoded as it is read, checked
against its SHA-256 and size before its line is closed. Blobs come last, after
the attachments that reference them: an import never holds a blob row that no
attachment references yet, which the target's sweep of unreferenced blobs
could delete under it.

Version 2 added identities, attachments and blobs; version 3 the tenants'
retention policies (`tenant_setting` lines). Files of versions 1 and 2 (without
them) are still read.

The import inserts every row with "on conflict do nothing" semantics, so
loading the same file twice leaves the same data, and an interrupted import
can simply be run again. Rows are stored in batches of every kind at once,
parents first, so what a cut or damaged file leaves is a whole prefix of it.
Counters (message_count, message_seq, last_sequence) are taken from the file,
never recomputed. The WebSocket ticket key is not
exported: the target keeps (or generates) its own, and clients fetch a fresh
`websocketUrl` as they do anyway.

A blob line is imported by writing its bytes into the target's blob store
(whatever AIRIA_BLOB_STORE selects there) and then its row; the content must
hash to the line's sha256 and have its size, or the import stops at that line
(exit code 2) without storing it. Bytes already in the target are not written
again. An attachment whose blob the target does not hold yet waits for its blob
line and is stored with it: a row stored before would be served without bytes
(or with another size) if the blob never came, or came different.

A line whose row the server could not serve stops the import like a line that
does not decode (the lines before it are imported, exit code 1): a child whose
conversation is neither in the file before it nor in the target, or is another
tenant's; a message above its conversation's messageSeq, or an event above its
lastSequence (the target's counters when it has the conversation already: its
row is kept); an attachment whose size is not its blob's, or whose blob never
comes. A number outside a bigint column (0 to 2^63-1; a counter, below that
so that the server's next write fits) does not decode.

Idempotency keys are not exported: they live for a day at most, and only
protect retries of requests in flight, which a move between databases ends
anyway. Neither are unreferenced blobs (the sweep deletes them).
"""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import hashlib
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import IO, Annotated, Any, Literal, NamedTuple, Protocol

import msgspec

from airia_server.config import MAX_RETENTION_DAYS, mask_url
from airia_server.storage.blobs import BlobStore, PostgresBlobStore, StagedUpload
from airia_server.timeutil import utcnow_iso

FORMAT = "airia-export"
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
BATCH = 500


class TransferError(Exception):
    """A file that cannot be imported; the message is one line for the operator."""


# --- the records of the file ----------------------------------------------------------------


class _Line(msgspec.Struct, rename="camel", tag_field="kind", kw_only=True):
    pass


# Values the server itself would have written: a line with another (a role it does
# not know, a time in another format) is damaged, and refused as a line that does
# not decode.
_STAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z\Z"
Stamp = Annotated[str, msgspec.Meta(pattern=_STAMP)]
BIGINT_MAX = 2**63 - 1
Bigint = Annotated[int, msgspec.Meta(ge=0, le=BIGINT_MAX)]
"""A size, position or sequence: what the bigint columns (and SQLite's integers) hold."""
Counter = Annotated[int, msgspec.Meta(ge=0, le=BIGINT_MAX - 1)]
"""A conversation's counter: the server's next write adds one to it."""
MessageRole = Literal["user", "assistant", "system"]
ParticipantRole = Literal["Owner", "Collaborator", "Viewer"]
ExecutionStatus = Literal["InProgress", "Completed", "Failed", "NotApplicable"]


class Header(_Line, tag="header"):
    format: str
    version: int
    exported_at: str
    tenant: str | None = None
    source: str | None = None
    schema_version: int | None = None


class ApiKeyLine(_Line, tag="api_key"):
    id: str
    tenant_id: str
    name: str | None
    prefix: str
    key_hash: str
    created_at: Stamp
    revoked_at: Stamp | None


class TenantSettingLine(_Line, tag="tenant_setting"):
    tenant_id: str
    retention_days: Annotated[int, msgspec.Meta(ge=0, le=MAX_RETENTION_DAYS)] | None
    """Days an untouched conversation is kept; None: for ever."""


class ConversationLine(_Line, tag="conversation"):
    id: str
    tenant_id: str
    user_id: str
    title: str | None
    deployment_id: str
    data_source_files: dict[str, list[str]]
    is_bookmarked: bool
    last_execution_status: ExecutionStatus | None
    last_execution_id: str | None
    message_count: Counter
    message_seq: Counter
    """The position of its latest message: no message of it is above it."""
    last_sequence: Counter
    """The sequence of its latest event: no event of it is above it."""
    created_at: Stamp
    updated_at: Stamp


class ParticipantLine(_Line, tag="participant"):
    conversation_id: str
    user_id: str
    id: str
    tenant_id: str
    role: ParticipantRole
    shared_at: Stamp
    shared_by_user_id: str | None


class MessageLine(_Line, tag="message"):
    conversation_id: str
    position: Bigint
    id: str
    user_id: str | None
    role: MessageRole
    message: str | None
    images: list[str] | None
    image_attachment_ids: list[str] | None
    created_at: Stamp
    updated_at: Stamp


class ReadPositionLine(_Line, tag="read_position"):
    conversation_id: str
    user_id: str
    position: Bigint
    read_at: Stamp


class EventLine(_Line, tag="event"):
    conversation_id: str
    sequence: Bigint
    type: str
    data: msgspec.Raw
    """The stored JSON text, byte for byte."""
    created_at: Stamp


class ExternalIdentityLine(_Line, tag="external_identity"):
    conversation_id: str
    id: str
    tenant_id: str
    external_system: str
    external_channel_id: str
    external_thread_id: str
    created_at: Stamp


class AttachmentLine(_Line, tag="attachment"):
    conversation_id: str
    id: str
    tenant_id: str
    sha256: str
    file_name: str
    content_type: str
    size: Bigint
    """Equal to its blob's: a download sends it as Content-Length."""
    source: Literal["user", "agent"]
    created_at: Stamp


class BlobLine(_Line, tag="blob"):
    tenant_id: str
    sha256: str
    size: Bigint
    created_at: Stamp
    last_used_at: Stamp
    content: bytes = b""
    """Base64 in the file; written last, streamed as the blob store yields it."""


class EndLine(_Line, tag="end"):
    counts: dict[str, int]


Row = (
    ApiKeyLine
    | TenantSettingLine
    | ConversationLine
    | ParticipantLine
    | MessageLine
    | ReadPositionLine
    | EventLine
    | ExternalIdentityLine
    | AttachmentLine
    | BlobLine
)
_decode_line = msgspec.json.Decoder(Row | EndLine).decode
_encoder = msgspec.json.Encoder()
_decode_files = msgspec.json.Decoder(dict[str, list[str]]).decode
_decode_list = msgspec.json.Decoder(list[str] | None).decode


def _json_list(text: str | None) -> list[str] | None:
    return _decode_list(text) if text else None


def _json_text(value: Any) -> str | None:
    return _encoder.encode(value).decode() if value is not None else None


@dataclass(frozen=True)
class _Table:
    kind: str
    name: str
    columns: tuple[str, ...]
    order: tuple[str, ...]
    """Within a conversation (child tables are ordered by conversation_id first)."""
    pg_types: tuple[str, ...]
    to_line: Callable[[tuple[Any, ...]], _Line]
    to_row: Callable[[Any], tuple[Any, ...]]


def _plain(
    kind: str,
    name: str,
    columns: tuple[str, ...],
    order: tuple[str, ...],
    pg_types: tuple[str, ...],
    line: type[_Line],
) -> _Table:
    """A table whose line has a field per column, of the same name and value."""
    return _Table(
        kind,
        name,
        columns,
        order,
        pg_types,
        lambda r: line(**dict(zip(columns, r, strict=True))),
        lambda item: tuple(getattr(item, column) for column in columns),
    )


def _conversation_line(r: tuple[Any, ...]) -> ConversationLine:
    return ConversationLine(
        id=r[0],
        tenant_id=r[1],
        user_id=r[2],
        title=r[3],
        deployment_id=r[4],
        data_source_files=_decode_files(r[5]) if r[5] else {},
        is_bookmarked=bool(r[6]),
        last_execution_status=r[7],
        last_execution_id=r[8],
        message_count=r[9],
        message_seq=r[10],
        last_sequence=r[11],
        created_at=r[12],
        updated_at=r[13],
    )


def _conversation_row(c: ConversationLine) -> tuple[Any, ...]:
    return (
        c.id,
        c.tenant_id,
        c.user_id,
        c.title,
        c.deployment_id,
        _json_text(c.data_source_files),
        c.is_bookmarked,
        c.last_execution_status,
        c.last_execution_id,
        c.message_count,
        c.message_seq,
        c.last_sequence,
        c.created_at,
        c.updated_at,
    )


def _message_line(r: tuple[Any, ...]) -> MessageLine:
    return MessageLine(
        conversation_id=r[0],
        position=r[1],
        id=r[2],
        user_id=r[3],
        role=r[4],
        message=r[5],
        images=_json_list(r[6]),
        image_attachment_ids=_json_list(r[7]),
        created_at=r[8],
        updated_at=r[9],
    )


def _message_row(m: MessageLine) -> tuple[Any, ...]:
    return (
        m.conversation_id,
        m.position,
        m.id,
        m.user_id,
        m.role,
        m.message,
        _json_text(m.images),
        _json_text(m.image_attachment_ids),
        m.created_at,
        m.updated_at,
    )


def _event_line(r: tuple[Any, ...]) -> EventLine:
    data = r[3].encode() if isinstance(r[3], str) else bytes(r[3])
    return EventLine(
        conversation_id=r[0], sequence=r[1], type=r[2], data=msgspec.Raw(data), created_at=r[4]
    )


def _event_row(e: EventLine) -> tuple[Any, ...]:
    return (e.conversation_id, e.sequence, e.type, bytes(e.data).decode(), e.created_at)


API_KEYS = _plain(
    "api_key",
    "api_keys",
    ("id", "tenant_id", "name", "prefix", "key_hash", "created_at", "revoked_at"),
    ("id",),
    ("text",) * 7,
    ApiKeyLine,
)
TENANT_SETTINGS = _plain(
    "tenant_setting",
    "tenant_settings",
    ("tenant_id", "retention_days"),
    ("tenant_id",),
    ("text", "int4"),
    TenantSettingLine,
)
CONVERSATIONS = _Table(
    "conversation",
    "conversations",
    (
        "id",
        "tenant_id",
        "user_id",
        "title",
        "deployment_id",
        "data_source_files",
        "is_bookmarked",
        "last_execution_status",
        "last_execution_id",
        "message_count",
        "message_seq",
        "last_sequence",
        "created_at",
        "updated_at",
    ),
    ("id",),
    ("text",) * 6 + ("boolean", "text", "text", "bigint", "bigint", "bigint", "text", "text"),
    _conversation_line,
    _conversation_row,
)
# The children of a conversation, in the order they are written after it.
CHILDREN = (
    _plain(
        "participant",
        "conversation_participants",
        ("conversation_id", "user_id", "id", "tenant_id", "role", "shared_at", "shared_by_user_id"),
        ("user_id",),
        ("text",) * 7,
        ParticipantLine,
    ),
    _Table(
        "message",
        "messages",
        (
            "conversation_id",
            "position",
            "id",
            "user_id",
            "role",
            "message",
            "images",
            "image_attachment_ids",
            "created_at",
            "updated_at",
        ),
        ("position",),
        ("text", "bigint") + ("text",) * 8,
        _message_line,
        _message_row,
    ),
    _plain(
        "read_position",
        "conversation_reads",
        ("conversation_id", "user_id", "position", "read_at"),
        ("user_id",),
        ("text", "text", "bigint", "text"),
        ReadPositionLine,
    ),
    _Table(
        "event",
        "conversation_events",
        ("conversation_id", "sequence", "type", "data", "created_at"),
        ("sequence",),
        ("text", "bigint", "text", "text", "text"),
        _event_line,
        _event_row,
    ),
    _plain(
        "external_identity",
        "external_identities",
        (
            "conversation_id",
            "id",
            "tenant_id",
            "external_system",
            "external_channel_id",
            "external_thread_id",
            "created_at",
        ),
        ("id",),
        ("text",) * 7,
        ExternalIdentityLine,
    ),
    _plain(
        "attachment",
        "attachments",
        (
            "conversation_id",
            "id",
            "tenant_id",
            "sha256",
            "file_name",
            "content_type",
            "size",
            "source",
            "created_at",
        ),
        ("id",),
        ("text",) * 6 + ("bigint", "text", "text"),
        AttachmentLine,
    ),
)
# Per (tenant, sha256) that an exported attachment references; its line carries the bytes.
BLOBS = _plain(
    "blob",
    "blobs",
    ("tenant_id", "sha256", "size", "created_at", "last_used_at"),
    ("tenant_id", "sha256"),
    ("text", "text", "bigint", "text", "text"),
    BlobLine,
)
ATTACHMENTS = CHILDREN[-1]
TABLES = {t.kind: t for t in (API_KEYS, TENANT_SETTINGS, CONVERSATIONS, *CHILDREN, BLOBS)}
KINDS = tuple(TABLES)
_TOP_LEVEL = (API_KEYS, TENANT_SETTINGS, CONVERSATIONS)
"""Tables read on their own (by tenant), not through their conversation."""
_LINE_KIND = {
    cls: cls.__struct_config__.tag
    for cls in (
        ApiKeyLine,
        TenantSettingLine,
        ConversationLine,
        ParticipantLine,
        MessageLine,
        ReadPositionLine,
        EventLine,
        ExternalIdentityLine,
        AttachmentLine,
        BlobLine,
    )
}


# --- progress on a terminal ------------------------------------------------------------------


class Progress:
    """A plain `\\r` bar on stderr, only when stderr is a terminal."""

    def __init__(self, total: int, label: str, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self.stream)
        self.total = max(total, 0)
        self.label = label
        self.done = 0
        self._drawn = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.enabled and time.monotonic() - self._drawn >= 0.1:
            self._draw()

    def finish(self) -> None:
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        total = max(self.total, self.done, 1)
        width = 30
        filled = width * self.done // total
        percent = 100 * self.done // total
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {percent:3d}%  {self.done}/{total} "
            f"{self.label}"
        )
        self.stream.flush()


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# --- reading a store -------------------------------------------------------------------------


# Blobs an exported attachment references (the attachment of an existing conversation).
_USED_BLOB = (
    "EXISTS (SELECT 1 FROM attachments a JOIN conversations c ON c.id = a.conversation_id "
    "WHERE a.tenant_id = b.tenant_id AND a.sha256 = b.sha256)"
)


def _select(table: _Table, tenant: str | None, placeholder: Callable[[int], str], collate: str):
    """SELECT of `table` (restricted to `tenant`), ordered by conversation then `order`."""
    if table is BLOBS:
        cols = ", ".join(f"b.{c}" for c in table.columns)
        where = f" AND b.tenant_id = {placeholder(1)}" if tenant is not None else ""
        return (
            f"SELECT {cols} FROM blobs b WHERE {_USED_BLOB}{where} "
            f"ORDER BY b.tenant_id{collate}, b.sha256{collate}"
        )
    if any(table is top for top in _TOP_LEVEL):
        cols = ", ".join(table.columns)
        where = f" WHERE tenant_id = {placeholder(1)}" if tenant is not None else ""
        return f"SELECT {cols} FROM {table.name}{where} ORDER BY {table.order[0]}{collate}"
    cols = ", ".join(f"t.{c}" for c in table.columns)
    where = f" WHERE c.tenant_id = {placeholder(1)}" if tenant is not None else ""
    order = ", ".join(
        [f"t.conversation_id{collate}"]
        + [f"t.{c}{collate if c == 'id' or c.endswith('_id') else ''}" for c in table.order]
    )
    # Only rows of conversations that exist: the ones the export writes.
    return (
        f"SELECT {cols} FROM {table.name} t JOIN conversations c ON c.id = t.conversation_id"
        f"{where} ORDER BY {order}"
    )


def _count(table: _Table, tenant: str | None, placeholder: Callable[[int], str]) -> str:
    if table is BLOBS:
        where = f" AND b.tenant_id = {placeholder(1)}" if tenant is not None else ""
        return f"SELECT count(*) FROM blobs b WHERE {_USED_BLOB}{where}"
    if any(table is top for top in _TOP_LEVEL):
        where = f" WHERE tenant_id = {placeholder(1)}" if tenant is not None else ""
        return f"SELECT count(*) FROM {table.name}{where}"
    where = f" WHERE c.tenant_id = {placeholder(1)}" if tenant is not None else ""
    return (
        f"SELECT count(*) FROM {table.name} t JOIN conversations c "
        f"ON c.id = t.conversation_id{where}"
    )


class _Reader(abc.ABC):
    """Consistent, streamed reads of one store."""

    @abc.abstractmethod
    async def counts(self) -> dict[str, int]: ...

    @abc.abstractmethod
    def rows(self, table: _Table) -> AsyncIterator[tuple[Any, ...]]: ...

    def blob_bytes(
        self, blobs: BlobStore, tenant_id: str, sha256: str, size: int
    ) -> AsyncIterator[bytes]:
        """A blob's content, in chunks."""
        return blobs.read(tenant_id, sha256, 0, size)


class _SqliteReader(_Reader):
    def __init__(self, conn, tenant: str | None) -> None:
        self.conn = conn
        self.tenant = tenant
        self.params = (tenant,) if tenant is not None else ()

    async def counts(self) -> dict[str, int]:
        return {
            t.kind: self.conn.execute(
                _count(t, self.tenant, lambda i: "?"), self.params
            ).fetchone()[0]
            for t in TABLES.values()
        }

    async def rows(self, table: _Table) -> AsyncIterator[tuple[Any, ...]]:
        cursor = self.conn.execute(_select(table, self.tenant, lambda i: "?", ""), self.params)
        try:
            while batch := cursor.fetchmany(BATCH):
                for row in batch:
                    yield row
        finally:
            cursor.close()


class _PostgresReader(_Reader):
    def __init__(self, conn, tenant: str | None) -> None:
        self.conn = conn
        self.tenant = tenant
        self.params = (tenant,) if tenant is not None else ()

    async def counts(self) -> dict[str, int]:
        return {
            t.kind: await self.conn.fetchval(
                _count(t, self.tenant, lambda i: f"${i}"), *self.params
            )
            for t in TABLES.values()
        }

    async def rows(self, table: _Table) -> AsyncIterator[tuple[Any, ...]]:
        # COLLATE "C": every cursor orders ids byte-wise, the same way, so they merge.
        sql = _select(table, self.tenant, lambda i: f"${i}", ' COLLATE "C"')
        cursor = await self.conn.cursor(sql, *self.params)
        while batch := await cursor.fetch(BATCH):
            for row in batch:
                yield tuple(row)

    async def blob_bytes(
        self, blobs: BlobStore, tenant_id: str, sha256: str, size: int
    ) -> AsyncIterator[bytes]:
        if not isinstance(blobs, PostgresBlobStore):
            async for chunk in blobs.read(tenant_id, sha256, 0, size):
                yield chunk
            return
        # Chunks in the database: read them in the export's own snapshot, one at a time.
        cursor = await self.conn.cursor(
            "SELECT data FROM blob_chunks WHERE tenant_id = $1 AND sha256 = $2 ORDER BY seq",
            tenant_id,
            sha256,
        )
        while batch := await cursor.fetch(1):
            yield bytes(batch[0][0])


class _Peek:
    """An async iterator with its next item visible."""

    def __init__(self, source: AsyncIterator[tuple[Any, ...]]) -> None:
        self.source = source
        self.head: tuple[Any, ...] | None = None

    async def advance(self) -> None:
        self.head = await anext(self.source, None)


BlobSource = BlobStore | Callable[[], BlobStore] | None
"""A blob store, or how to open one when the first blob needs it (nothing is created before)."""


def _opener(blobs: BlobSource) -> Callable[[], BlobStore | None]:
    opened: list[BlobStore] = []

    def get() -> BlobStore | None:
        if not opened:
            if blobs is None:
                return None
            opened.append(blobs() if callable(blobs) else blobs)
        return opened[0]

    return get


async def _write_blob(
    reader: _Reader, blobs: Callable[[], BlobStore | None], row: tuple[Any, ...], out: IO[bytes]
) -> None:
    """One `blob` line, its content base64-encoded as it is read; checked before it closes."""
    tenant_id, sha256, size = row[0], row[1], row[2]
    where = f"blob {sha256} of tenant {tenant_id!r}"
    store = blobs()
    if store is None:
        raise TransferError(f"{where}: no blob store to read it from")
    head = _encoder.encode(BLOBS.to_line(row))
    assert head.endswith(b'"content":""}')
    out.write(head[:-2])  # up to and with the opening quote of "content"
    digest = hashlib.sha256()
    seen = 0
    carry = b""
    try:
        async with contextlib.aclosing(reader.blob_bytes(store, tenant_id, sha256, size)) as chunks:
            async for chunk in chunks:
                digest.update(chunk)
                seen += len(chunk)
                data = carry + chunk if carry else chunk
                cut = len(data) - len(data) % 3
                out.write(base64.b64encode(data[:cut]))
                carry = data[cut:]
    except OSError as exc:
        raise TransferError(f"{where} cannot be read from the blob store: {exc}") from None
    if seen != size or digest.hexdigest() != sha256:
        raise TransferError(
            f"{where}: the blob store holds {seen} bytes that do not match its size ({size}) "
            "and SHA-256; the content is missing or damaged"
        )
    out.write(base64.b64encode(carry))
    out.write(b'"}\n')


async def _write_lines(
    reader: _Reader, out: IO[bytes], progress: Progress, blobs: Callable[[], BlobStore | None]
) -> dict[str, int]:
    written = dict.fromkeys(KINDS, 0)

    def emit(line: _Line, kind: str) -> None:
        out.write(_encoder.encode(line))
        out.write(b"\n")
        written[kind] += 1
        progress.advance()

    async with contextlib.AsyncExitStack() as cursors:  # closed before the store, even on error
        async for row in await _opened(cursors, reader.rows(API_KEYS)):
            emit(API_KEYS.to_line(row), "api_key")
        async for row in await _opened(cursors, reader.rows(TENANT_SETTINGS)):
            emit(TENANT_SETTINGS.to_line(row), "tenant_setting")
        children = [
            (table, _Peek(await _opened(cursors, reader.rows(table)))) for table in CHILDREN
        ]
        for _, peek in children:
            await peek.advance()
        async for row in await _opened(cursors, reader.rows(CONVERSATIONS)):
            emit(CONVERSATIONS.to_line(row), "conversation")
            conversation_id = row[0]
            for table, peek in children:
                while peek.head is not None and peek.head[0] == conversation_id:
                    emit(table.to_line(peek.head), table.kind)
                    await peek.advance()
        # Last: every attachment that references a blob is in the file before the blob.
        async for row in await _opened(cursors, reader.rows(BLOBS)):
            await _write_blob(reader, blobs, row, out)
            written["blob"] += 1
            progress.advance()
    return written


async def _opened(stack: contextlib.AsyncExitStack, rows: Any) -> Any:
    """`rows` (an async generator), closed when `stack` is."""
    return await stack.enter_async_context(contextlib.aclosing(rows))


async def export_store(
    store: Any,
    out: IO[bytes],
    *,
    tenant: str | None = None,
    blobs: BlobSource = None,
    progress_stream: IO[str] | None = None,
) -> dict[str, int]:
    """Write `store`'s data (of `tenant`, or all) to `out` as JSON Lines; counts per kind.

    `blobs` is the store's blob store (or a function opening it), needed as soon as an
    exported attachment references a blob."""
    schema = await store.schema_version()
    header = Header(
        format=FORMAT,
        version=VERSION,
        exported_at=utcnow_iso(),
        tenant=tenant,
        source=store.backend,
        schema_version=schema,
    )
    out.write(_encoder.encode(header) + b"\n")
    blob_store = _opener(blobs)
    if store.backend == "sqlite":
        conn = store._read()
        conn.execute("BEGIN")  # one snapshot for every cursor (WAL)
        try:
            reader = _SqliteReader(conn, tenant)
            progress = Progress(sum((await reader.counts()).values()), "rows", progress_stream)
            written = await _write_lines(reader, out, progress, blob_store)
        finally:
            conn.execute("COMMIT")
    else:
        async with store.pool.acquire() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                reader = _PostgresReader(conn, tenant)
                progress = Progress(sum((await reader.counts()).values()), "rows", progress_stream)
                written = await _write_lines(reader, out, progress, blob_store)
    out.write(_encoder.encode(EndLine(counts=written)) + b"\n")
    out.flush()
    progress.finish()
    return written


# --- loading into a store --------------------------------------------------------------------


def read_header(first_line: bytes | str, source: str) -> Header:
    """The header of an export, or TransferError saying why this is not one."""
    try:
        header = msgspec.json.decode(first_line)
    except msgspec.DecodeError:
        raise TransferError(
            f"{source} is not an {FORMAT} file: its first line is not JSON"
        ) from None
    if not isinstance(header, dict) or header.get("kind") != "header":
        raise TransferError(f"{source} is not an {FORMAT} file: its first line is not a header")
    if header.get("format") != FORMAT:
        raise TransferError(
            f"{source} has format {header.get('format')!r}, not {FORMAT!r}: not an Airia export"
        )
    if header.get("version") not in READABLE_VERSIONS:
        raise TransferError(
            f"{source} is {FORMAT} version {header.get('version')!r}; "
            f"this airia-server reads versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    try:
        return msgspec.json.decode(first_line, type=Header)
    except msgspec.DecodeError as exc:
        raise TransferError(f"{source}: invalid header: {exc}") from None


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(stream, start=1):
        line = line.strip()
        if line:
            yield number, line


class _Conversation(NamedTuple):
    """What a conversation's children are checked against: its tenant and counters."""

    tenant_id: str
    message_seq: int
    last_sequence: int


_CONVERSATION = "SELECT tenant_id, message_seq, last_sequence FROM conversations WHERE id = "


class _Writer(Protocol):
    async def insert(self, table: _Table, rows: list[tuple[Any, ...]]) -> int:
        """Insert what is not there yet; how many rows were new."""

    async def finish(self) -> None:
        """Derive what the export does not carry: the feed's copies of each
        conversation's times on its participant rows."""

    async def conversation(self, conversation_id: str) -> _Conversation | None:
        """A conversation already in the target, or None."""

    async def blob_size(self, tenant_id: str, sha256: str) -> int | None:
        """The size of a blob already in the target, or None."""


class _SqliteWriter:
    def __init__(self, store: Any) -> None:
        self.store = store

    async def insert(self, table: _Table, rows: list[tuple[Any, ...]]) -> int:
        cols = ", ".join(table.columns)
        marks = ", ".join("?" for _ in table.columns)
        sql = f"INSERT INTO {table.name} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING"
        if table is CONVERSATIONS:
            rows = [(*r[:6], int(r[6]), *r[7:]) for r in rows]

        def op(conn) -> int:
            # The statement's own changes: `total_changes` would count the rows the feed
            # counters' triggers touch too.
            return conn.executemany(sql, rows).rowcount

        return await self.store._write(op)

    async def finish(self) -> None:
        def op(conn) -> None:
            conn.execute(
                "UPDATE conversation_participants SET "
                "conv_updated_at = (SELECT c.updated_at FROM conversations c "
                "WHERE c.id = conversation_participants.conversation_id), "
                "conv_created_at = (SELECT c.created_at FROM conversations c "
                "WHERE c.id = conversation_participants.conversation_id) "
                "WHERE conv_updated_at = ''"
            )

        await self.store._write(op)

    async def conversation(self, conversation_id: str) -> _Conversation | None:
        row = self.store._read().execute(_CONVERSATION + "?", (conversation_id,)).fetchone()
        return _Conversation(*row) if row else None

    async def blob_size(self, tenant_id: str, sha256: str) -> int | None:
        row = (
            self.store._read()
            .execute(
                "SELECT size FROM blobs WHERE tenant_id = ? AND sha256 = ?", (tenant_id, sha256)
            )
            .fetchone()
        )
        return row[0] if row else None


class _PostgresWriter:
    def __init__(self, store: Any) -> None:
        self.store = store

    async def insert(self, table: _Table, rows: list[tuple[Any, ...]]) -> int:
        cols = ", ".join(table.columns)
        arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(table.pg_types))
        sql = (
            f"INSERT INTO {table.name} ({cols}) SELECT * FROM unnest({arrays}) "
            "ON CONFLICT DO NOTHING"
        )
        columns = [list(column) for column in zip(*rows, strict=True)]
        status = await self.store.pool.execute(sql, *columns)
        return int(status.split()[-1])

    async def finish(self) -> None:
        await self.store.pool.execute(
            "UPDATE conversation_participants p SET conv_updated_at = c.updated_at, "
            "conv_created_at = c.created_at FROM conversations c "
            "WHERE c.id = p.conversation_id AND p.conv_updated_at = ''"
        )

    async def conversation(self, conversation_id: str) -> _Conversation | None:
        row = await self.store.pool.fetchrow(_CONVERSATION + "$1", conversation_id)
        return _Conversation(*row) if row else None

    async def blob_size(self, tenant_id: str, sha256: str) -> int | None:
        return await self.store.pool.fetchval(
            "SELECT size FROM blobs WHERE tenant_id = $1 AND sha256 = $2", tenant_id, sha256
        )


@dataclass
class ImportSummary:
    read: dict[str, int]
    added: dict[str, int]
    complete: bool
    """The file ended with its `end` line and its counts matched."""
    stopped: str | None = None
    """Where, and why, reading stopped before the end (a line that does not decode)."""

    def lines(self) -> list[str]:
        out = [f"{'kind':17} {'in file':>9} {'added':>9} {'already there':>14}"]
        for kind in KINDS:
            read, added = self.read[kind], self.added[kind]
            out.append(f"{kind:17} {read:9d} {added:9d} {read - added:14d}")
        return out


async def _load_blob(
    item: BlobLine,
    blobs: Callable[[], BlobStore | None],
    writer: _Writer,
    where: str,
    attachments: list[tuple[Any, ...]],
) -> tuple[int, int]:
    """The blob's bytes into the target's blob store, then the `attachments` that waited
    for it, then its row; how many of those rows, and whether its own, were new."""
    what = f"blob {item.sha256[:80]!r} of tenant {item.tenant_id!r}"
    content = item.content
    if len(content) != item.size or hashlib.sha256(content).hexdigest() != item.sha256:
        raise TransferError(
            f"{where}: {what}: its content ({len(content)} bytes) does not match its sha256 and "
            f"size ({item.size}); the line is refused"
        )
    store = blobs()
    if store is None:
        raise TransferError(f"{where}: {what}: no blob store to write it to")
    if not await store.exists(item.tenant_id, item.sha256):
        try:
            staged = StagedUpload(store.staging_dir, item.size)
            try:
                staged.write(content)
                if await asyncio.to_thread(staged.finish) != item.sha256:
                    raise TransferError(
                        f"{where}: {what}: staged content does not match its sha256"
                    )
                await store.put(item.tenant_id, item.sha256, staged.path)  # consumes the file
            finally:
                staged.discard()
        except OSError as exc:
            raise TransferError(
                f"{where}: {what}: cannot store its bytes in the blob store (AIRIA_BLOB_DIR): {exc}"
            ) from None
    # The rows after the bytes: no row ever points at content that is not there. Its
    # attachments before its own row, so that the target's sweep never takes it for
    # unreferenced.
    added = await writer.insert(ATTACHMENTS, attachments) if attachments else 0
    return added, await writer.insert(BLOBS, [BLOBS.to_row(item)])


async def import_stream(
    store: Any,
    stream: IO[bytes],
    source: str,
    *,
    blobs: BlobSource = None,
    progress_stream: IO[str] | None = None,
) -> ImportSummary:
    """Load an export (its header already checked by the caller or here) into `store`.

    `blobs` is the target's blob store (or a function opening it): `blob` lines are
    written there."""
    lines = _lines(stream)
    first = next(lines, None)
    if first is None:
        raise TransferError(f"{source} is empty: not an {FORMAT} file")
    read_header(first[1], source)
    writer = _SqliteWriter(store) if store.backend == "sqlite" else _PostgresWriter(store)
    read = dict.fromkeys(KINDS, 0)
    added = dict.fromkeys(KINDS, 0)
    pending: dict[str, list[tuple[Any, ...]]] = {kind: [] for kind in KINDS}
    progress = Progress(_size(stream), "bytes", progress_stream)
    blob_store = _opener(blobs)
    end: EndLine | None = None

    held = 0
    conversations: dict[str, _Conversation] = {}
    """The conversations known to exist (read since the last flush, or looked up in the
    target since), as the target keeps them."""
    waiting: dict[tuple[str, str], list[tuple[int, AttachmentLine]]] = {}
    """Attachments whose blob is not in the target yet, by (tenant, sha256), with their
    line numbers: stored with their blob line, or not at all."""

    async def flush() -> None:
        """Store every row read so far, parents first (KINDS is in that order): what
        is stored is always a whole prefix of the file, never a message without its
        conversation."""
        nonlocal held
        for kind in KINDS:
            if pending[kind]:
                added[kind] += await writer.insert(TABLES[kind], pending[kind])
                pending[kind] = []
        held = 0
        conversations.clear()

    async def problem(item: Row) -> str | None:
        """Why `item` would store a row the server cannot serve, or None."""
        if isinstance(item, ConversationLine):
            if item.id not in conversations:
                # A conversation the target has already keeps its row (the insert does
                # nothing): its children must fit that row's tenant and counters.
                conversations[item.id] = await writer.conversation(item.id) or _Conversation(
                    item.tenant_id, item.message_seq, item.last_sequence
                )
            return None
        conversation_id = getattr(item, "conversation_id", None)
        if conversation_id is None:
            return None
        conversation = conversations.get(conversation_id)
        if conversation is None:
            conversation = await writer.conversation(conversation_id)
            if conversation is None:
                return (
                    f"{_LINE_KIND[type(item)]}: its conversation {conversation_id!r} is "
                    "neither in the file before it nor in the database"
                )
            conversations[conversation_id] = conversation
        tenant = conversation.tenant_id
        tenant_id = getattr(item, "tenant_id", tenant)
        if tenant_id != tenant:
            return (
                f"{_LINE_KIND[type(item)]} of tenant {tenant_id!r}: its conversation "
                f"{conversation_id!r} is of tenant {tenant!r}"
            )
        # The server's next message or event takes the counter plus one: a row above
        # it would make that write a duplicate key, for every write after it too.
        if isinstance(item, MessageLine) and item.position > conversation.message_seq:
            return (
                f"message at position {item.position}: above its conversation "
                f"{conversation_id!r}'s messageSeq ({conversation.message_seq})"
            )
        if isinstance(item, EventLine) and item.sequence > conversation.last_sequence:
            return (
                f"event of sequence {item.sequence}: above its conversation "
                f"{conversation_id!r}'s lastSequence ({conversation.last_sequence})"
            )
        return None

    stopped = None
    for number, line in lines:
        progress.advance(len(line) + 1)
        if end is not None:
            raise TransferError(f"{source}:{number}: data after the end line")
        try:
            item = _decode_line(line)
        except msgspec.DecodeError as exc:
            # Cut short, or damaged, here: what came before is imported, as far as the
            # file goes, and the import reports it incomplete.
            stopped = f"{source}:{number}: {exc}"
            break
        if isinstance(item, EndLine):
            end = item
            continue
        kind = _LINE_KIND[type(item)]
        read[kind] += 1
        if (why := await problem(item)) is not None:
            stopped = f"{source}:{number}: {why}"
            break
        if isinstance(item, BlobLine):
            attachments = waiting.pop((item.tenant_id, item.sha256), [])
            wrong = [(n, a) for n, a in attachments if a.size != item.size]
            if wrong:
                n, a = wrong[0]
                stopped = (
                    f"{source}:{n}: attachment {a.id!r}: its size ({a.size}) is not its "
                    f"blob's ({item.size}, line {number})"
                )
                break
            # Every pending row first: the attachments referencing this blob are then
            # stored before it, so the target's sweep never takes it for unreferenced.
            await flush()
            new_attachments, new_blob = await _load_blob(
                item,
                blob_store,
                writer,
                f"{source}:{number}",
                [ATTACHMENTS.to_row(a) for _, a in attachments],
            )
            added["attachment"] += new_attachments
            added[kind] += new_blob
            continue
        if isinstance(item, AttachmentLine):
            size = await writer.blob_size(item.tenant_id, item.sha256)
            if size is None:
                # Its blob comes later in the file (an export writes blobs last): a row
                # stored now would be served without its bytes if it never came.
                waiting.setdefault((item.tenant_id, item.sha256), []).append((number, item))
                continue
            if size != item.size:
                stopped = (
                    f"{source}:{number}: attachment {item.id!r}: its size ({item.size}) is "
                    f"not its blob's ({size})"
                )
                break
        pending[kind].append(TABLES[kind].to_row(item))
        held += 1
        if held >= BATCH:
            await flush()
    if stopped is None and waiting:
        n, a = min(line for lines in waiting.values() for line in lines)
        stopped = (
            f"{source}:{n}: attachment {a.id!r}: its blob {a.sha256[:80]!r} of tenant "
            f"{a.tenant_id!r} is neither in the file nor in the database"
        )
    await flush()
    await writer.finish()
    progress.finish()
    complete = (
        stopped is None and end is not None and all(end.counts.get(k, 0) == read[k] for k in KINDS)
    )
    return ImportSummary(read=read, added=added, complete=complete, stopped=stopped)


def _size(stream: IO[bytes]) -> int:
    try:
        return os.fstat(stream.fileno()).st_size
    except (OSError, AttributeError, ValueError):
        return 0


# --- the command line ------------------------------------------------------------------------


def run_transfer(settings: Any, args: Any) -> int:
    """`airia-server export` / `airia-server import`; the exit code."""
    if args.command == "export":
        try:
            return asyncio.run(_export_command(settings, args.tenant, args.output))
        except TransferError as exc:  # a blob the blob store does not hold (intact)
            print(f"airia-server: export failed: {exc}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # `airia-server export | head`: the reader had enough
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return 128 + 13
    return _import_command(settings, args.file)


async def _export_command(settings: Any, tenant: str | None, output: str) -> int:
    from airia_server.storage import open_blob_store, open_store

    store = open_store(settings)
    await store.start(migrate=False)  # the source is read, never written (nor migrated)
    blobs = lambda: open_blob_store(settings, store)  # noqa: E731  (only if a blob is exported)
    try:
        if output == "-":
            counts = await export_store(store, sys.stdout.buffer, tenant=tenant, blobs=blobs)
        else:
            # Written aside and renamed at the end: a partial export never looks complete.
            partial = f"{output}.partial"
            try:
                out = open(partial, "wb")  # closed by the `with` below
            except OSError as exc:
                raise TransferError(f"cannot write {output}: {exc.strerror}") from None
            try:
                with out:
                    counts = await export_store(store, out, tenant=tenant, blobs=blobs)
                os.replace(partial, output)
            except BaseException:
                if os.path.exists(partial):
                    os.unlink(partial)
                raise
    finally:
        await store.close()
    if _isatty(sys.stderr):  # the terminal's operator; nothing extra for scripts
        total = ", ".join(f"{counts[k]} {k}" for k in KINDS)
        print(f"exported {total}", file=sys.stderr)
    return 0


def _import_command(settings: Any, path: str) -> int:

    source = "stdin" if path == "-" else path
    try:
        stream = sys.stdin.buffer if path == "-" else open(path, "rb")
    except OSError as exc:
        print(f"airia-server: cannot read {source}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        # The header is checked before the database is touched.
        first = stream.readline()
        while first and not first.strip():
            first = stream.readline()
        try:
            read_header(first, source) if first else _empty(source)
        except TransferError as exc:
            print(f"airia-server: {exc}", file=sys.stderr)
            return 2
        try:
            summary = asyncio.run(_import_into(settings, _Prepend(first, stream), source))
        except TransferError as exc:
            print(f"airia-server: {exc}", file=sys.stderr)
            return 2
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    print(f"imported {source} into {mask_url(settings.database_url)}:")
    for line in summary.lines():
        print(line)
    if summary.stopped is not None:
        print(
            f"airia-server: {summary.stopped}: the import stops at this line, which is "
            "cut short or holds what the server never writes; every line before it is "
            "imported (mend the file, or take the whole one, and import it again: what "
            "is in already is skipped)",
            file=sys.stderr,
        )
        return 1
    if not summary.complete:
        print(
            f"airia-server: {source} has no end line, or its counts differ from the rows read: "
            "it may be truncated (what was read is imported; run the import again with the "
            "whole file)",
            file=sys.stderr,
        )
        return 1
    return 0


def _empty(source: str) -> None:
    raise TransferError(f"{source} is empty: not an {FORMAT} file")


class _Prepend:
    """A binary stream with one line put back in front."""

    def __init__(self, first: bytes, rest: IO[bytes]) -> None:
        self.first = first
        self.rest = rest

    def __iter__(self) -> Iterator[bytes]:
        yield self.first
        yield from self.rest

    def fileno(self) -> int:
        return self.rest.fileno()


async def _import_into(settings: Any, stream: Any, source: str) -> ImportSummary:
    from airia_server.storage import open_blob_store, open_store

    store = open_store(settings)
    await store.start()  # migrates first
    try:
        return await import_stream(
            store, stream, source, blobs=lambda: open_blob_store(settings, store)
        )
    finally:
        await store.close()
