"""What every route needs, built once at start and reached through the request."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.types import Scope

from airia_server.config import Settings
from airia_server.domain.attachments import AttachmentService
from airia_server.domain.auth import Authenticator, Principal
from airia_server.domain.conversations import ConversationService
from airia_server.domain.identities import IdentityService
from airia_server.domain.messages import MessageService
from airia_server.domain.participants import ParticipantService
from airia_server.domain.ratelimit import RateLimiter
from airia_server.domain.tickets import TicketSigner
from airia_server.errors import Unauthorized
from airia_server.logs import tenant_var
from airia_server.realtime.hub import LocalHub
from airia_server.storage.base import Store
from airia_server.storage.blobs import BlobStore
from airia_server.timeutil import format_us


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    hub: LocalHub
    auth: Authenticator
    tickets: TicketSigner
    conversations: ConversationService
    messages: MessageService
    participants: ParticipantService
    identities: IdentityService
    attachments: AttachmentService
    blobs: BlobStore
    limiter: RateLimiter
    ws_base_url: str | None
    """`ws(s)://host[:port][/path]` for `websocketUrl`; None means: take it from the
    request's Host."""
    http_base_url: str | None
    """The same as `http(s)://…`, for attachment links."""


def services(conn: HTTPConnection) -> Services:
    return conn.scope["app"].services


_PRINCIPAL = "airia.principal"


async def current_principal(conn: HTTPConnection) -> Principal:
    """Who is calling, authenticated and counted against the rate limit once per
    request, however many layers (the idempotency check, the handler) ask."""
    known = conn.scope.get(_PRINCIPAL)
    if known is not None:
        return known
    api_key = authorization = None
    for name, value in conn.scope["headers"]:  # one pass
        if name == b"x-api-key" or name == b"authorization":
            text = value.decode("latin-1")
            if name == b"x-api-key":
                seen, api_key = api_key, text
            else:
                seen, authorization = authorization, text
            if seen is not None and seen != text:
                # Which one would count is anyone's guess (a proxy may have added one):
                # credentials must be unambiguous.
                raise Unauthorized(
                    "Conflicting credentials",
                    f"The request carries more than one {name.decode()} header",
                )
    principal = await services(conn).auth.authenticate(api_key, authorization)
    tenant_var.set(principal.tenant_id)
    await services(conn).limiter.check(principal)
    conn.scope[_PRINCIPAL] = principal
    return principal


def websocket_url(conn: HTTPConnection, principal: Principal, conversation_id: str) -> str:
    return _websocket_url(conn, principal, conversation_id)[0]


def websocket_url_and_expiry(
    conn: HTTPConnection, principal: Principal, conversation_id: str
) -> tuple[str, str]:
    """A `websocketUrl` carrying a fresh ticket, and when that ticket expires."""
    url, expires = _websocket_url(conn, principal, conversation_id)
    return url, format_us(expires * 1_000_000)


def _websocket_url(
    conn: HTTPConnection, principal: Principal, conversation_id: str
) -> tuple[str, int]:
    svc = services(conn)
    base = svc.ws_base_url
    if base is None:
        # From the scope, not `conn.url` and `conn.headers`: building those cost every
        # answer with a websocketUrl 7 µs on a server listening on all addresses.
        scheme = "wss" if conn.scope.get("scheme") in ("https", "wss") else "ws"
        host = _host(conn.scope)
        if not host:  # HTTP/1.0 may leave Host out: the address the request came to
            server = conn.scope.get("server") or ("localhost", 80)
            host = f"[{server[0]}]:{server[1]}" if ":" in server[0] else f"{server[0]}:{server[1]}"
        base = f"{scheme}://{host}"
    ticket, expires = svc.tickets.mint(
        principal.tenant_id,
        conversation_id,
        principal.user_id,
        principal.key_id,
        principal.expires,
    )
    return f"{base}/v1/Conversations/{conversation_id}/ws?ticket={ticket}", expires


def _host(scope: Scope) -> str | None:
    """The Host header (the middleware lets a request through with at most one)."""
    for name, value in scope["headers"]:
        if name == b"host":
            return value.decode("latin-1")
    return None
