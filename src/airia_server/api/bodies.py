"""Reading request bodies: size limit first, then strict JSON decoding into a struct."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request

from airia_server.errors import (
    BadRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)

T = TypeVar("T")

_AT = re.compile(r" - at (?:`key` in )?`\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"missing required field `(?P<field>[^`]+)`")


async def stream_body(request: Request) -> AsyncIterator[bytes]:
    """The body's chunks. A client that stalls mid-body is answered 408 by the server's
    protocol (server.TimeoutProtocol), which then ends this stream."""
    async for chunk in request.stream():
        yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Invalid Content-Length header")
        if int(declared) > limit:
            raise PayloadTooLarge(
                "Request body too large", f"The request body exceeds the limit of {limit} bytes"
            )
    cached = getattr(request, "_body", None)  # read already (the idempotency check)
    if cached is not None:
        return cached
    # Straight from `receive` rather than through Starlette's stream generator: most
    # bodies arrive in one message, and this runs on every write.
    body = b""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        body += message.get("body", b"")
        if len(body) > limit:
            raise PayloadTooLarge(
                "Request body too large", f"The request body exceeds the limit of {limit} bytes"
            )
        if not message.get("more_body", False):
            break
    request._body = body  # so that Starlette serves it again if asked
    return body


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _refuse_nul(text: str) -> None:
    """No database stores a NUL inside text (PostgreSQL refuses it): say so up front."""
    try:
        value = msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return  # the typed decode reports the malformed JSON
    if _has_nul(value):
        raise ValidationFailed(
            "Strings must not contain NUL characters",
            "A string in the body contains \\u0000, which cannot be stored",
        )


def field_of(error: str) -> str | None:
    """The JSON field an msgspec validation message is about, as `a.b[0]`, or None."""
    path = ""
    at = _AT.search(error)
    if at:
        path = at.group("path").lstrip(".")
    missing = _MISSING.search(error)
    if missing:
        path = f"{path}.{missing.group('field')}" if path else missing.group("field")
    return path or None


async def read_json(request: Request, decoder: msgspec.json.Decoder[T], limit: int) -> T:
    content_type = request.headers.get("content-type", "application/json").lower()
    media = content_type.split(";", 1)[0].strip()
    if media and media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            "Unsupported content type", f"Send the body as application/json, not {media}"
        )
    body = await read_body(request, limit)
    if not body.strip():
        raise BadRequest("Request body is required", "The request body must be a JSON object")
    try:
        # msgspec does not check that strings are UTF-8; the database would choke later.
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("Malformed JSON", f"The request body is not UTF-8: {exc}") from exc
    if "\\u0000" in text or "\\U0000" in text:
        _refuse_nul(text)
    try:
        return decoder.decode(text)
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = field_of(text)
        errors: list[dict[str, Any]] = [{"field": field, "message": text}]
        if _MISSING.search(text):
            message = f"Missing required field '{field}'"
        elif field:
            message = f"Invalid value for '{field}': {text.split(' - at ')[0]}"
        else:
            message = f"Invalid request body: {text}"
        raise ValidationFailed(message, text, errors=errors) from exc
    except msgspec.DecodeError as exc:
        raise BadRequest("Malformed JSON", f"The request body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise BadRequest(
            "JSON nested too deeply", "The request body nests arrays or objects too deeply"
        ) from None
