"""Reading request bodies: size limit first, then strict JSON decoding into a struct."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from itertools import accumulate
from typing import Any, TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request

from airia_server.errors import (
    BadRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from airia_server.text import is_ascii_digits

T = TypeVar("T")

_AT = re.compile(r" - at (?:`key` in )?`\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"missing required field `(?P<field>[^`]+)`")
_LONE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_NUL = "NUL characters (\\u0000) cannot be stored"
_SURROGATE = "a \\uD800-\\uDFFF escape that is not half of a surrogate pair is not text"

MAX_JSON_DEPTH = 512
"""How deep arrays and objects may nest in a body or a socket frame (real ones nest 3)."""

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 and -1, as signed bytes


def nested_too_deeply(text: str) -> bool:
    """Whether the JSON `text` nests arrays or objects deeper than MAX_JSON_DEPTH.

    msgspec stops at Python's recursion limit, which is no fixed depth: about 1,000
    up to Python 3.11, about 10,000 from 3.12 (the C recursion limit), so one body
    was refused on one Python and accepted on another. Counted in C loops (no
    Python step per character): about 0.1 s for 1 MiB of brackets, nothing for most."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False
    outside_strings = _JSON_STRING.sub("", text).encode("utf-8", "surrogatepass")
    steps = outside_strings.translate(_DEPTH_STEPS, _NOT_BRACKETS)
    depths = accumulate(memoryview(steps).cast("b"))
    return any(map(MAX_JSON_DEPTH.__lt__, depths))


async def stream_body(request: Request) -> AsyncIterator[bytes]:
    """The body's chunks. A client that stalls mid-body is answered 408 by the server's
    protocol (server.TimeoutProtocol), which then ends this stream."""
    async for chunk in request.stream():
        yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        declared = declared.strip(" \t")  # optional whitespace, as around any field value
        if not is_ascii_digits(declared):
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


def _path_of(value: Any, bad: Callable[[str], bool], path: str = "$") -> str | None:
    """Where in decoded JSON the first string that `bad` picks is, as msgspec
    writes paths (`$.a.b[0]`), or None."""
    if isinstance(value, str):
        return path if bad(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = path if bad(key) else _path_of(item, bad, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _path_of(item, bad, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _has_nul(text: str) -> bool:
    return "\x00" in text


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)


def _refuse_text(value: Any, bad: Callable[[str], bool], what: str) -> None:
    """422 naming the field when a string of the body that the server keeps is not
    text a database can store (fields it ignores do not matter)."""
    path = _path_of(msgspec.to_builtins(value), bad)
    if path is not None:
        field = path.removeprefix("$").lstrip(".") or None
        raise ValidationFailed(
            f"Invalid value for '{field}': {what}" if field else f"Invalid request body: {what}",
            f"{what} - at `{path}`",
            errors=[{"field": field, "message": what}],
        )


def validation_text(exc: msgspec.ValidationError) -> str:
    """msgspec's message, with a pattern shown as documented: the `(?!\\n)` that keeps
    Python's `$` from matching before a final newline (schemas.ExternalSystem) is
    how the server checks it, not part of the rule a client must follow."""
    return str(exc).replace("(?!\\\\n)$", "$")


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


def _too_deep() -> BadRequest:
    return BadRequest(
        "JSON nested too deeply",
        f"The request body nests arrays or objects more than {MAX_JSON_DEPTH} deep",
    )


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
    if nested_too_deeply(text):
        raise _too_deep()
    try:
        value = decoder.decode(text)
    except msgspec.ValidationError as exc:
        text = validation_text(exc)
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
        if _LONE_SURROGATE.search(text):
            # msgspec refuses these before it looks at the field (Python's json does
            # not): say which field, as for any other value that cannot be stored.
            try:
                _refuse_text(json.loads(text), _has_surrogate, _SURROGATE)
            except (ValueError, RecursionError):
                pass  # malformed anyway
        raise BadRequest("Malformed JSON", f"The request body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise _too_deep() from None
    if "\\u0000" in text:
        _refuse_text(value, _has_nul, _NUL)
    return value
