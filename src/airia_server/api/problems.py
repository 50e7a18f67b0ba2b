"""Every error leaves as application/problem+json (RFC 9457), built in one place."""

from __future__ import annotations

import asyncio
import errno
import logging
from http import HTTPStatus

import msgspec
import redis.exceptions
from starlette.exceptions import HTTPException
from starlette.responses import Response

from airia_server.api.schemas import Problem, encode
from airia_server.errors import AppError
from airia_server.logs import correlation_id_var
from airia_server.storage.blobs import BlobDiskError
from airia_server.storage.outages import Outage, outage_of

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE = "about:blank"
"""Every problem's `type`: its `status` and `title` say what went wrong (RFC 9457, 4.2.1)."""
log = logging.getLogger("airia_server.api")

_TITLES = {
    408: "Request Timeout",
    416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    426: "Upgrade Required",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}


def _title(status: int) -> str:
    """RFC 9110's name of the status (the newer ones where Python's are older)."""
    title = _TITLES.get(status)
    if title is None:
        try:
            title = HTTPStatus(status).phrase
        except ValueError:
            title = "Error"
    return title


def problem_body(
    status: int,
    message: str,
    detail: str,
    instance: str | None,
    *,
    correlation_id: str | None = None,
    **extra,
) -> bytes:
    """The problem document; `extra` adds members (`errors`, or what a 409 points at).
    Its correlation id is the request's, unless one is given (answers made outside a
    request's context: the protocol's own, CORS preflights)."""
    body = msgspec.to_builtins(
        Problem(
            type=PROBLEM_TYPE,
            title=_title(status),
            status=status,
            detail=detail,
            message=message,
            instance=instance,
            correlation_id=correlation_id or correlation_id_var.get(),
        )
    )
    body.update(extra)
    return encode(body)


def problem_response(
    status: int,
    message: str,
    detail: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra,
) -> Response:
    body = problem_body(status, message, detail or message, instance, **extra)
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer, ApiKey header="X-API-KEY"', **(headers or {})}
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# What a backend other than the database raises when it cannot be reached or cannot
# answer now (a dropped connection, Redis away, a timeout): the request was fine, and
# may be sent again. The database's own errors are told apart by `outage_of`.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,  # another class before Python 3.11
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

_AWAY_DETAIL = "A backend of this server (the database, or Redis) did not answer; retry shortly"
_DETAILS = {
    Outage.AWAY: _AWAY_DETAIL,
    Outage.READ_ONLY: "The database is read-only now (a standby, during a failover); retry shortly",
    Outage.NO_SCHEMA: (
        "The database lacks this server's tables (GET /readyz names the check); "
        "retry once it is migrated"
    ),
    Outage.BUSY: (
        "The database rolled the request back for a concurrent one (a deadlock or a "
        "serialization conflict); nothing was done: send it again"
    ),
    Outage.TIMED_OUT: (
        "The database did not finish the request within the server's statement timeout "
        "(waiting for another's lock, most often) and rolled it back; nothing was done: "
        "send it again"
    ),
}


def unavailable_response(exc: Exception, path: str) -> Response | None:
    """503 with Retry-After for a backend that cannot serve now, 507 for a full disk
    or attachment storage that cannot be written; None for anything else (a bug,
    answered 500)."""
    if isinstance(exc, BlobDiskError) and exc.errno not in _DISK_FULL_ERRNOS:
        # Not the 503 of a backend that "did not answer": a read-only filesystem (or
        # one refusing writes) stays so until an operator acts, and names neither the
        # database nor Redis.
        return problem_response(
            507,
            "Insufficient storage",
            f"Attachment storage is not writable ({exc.strerror or exc}): no upload can be "
            "stored until an operator fixes its disk",
            path,
        )
    outage = outage_of(exc)
    if outage is None and isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
        outage = Outage.DISK_FULL  # attachment bytes, on the filesystem
    if outage is Outage.DISK_FULL:
        # Not 503 "did not answer; retry shortly": the disk stays full until an
        # operator frees space, and reads go on meanwhile.
        return problem_response(
            507,
            "Insufficient storage",
            "The server's disk is full: nothing more can be stored until space is freed",
            path,
        )
    if outage is None and not isinstance(exc, _UNAVAILABLE):
        return None
    return problem_response(
        503,
        "Service unavailable",
        _DETAILS.get(outage, _AWAY_DETAIL),
        path,
        {"Retry-After": "1"},
    )


def problem_for(exc: Exception, method: str, path: str) -> Response | None:
    """The problem response for a domain error or a routing miss; None for anything else."""
    if isinstance(exc, AppError):
        return problem_response(
            exc.status, exc.message, exc.detail, path, exc.headers or None, **exc.extra
        )
    if isinstance(exc, HTTPException):
        if exc.status_code == 404:
            message, detail = "Not found", f"No route matches {path}"
        elif exc.status_code == 405:
            message, detail = "Method not allowed", f"{method} is not allowed on {path}"
        else:
            message = exc.detail or _title(exc.status_code)
            detail = message
        return problem_response(exc.status_code, message, detail, path, exc.headers)
    return None
