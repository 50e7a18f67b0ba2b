"""Routes for attachments: streaming multipart and base64 uploads, lists, signed downloads."""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
import unicodedata
import urllib.parse

import msgspec
from python_multipart import MultipartParser
from python_multipart.multipart import MultipartState, parse_options_header
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from airia_server.api.bodies import read_json, stream_body
from airia_server.api.common import json_response
from airia_server.api.deps import current_principal, services
from airia_server.api.idempotency import may_be_retry, resource_id, run_once
from airia_server.api.schemas import Attachment, Base64UploadRequest
from airia_server.domain.auth import Principal
from airia_server.errors import (
    AppError,
    BadRequest,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from airia_server.ids import parse_id
from airia_server.storage.base import AttachmentRecord
from airia_server.storage.blobs import BlobDiskError, StagedUpload
from airia_server.text import is_ascii_digits, is_blank

_base64_decoder = msgspec.json.Decoder(Base64UploadRequest)
_MULTIPART_OVERHEAD = 64 * 1024
_MAX_FIELD = 1024
# ASCII alone: a content type is sent back as a header, and headers are Latin-1.
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*\Z", re.ASCII)
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)\Z")


class RangeNotSatisfiable(AppError):
    status = 416
    title = "Range Not Satisfiable"


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge("File too large", f"Attachments are limited to {limit} bytes")


_BIDI_CONTROLS = frozenset(
    [
        "\u061c",
        "\u200e",
        "\u200f",
        *map(chr, range(0x202A, 0x202F)),
        *map(chr, range(0x2066, 0x206A)),
    ]
)
_DROPPED_CATEGORIES = frozenset(["Cc", "Cs", "Zl", "Zp"])


def clean_file_name(raw: str | None) -> str:
    """A display name that is safe anywhere: the last part of a path (`/` or `\\`:
    browsers on Windows have sent whole paths), without control characters, line or
    paragraph separators, or bidi controls (which disguise an extension:
    "invoice\u202efdp.exe" shows as "invoiceexe.pdf"). Other invisible characters
    stay: the zero-width joiner of emoji sequences (👩‍💻) and of Persian and Indic
    words is part of the name. A name that shows nothing (empty, or only invisible
    characters) becomes "upload"."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(
        c
        for c in name
        if c not in _BIDI_CONTROLS and unicodedata.category(c) not in _DROPPED_CATEGORIES
    ).strip()
    return "upload" if is_blank(name) else name[:255]


def clean_content_type(raw: str | None, file_name: str) -> str:
    value = (raw or "").split(";", 1)[0].strip().lower()
    if _CONTENT_TYPE.match(value):
        return value
    return mimetypes.guess_type(file_name)[0] or "application/octet-stream"


def _source(value: str | None) -> str:
    if value in (None, ""):
        return "agent"
    if value not in ("user", "agent"):
        raise ValidationFailed(
            "Invalid value for 'source': must be user or agent",
            errors=[{"field": "source", "message": "must be user or agent"}],
        )
    return value


def _content_url(request: Request, attachment_id: str) -> str:
    """The attachment's download link, signed from now."""
    svc = services(request)
    base = (svc.http_base_url or str(request.base_url)).rstrip("/")
    if base.startswith("ws"):  # a proxy's `X-Forwarded-Proto: wss` on an HTTP request
        base = "http" + base[2:]
    query = svc.attachments.signed_query(attachment_id)
    return f"{base}/v1/attachments/{attachment_id}/content?{query}"


def _renew_url(request: Request, principal: Principal, answer: dict) -> None:
    """A replayed upload's `url`, signed from now (see `api.idempotency`)."""
    if isinstance(answer.get("blobId"), str) and "url" in answer:
        answer["url"] = _content_url(request, answer["blobId"])


def attachment_view(request: Request, record: AttachmentRecord) -> Attachment:
    return Attachment(
        blob_id=record.id,
        url=_content_url(request, record.id),
        conversation_id=record.conversation_id,
        file_name=record.file_name,
        content_type=record.content_type,
        size=record.size,
        source=record.source,
        sha256=record.sha256,
        created_at=record.created_at,
    )


class _FormReader:
    """Feeds a streamed multipart body to python-multipart, the `file` part into a
    staging file (hashed as it goes), small text fields into memory."""

    def __init__(self, staged: StagedUpload) -> None:
        self.staged = staged
        self.fields: dict[str, str] = {}
        self.file_name: str | None = None
        self.file_type: str | None = None
        self.has_file = False
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._name: str | None = None
        self._is_file = False
        self._text = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers, self._field, self._value = {}, b"", b""
        self._name, self._is_file, self._text = None, False, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        if self._name == "file" and not self.has_file:
            self._is_file = self.has_file = True
            filename = params.get(b"filename")
            self.file_name = filename.decode("utf-8", "replace") if filename else None
            part_type = self._headers.get(b"content-type")
            self.file_type = part_type.decode("latin-1") if part_type else None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.staged.write(data[start:end])
        elif len(self._text) + end - start <= _MAX_FIELD:
            self._text += data[start:end]

    def _part_end(self) -> None:
        if not self._is_file and self._name:
            self.fields[self._name] = self._text.decode("utf-8", "replace")


async def upload_multipart(request: Request) -> Response:
    principal = await current_principal(request)
    svc = services(request)
    conversation_id, refused = await _may_upload(request, principal)
    limit = svc.settings.max_upload_bytes
    media, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if media != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType(
            "Send the file as multipart/form-data",
            "Expected multipart/form-data with a boundary and a part named 'file'",
        )
    declared = request.headers.get("content-length", "").strip(" \t")
    if is_ascii_digits(declared) and int(declared) > limit + _MULTIPART_OVERHEAD:
        raise _too_large(limit)  # before reading a byte of the body
    staged = StagedUpload(svc.blobs.staging_dir, limit)
    form = _FormReader(staged)
    try:
        parser = MultipartParser(boundary, form.callbacks())
        received = 0
        async for chunk in stream_body(request):
            received += len(chunk)
            if received > limit + _MULTIPART_OVERHEAD:
                raise OverflowError(limit)
            parser.write(chunk)
        parser.finalize()  # checks nothing (python-multipart): the state says it all
        if parser.state != MultipartState.END:
            # Cut short, by the client or on the way: what arrived is not the file.
            raise BadRequest(
                "Malformed multipart body", "The body ended before its closing boundary"
            )
        if not form.has_file:
            raise ValidationFailed(
                "Missing file",
                "The form needs a part named 'file'",
                errors=[{"field": "file", "message": "required"}],
            )
        source = _source(form.fields.get("source"))
    except OverflowError:
        staged.discard()
        raise _too_large(limit) from None
    except (AppError, BlobDiskError):  # the disk's answered as on every path (507, ...)
        staged.discard()
        raise
    except Exception as exc:  # a malformed body, or the client went away half way
        staged.discard()
        raise BadRequest("Malformed multipart body", str(exc)[:200]) from None
    return await _keep(
        request,
        principal,
        conversation_id,
        staged,
        clean_file_name(form.file_name),
        form.file_type,
        source,
        refused,
    )


async def _may_upload(request: Request, principal: Principal) -> tuple[str, AppError | None]:
    """The conversation's id, checked before a byte of the body is read; and, for the
    retry of an earlier upload (an Idempotency-Key its caller used) that may not upload
    now, why not. That retry reads its body all the same, to be answered as the upload
    was, as every keyed write is, after the caller's access ended or the conversation
    went (`_keep`); any other upload is refused at once."""
    raw = request.path_params["conversation_id"]
    try:
        return await services(request).attachments.check_upload(principal, raw), None
    except (NotFound, Forbidden) as refused:
        if not await may_be_retry(request, principal):
            raise
        return parse_id(raw) or raw, refused


async def upload_base64(request: Request) -> Response:
    principal = await current_principal(request)
    svc = services(request)
    conversation_id, refused = await _may_upload(request, principal)
    limit = svc.settings.max_upload_bytes
    body_limit = (limit + 2) // 3 * 4 + _MULTIPART_OVERHEAD
    try:
        body = await read_json(request, _base64_decoder, body_limit)
    except PayloadTooLarge:
        raise _too_large(limit) from None
    try:
        data = base64.b64decode(body.base64_content, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed(
            "Invalid value for 'base64Content': not base64",
            errors=[{"field": "base64Content", "message": "not valid base64"}],
        ) from None
    if len(data) > limit:
        raise _too_large(limit)
    staged = StagedUpload(svc.blobs.staging_dir, limit)
    try:
        staged.write(data)
    except BaseException:
        staged.discard()
        raise
    return await _keep(
        request,
        principal,
        conversation_id,
        staged,
        clean_file_name(body.file_name),
        body.content_type,
        body.source,
        refused,
    )


async def _keep(
    request: Request,
    principal: Principal,
    conversation_id: str,
    staged: StagedUpload,
    file_name: str,
    content_type: str | None,
    source: str,
    refused: AppError | None = None,
) -> Response:
    """Store a received upload, once per Idempotency-Key, and describe it; `refused`:
    why the caller may not upload, the answer unless it is a retry (`_may_upload`)."""
    svc = services(request)
    content_type = clean_content_type(content_type, file_name)
    fingerprint = "\0".join(
        (staged.sha256(), str(staged.size), file_name, content_type, source)
    ).encode()

    async def produce() -> Response:
        if refused is not None:
            raise refused
        record = await svc.attachments.store_upload(
            principal,
            conversation_id,
            staged,
            file_name=file_name,
            content_type=content_type,
            source=source,
            attachment_id=resource_id(request),
        )
        return json_response(attachment_view(request, record))

    try:
        # The link of a replay is signed anew for a caller who may still read the
        # conversation; one who may not keeps the link first handed out, to expire.
        renew = _renew_url if refused is None else None
        return await run_once(
            request, principal, fingerprint, produce, _recover_upload, refresh=renew
        )
    finally:
        staged.discard()  # a replay never used it; a store consumed it already


async def _recover_upload(
    request: Request, principal: Principal, attachment_id: str
) -> Response | None:
    """The upload's answer, from the attachment it stored (see `api.idempotency`)."""
    record = await services(request).store.get_attachment(attachment_id)
    if record is None or record.tenant_id != principal.tenant_id:
        return None
    if record.conversation_id != parse_id(request.path_params["conversation_id"]):
        return None
    return json_response(attachment_view(request, record))


async def list_attachments(request: Request) -> Response:
    principal = await current_principal(request)
    found = await services(request).attachments.list(
        principal, request.path_params["conversation_id"]
    )
    return json_response([attachment_view(request, r) for r in found])


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `bytes=` range; None for the whole file."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None or (not match.group(1) and not match.group(2)):
        return None  # not one simple range: ignoring it (and sending 200) is allowed
    first, last = match.group(1), match.group(2)
    if first and last and int(last) < int(first):
        return None  # an invalid range (RFC 9110, 14.1.1) is ignored, not refused
    if first:
        start = int(first)
        end = min(int(last) + 1, size) if last else size
    else:
        start, end = max(size - int(last), 0), size
    if start >= size or start >= end:
        raise RangeNotSatisfiable("Range not satisfiable", f"The file has {size} bytes")
    return start, end


async def download(request: Request) -> Response:
    """The bytes, through a signed link: no credentials, so a browser can follow it."""
    svc = services(request)
    params = request.query_params
    record = await svc.attachments.for_download(
        request.path_params["attachment_id"],
        params.get("expires", ""),
        params.get("signature", ""),
    )
    size = record.size
    try:
        span = _byte_range(request.headers.get("range"), size)
    except RangeNotSatisfiable as exc:
        exc.headers["Content-Range"] = f"bytes */{size}"
        raise
    start, end = span or (0, size)
    ascii_name = re.sub(r"[^A-Za-z0-9._\- ]", "_", record.file_name)
    headers = {
        "Content-Length": str(end - start),
        "Accept-Ranges": "bytes",
        "ETag": f'"{record.sha256}"',
        "Cache-Control": "private, max-age=300",
        # Uploaded files are not the API's own content: never render them inline.
        "Content-Disposition": (
            f'attachment; filename="{ascii_name}"; '
            f"filename*=UTF-8''{urllib.parse.quote(record.file_name, safe='')}"
        ),
        "X-Content-Type-Options": "nosniff",
    }
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    await svc.attachments.check_content(record)  # HEAD too: it tells what GET would
    if request.method == "HEAD":
        return Response(
            status_code=206 if span else 200, headers=headers, media_type=record.content_type
        )
    return StreamingResponse(
        svc.blobs.read(record.tenant_id, record.sha256, start, end),
        status_code=206 if span else 200,
        headers=headers,
        media_type=record.content_type,
    )


_BASE = "/v1/Conversations/{conversation_id}"
routes = [
    Route(f"{_BASE}/attachments", list_attachments, methods=["GET"]),
    Route(f"{_BASE}/agent-attachments", upload_multipart, methods=["POST"]),
    Route(f"{_BASE}/agent-attachments/base64", upload_base64, methods=["POST"]),
    Route("/v1/attachments/{attachment_id}/content", download, methods=["GET", "HEAD"]),
]
