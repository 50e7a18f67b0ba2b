"""Pure ASGI middleware: correlation id, access log, and a last line of defence.

Pure ASGI (not BaseHTTPMiddleware) because it runs on every request and must
cost microseconds.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airia_server.api.problems import PROBLEM_JSON, problem_body, problem_for, unavailable_response
from airia_server.logs import access_log, correlation_id_var, tenant_var
from airia_server.metrics import Metrics

error_log = logging.getLogger("airia_server.api")

CORRELATION_HEADER = "airia.correlation_header"
"""Scope key: the `x-correlation-id` header every response carries."""
WRAPPED_SEND = "airia.send_with_id"
"""Scope key: `send` wrapped to add that header and note the status, for responses
the router does not make itself."""
STATUS = "airia.status"
"""Scope key: the status of the response sent (0 while none has been)."""

_VALID_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
# A Host header is a URI host and an optional port (RFC 9112, 3.2; RFC 3986, 3.2.2):
# a registered name or IPv4 address, or an IP literal in brackets.
_VALID_HOST = re.compile(
    rb"(?:(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{0,5}))?\Z"
)
_HOST_DETAIL = (
    "An HTTP/1.1 request needs exactly one Host header, holding a host name or address"
    " and an optional port"
)


def _reseed() -> None:
    global _process_part
    _process_part = os.urandom(8).hex()


_process_part = ""
_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_correlation_id() -> str:
    """32 hex digits: 16 naming this process (chosen at start, and again in a forked
    child: an operator tells the workers of `serve --workers` apart by them), then 16
    random ones. Not a counter, which told every caller how many requests (other
    tenants' included) the process had answered between two of theirs."""
    return _process_part + os.urandom(8).hex()


def correlation_id_from(raw: bytes | None) -> str:
    """The request's correlation id: the caller's, when it is a plain token (anything
    else could forge log lines), or a new one."""
    return raw.decode() if raw is not None and _VALID_ID.match(raw) else new_correlation_id()


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        access_log_enabled: bool = True,
        max_header_bytes: int = 16 * 1024,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log_enabled = access_log_enabled
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw = host = None
        codings: list[bytes] = []
        header_bytes = hosts = 0
        for name, value in scope["headers"]:
            header_bytes += len(name) + len(value)
            if name == b"x-correlation-id":
                raw = value
            elif name == b"host":
                host = value
                hosts += 1
            elif name == b"transfer-encoding":
                codings.extend(c.strip().lower() for c in value.split(b","))
        if host is not None and host[-1:] in (b" ", b"\t"):
            # Whitespace around a field value is not part of it (RFC 9110, 5.5), but
            # httptools strips only the leading side: the links built from Host too.
            host = host.rstrip(b" \t")
            scope["headers"] = [
                (name, host if name == b"host" else value) for name, value in scope["headers"]
            ]
        cid = correlation_id_from(raw)
        cid_header = (b"x-correlation-id", cid.encode())
        token = correlation_id_var.set(cid)
        tenant_token = tenant_var.set(None)
        started = time.perf_counter()
        # The router adds this header to the responses it makes and records their
        # status in the scope (`STATUS`), so most requests need no wrapper around
        # `send`; responses made elsewhere go through `send_with_id`, which does both.
        scope[CORRELATION_HEADER] = cid_header
        scope[STATUS] = 0

        raw_send = send

        async def send_with_id(message: Message) -> None:
            if message["type"] in _RESPONSE_STARTS:
                scope[STATUS] = message["status"]
                message["headers"] = [*message.get("headers", ()), cid_header]
            elif message["type"] == "websocket.accept":
                scope[STATUS] = 101
            elif message["type"] == "websocket.close" and not scope[STATUS]:
                scope[STATUS] = 403  # refused before accept: what the server answers
            await raw_send(message)

        scope[WRAPPED_SEND] = send_with_id
        if scope["type"] == "websocket":
            # Few and long-lived: their refusals (made by the application before it
            # accepts) get the correlation id too, and the status is known here.
            send = send_with_id

        try:
            if header_bytes > self.max_header_bytes:
                scope[STATUS] = 431
                await _send_problem(
                    send, 431, "Request headers too large", scope["path"], cid_header, scope=scope
                )
                return
            if scope["type"] == "http" and (
                hosts > 1
                or (host is None and scope.get("http_version") != "1.0")
                or (host is not None and not _valid_host(host))
            ):
                # RFC 9112, 3.2. Without a public URL, links the server hands out are
                # built from Host (attachment links; websocketUrl on 0.0.0.0).
                scope[STATUS] = 400
                await _send_problem(
                    send, 400, "Invalid Host header", scope["path"], cid_header, _HOST_DETAIL
                )
                return
            if codings and codings != [b"chunked"]:
                # RFC 9112, 6.1: the parser reads any list ending in chunked as chunked
                # alone; a body gzipped (or coded otherwise) would be read as plain JSON.
                scope[STATUS] = 501
                await _send_problem(
                    send,
                    501,
                    "Transfer coding not supported",
                    scope["path"],
                    cid_header,
                    "The only transfer coding this server reads is chunked, alone",
                    close=True,
                    scope=scope,
                )
                return
            if b"%00" in scope.get("raw_path", b"") or b"%00" in scope.get("query_string", b""):
                # No stored text can hold a NUL; refuse it before it reaches a query (a
                # socket's upgrade too, as docs/api.md says of every URL).
                scope[STATUS] = 400
                await _send_problem(
                    send,
                    400,
                    "NUL characters are not allowed in URLs",
                    scope["path"],
                    cid_header,
                    scope=scope,
                )
                return
            if not _utf8_query(scope.get("query_string", b"")):
                # Decoded leniently, `%FF` would become U+FFFD and match stored text that
                # holds one; a JSON body that is not UTF-8 is refused as well. A socket's
                # upgrade gets the same answer (its `ticket` and `after` are ASCII).
                scope[STATUS] = 400
                await _send_problem(
                    send,
                    400,
                    "Query string is not UTF-8",
                    scope["path"],
                    cid_header,
                    "Percent-encode the UTF-8 bytes of each character (%C3%A9 for é)",
                    scope=scope,
                )
                return
            await self.app(scope, receive, send)
        except ClientDisconnect:
            # the client went away (or timed out)
            scope[STATUS] = scope[STATUS] or 499
        except Exception as exc:
            # Once a response has started (or a socket been accepted) the client is told
            # by what was sent; before, by a problem, over HTTP or as a socket's refusal.
            response = problem_for(exc, scope.get("method", ""), scope["path"])
            if response is not None:
                if not scope[STATUS]:
                    await _send_response(scope, receive, send_with_id, response)
                return
            method = scope.get("method", "WS")
            away = unavailable_response(exc, scope["path"])
            if away is not None:
                # An outage (the database, Redis, a full disk), not a bug: one line an
                # operator wants to see, without the traceback that each request of
                # an outage repeated (4 KB each, at ERROR, saying "unhandled").
                what = f"{type(exc).__name__}: {str(exc)[:300]}" if str(exc) else type(exc).__name__
                if scope[STATUS]:  # too late for the 503: the answer had begun
                    error_log.warning(
                        "%s %s failed after its answer began: %s", method, scope["path"], what
                    )
                else:
                    error_log.warning(
                        "%s %s answered %d: %s", method, scope["path"], away.status_code, what
                    )
            else:
                error_log.exception("unhandled error on %s %s", method, scope["path"])
            if not scope[STATUS]:
                if away is not None:
                    await _send_response(scope, receive, send_with_id, away)
                    return
                scope[STATUS] = 500
                await _send_problem(
                    send, 500, "Internal server error", scope["path"], cid_header, scope=scope
                )
        finally:
            # `send_with_id` holds uvicorn's send, whose cycle holds this scope: break
            # the loop, or every request would be left for the cyclic GC to find.
            del scope[WRAPPED_SEND]
            status = scope[STATUS]
            elapsed = time.perf_counter() - started
            method = scope.get("method", "WS")
            if self.metrics is not None and scope["type"] == "http":
                route = scope.get("route")
                self.metrics.observe(
                    method,
                    route.path if route is not None else "unmatched",
                    status,
                    elapsed,
                )
            if self.access_log_enabled and access_log.enabled:
                access_log.emit(method, scope["path"], status, elapsed * 1000)
            tenant_var.reset(tenant_token)
            correlation_id_var.reset(token)


def _utf8_query(query: bytes) -> bool:
    """Whether the query string, percent-decoded, is UTF-8 (surrogates are not)."""
    if query.isascii() and b"%" not in query:
        return True
    try:
        unquote_to_bytes(query).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@functools.lru_cache(maxsize=256)
def _valid_host(host: bytes) -> bool:
    """A URI host and an optional port within 1-65535 (RFC 3986, 3.2.3: an empty one
    is allowed, and means the default). Remembered: a server sees few distinct hosts,
    and the match cost a GET about 2% of its time."""
    match = _VALID_HOST.match(host)
    if match is None:
        return False
    port = match.group(1)
    return not port or 0 < int(port) < 65536


_RESPONSE_STARTS = ("http.response.start", "websocket.http.response.start")
_DENIAL = "websocket.http.response"
"""The ASGI extension by which a WebSocket upgrade is refused with an HTTP response of
the application's own (uvicorn has it): without it, only an empty 403 can be sent."""


async def _send_response(scope: Scope, receive: Receive, send: Send, response: Any) -> None:
    """`response` as the answer to a request, or as the refusal of a socket's upgrade."""
    if scope["type"] == "http":
        await response(scope, receive, send)
    elif _DENIAL in scope.get("extensions", {}):
        await response(scope, receive, send)  # Starlette sends websocket.http.response.*
    else:
        await send({"type": "websocket.close", "code": 1008})


async def _send_problem(
    send: Send,
    status: int,
    message: str,
    path: str,
    cid_header: tuple[bytes, bytes],
    detail: str | None = None,
    close: bool = False,
    scope: Scope | None = None,
) -> None:
    """`close`: the request's body is not read, and the connection is not kept. With a
    WebSocket `scope`: the upgrade is refused with this problem (`send` adds the
    correlation id there)."""
    if detail is None:
        detail = "The server failed to handle the request" if status == 500 else message
    body = problem_body(status, message, detail, path)
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if scope is not None and scope["type"] == "websocket":
        if _DENIAL not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
        return
    headers.append(cid_header)
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
